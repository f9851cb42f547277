//! The multi-tenant benchmark's harness on the real models and the bundled recording: a
//! 3-second schedule with a heavy app starting, one stopping and a background load spell, the
//! status quo and NestDNN side by side, then the same run simulated. Only accounting and
//! structure are checked (no rate or timing bound), so a loaded machine cannot fail it.

use std::process::{Command, Stdio};
use std::sync::Arc;

use super::data::{load_frames, offline_pass, Offline};
use super::harness::{run_real, App, BudgetSample, System};
use super::simulate::{simulate_run, SimInputs, SimRun};
use super::workload::{AppEvent, LoadSpell, RunSchedule, APPS};
use nestdnn::model::{models_dir, MultiCapacityModel};
use nestdnn::scheduler::{Ladder, Objective, Rung};

/// The committed apps with their frames, ladders (offline CPU) and offline passes.
fn apps() -> (Vec<App>, Vec<Offline>) {
    let mdir = models_dir();
    let models: Vec<Arc<MultiCapacityModel>> = APPS
        .iter()
        .map(|a| Arc::new(MultiCapacityModel::load(&mdir.join(a)).unwrap()))
        .collect();
    let recordings = mdir.join("../test/bags/recordings.json");
    let frames = load_frames(&recordings, super::workload::BAG, &models).unwrap();
    let mut apps = Vec::new();
    let mut offline = Vec::new();
    for (m, f) in models.iter().zip(frames) {
        assert_eq!(f.len(), f.labels.len());
        assert!(f.len() >= 100, "{}: {} frames", f.app, f.len());
        let off = offline_pass(m, &f).unwrap();
        // The held-out frames are classified about as well as the manifest says.
        let top = m.manifest().descendants.last().unwrap().accuracy;
        assert!(
            (off.accuracy.last().unwrap() - top).abs() < 0.05,
            "{}: {:?}",
            f.app,
            off.accuracy
        );
        let rungs = m
            .manifest()
            .descendants
            .iter()
            .zip(&off.cpu_s)
            .map(|(d, &c)| Rung {
                name: d.name.clone(),
                accuracy: d.accuracy,
                latency_s: c,
                build_s: 0.005,
                plan_bytes: 100_000,
            })
            .collect();
        let ladder = Ladder::new(&f.app, rungs, Some(m.master_bytes())).unwrap();
        apps.push(App {
            model: m.clone(),
            frames: f,
            ladder,
            status_quo_cpu_s: off.status_quo.iter().map(|m| m.cpu_s).collect(),
            descendant_accuracy: off.accuracy.clone(),
            status_quo_accuracy: off.status_quo.iter().map(|m| m.accuracy).collect(),
        });
        offline.push(off);
    }
    (apps, offline)
}

/// Simulates `system` on `sched` and the real run's `budget` readings with the offline
/// pass's figures: each descendant's and each status-quo model's CPU per frame, and the
/// planner's ladders (from the start: nothing to calibrate).
fn simulate_offline(
    system: System,
    sched: &RunSchedule,
    budget: &[BudgetSample],
    apps: &[App],
    offline: &[Offline],
) -> SimRun {
    let lat: Vec<Vec<f64>> = offline.iter().map(|o| o.cpu_s.clone()).collect();
    let sq_lat: Vec<Vec<f64>> = offline
        .iter()
        .map(|o| o.status_quo.iter().map(|m| m.cpu_s).collect())
        .collect();
    let ladders: Vec<Ladder> = apps.iter().map(|a| a.ladder.clone()).collect();
    let inputs = SimInputs {
        budget,
        latency_s: &lat,
        status_quo_latency_s: &sq_lat,
        start_ladders: &ladders,
        ladders: &ladders,
        offline,
    };
    simulate_run(system, sched, &inputs).unwrap()
}

/// Held by the tests that run systems on the wall clock: one run's background busy loop and
/// workers would otherwise take the CPU from under the other's, whose frame and reload
/// counts depend on timing.
static REAL_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn_busy_loop(_cores: f64) -> std::io::Result<std::process::Child> {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdin(Stdio::null())
        .spawn()
}

