//! Acceptance with real models: the four task models (committed, or the tiny ones in
//! /tmp/nestdnn-tiny-models), profiled on this machine, planned under a budget that makes
//! tasks share-limited, run by the runtime on resident model slots with their fixture images
//! fed faster than every target; latencies are calibrated from the runtime's CPU-time
//! counters until the plan keeps its descendants, before measuring. Each task must get its
//! share (80-110% when share-limited), and its delivered frame rate must be within 40% of the
//! plan's prediction (a gross-error bound: CPU time per frame of these sub-millisecond models
//! drifts by up to 25% between seconds on a shared VM). A measurement that fails is
//! re-calibrated and repeated, up to three in all: a systematic error fails all three, a
//! noisy second on a loaded machine one. `nestdnn plan --run` reports the same comparison,
//! and `docs/scheduler.md` lists measured deviations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nestdnn::model::{models_dir, ModelSlot, MultiCapacityModel, SwitchPolicy};
use nestdnn::profile::{profile_model, ProfileOptions};
use nestdnn::runtime::{drive, DrivenRate, Runtime, RuntimeOptions, TaskSetup};
use nestdnn::scheduler::{plan_all, Budget, Ladder, Plan, Settings, TaskSpec, TaskStatus};

const TASKS: [&str; 4] = [
    "fashion_vgg",
    "fashion_resnet",
    "digits_vgg",
    "digits_resnet",
];

fn models_root() -> PathBuf {
    let has_all = |d: &Path| {
        TASKS
            .iter()
            .all(|t| d.join(t).join("manifest.yaml").is_file())
    };
    let repo = models_dir();
    if has_all(&repo) {
        return repo;
    }
    let tiny = PathBuf::from("/tmp/nestdnn-tiny-models");
    if tiny.join("READY").is_file() && has_all(&tiny) {
        return tiny;
    }
    panic!(
        "no models: {} lacks the four task models and /tmp/nestdnn-tiny-models/READY is absent",
        repo.display()
    );
}

