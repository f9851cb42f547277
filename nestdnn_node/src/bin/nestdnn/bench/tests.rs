//! The multi-tenant benchmark's harness on the real models and the bundled recording: a
//! 3-second schedule with an app starting, one stopping and a background load spell, the
//! status quo and NestDNN side by side, then the same run simulated. Only accounting and
//! structure are checked (no rate or timing bound), so a loaded machine cannot fail it.

use std::process::{Command, Stdio};
use std::sync::Arc;

use super::data::{load_frames, offline_pass};
use super::harness::{run_real, App, System};
use super::simulate::simulate_run;
use super::workload::{AppEvent, LoadSpell, RunSchedule, APPS};
use nestdnn::model::{models_dir, MultiCapacityModel};
use nestdnn::scheduler::{Ladder, Objective, Rung};

#[test]
fn a_short_real_run_accounts_for_every_frame_and_the_simulation_replays_it() {
    let mdir = models_dir();
    let models: Vec<Arc<MultiCapacityModel>> = APPS
        .iter()
        .map(|a| Arc::new(MultiCapacityModel::load(&mdir.join(a)).unwrap()))
        .collect();
    let recordings = mdir.join("../test/bags/recordings.json");
    let frames = load_frames(&recordings, "recording", &models).unwrap();
    let mut apps = Vec::new();
    let mut offline = Vec::new();
    for (m, f) in models.iter().zip(frames) {
        assert_eq!(f.len(), f.labels.len());
        assert!(f.len() >= 100, "{}: {} frames", f.app, f.len());
        let off = offline_pass(m, &f).unwrap();
        // The held-out frames are classified about as well as the manifest says.
        let top = m.manifest().descendants.last().unwrap().accuracy;
        assert!(
            (off.accuracy[6] - top).abs() < 0.05,
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
        });
        offline.push(off);
    }
    let sched = RunSchedule {
        index: 0,
        seed: 0,
        run_s: 3.0,
        compute_cores: 0.05,
        memory_bytes: 64 << 20,
        initial: vec![0, 1, 2],
        events: vec![
            AppEvent {
                t_s: 1.0,
                app: 3,
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
        System::StatusQuo { level: 6 },
        System::Nestdnn {
            objective: Objective::MinTotalCost,
            alpha: 0.1,
        },
    ];
    let mut spawn = |_cores: f64| {
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
    };
    let out = run_real(&apps, &sched, &systems, &mut spawn).unwrap();
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
        // App 0 ran 2 s, apps 1 and 2 the whole 3 s, app 3 from 1 s on.
        assert!(
            s.apps[0].offered < s.apps[1].offered,
            "{label}: {:?}",
            s.apps
        );
        assert!(s.apps[3].offered > 0 && s.apps[3].offered < s.apps[1].offered);
        assert!(s.memory_peak_bytes > 0);
        assert!(s.cpu_s > 0.0);
        assert_eq!(s.timeline.len(), out.budget.len());
        assert!(s.latency_p50_ms <= s.latency_p99_ms);
    }
    assert_eq!(out.systems[0].switches, 0, "the status quo never switches");
    assert_eq!(out.systems[0].plans, 0);
    // Initial plan, three starts, one start and one stop at least.
    assert!(out.systems[1].plans >= 5, "{}", out.systems[1].plans);
    // The largest descendants classify the held-out frames well.
    let sq = &out.systems[0];
    assert!(sq.accuracy() > 0.8, "{}", sq.accuracy());

    let lat: Vec<Vec<f64>> = offline.iter().map(|o| o.cpu_s.clone()).collect();
    let ladders: Vec<Ladder> = apps.iter().map(|a| a.ladder.clone()).collect();
    for &system in &systems {
        let a = simulate_run(system, &sched, &out.budget, &lat, &ladders, &offline).unwrap();
        let b = simulate_run(system, &sched, &out.budget, &lat, &ladders, &offline).unwrap();
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