#[test]
fn a_short_real_run_accounts_for_every_frame_and_the_simulation_replays_it() {
    let _alone = REAL_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let (apps, offline) = apps();
    let sched = RunSchedule {
        index: 0,
        seed: 0,
        run_s: 3.0,
        compute_cores: 0.1,
        memory_bytes: 64 << 20,
        initial: vec![0, 1, 2],
        events: vec![
            AppEvent {
                t_s: 1.0,
                app: 4,
                start: true,
            },
            AppEvent {
                t_s: 2.0,
                app: 0,
                start: false,
            },
        ],
        background: vec![LoadSpell {
            from_s: 1.0,
            to_s: 2.0,
            cores: 1.0,
        }],
    };
    let systems = [
        System::StatusQuo { level: 0 },
        System::Nestdnn {
            objective: Objective::MinTotalCost,
            alpha: 0.1,
        },
    ];
    let out = run_real(&apps, &sched, &systems, &mut spawn_busy_loop).unwrap();
    assert!(!out.budget.is_empty());
    for b in &out.budget {
        assert!(b.device_cores >= 0.0 && b.device_cores <= sched.compute_cores + 1e-12);
    }
    for s in &out.systems {
        let label = s.system.label();
        assert!(s.processed > 0, "{label}");
        assert!(s.processed <= s.offered, "{label}");
        assert!(s.correct <= s.processed, "{label}");
        assert_eq!(s.errors, 0, "{label}");
        assert_eq!(s.apps.iter().map(|a| a.offered).sum::<u64>(), s.offered);
        assert_eq!(s.apps.iter().map(|a| a.processed).sum::<u64>(), s.processed);
        // Every processed frame is counted once under the model that served it, and scored
        // with that model's offline top-1.
        for (i, a) in s.apps.iter().enumerate() {
            assert_eq!(a.served.iter().sum::<u64>(), a.processed, "{label}: {a:?}");
            let expected: f64 = match s.system {
                System::StatusQuo { .. } => {
                    assert_eq!(a.served.len(), 1, "{label}");
                    a.processed as f64 * apps[i].status_quo_accuracy[0]
                }
                System::Nestdnn { .. } => {
                    assert_eq!(a.served.len(), apps[i].descendant_accuracy.len());
                    a.served
                        .iter()
                        .zip(&apps[i].descendant_accuracy)
                        .map(|(&n, &acc)| n as f64 * acc)
                        .sum()
                }
            };
            assert!((a.model_correct - expected).abs() < 1e-6, "{label}: {a:?}");
        }
        // App 0 ran 2 s, apps 1 and 2 the whole 3 s, app 4 (heavy) from 1 s on, app 3 never.
        assert!(
            s.apps[0].offered < s.apps[1].offered,
            "{label}: {:?}",
            s.apps
        );
        assert!(s.apps[4].offered > 0 && s.apps[4].offered < s.apps[1].offered);
        assert_eq!(s.apps[3].offered, 0, "{label}");
        // The process's CPU holds the workers' inference; the rest is per-frame overhead.
        assert!(s.process_cpu_s >= s.cpu_s, "{label}: {s:?}");
        assert!(s.outside_inference_ms_per_frame().is_finite(), "{label}");
        assert!(s.memory_peak_bytes > 0);
        assert!(s.cpu_s > 0.0);
        assert_eq!(s.timeline.len(), out.budget.len());
        assert!(s.latency_p50_ms <= s.latency_p99_ms);
        // Every app that started loaded its model from disk once, on its own thread.
        assert_eq!(s.loads.loads, 4, "{label}: {:?}", s.loads);
        assert!(
            s.loads.load_cpu_s > 0.0 && s.loads.load_wall_s > 0.0,
            "{label}"
        );
        // 64 MiB holds every model: nothing is evicted.
        assert_eq!((s.loads.reloads, s.loads.evictions), (0, 0), "{label}");
        assert_eq!(s.memory_over_budget_s, 0.0, "{label}");
    }
    assert_eq!(out.systems[0].switches, 0, "the status quo never switches");
    assert_eq!(out.systems[0].plans, 0);
    // Initial plan, three starts, one start and one stop at least.
    assert!(out.systems[1].plans >= 5, "{}", out.systems[1].plans);
    // The vanilla models classify the held-out frames well.
    let sq = &out.systems[0];
    assert!(sq.accuracy() > 0.8, "{}", sq.accuracy());

    for &system in &systems {
        let run = |s| simulate_offline(s, &sched, &out.budget, &apps, &offline);
        let a = run(system);
        let b = run(system);
        assert_eq!(a, b);
        assert!(a.processed > 0 && a.processed <= a.offered && a.correct <= a.processed);
    }

    // The capacity plot of the run renders (SVG and PNG).
    let fig = super::plots::CapacityPlot {
        run: &out,
        nestdnn_label: &systems[1].label(),
    };
    let (svg, png) = crate::plot::render(&fig).unwrap();
    assert!(
        svg.contains("min_total_cost a=0.1: descendant per app"),
        "{svg}"
    );
    assert!(image::load_from_memory(&png).is_ok());
}

