//! The same runs in virtual time: the planner and the status quo drive
//! [`nestdnn::sim::Simulator`] (the runtime's rules, deterministic) over the same frame arrivals,
//! app schedule and monitor readings as a real run; accuracy comes from the offline
//! correctness matrix (each descendant's real prediction on each held-out frame). Used to
//! validate the simulation against the real runs (the error is reported).

use std::time::{Duration, Instant};

use serde::Serialize;

use nestdnn::scheduler::{Budget, Ladder};
use nestdnn::sim::{Assignment, ModelMemory, SimEvent, SimOptions, Simulator};

use super::data::{Offline, OfflineModel};
use super::harness::{BudgetSample, System};
use super::tenant::clamp_level;
use super::tenant::water_fill;
use super::workload::{
    planner, RunSchedule, APPS, CALIBRATION_PERIOD_S, CAMERA_HZ, N_APPS, TARGET_FPS,
};
use super::BenchError;

/// One system's figures in one simulated run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimRun {
    /// Frames offered to running apps.
    pub offered: u64,
    /// Frames processed.
    pub processed: u64,
    /// Of those, classified right (offline correctness matrix).
    pub correct: u64,
    /// Seconds simulated.
    pub run_s: f64,
    /// Model loads (the status quo's at app starts and after evictions; NestDNN's at app
    /// starts).
    pub loads: u64,
    /// Of those, loads after an eviction.
    pub reloads: u64,
}

impl SimRun {
    /// Processed frames per second.
    pub fn fps(&self) -> f64 {
        self.processed as f64 / self.run_s.max(1e-9)
    }

    /// Top-1 over processed frames.
    pub fn accuracy(&self) -> f64 {
        if self.processed > 0 {
            self.correct as f64 / self.processed as f64
        } else {
            f64::NAN
        }
    }
}

/// The status quo's assignment: its one model per running app (descendant 0 of the
/// simulator's one-model ladders) with the OS's work-conserving shares by demand at the camera
/// rate.
fn work_conserving(
    running: &[bool; N_APPS],
    latency_s: &[Vec<f64>],
    device: f64,
) -> Vec<Assignment> {
    let demand: Vec<Option<f64>> = running
        .iter()
        .enumerate()
        .map(|(i, &r)| r.then(|| latency_s[i].first().copied().unwrap_or(0.0) * CAMERA_HZ))
        .collect();
    water_fill(&demand, device)
        .into_iter()
        .zip(running)
        .map(|(share, &r)| {
            if r {
                Assignment {
                    running: true,
                    descendant: 0,
                    share,
                }
            } else {
                Assignment::PAUSED
            }
        })
        .collect()
}

/// What a simulated run needs besides the system and the schedule.
#[derive(Debug, Clone, Copy)]
pub struct SimInputs<'a> {
    /// The monitor readings of the real run.
    pub budget: &'a [BudgetSample],
    /// `latency_s[app][d]`: CPU-seconds one frame of descendant `d` took (the simulator's
    /// latency at one core).
    pub latency_s: &'a [Vec<f64>],
    /// `status_quo_latency_s[app][level]`: the same for the status quo's models.
    pub status_quo_latency_s: &'a [Vec<f64>],
    /// The ladders NestDNN's planner starts from (profiled, as the real run's planners).
    pub start_ladders: &'a [Ladder],
    /// The ladders it learns at each calibration (every [`CALIBRATION_PERIOD_S`], as the
    /// real run's planners learn from their runtimes): the start ladders calibrated with
    /// `latency_s`.
    pub ladders: &'a [Ladder],
    /// `offline[app].correct[d][frame]` (status quo: `offline[app].status_quo[level]
    /// .correct[frame]`): accuracy; and the models' load costs.
    pub offline: &'a [Offline],
}

