//! Real runs: every system of the sweep executes one [`RunSchedule`] in turn, alone, on the
//! real task runtime and the real models, under the budgets derived from what the resource
//! monitor's `/proc` core measures of the background load (measured in the first system's
//! run, replayed for the others).

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use nestdnn::model::{ModelError, MultiCapacityModel};
use nestdnn::monitor::{
    budget_from_reading, parse_pid_stat_ticks, Headroom, Monitor, MonitorSettings,
};
use nestdnn::runtime::{Completed, Runtime, RuntimeOptions, TaskSetup};
use nestdnn::scheduler::{Budget, Ladder, Objective, Plan, Planner, TaskStatus};

use super::data::AppFrames;
use super::tenant::{status_quo_model, water_fill, Loads, Residency, Tenant};
use super::workload::{
    planner, RunSchedule, Setting, APPS, CALIBRATION_PERIOD_S, CAMERA_HZ, MONITOR_PERIOD_S, N_APPS,
    TARGET_FPS,
};
use super::BenchError;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum System {
    /// The resource-agnostic status quo: every app runs one fixed model chosen up front
    /// (level 0: its vanilla model), loaded when the app starts, evicted least recently used
    /// first when the loaded models exceed the memory budget; the OS shares the device's
    /// cores work-conservingly ([`super::tenant`]).
    StatusQuo {
        /// Index into the app's status-quo models (0 = the vanilla model, the only one the
        /// committed apps ship).
        level: usize,
    },
    /// The NestDNN planner.
    Nestdnn {
        /// `min_total_cost` or `min_max_cost`.
        objective: Objective,
        /// The cost model's alpha.
        alpha: f64,
    },
}

impl System {
    /// `status_quo`, `min_total_cost` or `min_max_cost`.
    pub fn family(&self) -> &'static str {
        match self {
            System::StatusQuo { .. } => "status_quo",
            System::Nestdnn { objective, .. } => objective.as_str(),
        }
    }

    /// The knob's value (level or alpha).
    pub fn knob(&self) -> f64 {
        match self {
            System::StatusQuo { level } => *level as f64,
            System::Nestdnn { alpha, .. } => *alpha,
        }
    }

    /// A short label, e.g. `status_quo L6` or `min_total_cost a=0.1`.
    pub fn label(&self) -> String {
        match self {
            System::StatusQuo { level: 0 } => "status_quo vanilla".to_string(),
            System::StatusQuo { level } => format!("status_quo L{level}"),
            System::Nestdnn { objective, alpha } => format!("{objective} a={alpha}"),
        }
    }
}

/// The sweep of `setting`: every status-quo level, then both objectives at every alpha.
pub fn sweep(setting: &Setting) -> Vec<System> {
    let mut v: Vec<System> = setting
        .status_quo_levels
        .iter()
        .map(|&level| System::StatusQuo { level })
        .collect();
    for objective in [Objective::MinTotalCost, Objective::MinMaxCost] {
        for &alpha in setting.alphas {
            v.push(System::Nestdnn { objective, alpha });
        }
    }
    v
}

/// One app ready to run: model, frames, and its ladder (profiled, calibrated offline).
#[derive(Debug, Clone)]
pub struct App {
    /// The model.
    pub model: Arc<MultiCapacityModel>,
    /// Its labelled frames.
    pub frames: AppFrames,
    /// The ladder the planner starts from.
    pub ladder: Ladder,
    /// CPU seconds one frame of each status-quo model takes (hot loop, offline; index =
    /// the app's status-quo model): the demand the OS's work-conserving share sees before the
    /// run measures it.
    pub status_quo_cpu_s: Vec<f64>,
    /// Top-1 of each descendant over all of the app's benchmark frames (offline pass).
    pub descendant_accuracy: Vec<f64>,
    /// Top-1 of each status-quo model over all of the app's benchmark frames (index = the
    /// app's status-quo model).
    pub status_quo_accuracy: Vec<f64>,
}

/// One monitor sample of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetSample {
    /// Seconds since the run's start.
    pub t_s: f64,
    /// Cores of this machine available to the node by the monitor's machine-wide budget (no
    /// headroom; every other process counts; recorded, not used).
    pub available_cores: f64,
    /// Online cores of this machine.
    pub online_cores: f64,
    /// Cores the background load process used over the last period (monitor's `/proc`
    /// accounting of that process).
    pub load_cores: f64,
    /// The device's cores derived from it (what the planner gets).
    pub device_cores: f64,
    /// Background load the script asked for at that time, cores of this machine.
    pub script_background_cores: f64,
}

