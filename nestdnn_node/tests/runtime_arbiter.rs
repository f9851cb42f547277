//! Task runtime with the synthetic spinning model: mailbox semantics, share enforcement,
//! pacing, plans applied, idle/disable, errors, shutdown. Timing bounds are generous (the
//! machine may be busy); the share bound is an upper bound on CPU time, which the arbiter
//! guarantees however busy the machine is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nestdnn::model::SwitchPolicy;
use nestdnn::runtime::{
    Completed, PushOutcome, Runtime, RuntimeOptions, SpinError, SpinModel, TaskSetup,
};
use nestdnn::scheduler::{plan_all, Budget, Ladder, Rung, Settings, TaskSpec, TaskStatus};

type Done = Completed<u64, SpinError>;

fn start(
    costs_ms: &[&[f64]],
    fps: f64,
    opts: RuntimeOptions,
) -> (Runtime<SpinModel>, Receiver<Done>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let tasks = costs_ms
        .iter()
        .enumerate()
        .map(|(i, c)| TaskSetup {
            name: format!("t{i}"),
            model: Arc::new(SpinModel::new(
                c.iter()
                    .map(|ms| Duration::from_secs_f64(ms / 1e3))
                    .collect(),
                0,
            )),
            target_fps: fps,
        })
        .collect();
    let rt = Runtime::start(tasks, opts, move |d| {
        let _ = tx.send(d);
    })
    .unwrap();
    (rt, rx)
}

#[test]
fn latest_frame_wins_and_replaced_frames_are_dropped() {
    let (rt, rx) = start(&[&[1.0]], 1000.0, RuntimeOptions::default());
    assert_eq!(rt.push(0, 1), PushOutcome::Started);
    assert_eq!(rt.push(0, 2), PushOutcome::Replaced);
    assert_eq!(rt.push(0, 3), PushOutcome::Replaced);
    // Share 0: nothing runs.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    rt.set_share(0, 0.5).unwrap();
    let d = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(d.output.unwrap(), 3);
    assert_eq!(d.descendant, Some(0));
    assert!(d.queued >= Duration::from_millis(90), "{:?}", d.queued);
    assert!(d.cpu >= Duration::from_micros(900), "{:?}", d.cpu);
    assert_eq!(rt.push(0, 4), PushOutcome::Queued);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .output
            .unwrap(),
        4
    );
    let c = rt.shutdown(false);
    assert_eq!((c[0].received, c[0].processed, c[0].dropped), (4, 2, 2));
    assert_eq!(c[0].latency.count, 2);
    assert!(c[0].latency.p90_ms >= c[0].latency.p50_ms);
    assert!(rt_is_gone(&rx));
}

fn rt_is_gone(rx: &Receiver<Done>) -> bool {
    // All senders (the sink inside the workers) are dropped once the runtime is gone.
    matches!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    )
}

/// Two flooded tasks: each uses at most its share of CPU, and gets a fair part of it.
#[test]
fn shares_bound_cpu_of_flooded_tasks() {
    let (rt, _rx) = start(&[&[4.0], &[4.0]], 10_000.0, RuntimeOptions::default());
    let shares = [0.3, 0.1];
    for (i, s) in shares.iter().enumerate() {
        rt.set_share(i, *s).unwrap();
    }
    let t0 = Instant::now();
    let run_for = Duration::from_secs(2);
    let mut n = 0u64;
    while t0.elapsed() < run_for {
        rt.push(0, n);
        rt.push(1, n);
        n += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let c = rt.shutdown(false);
    for (i, s) in shares.iter().enumerate() {
        let cpu = c[i].cpu_time_s;
        // Upper bound: share x T + the burst (0.25 s of share) + one frame, +10% slack.
        let hi = (s * elapsed + s * 0.25 + 0.004) * 1.1;
        assert!(cpu <= hi, "task {i}: {cpu:.3} s CPU > {hi:.3} s allowed");
        assert!(
            cpu >= 0.4 * s * elapsed,
            "task {i}: {cpu:.3} s CPU, far below its share {s}"
        );
        assert!(c[i].dropped > 0, "flooded tasks drop frames");
        assert_eq!(c[i].received, c[i].processed + c[i].dropped);
    }
}

#[test]
fn pacing_holds_the_target_frame_rate() {
    let (rt, _rx) = start(&[&[1.0]], 20.0, RuntimeOptions::default());
    rt.set_share(0, 1.0).unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        rt.push(0, n);
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let c = rt.shutdown(false);
    let fps = c[0].processed as f64 / elapsed;
    assert!((16.0..=22.5).contains(&fps), "{fps:.1} fps, target 20");
}

#[test]
fn without_enforcement_tasks_run_freely() {
    let opts = RuntimeOptions {
        enforce_shares: false,
        pace_to_target: false,
        ..RuntimeOptions::default()
    };
    let (rt, rx) = start(&[&[0.5]], 10.0, opts);
    for i in 0..20 {
        rt.push(0, i);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    let c = rt.shutdown(false);
    assert_eq!(c[0].processed, 20);
    assert_eq!(c[0].share, 0.0);
}

fn spec(name: &str, lat_ms: &[f64]) -> TaskSpec {
    let rungs = lat_ms
        .iter()
        .enumerate()
        .map(|(i, l)| Rung {
            name: format!("d{i}"),
            accuracy: 0.8 + 0.05 * i as f64,
            latency_s: l / 1e3,
            build_s: 0.0,
            plan_bytes: 1 << 20,
        })
        .collect();
    TaskSpec {
        name: name.into(),
        priority: 1.0,
        target_fps: 50.0,
        enabled: true,
        ladder: Arc::new(Ladder::new(name, rungs, None).unwrap()),
    }
}

#[test]
fn plans_set_shares_descendants_and_switches_are_counted() {
    let (rt, rx) = start(&[&[1.0, 4.0], &[1.0, 4.0]], 50.0, RuntimeOptions::default());
    let settings = Settings {
        switch_policy: SwitchPolicy::Resident,
        ..Settings::default()
    };
    let specs = vec![spec("t0", &[1.0, 4.0]), spec("t1", &[1.0, 4.0])];
    // Plenty of budget: both on d1 (4 ms x 50 fps = 0.2 cores).
    let big = plan_all(settings.clone(), specs.clone(), Budget::new(2.0, 1 << 30)).unwrap();
    assert!(big.tasks.iter().all(|t| t.descendant_index == 1));
    rt.apply(&big).unwrap();
    let c = rt.counters(0).unwrap();
    assert!((c.share - big.tasks[0].share).abs() < 1e-12);
    rt.push(0, 1);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().descendant,
        Some(1)
    );
    // Tight budget: both on d0.
    let small = plan_all(settings, specs, Budget::new(0.12, 1 << 30)).unwrap();
    assert!(
        small.tasks.iter().all(|t| t.descendant_index == 0),
        "{}",
        small.to_table()
    );
    rt.apply(&small).unwrap();
    rt.push(0, 2);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().descendant,
        Some(0)
    );
    let c = rt.counters(0).unwrap();
    assert_eq!(c.switches, 1);
    assert_eq!(c.descendant, Some(0));
    // A plan naming an unknown task is an error, the rest still applies.
    let mut odd = small.clone();
    odd.tasks[1].task = "nope".into();
    odd.tasks[0].share = 0.05;
    assert!(rt.apply(&odd).is_err());
    assert!((rt.counters(0).unwrap().share - 0.05).abs() < 1e-12);
    assert!(rt.set_share(0, f64::NAN).is_err());
    assert!(rt.set_share(7, 1.0).is_err());
    assert!(rt.request_descendant(0, 9).is_err());
}

