//! The node core (`nestdnn::node::app::App`) on the synthetic model, without a transport:
//! the first frame of a task runs on the planned descendant, bad-frame warnings are
//! throttled per kind, the calibration survives a restart, and `use_sim_time` stamps.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{write_model, Synth};
use nestdnn::config::{NodeConfig, NodeName};
use nestdnn::model::MultiCapacityModel;
use nestdnn::msgs::{
    Classification, Clock, DiagnosticArray, Header, Image, InferenceResult, LabelInfo, Plan,
    ResourceBudget, Time,
};
use nestdnn::node::app::{App, AppOptions, Outputs};
use nestdnn::profile::{Calibration, ProfileCache, ProfileOptions};
use parking_lot::Mutex;

#[derive(Default)]
struct Recorder {
    results: Mutex<Vec<InferenceResult>>,
    plans: Mutex<Vec<Plan>>,
    labels: Mutex<Vec<LabelInfo>>,
    diagnostics: Mutex<Vec<DiagnosticArray>>,
}

impl Outputs for Recorder {
    fn classification(&self, _task: usize, _msg: Classification) {}
    fn result(&self, _task: usize, msg: InferenceResult) {
        self.results.lock().push(msg);
    }
    fn plan(&self, msg: Plan) {
        self.plans.lock().push(msg);
    }
    fn diagnostics(&self, msg: DiagnosticArray) {
        self.diagnostics.lock().push(msg);
    }
    fn label_info(&self, _task: usize, msg: LabelInfo) {
        self.labels.lock().push(msg);
    }
}

/// Every log record of the test binary (tests filter by their own task names).
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.target().starts_with("nestdnn") {
            self.0.lock().push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Debug);
        c
    })
}

fn quick() -> ProfileOptions {
    ProfileOptions {
        warmup: 2,
        min_runs: 10,
        max_runs: 100,
        min_time: Duration::from_millis(5),
        builds: 1,
        vanilla: false,
    }
}

/// A node config with one task `task` on the synthetic model in `model_dir`; `extra` is
/// appended to the `ros__parameters` map (4-space indented YAML lines).
fn config(dir: &Path, task: &str, model_dir: &Path, extra: &str) -> NodeConfig {
    let text = format!(
        "nestdnn_node:\n  ros__parameters:\n    tasks: [{task}]\n    \
         default_budget: {{cpu_cores: 2.0, memory_mb: 512.0}}\n    \
         scheduler: {{switch_policy: on_demand, min_dwell_s: 0.0}}\n    \
         {task}: {{model_dir: {}, target_fps: 20.0}}\n{extra}",
        model_dir.display()
    );
    let path = dir.join("params.yaml");
    std::fs::write(&path, text).unwrap();
    NodeConfig::load(&path, &NodeName::new("/", "nestdnn_node"), Vec::new()).unwrap()
}

fn start(cfg: &NodeConfig, cache: Option<&Path>) -> (App, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let app = App::start(
        cfg,
        AppOptions {
            profile_cache: cache.map(Path::to_path_buf),
            profile: quick(),
            diagnostics_period: Duration::from_millis(200),
            ..AppOptions::default()
        },
        rec.clone(),
    )
    .unwrap();
    (app, rec)
}

fn image(encoding: &str, step: u32, len: usize) -> Image {
    Image {
        header: Header {
            stamp: Time { sec: 5, nanosec: 0 },
            frame_id: "cam".into(),
        },
        height: 8,
        width: 8,
        encoding: encoding.into(),
        is_bigendian: 0,
        step,
        data: (0..len).map(|i| (i * 7 % 256) as u8).collect(),
    }
}

fn good_image() -> Image {
    image("mono8", 8, 64)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The slot holds descendant 0 while the task is idle; the plan its camera's first frame
/// triggers picks the largest (plenty of budget). That first frame must already run on it,
/// also with on-demand switching, where the switch is a background build.
#[test]
fn first_frame_of_a_task_runs_on_the_planned_descendant() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, &Synth::default());
    let cfg = config(dir.path(), "first", &model, "");
    for round in 0..3 {
        let (app, rec) = start(&cfg, None);
        assert_eq!(
            app.plan().tasks[0].descendant_index,
            0,
            "idle: the slot's d0"
        );
        app.on_image(0, good_image());
        wait_until("the first result", Duration::from_secs(20), || {
            !rec.results.lock().is_empty()
        });
        let first = rec.results.lock()[0].clone();
        let plan = rec
            .plans
            .lock()
            .iter()
            .rfind(|p| p.trigger == "task_started:first")
            .cloned()
            .expect("a task_started plan");
        let planned = &plan.tasks[0];
        assert_eq!(planned.descendant_index, 2, "plenty of budget: the largest");
        assert_eq!(
            (first.descendant_index, first.descendant.as_str()),
            (planned.descendant_index, planned.descendant.as_str()),
            "round {round}: the first result reports the planned descendant"
        );
        app.shutdown();
    }
}