/// One app's state at a time (capacity over time).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppState {
    /// Running (has frames and a share).
    pub running: bool,
    /// Descendant of its last frame.
    pub descendant: Option<usize>,
    /// Share, cores.
    pub share: f64,
}

/// The state of every app at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the run's start.
    pub t_s: f64,
    /// Per app, [`APPS`] order.
    pub apps: Vec<AppState>,
}

/// One app's figures in one system's run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppRun {
    /// App name.
    pub app: String,
    /// Frames offered while running.
    pub offered: u64,
    /// Frames processed.
    pub processed: u64,
    /// Of those, classified right.
    pub correct: u64,
    /// Frames processed by each model (NestDNN: per descendant; the status quo: its one
    /// fixed model).
    pub served: Vec<u64>,
    /// The served models' accuracy summed over the processed frames: each frame counts the
    /// top-1 of the model that served it over all of the app's benchmark frames (offline
    /// pass). Divided by `processed`, it is the app's accuracy without the sampling noise
    /// of which frames happened to be processed.
    pub model_correct: f64,
}

/// One system's figures in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemRun {
    /// The system.
    pub system: System,
    /// Seconds the run lasted.
    pub run_s: f64,
    /// Frames offered to running apps.
    pub offered: u64,
    /// Frames processed (inference run).
    pub processed: u64,
    /// Of those, classified right.
    pub correct: u64,
    /// Frames whose inference failed.
    pub errors: u64,
    /// Thread CPU time of inference, seconds.
    pub cpu_s: f64,
    /// CPU time of the whole benchmark process during this system's run (every thread:
    /// inference, loads, builds, the camera clock, result handling, the monitor), seconds.
    pub process_cpu_s: f64,
    /// Estimated CPU time of on-demand plan builds (planned switches x build time), seconds.
    pub build_cpu_s: f64,
    /// Model loads (app starts; status quo: reloads after evictions), measured.
    pub loads: Loads,
    /// Changes of the descendant serving consecutive frames of a task.
    pub switches: u64,
    /// Plans the planner made (0 for the status quo).
    pub plans: u64,
    /// Largest memory of the running apps' slots (master + active plan), bytes.
    pub memory_peak_bytes: u64,
    /// Seconds the running apps held more memory than the budget.
    pub memory_over_budget_s: f64,
    /// Median frame latency (queue + inference), ms.
    pub latency_p50_ms: f64,
    /// 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Per app.
    pub apps: Vec<AppRun>,
    /// Per app and descendant, the thread CPU seconds one frame took at the end of the run
    /// (the runtime's weighted mean, which the planners calibrate with: it holds the model
    /// loads that some frames pay first; `None`: never served).
    pub cpu_per_frame_s: Vec<Vec<Option<f64>>>,
    /// Per app and descendant (the status quo: its one model), the mean thread CPU seconds
    /// of inference alone per frame over the run (loads left out; `None`: never served).
    pub inference_cpu_per_frame_s: Vec<Vec<Option<f64>>>,
    /// Capacity over time (every monitor period).
    pub timeline: Vec<TimelinePoint>,
}

impl SystemRun {
    /// CPU milliseconds per processed frame spent outside inference and model work: the
    /// process's CPU during the run less the workers' inference CPU (which holds the loads:
    /// they run on the workers) and the plan builds, over the processed frames.
    pub fn outside_inference_ms_per_frame(&self) -> f64 {
        if self.processed == 0 {
            return f64::NAN;
        }
        let rest = self.process_cpu_s - self.cpu_s - self.build_cpu_s;
        rest.max(0.0) * 1e3 / self.processed as f64
    }