/// Simulates `system` on `schedule` with `inputs` (see [`SimInputs`]). NestDNN's planner
/// starts from the start ladders and learns the calibrated ones every
/// [`CALIBRATION_PERIOD_S`], as in the real run. Model loads are simulated
/// ([`SimOptions::memory`]): the status quo's model is loaded on its app's first frame after
/// a start and after an eviction (LRU over the schedule's memory budget), each load costing
/// the offline pass's `status_quo[level].load_cpu_s`; NestDNN's multi-capacity model is
/// loaded on its app's first frame after a start, costing the offline pass's
/// `load_cpu_s[descendant]` (no eviction: its planner keeps the slots within the budget). Its
/// switch builds are not simulated (they run on a background thread, outside the app's
/// share, and the previous descendant serves meanwhile).
///
/// # Errors
/// [`BenchError::Scheduler`] when the planner refuses an input.
pub fn simulate_run(
    system: System,
    schedule: &RunSchedule,
    inputs: &SimInputs<'_>,
) -> Result<SimRun, BenchError> {
    let SimInputs {
        budget,
        latency_s,
        status_quo_latency_s,
        start_ladders,
        ladders,
        offline,
    } = *inputs;
    // The status quo runs one model per app: a one-rung simulator ladder.
    let (latency_s, sq_level) = match system {
        System::StatusQuo { level } => (
            status_quo_latency_s
                .iter()
                .map(|l| {
                    // An app with fewer status-quo models runs its smallest (as the tenant).
                    vec![l
                        .get(clamp_level(level, l.len()))
                        .copied()
                        .unwrap_or(f64::NAN)]
                })
                .collect::<Vec<_>>(),
            Some(level),
        ),
        System::Nestdnn { .. } => (latency_s.to_vec(), None),
    };
    let memory = match sq_level {
        Some(level) => {
            let models: Vec<Option<&OfflineModel>> = offline
                .iter()
                .map(|o| o.status_quo.get(clamp_level(level, o.status_quo.len())))
                .collect();
            ModelMemory {
                bytes: models
                    .iter()
                    .map(|m| m.map_or(0, |m| m.plan_bytes))
                    .collect(),
                load_s: models
                    .iter()
                    .map(|m| vec![m.map_or(0.0, |m| m.load_cpu_s)])
                    .collect(),
                budget_bytes: schedule.memory_bytes,
            }
        }
        None => ModelMemory {
            bytes: Vec::new(),
            load_s: offline.iter().map(|o| o.load_cpu_s.clone()).collect(),
            budget_bytes: u64::MAX,
        },
    };
    let mut sim = Simulator::with_options(
        latency_s.clone(),
        SimOptions {
            target_fps: vec![TARGET_FPS; APPS.len()],
            memory: Some(memory),
            ..SimOptions::default()
        },
    );
    let epoch = Instant::now();
    let at = |t: f64| epoch + Duration::from_secs_f64(t.max(0.0));
    let mut planner = match system {
        System::StatusQuo { .. } => None,
        System::Nestdnn { objective, alpha } => Some(planner(
            objective,
            alpha,
            Budget::new(schedule.compute_cores, schedule.memory_bytes),
            start_ladders.iter().zip(APPS).map(|(l, name)| (name, l)),
            epoch,
        )?),
    };
    let mut out = SimRun {
        offered: 0,
        processed: 0,
        correct: 0,
        run_s: schedule.run_s,
        loads: 0,
        reloads: 0,
    };
    let count = |evs: Vec<SimEvent>, out: &mut SimRun| {
        for e in evs {
            if let SimEvent::Processed {
                task,
                frame,
                descendant,
                ..
            } = e
            {
                out.processed += 1;
                let ok = offline
                    .get(task)
                    .and_then(|o| match sq_level {
                        Some(l) => o
                            .status_quo
                            .get(clamp_level(l, o.status_quo.len()))
                            .map(|m| &m.correct),
                        None => o.correct.get(descendant),
                    })
                    .and_then(|c| c.get(frame as usize))
                    .copied()
                    .unwrap_or(false);
                out.correct += u64::from(ok);
            }
        }
    };
    let mut running = [false; N_APPS];
    let mut device = schedule.compute_cores;
    let mut next_budget = 0usize;
    let period = 1.0 / CAMERA_HZ;
    let mut tick = 0usize;
    let mut next_calibration = CALIBRATION_PERIOD_S;
    loop {
        let t = tick as f64 * period;
        if t >= schedule.run_s {
            break;
        }
        let mut plan: Option<Vec<Assignment>> = None;
        let want = schedule.running_at(t);
        if tick == 0 || want != running {
            for i in 0..APPS.len() {
                if want[i] == running[i] && tick > 0 {
                    continue;
                }
                if let Some(p) = planner.as_mut() {
                    let r = if want[i] {
                        p.task_started(APPS[i], at(t))?
                    } else {
                        p.task_stopped(APPS[i], at(t))?
                    };
                    if let Some(r) = r {
                        plan = Some(Assignment::from_plan(&r));
                    }
                }
            }
            for (i, (&was, &now)) in running.iter().zip(&want).enumerate() {
                if was && !now {
                    // The app stopped: its model is unloaded (both systems drop it).
                    let evs = sim.unload(t, i);
                    count(evs, &mut out);
                }
            }
            running = want;
            if sq_level.is_some() {
                plan = Some(work_conserving(&running, &latency_s, device));
            }
        }
        while budget.get(next_budget).is_some_and(|b| b.t_s <= t) {
            device = budget[next_budget].device_cores;
            next_budget += 1;
            match (planner.as_mut(), system) {
                (Some(p), _) => {
                    let b = Budget::new(device, schedule.memory_bytes);
                    if let Some(r) = p.update_budget(&b, at(t))? {
                        plan = Some(Assignment::from_plan(&r));
                    }
                }
                (None, System::StatusQuo { .. }) => {
                    plan = Some(work_conserving(&running, &latency_s, device));
                }
                (None, _) => {}
            }
        }
        if t >= next_calibration {
            next_calibration += CALIBRATION_PERIOD_S;
            if let Some(p) = planner.as_mut() {
                for (name, l) in APPS.iter().zip(ladders) {
                    if let Some(r) = p.update_profile(name, l.clone(), at(t))? {
                        plan = Some(Assignment::from_plan(&r));
                    }
                }
            }
        }
        if let Some(p) = planner.as_mut() {
            if p.next_review().is_some_and(|r| r <= at(t)) {
                if let Some(r) = p.review(at(t)) {
                    plan = Some(Assignment::from_plan(&r));
                }
            }
        }
        if let Some(a) = plan {
            let evs = sim.set_plan(t, &a);
            count(evs, &mut out);
        }
        for (i, &r) in running.iter().enumerate() {
            let n = offline
                .get(i)
                .map_or(0, |o| o.correct.first().map_or(0, Vec::len));
            if !r || n == 0 {
                continue;
            }
            let f = (tick + 97 * i) % n;
            out.offered += 1;
            let evs = sim.frame(t, i, f as u64);
            count(evs, &mut out);
        }
        tick += 1;
    }
    let evs = sim.advance(schedule.run_s);
    count(evs, &mut out);
    for i in 0..sim.len() {
        if let Some(c) = sim.counters(i) {
            out.loads += c.loads;
            out.reloads += c.reloads;
        }
    }
    Ok(out)
}