/// Bad frames of two kinds on one task: both kinds are logged (the throttle is per task and
/// kind), a repeat of a kind within the interval is not.
#[test]
fn bad_frame_warnings_are_throttled_per_kind() {
    let capture = logs();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, &Synth::default());
    let cfg = config(dir.path(), "badcam", &model, "");
    let (app, _rec) = start(&cfg, None);
    let bad = |n: u64| {
        wait_until("the bad frame counted", Duration::from_secs(10), || {
            app.task_counters(0)
                .unwrap()
                .bad_frames
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        })
    };
    app.on_image(0, image("yuv422_weird", 8, 64));
    bad(1);
    app.on_image(0, image("mono8", 8, 10));
    bad(2);
    app.on_image(0, image("yuv422_weird", 8, 64));
    bad(3);
    app.shutdown();
    let warned: Vec<String> = capture
        .0
        .lock()
        .iter()
        .filter(|(l, m)| *l == log::Level::Warn && m.contains("task badcam: dropped a frame"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].contains("unknown_encoding"), "{warned:?}");
    assert!(warned[1].contains("data_too_short"), "{warned:?}");
}

/// A stored calibration is used from the first plan on; the node replaces it with what it
/// measures (the stored one here is 1000x off) and keeps that for the next start.
#[test]
fn calibration_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let model_dir = dir.path().join("model");
    write_model(&model_dir, &Synth::default());
    let model = MultiCapacityModel::load(&model_dir).unwrap();
    let cache = ProfileCache::new(&cache_dir);
    let cfg = config(
        dir.path(),
        "calib",
        &model_dir,
        "    scheduler.calibration_period_s: 0.3\n",
    );

    // First start: profiles; no calibration yet.
    let (app, _rec) = start(&cfg, Some(&cache_dir));
    let profiled_ms = app.plan().tasks[0].latency_ms;
    app.shutdown();
    drop(app);
    assert!(cache.load_calibration(&model).is_none());

    // A calibration of 1000x the profile (as if frames were that slow here) is planned with
    // at once.
    let slow = profiled_ms / 1e3 * 1000.0;
    let stored = Calibration::new(&model, &[Some(slow); 3]);
    cache.store_calibration(&model, &stored).unwrap();
    let (app, _rec) = start(&cfg, Some(&cache_dir));
    let first = app.plan();
    assert!(
        (first.tasks[0].latency_ms - slow * 1e3).abs() < 1e-6 * slow * 1e3,
        "first plan uses the stored calibration: {} ms vs {} ms",
        first.tasks[0].latency_ms,
        slow * 1e3
    );
    // Frames cost far less than that: the node re-calibrates and stores what it measured.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        app.on_image(0, good_image());
        std::thread::sleep(Duration::from_millis(20));
        let now = cache.load_calibration(&model).unwrap();
        if now
            .cpu_s_per_frame
            .iter()
            .flatten()
            .any(|&x| x < slow / 20.0)
        {
            break;
        }
    }
    app.shutdown();
    // The descendant that served frames has its measured cost; the others keep the stored
    // one (measured on this machine before, not served in this run).
    let kept = cache
        .load_calibration(&model)
        .expect("a calibration is kept");
    let measured = kept
        .cpu_s_per_frame
        .iter()
        .flatten()
        .filter(|&&x| x < slow / 20.0)
        .count();
    assert!(measured >= 1, "re-calibrated and stored: {kept:?}");
    assert!(kept.cpu_s_per_frame.iter().all(Option::is_some), "{kept:?}");
    // No temporary files left behind (atomic write: temporary file, then rename).
    for e in std::fs::read_dir(&cache_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".json"), "{name}");
    }
    // Without calibration (`calibration_period_s: 0`) the stored one is not used.
    let cfg0 = config(
        dir.path(),
        "calib",
        &model_dir,
        "    scheduler.calibration_period_s: 0.0\n",
    );
    cache.store_calibration(&model, &stored).unwrap();
    let (app, _rec) = start(&cfg0, Some(&cache_dir));
    assert!((app.plan().tasks[0].latency_ms - profiled_ms).abs() < 1e-9);
    app.shutdown();
}