    /// Processed frames per second, all apps.
    pub fn fps(&self) -> f64 {
        if self.run_s > 0.0 {
            self.processed as f64 / self.run_s
        } else {
            0.0
        }
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

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The schedule it played.
    pub schedule: RunSchedule,
    /// Monitor samples.
    pub budget: Vec<BudgetSample>,
    /// Load average of this machine (1 min) at the start and the end.
    pub loadavg: (f64, f64),
    /// Every system.
    pub systems: Vec<SystemRun>,
}

#[derive(Default)]
struct Acc {
    processed: Vec<u64>,
    correct: Vec<u64>,
    served: Vec<Vec<u64>>,
    model_correct: Vec<f64>,
    latencies_ms: Vec<f32>,
}

struct Sys {
    system: System,
    rt: Runtime<Tenant>,
    slots: Vec<Arc<Tenant>>,
    residency: Option<Arc<Mutex<Residency>>>,
    status_quo_cpu_s: Vec<f64>,
    planner: Option<Planner>,
    acc: Arc<Mutex<Acc>>,
    last_desc: Vec<Option<usize>>,
    ladders: Vec<Ladder>,
    build_cpu_s: f64,
    plans: u64,
    mem_peak: u64,
    mem_over_s: f64,
    timeline: Vec<TimelinePoint>,
}

impl Sys {
    fn apply(&mut self, plan: &Plan) -> Result<(), BenchError> {
        self.plans += 1;
        for (i, tp) in plan.tasks.iter().enumerate() {
            if tp.status == TaskStatus::Running {
                if self.last_desc[i].is_some_and(|d| d != tp.descendant_index) {
                    self.build_cpu_s += self.ladders[i]
                        .rungs()
                        .get(tp.descendant_index)
                        .map_or(0.0, |r| r.build_s);
                }
                self.last_desc[i] = Some(tp.descendant_index);
            }
        }
        self.rt.apply(plan)?;
        Ok(())
    }

    /// The status quo's shares: the OS's work-conserving split of the device's cores
    /// ([`water_fill`]) by each running app's demand at the camera rate (its CPU per frame
    /// as measured in this run so far, the offline figure before the first frame).
    fn share_work_conserving(
        &self,
        running: &[bool; N_APPS],
        device: f64,
    ) -> Result<(), BenchError> {
        let demand: Vec<Option<f64>> = running
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                r.then(|| {
                    let cpf = self
                        .rt
                        .cpu_per_frame(i)
                        .first()
                        .copied()
                        .flatten()
                        .unwrap_or(self.status_quo_cpu_s[i]);
                    cpf * CAMERA_HZ
                })
            })
            .collect();
        for (i, s) in water_fill(&demand, device).into_iter().enumerate() {
            self.rt.set_share(i, s)?;
        }
        Ok(())
    }
}

/// Name of this process as `/proc/self/comm` shows it (the monitor's consumer).
fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "nestdnn".to_string())
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The nearest-rank `p`-quantile of latencies `sorted` in ms (NaN without any).
fn latency_quantile(sorted: &[f32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let v: Vec<f64> = sorted.iter().map(|&x| f64::from(x)).collect();
    nestdnn::profile::percentile(&v, p)
}

/// Plays `schedule` on every system of `systems`, **one after another**, in real time: each
/// system alone on the machine with the same frames, app schedule and background load spells.
/// The first system's run measures the device's budget with the resource monitor; every
/// later system gets that recorded budget trace, sample by sample, so all systems see the
/// identical budget. `spawn_load(cores)` starts the background load process (killed at the
/// end of its spell; it runs in every system's run).
///
/// # Errors
/// [`BenchError`] when a model slot, the runtime, the planner or the monitor fails.
pub fn run_real(
    apps: &[App],
    schedule: &RunSchedule,
    systems: &[System],
    spawn_load: &mut dyn FnMut(f64) -> std::io::Result<Child>,
) -> Result<RunOutcome, BenchError> {
    if apps.len() != APPS.len() {
        return Err(BenchError::Data {
            what: format!("expected {} apps, got {}", APPS.len(), apps.len()),
        });
    }
    let start_load = loadavg();
    let mut trace: Option<Vec<BudgetSample>> = None;
    let mut out = Vec::with_capacity(systems.len());
    for &system in systems {
        let (run, budget) = run_system(apps, schedule, system, trace.as_deref(), spawn_load)?;
        out.push(run);
        trace.get_or_insert(budget);
    }
    Ok(RunOutcome {
        schedule: schedule.clone(),
        budget: trace.unwrap_or_default(),
        loadavg: (start_load, loadavg()),
        systems: out,
    })
}

/// One system's run of `schedule`: the budget measured by the monitor (`replay: None`) or
/// replayed from a recorded trace. Returns the run and the budget trace it used.
fn run_system(
    apps: &[App],
    schedule: &RunSchedule,
    system: System,
    replay: Option<&[BudgetSample]>,
    spawn_load: &mut dyn FnMut(f64) -> std::io::Result<Child>,
) -> Result<(SystemRun, Vec<BudgetSample>), BenchError> {
    let budget0 = Budget::new(schedule.compute_cores, schedule.memory_bytes);
    let epoch = Instant::now();
    let process0 = process_cpu_s();
    let sys = vec![Sys::start(system, apps, budget0, epoch)?];
    let mut monitor = Monitor::new(MonitorSettings {
        headroom: Headroom {
            cpu_cores: 0.0,
            memory_bytes: 0,
        },
        consumers: vec![own_comm()],
        cpus: None,
    })?;
    monitor.read()?;
    let mut live = Live {
        apps,
        schedule,
        offered: vec![vec![0u64; apps.len()]; sys.len()],
        sys,
        monitor,
        replay,
        budget_trace: Vec::new(),
        device: schedule.compute_cores,
        running: [false; N_APPS],
        load: None,
        load_mark: (0, Instant::now()),
        // SAFETY: sysconf has no preconditions.
        clk_tck: match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            t if t > 0 => t as f64,
            _ => 100.0,
        },
        tick: 0,
        last_t: 0.0,
        next_monitor: MONITOR_PERIOD_S,
        next_calibration: CALIBRATION_PERIOD_S,
    };
    let t0 = Instant::now();
    let result = live.play(t0, spawn_load);
    if let Some((_, mut c)) = live.load.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let run_s = t0
        .elapsed()
        .as_secs_f64()
        .min(schedule.run_s.max(live.last_t));
    result?;
    let Live {
        sys,
        offered,
        budget_trace,
        ..
    } = live;
    let mut run = sys
        .into_iter()
        .zip(offered)
        .map(|(s, offered)| s.finish(run_s, &offered))
        .next()
        .ok_or_else(|| BenchError::Data {
            what: "no system ran".into(),
        })?;
    run.process_cpu_s = process_cpu_s() - process0;
    Ok((run, budget_trace))
}