#[test]
fn real_models_deliver_the_planned_rates() {
    let root = models_root();
    let opts = ProfileOptions {
        min_time: Duration::from_millis(150),
        builds: 1,
        vanilla: false,
        ..ProfileOptions::default()
    };
    let mut specs: Vec<TaskSpec> = Vec::new();
    let mut setups = Vec::new();
    let mut frames = Vec::new();
    let mut max_fps: f64 = 0.0;
    let mut need = 0.0;
    for t in TASKS {
        let model = Arc::new(MultiCapacityModel::load(&root.join(t)).unwrap());
        let profile = profile_model(&model, &opts).unwrap();
        let ladder = Ladder::from_profile(model.manifest(), &profile).unwrap();
        // A camera-like target (at most 100 fps; lower for slow models, so that the largest
        // descendant needs at most a quarter of a core).
        let largest = ladder.rungs()[ladder.largest()].latency_s;
        let target = (0.25 / largest).clamp(5.0, 100.0);
        max_fps = max_fps.max(target);
        need += largest * target;
        specs.push(TaskSpec {
            name: t.to_string(),
            priority: 1.0,
            target_fps: target,
            enabled: true,
            ladder: Arc::new(ladder),
        });
        let fx = model.load_fixtures().unwrap();
        frames.push(
            (0..fx.len())
                .map(|i| fx.input(i).unwrap().to_vec())
                .collect::<Vec<_>>(),
        );
        let slot = ModelSlot::new(model.clone(), SwitchPolicy::Resident, 0).unwrap();
        setups.push(TaskSetup {
            name: t.to_string(),
            model: Arc::new(slot),
            target_fps: target,
        });
    }
    // Half of what the largest descendants need at their targets: someone must give.
    let settings = Settings {
        switch_policy: SwitchPolicy::Resident,
        share_step: 0.005,
        ..Settings::default()
    };
    let budget = Budget::new(0.5 * need, 1 << 32);
    let mut plan = plan_all(settings.clone(), specs.clone(), budget).unwrap();
    assert!(
        plan.tasks.iter().all(|t| t.status == TaskStatus::Running),
        "{}",
        plan.to_table()
    );
    let rt = Runtime::start(setups, RuntimeOptions::default(), |_| {}).unwrap();
    let mut report = String::new();
    // Calibration: run the plan, replace the profiled latencies by the CPU time frames take
    // here (what the node does through the planner's profile trigger), re-plan; until the
    // plan keeps its descendants, so the measured plan's costs come from those descendants.
    for round in 0..4 {
        rt.apply(&plan).unwrap();
        drive(&rt, &frames, 2.0 * max_fps, Duration::from_millis(1000));
        report.push_str(&format!("round {round}:\n{}", plan.to_table()));
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.ladder = Arc::new(spec.ladder.calibrated(&rt.cpu_per_frame(i)));
        }
        let next = plan_all(settings.clone(), specs.clone(), budget).unwrap();
        let same = next
            .tasks
            .iter()
            .zip(&plan.tasks)
            .all(|(a, b)| a.descendant_index == b.descendant_index);
        plan = next;
        if same && round >= 1 {
            break;
        }
    }
    // The measurement: 3 s at twice the targets, checked below. A systematic error (a task
    // starved or over-served, a wrong prediction) fails every attempt; a noisy second on a
    // shared VM fails one, so the test re-calibrates and measures again, up to three times.
    let mut problems = Vec::new();
    let mut passed = false;
    for attempt in 0..3 {
        rt.apply(&plan).unwrap();
        let rates = drive(&rt, &frames, 2.0 * max_fps, Duration::from_secs(3));
        report.push_str(&format!(
            "measured (attempt {attempt}):\n{}",
            plan.to_table()
        ));
        let found = check(&plan, &specs, &rates, &mut report);
        if found.is_empty() {
            passed = true;
            break;
        }
        problems.extend(found.into_iter().map(|p| format!("attempt {attempt}: {p}")));
        if attempt == 2 {
            // No attempt follows: keep the plan the runtime ran, so the checks below compare
            // the runtime with what it was given and the failure says why.
            break;
        }
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.ladder = Arc::new(spec.ladder.calibrated(&rt.cpu_per_frame(i)));
        }
        plan = plan_all(settings.clone(), specs.clone(), budget).unwrap();
    }
    eprint!("{report}");
    let c = rt.shutdown(false);
    assert!(passed, "every attempt failed: {problems:#?}\n{report}");
    for (t, c) in plan.tasks.iter().zip(&c) {
        assert_eq!(c.errors, 0, "{}: inference errors", t.task);
        assert_eq!(
            c.descendant,
            Some(t.descendant_index),
            "{}: served by another descendant",
            t.task
        );
    }
}

/// Checks one measurement of `plan` (delivered `rates`) and returns what failed; appends
/// each task's figures to `report`.
fn check(
    plan: &Plan,
    specs: &[TaskSpec],
    rates: &[DrivenRate],
    report: &mut String,
) -> Vec<String> {
    let mut problems = Vec::new();
    for ((r, t), spec) in rates.iter().zip(&plan.tasks).zip(specs) {
        report.push_str(&format!(
            "{}: {} expected {:.1} fps, delivered {:.1} fps ({:+.1}%), {:.3} of {:.3} cores\n",
            t.task,
            t.descendant,
            t.expected_fps,
            r.delivered_fps,
            (r.delivered_fps / t.expected_fps - 1.0) * 100.0,
            r.cpu_cores,
            t.share
        ));
        // The arbiter's part: the task gets its share, and no more (it has frames waiting
        // all the time). Share cap plus one bucket burst (share x 0.25 s) over the 3 s.
        if r.cpu_cores > t.share * (1.0 + 0.25 / 3.0) * 1.05 + 0.002 {
            problems.push(format!("{}: used more than its share", t.task));
        }
        let share_limited = t.expected_fps < 0.9 * spec.target_fps;
        if share_limited && r.cpu_cores < t.share * 0.8 {
            problems.push(format!("{}: did not get its share", t.task));
        }
        // The plan's part: rate = share / CPU per frame, with the CPU per frame calibrated in
        // earlier seconds. On this shared VM a 0.3 ms model's CPU time per frame moves by up
        // to ~25% between consecutive seconds, so this bound only catches gross errors; the
        // 10% criterion is measured by `nestdnn plan --run` (`docs/scheduler.md`).
        let err = (r.delivered_fps - t.expected_fps).abs() / t.expected_fps;
        if err > 0.40 {
            problems.push(format!("{}: off by {:.0}%", t.task, err * 100.0));
        }
    }
    problems
}