#[test]
fn disabled_tasks_ignore_frames_and_idle_is_detected() {
    let (rt, rx) = start(&[&[1.0]], 1000.0, RuntimeOptions::default());
    rt.set_share(0, 1.0).unwrap();
    assert_eq!(rt.push(0, 1), PushOutcome::Started);
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // Not idle yet.
    assert!(rt
        .poll_idle(Instant::now(), Duration::from_secs(10))
        .is_empty());
    // Idle after the timeout, reported once.
    let later = Instant::now() + Duration::from_secs(20);
    assert_eq!(rt.poll_idle(later, Duration::from_secs(10)), vec![0]);
    assert!(rt.poll_idle(later, Duration::from_secs(10)).is_empty());
    assert_eq!(rt.push(0, 2), PushOutcome::Started);
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // Disabled: frames ignored; a plan with the task disabled does the same.
    rt.set_enabled(0, false).unwrap();
    assert_eq!(rt.push(0, 3), PushOutcome::Ignored);
    let mut plan = plan_all(
        Settings::default(),
        vec![spec("t0", &[1.0])],
        Budget::new(1.0, 1 << 30),
    )
    .unwrap();
    plan.tasks[0].status = TaskStatus::Disabled;
    rt.apply(&plan).unwrap();
    assert_eq!(rt.push(0, 4), PushOutcome::Ignored);
    let c = rt.shutdown(false);
    assert_eq!((c[0].received, c[0].processed, c[0].ignored), (2, 2, 2));
    assert!(!c[0].enabled);
}

#[test]
fn model_errors_are_counted_and_reported() {
    let (rt, rx) = start(&[&[0.2]], 1000.0, RuntimeOptions::default());
    rt.set_share(0, 1.0).unwrap();
    rt.push(0, u64::MAX);
    let d = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(d.output, Err(SpinError::Requested(_))));
    assert_eq!(d.descendant, None);
    rt.push(0, 5);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .output
            .unwrap(),
        5
    );
    let c = rt.shutdown(false);
    assert_eq!((c[0].processed, c[0].errors), (2, 1));
}

#[test]
fn shutdown_finishes_or_drops_the_waiting_frame() {
    for finish in [true, false] {
        let (rt, rx) = start(&[&[0.2]], 1000.0, RuntimeOptions::default());
        rt.push(0, 9); // share 0: waits
        let c = rt.shutdown(finish);
        let got: Vec<u64> = rx.try_iter().filter_map(|d| d.output.ok()).collect();
        if finish {
            assert_eq!(got, [9]);
            assert_eq!((c[0].processed, c[0].dropped), (1, 0));
        } else {
            assert!(got.is_empty());
            assert_eq!((c[0].processed, c[0].dropped), (0, 1));
        }
    }
}

#[test]
fn cpu_per_frame_is_the_mean_of_steady_frames() {
    let (rt, rx) = start(&[&[2.0]], 1000.0, RuntimeOptions::default());
    rt.set_share(0, 1.0).unwrap();
    // Nothing served yet; after one frame still nothing (it pays the warm-up).
    assert_eq!(rt.cpu_per_frame(0), Vec::<Option<f64>>::new());
    for i in 0..6 {
        rt.push(0, i);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let est = rt.cpu_per_frame(0);
        if i == 0 {
            assert!(est.iter().all(|e| e.is_none()), "{est:?}");
        } else {
            // The spin model burns 2 ms of thread CPU time a frame.
            let ms = est[0].unwrap() * 1e3;
            assert!((1.9..3.0).contains(&ms), "{ms} ms");
        }
    }
    assert_eq!(rt.cpu_per_frame(7), Vec::<Option<f64>>::new());
    rt.shutdown(false);
}