/// The status quo's sweep level of `system` (0 for NestDNN, which has none).
fn system_level(system: System) -> usize {
    match system {
        System::StatusQuo { level } => level,
        System::Nestdnn { .. } => 0,
    }
}

/// CPU seconds this process has used (user + system, every thread, `getrusage`).
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given; RUSAGE_SELF is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Sys {
    /// Starts `system` on `apps`: a runtime with one on-demand slot per app (the status quo
    /// at its level, NestDNN at the smallest descendant until its first plan) and, for
    /// NestDNN, its planner with the first plan applied.
    fn start(
        system: System,
        apps: &[App],
        budget0: Budget,
        epoch: Instant,
    ) -> Result<Sys, BenchError> {
        let residency = match system {
            System::StatusQuo { .. } => Some(Arc::new(Mutex::new(Residency::new(
                apps.len(),
                budget0.memory_bytes,
            )))),
            System::Nestdnn { .. } => None,
        };
        let mut slots = Vec::with_capacity(apps.len());
        let mut setups = Vec::with_capacity(apps.len());
        for (i, a) in apps.iter().enumerate() {
            let model: Arc<MultiCapacityModel> = a.model.clone();
            let labels = a.frames.labels.clone();
            let slot = Arc::new(match &residency {
                Some(r) => Tenant::fixed(i, model, labels, r.clone(), system_level(system)),
                None => Tenant::nested(i, model, labels, 0),
            });
            setups.push(TaskSetup {
                name: a.frames.app.clone(),
                model: slot.clone(),
                target_fps: TARGET_FPS,
            });
            slots.push(slot);
        }
        // The accuracy of what each app's descendant index means in this system: NestDNN's
        // descendants, or the status quo's one fixed model (served as descendant 0).
        let served_accuracy: Vec<Vec<f64>> = apps
            .iter()
            .map(|a| match system {
                System::Nestdnn { .. } => a.descendant_accuracy.clone(),
                System::StatusQuo { level } => {
                    let m = status_quo_model(&a.model, level);
                    vec![a.status_quo_accuracy.get(m).copied().unwrap_or(f64::NAN)]
                }
            })
            .collect();
        let acc = Arc::new(Mutex::new(Acc {
            processed: vec![0; apps.len()],
            correct: vec![0; apps.len()],
            served: served_accuracy.iter().map(|v| vec![0; v.len()]).collect(),
            model_correct: vec![0.0; apps.len()],
            latencies_ms: Vec::new(),
        }));
        let sink_acc = acc.clone();
        let rt = Runtime::start(
            setups,
            RuntimeOptions::default(),
            move |c: Completed<bool, ModelError>| {
                let mut a = sink_acc.lock();
                if let Ok(ok) = c.output {
                    a.processed[c.task] += 1;
                    a.correct[c.task] += u64::from(ok);
                    let d = c.descendant.unwrap_or(0);
                    if let Some(n) = a.served.get_mut(c.task).and_then(|v| v.get_mut(d)) {
                        *n += 1;
                    }
                    a.model_correct[c.task] += served_accuracy
                        .get(c.task)
                        .and_then(|v| v.get(d))
                        .copied()
                        .unwrap_or(f64::NAN);
                }
                a.latencies_ms
                    .push(((c.queued + c.inference).as_secs_f64() * 1e3) as f32);
            },
        )?;
        let planner = match system {
            System::StatusQuo { .. } => None,
            System::Nestdnn { objective, alpha } => Some(planner(
                objective,
                alpha,
                budget0,
                apps.iter().map(|a| (a.frames.app.as_str(), &a.ladder)),
                epoch,
            )?),
        };
        let mut s = Sys {
            system,
            rt,
            slots,
            residency,
            status_quo_cpu_s: apps
                .iter()
                .map(|a| {
                    let level = status_quo_model(&a.model, system_level(system));
                    a.status_quo_cpu_s.get(level).copied().unwrap_or(f64::NAN)
                })
                .collect(),
            planner,
            acc,
            last_desc: vec![None; apps.len()],
            ladders: apps.iter().map(|a| a.ladder.clone()).collect(),
            build_cpu_s: 0.0,
            plans: 0,
            mem_peak: 0,
            mem_over_s: 0.0,
            timeline: Vec::new(),
        };
        if let Some(p) = s.planner.as_ref().map(|p| p.plan().clone()) {
            s.apply(&p)?;
        }
        Ok(s)
    }

    /// The loads of every app (the residency's for the status quo).
    fn loads(&self) -> Loads {
        if let Some(r) = &self.residency {
            return r.lock().loads();
        }
        let mut sum = Loads::default();
        for l in self.slots.iter().filter_map(|t| t.loads()) {
            sum += l;
        }
        sum
    }

    /// Stops the runtime and sums up the run (`offered`: frames offered per app).
    fn finish(self, run_s: f64, offered: &[u64]) -> SystemRun {
        let n = offered.len();
        let cpf = (0..n).map(|i| self.rt.cpu_per_frame(i)).collect();
        let inference = self
            .slots
            .iter()
            .map(|t| t.inference_cpu_per_frame())
            .collect();
        let loads = self.loads();
        let counters = self.rt.shutdown(false);
        let acc = std::mem::take(&mut *self.acc.lock());
        let mut lat = acc.latencies_ms;
        lat.sort_by(f32::total_cmp);
        SystemRun {
            system: self.system,
            run_s,
            offered: offered.iter().sum(),
            processed: acc.processed.iter().sum(),
            correct: acc.correct.iter().sum(),
            errors: counters.iter().map(|c| c.errors).sum(),
            cpu_s: counters.iter().map(|c| c.cpu_time_s).sum(),
            process_cpu_s: 0.0,
            build_cpu_s: self.build_cpu_s,
            loads,
            switches: counters.iter().map(|c| c.switches).sum(),
            plans: self.plans,
            memory_peak_bytes: self.mem_peak,
            memory_over_budget_s: self.mem_over_s,
            latency_p50_ms: latency_quantile(&lat, 0.5),
            latency_p99_ms: latency_quantile(&lat, 0.99),
            apps: (0..n)
                .map(|i| AppRun {
                    app: APPS[i].to_string(),
                    offered: offered[i],
                    processed: acc.processed[i],
                    correct: acc.correct[i],
                    served: acc.served.get(i).cloned().unwrap_or_default(),
                    model_correct: acc.model_correct[i],
                })
                .collect(),
            cpu_per_frame_s: cpf,
            inference_cpu_per_frame_s: inference,
            timeline: self.timeline,
        }
    }
}