/// A memory budget that holds one vanilla model but not two: the status quo evicts the least
/// recently used model on every other app's frame and reloads it on its own next frame,
/// paying the load each time; NestDNN keeps to the budget with its planner instead.
#[test]
fn the_status_quo_evicts_the_least_recently_used_model_and_pays_for_reloads() {
    let _alone = REAL_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let (apps, offline) = apps();
    // Apps 0 and 1: a budget that holds the larger of their models, not both.
    let (a, b) = (
        offline[0].status_quo[0].plan_bytes,
        offline[1].status_quo[0].plan_bytes,
    );
    assert!(a > 0 && b > 0);
    let (largest, smallest) = (a.max(b), a.min(b));
    let sched = RunSchedule {
        index: 0,
        seed: 0,
        run_s: 2.0,
        compute_cores: 1.0,
        memory_bytes: largest + smallest / 2,
        initial: vec![0, 1],
        events: vec![],
        background: vec![],
    };
    let out = run_real(
        &apps,
        &sched,
        &[System::StatusQuo { level: 0 }],
        &mut spawn_busy_loop,
    )
    .unwrap();
    let sq = &out.systems[0];
    assert!(sq.processed > 0 && sq.errors == 0, "{sq:?}");
    // Two apps alternate frames at 30 Hz for 2 s: most frames find their model evicted.
    assert!(sq.loads.evictions >= 10, "{:?}", sq.loads);
    assert!(sq.loads.reloads >= 10, "{:?}", sq.loads);
    assert_eq!(sq.loads.loads, sq.loads.reloads + 2, "{:?}", sq.loads);
    assert!(sq.loads.reload_cpu_s > 0.0, "{:?}", sq.loads);
    assert!(sq.loads.reload_cpu_s <= sq.loads.load_cpu_s);
    // Most frames paid a load first: the runtime's CPU per frame holds the loads, the
    // tenants' inference-only measure (what the simulator charges besides the loads) not.
    for app in 0..2 {
        let whole = sq.cpu_per_frame_s[app][0].unwrap();
        let inference = sq.inference_cpu_per_frame_s[app][0].unwrap();
        assert!(
            inference > 0.0 && inference < 0.5 * whole,
            "app {app}: {inference} s inference, {whole} s a frame"
        );
    }
    // Only one model at a time is resident, so the budget holds.
    assert!(sq.memory_peak_bytes <= sched.memory_bytes, "{sq:?}");

    // The simulation replays the evictions and pays the loads.
    assert!(offline[0].status_quo[0].load_cpu_s > 0.0);
    let sim = simulate_offline(
        System::StatusQuo { level: 0 },
        &sched,
        &out.budget,
        &apps,
        &offline,
    );
    eprintln!(
        "real: {} processed, {} reloads; sim: {} processed, {} reloads",
        sq.processed, sq.loads.reloads, sim.processed, sim.reloads
    );
    assert_eq!(sim.loads, sim.reloads + 2, "{sim:?}");
    // A gross-error bound: the real count depends on how the two workers' loads interleave
    // (59 in both here, one reload per camera tick); the simulation's would be twice that if
    // it evicted at the start of a load instead of its end.
    let (real, simulated) = (sq.loads.reloads as f64, sim.reloads as f64);
    assert!(
        simulated >= 0.5 * real && simulated <= 1.5 * real,
        "real {real} reloads, simulated {simulated}"
    );
}