/// With `use_sim_time`, plans (and class names) are stamped with the latest `/clock` (zero
/// before the first); without it, with the wall clock, and `/clock` is ignored.
#[test]
fn sim_time_stamps_plans_from_clock() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, &Synth::default());
    let budget = |cores: f32| ResourceBudget {
        cpu_cores_available: cores,
        memory_available_bytes: 512 << 20,
        cpu_load: 0.1,
        battery_percentage: 0.9,
        ..ResourceBudget::default()
    };
    let clock = |sec: i32| Clock {
        clock: Time { sec, nanosec: 250 },
    };

    let cfg = config(dir.path(), "simcam", &model, "    use_sim_time: true\n");
    let (app, rec) = start(&cfg, None);
    assert!(app.uses_sim_time());
    assert_eq!(rec.plans.lock()[0].header.stamp, Time::default());
    assert_eq!(rec.labels.lock()[0].header.stamp, Time::default());
    app.on_clock(&clock(100));
    assert_eq!(app.now(), clock(100).clock);
    app.on_budget(&budget(1.5));
    let p = rec.plans.lock().last().cloned().unwrap();
    assert_eq!(p.trigger, "budget");
    assert_eq!(p.header.stamp, clock(100).clock);
    app.on_clock(&clock(7));
    app.on_budget(&budget(1.25));
    assert_eq!(
        rec.plans.lock().last().unwrap().header.stamp,
        clock(7).clock
    );
    app.shutdown();

    let cfg = config(dir.path(), "simcam", &model, "    use_sim_time: false\n");
    let (app, rec) = start(&cfg, None);
    assert!(!app.uses_sim_time());
    app.on_clock(&clock(100));
    app.on_budget(&budget(1.5));
    let stamp = rec.plans.lock().last().unwrap().header.stamp;
    assert!(stamp.sec > 1_600_000_000, "wall clock: {stamp:?}");
    app.shutdown();
}