/// What NestDNN's planners lose before their first calibration: every NestDNN system-run
/// simulated twice, as run (planners start from the profiled ladders and learn the in-run
/// costs every [`CALIBRATION_PERIOD_S`]) and with the in-run costs known from the start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationLag {
    /// System-runs simulated twice.
    pub system_runs: usize,
    /// Mean over them of (frames/s with the costs known) / (frames/s as run) - 1.
    pub fps_gain_mean: f64,
    /// Mean over them of the top-1 change, points (known - as run).
    pub accuracy_change_pt_mean: f64,
    /// The calibration period of the runs, seconds.
    pub calibration_period_s: f64,
}

/// Summarises `(as run, costs known from the start)` simulations of the same system-runs;
/// runs with no frames processed in either are left out.
pub fn calibration_lag(pairs: &[(SimRun, SimRun)]) -> CalibrationLag {
    let used: Vec<_> = pairs
        .iter()
        .filter(|(a, b)| a.processed > 0 && b.processed > 0)
        .collect();
    let n = used.len();
    let mean = |f: &dyn Fn(&SimRun, &SimRun) -> f64| {
        if n == 0 {
            f64::NAN
        } else {
            used.iter().map(|(a, b)| f(a, b)).sum::<f64>() / n as f64
        }
    };
    CalibrationLag {
        system_runs: n,
        fps_gain_mean: mean(&|a, b| b.fps() / a.fps() - 1.0),
        accuracy_change_pt_mean: mean(&|a, b| (b.accuracy() - a.accuracy()) * 100.0),
        calibration_period_s: CALIBRATION_PERIOD_S,
    }
}

/// Simulation against real runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    /// System-runs compared.
    pub pairs: usize,
    /// Mean |sim fps / real fps - 1|.
    pub fps_mean_abs_rel_error: f64,
    /// Largest.
    pub fps_max_abs_rel_error: f64,
    /// Mean |sim accuracy - real accuracy|, points.
    pub accuracy_mean_abs_error_pt: f64,
    /// Largest.
    pub accuracy_max_abs_error_pt: f64,
    /// Per pair: run index, system label, real and simulated fps and accuracy.
    pub per_pair: Vec<(usize, String, f64, f64, f64, f64)>,
}