/// One real run in progress: every system, the machine monitor, the background load and
/// the camera clock.
struct Live<'a> {
    apps: &'a [App],
    schedule: &'a RunSchedule,
    sys: Vec<Sys>,
    monitor: Monitor,
    /// A recorded budget trace to replay instead of measuring (systems after the first).
    replay: Option<&'a [BudgetSample]>,
    budget_trace: Vec<BudgetSample>,
    /// Cores of the emulated device now (the budget less the background load's share).
    device: f64,
    running: [bool; N_APPS],
    /// The background load spell in progress and its process.
    load: Option<(usize, Child)>,
    /// (ticks, when) of the load process at the last sample.
    load_mark: (u64, Instant),
    clk_tck: f64,
    /// Frames offered per system and app.
    offered: Vec<Vec<u64>>,
    tick: usize,
    last_t: f64,
    next_monitor: f64,
    next_calibration: f64,
}

impl Live<'_> {
    /// The camera loop: every period, apps starting and stopping, load spells, the monitor,
    /// calibration, dwell reviews, then one frame per running app to every system.
    fn play(
        &mut self,
        t0: Instant,
        spawn_load: &mut dyn FnMut(f64) -> std::io::Result<Child>,
    ) -> Result<(), BenchError> {
        let period = Duration::from_secs_f64(1.0 / CAMERA_HZ);
        let mut next_tick = t0;
        loop {
            let now = Instant::now();
            let t = now.duration_since(t0).as_secs_f64();
            if t >= self.schedule.run_s {
                return Ok(());
            }
            self.apps_changed(t, now)?;
            self.load_spell(t, spawn_load)?;
            if t >= self.next_monitor {
                self.next_monitor += MONITOR_PERIOD_S;
                self.monitor_tick(t, now)?;
            }
            if t >= self.next_calibration {
                self.next_calibration += CALIBRATION_PERIOD_S;
                self.calibrate(now)?;
            }
            self.reviews(now)?;
            self.push_frames();
            self.account_memory(t);
            self.tick += 1;
            next_tick += period;
            let now = Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            }
        }
    }

    /// Apps starting and stopping: enables them in every runtime and tells the planners.
    fn apps_changed(&mut self, t: f64, now: Instant) -> Result<(), BenchError> {
        let want = self.schedule.running_at(t);
        if self.tick > 0 && want == self.running {
            return Ok(());
        }
        for (i, (&w, &r)) in want.iter().zip(&self.running).enumerate() {
            if w == r && self.tick > 0 {
                continue;
            }
            for s in self.sys.iter_mut() {
                s.rt.set_enabled(i, w)?;
                if !w {
                    if let Some(t) = s.slots.get(i) {
                        t.stop();
                    }
                }
                if let Some(p) = s.planner.as_mut() {
                    let plan = if w {
                        p.task_started(APPS[i], now)?
                    } else {
                        p.task_stopped(APPS[i], now)?
                    };
                    if let Some(plan) = plan {
                        s.apply(&plan)?;
                    }
                }
            }
        }
        self.running = want;
        for s in &self.sys {
            if s.planner.is_none() {
                s.share_work_conserving(&self.running, self.device)?;
            }
        }
        Ok(())
    }

    /// Starts or ends the background load process as the schedule's spells say.
    fn load_spell(
        &mut self,
        t: f64,
        spawn_load: &mut dyn FnMut(f64) -> std::io::Result<Child>,
    ) -> Result<(), BenchError> {
        let spell = self
            .schedule
            .background
            .iter()
            .position(|s| s.from_s <= t && t < s.to_s);
        if self.load.as_ref().map(|l| l.0) == spell {
            return Ok(());
        }
        if let Some((_, mut c)) = self.load.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(k) = spell {
            let child =
                spawn_load(self.schedule.background[k].cores).map_err(|e| BenchError::Data {
                    what: format!("cannot start the background load: {e}"),
                })?;
            self.load = Some((k, child));
            self.load_mark = (0, Instant::now());
        }
        Ok(())
    }

    /// Cores the background load process used since the last sample.
    fn load_cores(&mut self) -> f64 {
        let Some((_, c)) = &self.load else {
            return 0.0;
        };
        let ticks = std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
            .ok()
            .and_then(|t| parse_pid_stat_ticks(&t).ok());
        let at = Instant::now();
        let dt = at.duration_since(self.load_mark.1).as_secs_f64();
        match ticks {
            Some(k) if dt > 0.0 => {
                let cores = k.saturating_sub(self.load_mark.0) as f64 / self.clk_tck / dt;
                self.load_mark = (k, at);
                cores
            }
            _ => 0.0,
        }
    }

    /// The monitor: the device loses the fraction of this machine the load uses; every
    /// planner gets the budget (the status quo re-shares work-conservingly), and every system's state
    /// goes into its timeline.
    fn monitor_tick(&mut self, t: f64, now: Instant) -> Result<(), BenchError> {
        let sample = match self.replay {
            // Later systems: the first system's sample of this monitor period.
            Some(trace) => match trace.get(self.budget_trace.len()).or(trace.last()) {
                Some(&b) => BudgetSample { t_s: t, ..b },
                None => return Ok(()),
            },
            None => {
                let load_cores = self.load_cores();
                let Some(r) = self.monitor.read()? else {
                    return Ok(());
                };
                let b = budget_from_reading(&r, &monitor_headroom());
                let frac = if r.cores_online > 0.0 {
                    (1.0 - load_cores / r.cores_online).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                BudgetSample {
                    t_s: t,
                    available_cores: f64::from(b.cpu_cores_available),
                    online_cores: r.cores_online,
                    load_cores,
                    device_cores: self.schedule.compute_cores * frac,
                    script_background_cores: self.schedule.background_at(t),
                }
            }
        };
        self.device = sample.device_cores;
        self.budget_trace.push(sample);
        let budget = Budget::new(self.device, self.schedule.memory_bytes);
        for s in self.sys.iter_mut() {
            match s.planner.as_mut() {
                Some(p) => {
                    if let Some(plan) = p.update_budget(&budget, now)? {
                        s.apply(&plan)?;
                    }
                }
                None => s.share_work_conserving(&self.running, self.device)?,
            }
            let apps_now = (0..self.apps.len())
                .map(|i| {
                    let c = s.rt.counters(i).unwrap_or_default();
                    AppState {
                        running: self.running[i] && c.share > 0.0,
                        descendant: c.descendant,
                        share: c.share,
                    }
                })
                .collect();
            s.timeline.push(TimelinePoint {
                t_s: t,
                apps: apps_now,
            });
        }
        Ok(())
    }

    /// Calibration: each planner learns what frames cost in its runtime.
    fn calibrate(&mut self, now: Instant) -> Result<(), BenchError> {
        for s in self.sys.iter_mut() {
            let Some(p) = s.planner.as_mut() else {
                continue;
            };
            let mut last = None;
            for (i, a) in self.apps.iter().enumerate() {
                let l = a.ladder.calibrated(&s.rt.cpu_per_frame(i));
                s.ladders[i] = l.clone();
                if let Some(plan) = p.update_profile(APPS[i], l, now)? {
                    last = Some(plan);
                }
            }
            if let Some(plan) = last {
                s.apply(&plan)?;
            }
        }
        Ok(())
    }

    /// Dwell-time reviews that are due.
    fn reviews(&mut self, now: Instant) -> Result<(), BenchError> {
        for s in self.sys.iter_mut() {
            let due = s
                .planner
                .as_ref()
                .and_then(Planner::next_review)
                .is_some_and(|r| r <= now);
            if due {
                if let Some(plan) = s.planner.as_mut().and_then(|p| p.review(now)) {
                    s.apply(&plan)?;
                }
            }
        }
        Ok(())
    }

    /// One frame per running app to every system (the same frame to each).
    fn push_frames(&mut self) {
        for (si, s) in self.sys.iter().enumerate() {
            for (i, a) in self.apps.iter().enumerate() {
                if !self.running[i] || a.frames.is_empty() {
                    continue;
                }
                let f = (self.tick + 97 * i) % a.frames.len();
                s.rt.push(i, (f, a.frames.inputs[f].clone()));
                self.offered[si][i] += 1;
            }
        }
    }

    /// Memory of the running apps' slots: the peak and the time over the budget.
    fn account_memory(&mut self, t: f64) {
        let dt = t - self.last_t;
        self.last_t = t;
        for s in self.sys.iter_mut() {
            let m: u64 = s
                .slots
                .iter()
                .zip(&self.running)
                .filter(|(_, &r)| r)
                .map(|(t, _)| t.memory_bytes())
                .sum();
            s.mem_peak = s.mem_peak.max(m);
            if m > self.schedule.memory_bytes {
                s.mem_over_s += dt;
            }
        }
    }
}

fn monitor_headroom() -> Headroom {
    Headroom {
        cpu_cores: 0.0,
        memory_bytes: 0,
    }
}