/// A model whose switches take effect 150 ms after the request (like an on-demand build).
struct SlowSwitch {
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    target: std::sync::atomic::AtomicUsize,
    /// A switch completes (at least 150 ms after its request) only while this is open, so the
    /// test decides when one can finish instead of racing a timer.
    gate: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl nestdnn::runtime::InferenceModel for SlowSwitch {
    type Input = u64;
    type Output = u64;
    type Error = nestdnn::runtime::SpinError;
    type State = ();

    fn new_state(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn run(
        &self,
        _state: &mut (),
        input: u64,
    ) -> Result<nestdnn::runtime::Served<u64>, Self::Error> {
        Ok(nestdnn::runtime::Served {
            descendant: self.current.load(std::sync::atomic::Ordering::SeqCst),
            output: input,
        })
    }

    fn request_descendant(&self, index: usize) -> Result<(), Self::Error> {
        self.target
            .store(index, std::sync::atomic::Ordering::SeqCst);
        let (current, gate) = (self.current.clone(), self.gate.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            while !gate.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            current.store(index, std::sync::atomic::Ordering::SeqCst);
        });
        Ok(())
    }

    fn num_descendants(&self) -> usize {
        3
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while self.current.load(std::sync::atomic::Ordering::SeqCst)
            != self.target.load(std::sync::atomic::Ordering::SeqCst)
        {
            if t0.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// The runtime's part: the first frame after a start waits for the requested descendant;
/// later frames do not wait for a switch (they run on the old descendant meanwhile).
#[test]
fn runtime_first_frame_waits_for_the_switch_later_frames_do_not() {
    use nestdnn::runtime::{PushOutcome, Runtime, RuntimeOptions, TaskSetup};
    let gate = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let model = Arc::new(SlowSwitch {
        current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        target: std::sync::atomic::AtomicUsize::new(0),
        gate: gate.clone(),
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let rt = Runtime::start(
        vec![TaskSetup {
            name: "slow".into(),
            model,
            target_fps: 1000.0,
        }],
        RuntimeOptions::default(),
        move |done| {
            let _ = tx.send(done);
        },
    )
    .unwrap();
    // As the node applies a task_started plan: frame in, then descendant, then share.
    assert_eq!(rt.push(0, 1), PushOutcome::Started);
    rt.request_descendant(0, 2).unwrap();
    rt.set_share(0, 1.0).unwrap();
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        first.descendant,
        Some(2),
        "first frame on the planned descendant"
    );
    // A switch while running: the next frame does not wait for it. The switch cannot finish
    // until the gate opens (after the frame came back), so the old descendant must serve it
    // however late the threads run; a frame that waited for the switch would not come back
    // within the timeout, or only after the runtime's start-switch wait (2 s).
    gate.store(false, std::sync::atomic::Ordering::SeqCst);
    rt.request_descendant(0, 1).unwrap();
    rt.push(0, 2);
    let next = rx.recv_timeout(Duration::from_secs(5));
    gate.store(true, std::sync::atomic::Ordering::SeqCst);
    let next = next.unwrap();
    assert_eq!(
        next.descendant,
        Some(2),
        "running frames keep the old descendant"
    );
    assert!(next.queued < Duration::from_secs(1), "{:?}", next.queued);
    rt.shutdown(false);
}

/// The `inputs` diagnostic status of the latest diagnostics array: (level, message).
fn inputs_status(rec: &Recorder) -> Option<(u8, String)> {
    let d = rec.diagnostics.lock();
    let s = d
        .last()?
        .status
        .iter()
        .find(|s| s.name.ends_with("inputs"))?;
    Some((s.level, s.message.clone()))
}

/// Issue 12: a dead resource monitor is noticed. With `scheduler.budget_timeout_s` 0.4 the
/// node re-plans (trigger `budget_stale`) for `stale_budget_cores` 0.5 seconds after the last
/// budget, `/diagnostics` goes WARN with the budget's age, and the next budget recovers; a
/// budget repeated unchanged (as the monitor does every period) publishes no plan. The ROI
/// that reaches past the 8x8 frames is counted and warned about.
#[test]
fn stale_budget_in_the_live_node_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_model(&model, &Synth::default());
    let cfg = config(
        dir.path(),
        "stale",
        &model,
        "    scheduler.budget_timeout_s: 0.4\n    scheduler.stale_budget_cores: 0.05\n    stale.roi: [4, 4, 8, 8]\n",
    );
    let (app, rec) = start(&cfg, None);
    app.on_image(0, good_image());
    wait_until("the first result", Duration::from_secs(20), || {
        !rec.results.lock().is_empty()
    });
    let budget = ResourceBudget {
        cpu_cores_available: 1.5,
        memory_available_bytes: 256 << 20,
        ..Default::default()
    };
    let plans = |rec: &Recorder| rec.plans.lock().len();
    app.on_budget(&budget);
    let n = plans(&rec);
    assert_eq!(rec.plans.lock()[n - 1].trigger, "budget");
    app.on_budget(&budget);
    app.on_budget(&budget);
    assert_eq!(plans(&rec), n, "an unchanged budget publishes no plan");
    wait_until("a budget_stale plan", Duration::from_secs(10), || {
        rec.plans.lock().iter().any(|p| p.trigger == "budget_stale")
    });
    let p = rec
        .plans
        .lock()
        .iter()
        .rfind(|p| p.trigger == "budget_stale")
        .cloned()
        .unwrap();
    assert!(
        (p.cpu_cores_budget - 0.05).abs() < 1e-6,
        "{}",
        p.cpu_cores_budget
    );
    wait_until("diagnostics WARN", Duration::from_secs(10), || {
        inputs_status(&rec).is_some_and(|(l, m)| l == 1 && m.contains("budget stale"))
    });
    let (_, msg) = inputs_status(&rec).unwrap();
    assert!(
        msg.contains("last budget") && msg.contains("s ago"),
        "{msg}"
    );
    // The monitor is back: the same budget as before is a change now.
    app.on_budget(&budget);
    let last = rec.plans.lock().last().cloned().unwrap();
    assert_eq!(last.trigger, "budget");
    assert!((last.cpu_cores_budget - 1.5).abs() < 1e-6);
    wait_until("diagnostics OK again", Duration::from_secs(10), || {
        inputs_status(&rec).is_some_and(|(l, m)| l == 0 && m.contains("budget received"))
    });
    // The clipped ROI: counted per frame, warned about (the log capture holds it).
    let _ = logs();
    app.on_image(0, good_image());
    wait_until("the clipped count", Duration::from_secs(10), || {
        app.task_counters(0)
            .is_some_and(|c| c.roi_clipped.load(std::sync::atomic::Ordering::Relaxed) >= 2)
    });
    app.shutdown();
}