/// Summarises `(run, label, real fps, sim fps, real accuracy, sim accuracy)` tuples; pairs
/// with no real frames are left out.
pub fn validation(pairs: Vec<(usize, String, f64, f64, f64, f64)>) -> Validation {
    let used: Vec<_> = pairs
        .into_iter()
        .filter(|p| p.2 > 0.0 && p.4.is_finite() && p.5.is_finite())
        .collect();
    let fe: Vec<f64> = used.iter().map(|p| (p.3 / p.2 - 1.0).abs()).collect();
    let ae: Vec<f64> = used.iter().map(|p| (p.5 - p.4).abs() * 100.0).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    Validation {
        pairs: used.len(),
        fps_mean_abs_rel_error: mean(&fe),
        fps_max_abs_rel_error: max(&fe),
        accuracy_mean_abs_error_pt: mean(&ae),
        accuracy_max_abs_error_pt: max(&ae),
        per_pair: used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::data::OfflineModel;
    use crate::bench::workload::{schedule, QUICK};
    use nestdnn::scheduler::Rung;

    fn ladder(name: &str) -> Ladder {
        let rungs = (0..7)
            .map(|d| Rung {
                name: format!("d{d}"),
                accuracy: 0.8 + 0.02 * d as f64,
                latency_s: 0.0002 * (d + 1) as f64,
                build_s: 0.005,
                plan_bytes: 50_000 * (d as u64 + 1),
            })
            .collect();
        Ladder::new(name, rungs, Some(400_000)).unwrap()
    }

    fn offline(app: &str) -> Offline {
        // Descendant d is right on frames f with f % 7 < d + 1 (accuracy (d + 1) / 7).
        Offline {
            app: app.to_string(),
            correct: (0..7)
                .map(|d| (0..70).map(|f| f % 7 < d + 1).collect())
                .collect(),
            accuracy: vec![],
            cpu_s: vec![],
            plan_bytes: vec![],
            load_cpu_s: vec![],
            // Status-quo level 0 is right on every frame, level 1 on 1 frame in 7.
            status_quo: (0..2)
                .map(|l| OfflineModel {
                    correct: (0..70).map(|f| l == 0 || f % 7 == 0).collect(),
                    accuracy: 0.0,
                    cpu_s: 0.0,
                    plan_bytes: 0,
                    load_cpu_s: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_simulation_is_deterministic_and_the_status_quo_follows_its_level() {
        let sched = schedule(&QUICK, 0).unwrap();
        let ladders: Vec<Ladder> = APPS.iter().map(|a| ladder(a)).collect();
        let lat: Vec<Vec<f64>> = ladders
            .iter()
            .map(|l| l.rungs().iter().map(|r| r.latency_s).collect())
            .collect();
        let off: Vec<Offline> = APPS.iter().map(|a| offline(a)).collect();
        let budget = vec![BudgetSample {
            t_s: 0.0,
            available_cores: 2.0,
            online_cores: 2.0,
            load_cores: 0.0,
            device_cores: 10.0,
            script_background_cores: 0.0,
        }];
        let sq_lat: Vec<Vec<f64>> = APPS.iter().map(|_| vec![0.0014, 0.0002]).collect();
        let inputs = SimInputs {
            budget: &budget,
            latency_s: &lat,
            status_quo_latency_s: &sq_lat,
            start_ladders: &ladders,
            ladders: &ladders,
            offline: &off,
        };
        let top = System::StatusQuo { level: 0 };
        let a = simulate_run(top, &sched, &inputs).unwrap();
        let b = simulate_run(top, &sched, &inputs).unwrap();
        assert_eq!(a, b);
        // Ample cores: every offered frame runs (paced to 30 fps = the camera), level 0 is
        // right on every frame.
        assert!(a.processed as f64 >= 0.98 * a.offered as f64, "{a:?}");
        assert_eq!(a.correct, a.processed);
        let low = simulate_run(System::StatusQuo { level: 1 }, &sched, &inputs).unwrap();
        assert!((low.accuracy() - 1.0 / 7.0).abs() < 0.02, "{low:?}");
        let nd = System::Nestdnn {
            objective: nestdnn::scheduler::Objective::MinTotalCost,
            alpha: 0.1,
        };
        let n = simulate_run(nd, &sched, &inputs).unwrap();
        assert!(n.accuracy() > 0.95 && n.processed > 0, "{n:?}");
    }

    #[test]
    fn calibration_lag_averages_over_runs_with_frames() {
        let run = |processed, correct| SimRun {
            offered: 100,
            processed,
            correct,
            run_s: 10.0,
            loads: 0,
            reloads: 0,
        };
        let lag = calibration_lag(&[
            (run(40, 20), run(50, 20)),
            (run(50, 40), run(60, 45)),
            (run(0, 0), run(10, 10)),
        ]);
        assert_eq!(lag.system_runs, 2);
        assert!(
            (lag.fps_gain_mean - (0.25 + 0.2) / 2.0).abs() < 1e-12,
            "{lag:?}"
        );
        assert!((lag.accuracy_change_pt_mean - (-10.0 - 5.0) / 2.0).abs() < 1e-9);
        assert!(calibration_lag(&[]).fps_gain_mean.is_nan());
    }

    #[test]
    fn validation_errors() {
        let v = validation(vec![
            (0, "a".into(), 10.0, 11.0, 0.9, 0.91),
            (0, "b".into(), 20.0, 19.0, 0.8, 0.8),
            (1, "c".into(), 0.0, 5.0, f64::NAN, 0.5),
        ]);
        assert_eq!(v.pairs, 2);
        assert!((v.fps_mean_abs_rel_error - 0.075).abs() < 1e-9);
        assert!((v.fps_max_abs_rel_error - 0.1).abs() < 1e-9);
        assert!((v.accuracy_max_abs_error_pt - 1.0).abs() < 1e-9);
    }
}
