//! The multi-tenant task runtime: per task a latest-frame mailbox and a worker thread, a share
//! arbiter that holds every task to its planned CPU share, and per-task counters.
//!
//! * **Mailbox**: one waiting frame per task; a newer frame replaces a waiting one and the
//!   replaced frame is counted as dropped. Pushing never blocks the caller (a DDS callback or
//!   an async executor).
//! * **Workers**: one OS thread per task runs [`InferenceModel::run`], so inference never runs
//!   on an async executor; a task processes one frame at a time.
//! * **Share arbiter**: a token bucket per task in CPU-seconds, filled at the task's share
//!   (cores) and capped at `share x burst`. A frame may start while the bucket is not negative;
//!   afterwards the frame's thread CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`) is
//!   charged. Over any interval T a task uses at most `share x T + share x burst + one frame`
//!   of CPU, however many frames it receives, so it cannot starve the others. A second bucket
//!   paces frame starts to the task's target frame rate. The arbiter is not work-conserving:
//!   unused share is not lent to other tasks, which keeps delivered rates predictable.
//! * **Counters** ([`TaskCounters`]): received, processed, dropped, ignored, errors,
//!   descendant switches, CPU time, latency (queue + inference) statistics.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use nestdnn::runtime::{Runtime, RuntimeOptions, SpinModel, TaskSetup};
//!
//! let model = Arc::new(SpinModel::new(vec![Duration::from_millis(1)], 0));
//! let (tx, rx) = crossbeam_channel::unbounded();
//! let rt = Runtime::start(
//!     vec![TaskSetup { name: "cam".into(), model, target_fps: 100.0 }],
//!     RuntimeOptions::default(),
//!     move |done| { let _ = tx.send(done); },
//! )?;
//! rt.set_share(0, 0.5)?;
//! rt.push(0, 7);
//! let done = rx.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!(done.output.unwrap(), 7);
//! let counters = rt.shutdown(false);
//! assert_eq!(counters[0].processed, 1);
//! # Ok::<(), nestdnn::runtime::RuntimeError>(())
//! ```

mod engine;

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;

pub use engine::{spin_cpu, InferenceModel, Served, SpinError, SpinModel};

use crate::scheduler::{Plan, TaskStatus};

/// Frames over which [`Runtime::cpu_per_frame`] averages a descendant's CPU time (a running
/// mean until then, then an exponential mean with weight 1/`CPU_HORIZON_FRAMES` per frame).
pub const CPU_HORIZON_FRAMES: u64 = 128;

/// How long a task's first frame after it starts or resumes waits for the descendant the plan
/// chose ([`InferenceModel::wait_ready`]; an on-demand build takes milliseconds); after that
/// it runs on the descendant the model holds.
pub const START_SWITCH_WAIT: Duration = Duration::from_secs(2);

/// Errors of starting and steering the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A worker thread could not be started.
    #[error("task {task:?}: cannot start its worker thread: {source}")]
    Spawn {
        /// The task.
        task: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The model could not create a worker state.
    #[error("task {task:?}: the model cannot create a run state: {source}")]
    State {
        /// The task.
        task: String,
        /// The model's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A task index or name the runtime does not have.
    #[error("unknown task {task:?}")]
    UnknownTask {
        /// The index or name.
        task: String,
    },
    /// The model refused a descendant switch.
    #[error("task {task:?}: switching to descendant {descendant} failed: {source}")]
    Switch {
        /// The task.
        task: String,
        /// The requested descendant.
        descendant: usize,
        /// The model's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A share that is not a finite number >= 0.
    #[error("task {task:?}: share {share} must be finite and >= 0 cores")]
    Share {
        /// The task.
        task: String,
        /// The value.
        share: f64,
    },
}

/// Runtime options.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeOptions {
    /// Enforce shares with the CPU-time buckets (default true). False: tasks run as fast as
    /// frames and the OS allow (the resource-agnostic status quo), shares are only recorded.
    pub enforce_shares: bool,
    /// Limit frame starts to each task's target frame rate (default true).
    pub pace_to_target: bool,
    /// Bucket capacity in seconds of share (default 0.25 s): how much unused share a task may
    /// save up for a burst.
    pub burst: Duration,
    /// Latency samples kept per task for percentiles (default 512).
    pub latency_window: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            enforce_shares: true,
            pace_to_target: true,
            burst: Duration::from_millis(250),
            latency_window: 512,
        }
    }
}

/// One task to run.
pub struct TaskSetup<M> {
    /// Task name (as configured; plans are matched by it).
    pub name: String,
    /// The task's model.
    pub model: Arc<M>,
    /// Target frame rate (pacing), frames per second.
    pub target_fps: f64,
}

/// One finished frame, handed to the sink on the task's worker thread.
#[derive(Debug)]
pub struct Completed<O, E> {
    /// Task index (setup order).
    pub task: usize,
    /// Task name.
    pub task_name: Arc<str>,
    /// Descendant that served the frame (`None` if the model failed before saying).
    pub descendant: Option<usize>,
    /// From [`Runtime::push`] to the start of inference.
    pub queued: Duration,
    /// Wall time of inference.
    pub inference: Duration,
    /// Thread CPU time of inference (charged to the task's share).
    pub cpu: Duration,
    /// The model's output or error.
    pub output: Result<O, E>,
}

/// What [`Runtime::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued in an empty mailbox.
    Queued,
    /// Queued; a waiting older frame was dropped.
    Replaced,
    /// Queued, and the task was idle: its camera started delivering (a planner trigger).
    Started,
    /// The task is disabled: the frame was ignored.
    Ignored,
    /// The runtime is shutting down or the task does not exist: the frame was discarded.
    Closed,
}

/// Latency statistics over the last `latency_window` frames, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Frames in the window.
    pub count: usize,
    /// Mean queue + inference latency.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean time waiting in the mailbox and for share.
    pub queue_mean_ms: f64,
    /// Mean inference wall time.
    pub inference_mean_ms: f64,
}

/// A snapshot of one task's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskCounters {
    /// Task name.
    pub task: String,
    /// Frames pushed while enabled.
    pub received: u64,
    /// Frames run (successfully or not).
    pub processed: u64,
    /// Frames replaced in the mailbox before running, or discarded at shutdown / disable.
    pub dropped: u64,
    /// Frames pushed while disabled.
    pub ignored: u64,
    /// Frames whose run failed.
    pub errors: u64,
    /// Changes of the descendant that served consecutive frames.
    pub switches: u64,
    /// Descendant of the last frame.
    pub descendant: Option<usize>,
    /// Thread CPU time spent in inference.
    pub cpu_time_s: f64,
    /// Share now enforced, cores.
    pub share: f64,
    /// Enabled by the plan.
    pub enabled: bool,
    /// Receiving frames (not idle).
    pub active: bool,
    /// Latency statistics.
    pub latency: LatencyStats,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    cap: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + self.rate * dt).min(self.cap);
        self.last = now;
    }
}

#[derive(Default)]
struct Stats {
    received: u64,
    processed: u64,
    dropped: u64,
    ignored: u64,
    errors: u64,
    switches: u64,
    descendant: Option<usize>,
    cpu: Duration,
    /// Per descendant: (mean thread CPU ms per steady frame, frames counted).
    cpu_by_descendant: Vec<Option<(f64, u64)>>,
    samples: VecDeque<(f64, f64, f64)>,
}

struct State<I> {
    frame: Option<(I, Instant)>,
    enabled: bool,
    active: bool,
    /// The task just started or resumed: its next frame waits for the planned descendant.
    fresh: bool,
    last_received: Option<Instant>,
    closed: bool,
    finish_pending: bool,
    cpu: Bucket,
    pace: Bucket,
    stats: Stats,
}

struct TaskShared<M: InferenceModel> {
    name: Arc<str>,
    model: Arc<M>,
    state: Mutex<State<M::Input>>,
    wake: Condvar,
}

type Sink<O, E> = Arc<dyn Fn(Completed<O, E>) + Send + Sync>;

/// The running tasks. Dropping it shuts down without finishing pending frames.
pub struct Runtime<M: InferenceModel> {
    tasks: Vec<Arc<TaskShared<M>>>,
    workers: Vec<JoinHandle<()>>,
    opts: RuntimeOptions,
}

impl<M: InferenceModel> std::fmt::Debug for Runtime<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tasks.iter().map(|t| &*t.name).collect();
        f.debug_struct("Runtime")
            .field("tasks", &names)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<M: InferenceModel> Runtime<M> {
    /// Starts one worker per task. Tasks start enabled, idle, with share 0 (nothing runs until
    /// a plan or [`Runtime::set_share`] gives them a share, unless shares are not enforced).
    /// `sink` receives every finished frame on the task's worker thread; keep it quick
    /// (publish, or send to a channel).
    ///
    /// # Errors
    /// [`RuntimeError::State`] or [`RuntimeError::Spawn`]; workers already started are
    /// stopped again.
    pub fn start<F>(
        tasks: Vec<TaskSetup<M>>,
        opts: RuntimeOptions,
        sink: F,
    ) -> Result<Self, RuntimeError>
    where
        F: Fn(Completed<M::Output, M::Error>) + Send + Sync + 'static,
    {
        let sink: Sink<M::Output, M::Error> = Arc::new(sink);
        let now = Instant::now();
        let mut rt = Runtime {
            tasks: Vec::with_capacity(tasks.len()),
            workers: Vec::with_capacity(tasks.len()),
            opts: opts.clone(),
        };
        for (index, setup) in tasks.into_iter().enumerate() {
            let state = setup.model.new_state().map_err(|e| RuntimeError::State {
                task: setup.name.clone(),
                source: Box::new(e),
            })?;
            let fps = if setup.target_fps.is_finite() && setup.target_fps > 0.0 {
                setup.target_fps
            } else {
                f64::INFINITY
            };
            let shared = Arc::new(TaskShared {
                name: Arc::from(setup.name.as_str()),
                model: setup.model,
                state: Mutex::new(State {
                    frame: None,
                    enabled: true,
                    active: false,
                    fresh: true,
                    last_received: None,
                    closed: false,
                    finish_pending: false,
                    cpu: Bucket {
                        rate: 0.0,
                        tokens: 0.0,
                        cap: 0.0,
                        last: now,
                    },
                    pace: Bucket {
                        rate: fps,
                        tokens: 1.0,
                        cap: 2.0,
                        last: now,
                    },
                    stats: Stats {
                        samples: VecDeque::with_capacity(opts.latency_window.min(4096)),
                        ..Stats::default()
                    },
                }),
                wake: Condvar::new(),
            });
            let w = shared.clone();
            let s = sink.clone();
            let o = opts.clone();
            let handle = std::thread::Builder::new()
                .name(format!("nestdnn-{}", setup.name))
                .spawn(move || worker(index, w, state, s, o))
                .map_err(|e| RuntimeError::Spawn {
                    task: setup.name.clone(),
                    source: e,
                })?;
            rt.tasks.push(shared);
            rt.workers.push(handle);
        }
        Ok(rt)
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True if there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Index of task `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| &*t.name == name)
    }

    fn get(&self, task: usize) -> Result<&Arc<TaskShared<M>>, RuntimeError> {
        self.tasks
            .get(task)
            .ok_or_else(|| RuntimeError::UnknownTask {
                task: format!("#{task}"),
            })
    }

    /// Offers a frame to task `task` (never blocks on inference).
    pub fn push(&self, task: usize, input: M::Input) -> PushOutcome {
        let Some(t) = self.tasks.get(task) else {
            return PushOutcome::Closed;
        };
        let now = Instant::now();
        let mut st = t.state.lock();
        if st.closed {
            return PushOutcome::Closed;
        }
        if !st.enabled {
            st.stats.ignored += 1;
            return PushOutcome::Ignored;
        }
        st.stats.received += 1;
        st.last_received = Some(now);
        let replaced = st.frame.replace((input, now)).is_some();
        if replaced {
            st.stats.dropped += 1;
        }
        let started = !st.active;
        st.active = true;
        st.fresh |= started;
        drop(st);
        t.wake.notify_one();
        if started {
            PushOutcome::Started
        } else if replaced {
            PushOutcome::Replaced
        } else {
            PushOutcome::Queued
        }
    }

    /// Sets a task's enforced share (cores; 0 stops it after the current frame).
    ///
    /// # Errors
    /// [`RuntimeError::UnknownTask`], [`RuntimeError::Share`] for NaN, infinite or negative.
    pub fn set_share(&self, task: usize, share: f64) -> Result<(), RuntimeError> {
        let t = self.get(task)?;
        if !(share.is_finite() && share >= 0.0) {
            return Err(RuntimeError::Share {
                task: t.name.to_string(),
                share,
            });
        }
        let now = Instant::now();
        let mut st = t.state.lock();
        st.cpu.refill(now);
        st.fresh |= st.cpu.rate <= 0.0 && share > 0.0;
        st.cpu.rate = share;
        st.cpu.cap = share * self.opts.burst.as_secs_f64();
        st.cpu.tokens = st.cpu.tokens.min(st.cpu.cap);
        drop(st);
        t.wake.notify_one();
        Ok(())
    }

    /// Enables or disables a task. Disabling discards a waiting frame (counted as dropped)
    /// and marks the task idle; frames pushed while disabled are ignored.
    ///
    /// # Errors
    /// [`RuntimeError::UnknownTask`].
    pub fn set_enabled(&self, task: usize, enabled: bool) -> Result<(), RuntimeError> {
        let t = self.get(task)?;
        let mut st = t.state.lock();
        if !enabled {
            if st.frame.take().is_some() {
                st.stats.dropped += 1;
            }
            st.active = false;
        }
        st.enabled = enabled;
        drop(st);
        t.wake.notify_one();
        Ok(())
    }

    /// Asks task `task`'s model for descendant `index`.
    ///
    /// # Errors
    /// [`RuntimeError::UnknownTask`], [`RuntimeError::Switch`].
    pub fn request_descendant(&self, task: usize, index: usize) -> Result<(), RuntimeError> {
        let t = self.get(task)?;
        t.model
            .request_descendant(index)
            .map_err(|e| RuntimeError::Switch {
                task: t.name.to_string(),
                descendant: index,
                source: Box::new(e),
            })
    }

    /// Applies a plan: per task (matched by name) its share, enabled flag and, for running
    /// tasks, its descendant. Tasks the plan does not name are left as they are.
    ///
    /// # Errors
    /// The first error met; the other tasks are still applied.
    pub fn apply(&self, plan: &Plan) -> Result<(), RuntimeError> {
        let mut first = None;
        for tp in &plan.tasks {
            let Some(i) = self.task_index(&tp.task) else {
                first.get_or_insert(RuntimeError::UnknownTask {
                    task: tp.task.clone(),
                });
                continue;
            };
            let r = (|| {
                let running = tp.status == TaskStatus::Running;
                if running {
                    self.request_descendant(i, tp.descendant_index)?;
                }
                self.set_enabled(i, tp.status != TaskStatus::Disabled)?;
                self.set_share(i, if running { tp.share } else { 0.0 })
            })();
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Marks tasks that received no frame for `timeout` as idle and returns their indices
    /// (each once per idle period): the planner's "task stopped" trigger.
    pub fn poll_idle(&self, now: Instant, timeout: Duration) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let mut st = t.state.lock();
            let stale = st
                .last_received
                .is_none_or(|r| now.saturating_duration_since(r) >= timeout);
            if st.active && stale && st.frame.is_none() {
                st.active = false;
                out.push(i);
            }
        }
        out
    }

    /// A snapshot of task `task`'s counters.
    pub fn counters(&self, task: usize) -> Option<TaskCounters> {
        self.tasks.get(task).map(|t| snapshot(t))
    }

    /// Per descendant (index) of task `task`, the thread CPU time one frame takes here,
    /// seconds: the mean over the frames it served (an exponential mean over roughly the last
    /// [`CPU_HORIZON_FRAMES`] once it has served more; the first frame after each switch to
    /// it, which pays one-off warm-up, is left out), `None` where the descendant never served
    /// a steady frame. Feed it to [`crate::scheduler::Ladder::calibrated`] (and the
    /// planner's profile trigger) so plans use what frames really cost on this machine.
    pub fn cpu_per_frame(&self, task: usize) -> Vec<Option<f64>> {
        self.tasks.get(task).map_or_else(Vec::new, |t| {
            t.state
                .lock()
                .stats
                .cpu_by_descendant
                .iter()
                .map(|m| m.map(|(ms, _)| ms / 1e3))
                .collect()
        })
    }

    /// Snapshots of every task's counters.
    pub fn all_counters(&self) -> Vec<TaskCounters> {
        self.tasks.iter().map(|t| snapshot(t)).collect()
    }

    /// Stops every worker and returns the final counters. `finish_pending`: a waiting frame
    /// is still run (ignoring shares and pacing); otherwise it is counted as dropped.
    pub fn shutdown(mut self, finish_pending: bool) -> Vec<TaskCounters> {
        self.stop(finish_pending);
        self.all_counters()
    }

    fn stop(&mut self, finish_pending: bool) {
        for t in &self.tasks {
            let mut st = t.state.lock();
            st.closed = true;
            st.finish_pending = finish_pending;
            drop(st);
            t.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                log::error!("a task worker panicked");
            }
        }
    }
}

/// Frame rates measured by [`drive`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrivenRate {
    /// Task name.
    pub task: String,
    /// Frames processed per second over the run.
    pub delivered_fps: f64,
    /// Frames pushed per second.
    pub offered_fps: f64,
    /// Frames dropped (replaced) during the run.
    pub dropped: u64,
    /// Thread CPU time per second spent in inference, cores.
    pub cpu_cores: f64,
}

/// Plays camera streams into a runtime: every `1 / camera_hz` seconds one frame per task
/// (cycling through `frames[task]`), for `duration`, on the calling thread; then reports
/// each task's delivered rate. Tasks with no frames are not fed. For benchmarks, demos and
/// acceptance tests.
pub fn drive<M>(
    rt: &Runtime<M>,
    frames: &[Vec<M::Input>],
    camera_hz: f64,
    duration: Duration,
) -> Vec<DrivenRate>
where
    M: InferenceModel,
    M::Input: Clone,
{
    let before = rt.all_counters();
    let period = Duration::from_secs_f64(1.0 / camera_hz.clamp(0.001, 100_000.0));
    let t0 = Instant::now();
    let mut next = t0;
    let mut tick = 0usize;
    let mut pushed = vec![0u64; rt.len()];
    while t0.elapsed() < duration {
        for (task, f) in frames.iter().enumerate().take(rt.len()) {
            if let Some(x) = f.get(tick % f.len().max(1)) {
                rt.push(task, x.clone());
                pushed[task] += 1;
            }
        }
        tick += 1;
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = rt.all_counters();
    before
        .iter()
        .zip(&after)
        .zip(&pushed)
        .map(|((b, a), &p)| DrivenRate {
            task: a.task.clone(),
            delivered_fps: (a.processed - b.processed) as f64 / secs,
            offered_fps: p as f64 / secs,
            dropped: a.dropped - b.dropped,
            cpu_cores: (a.cpu_time_s - b.cpu_time_s) / secs,
        })
        .collect()
}

impl<M: InferenceModel> Drop for Runtime<M> {
    fn drop(&mut self) {
        self.stop(false);
    }
}

fn snapshot<M: InferenceModel>(t: &TaskShared<M>) -> TaskCounters {
    let st = t.state.lock();
    let s = &st.stats;
    let mut total: Vec<f64> = s.samples.iter().map(|x| x.0).collect();
    total.sort_by(f64::total_cmp);
    let n = total.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            0.0
        } else {
            total[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
        }
    };
    let mean = |f: fn(&(f64, f64, f64)) -> f64| {
        if n == 0 {
            0.0
        } else {
            s.samples.iter().map(f).sum::<f64>() / n as f64
        }
    };
    TaskCounters {
        task: t.name.to_string(),
        received: s.received,
        processed: s.processed,
        dropped: s.dropped,
        ignored: s.ignored,
        errors: s.errors,
        switches: s.switches,
        descendant: s.descendant,
        cpu_time_s: s.cpu.as_secs_f64(),
        share: st.cpu.rate,
        enabled: st.enabled,
        active: st.active,
        latency: LatencyStats {
            count: n,
            mean_ms: mean(|x| x.0),
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            max_ms: total.last().copied().unwrap_or(0.0),
            queue_mean_ms: mean(|x| x.1),
            inference_mean_ms: mean(|x| x.2),
        },
    }
}

/// How long until the task may start a frame (zero: now; `None`: not until woken).
fn wait_time<I>(st: &State<I>, opts: &RuntimeOptions) -> Option<Duration> {
    if st.frame.is_none() || !st.enabled {
        return None;
    }
    let mut wait: f64 = 0.0;
    if opts.enforce_shares {
        if st.cpu.rate <= 0.0 {
            return None;
        }
        if st.cpu.tokens < 0.0 {
            wait = wait.max(-st.cpu.tokens / st.cpu.rate);
        }
    }
    if opts.pace_to_target && st.pace.tokens < 1.0 && st.pace.rate.is_finite() {
        wait = wait.max((1.0 - st.pace.tokens) / st.pace.rate);
    }
    Some(Duration::from_secs_f64(wait.min(3600.0)))
}

fn worker<M: InferenceModel>(
    index: usize,
    t: Arc<TaskShared<M>>,
    mut state: M::State,
    sink: Sink<M::Output, M::Error>,
    opts: RuntimeOptions,
) {
    loop {
        let ((input, pushed_at), fresh) = {
            let mut st = t.state.lock();
            loop {
                let now = Instant::now();
                st.cpu.refill(now);
                st.pace.refill(now);
                if st.closed {
                    if st.finish_pending {
                        if let Some(f) = st.frame.take() {
                            break (f, false);
                        }
                    } else if st.frame.take().is_some() {
                        st.stats.dropped += 1;
                    }
                    return;
                }
                match wait_time(&st, &opts) {
                    None => {
                        t.wake.wait(&mut st);
                    }
                    Some(w) if w > Duration::ZERO => {
                        // Wake at the deadline, or earlier on a new share or shutdown.
                        t.wake.wait_for(&mut st, w);
                    }
                    Some(_) => {
                        if let Some(f) = st.frame.take() {
                            st.pace.tokens -= 1.0;
                            break (f, std::mem::take(&mut st.fresh));
                        }
                    }
                }
            }
        };
        if fresh && !t.model.wait_ready(START_SWITCH_WAIT) {
            log::warn!(
                "task {}: the planned descendant is not ready after {:?}: the first frame runs on the one held",
                t.name,
                START_SWITCH_WAIT
            );
        }
        let started = Instant::now();
        let cpu0 = thread_cpu_time();
        let result = t.model.run(&mut state, input);
        let inference = started.elapsed();
        let cpu = match (cpu0, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => inference,
        };
        let queued = started.saturating_duration_since(pushed_at);
        let descendant = result.as_ref().ok().map(|s| s.descendant);
        {
            let mut st = t.state.lock();
            st.cpu.refill(Instant::now());
            st.cpu.tokens -= cpu.as_secs_f64();
            let s = &mut st.stats;
            s.processed += 1;
            s.cpu += cpu;
            match descendant {
                Some(d) => {
                    let steady = s.descendant == Some(d);
                    if s.descendant.is_some_and(|p| p != d) {
                        s.switches += 1;
                    }
                    s.descendant = Some(d);
                    if steady && d < 65_536 {
                        if s.cpu_by_descendant.len() <= d {
                            s.cpu_by_descendant.resize(d + 1, None);
                        }
                        let ms = cpu.as_secs_f64() * 1e3;
                        let e = &mut s.cpu_by_descendant[d];
                        let (mean, n) = e.unwrap_or((0.0, 0));
                        let n = n.saturating_add(1);
                        // Running mean, then an exponential mean over ~CPU_HORIZON_FRAMES
                        // frames: one frame hit by an interrupt must not move it much.
                        let w = 1.0 / (n.min(CPU_HORIZON_FRAMES) as f64);
                        *e = Some((mean + w * (ms - mean), n));
                    }
                }
                None => s.errors += 1,
            }
            if opts.latency_window > 0 {
                if s.samples.len() >= opts.latency_window {
                    s.samples.pop_front();
                }
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                s.samples
                    .push_back((ms(queued + inference), ms(queued), ms(inference)));
            }
        }
        sink(Completed {
            task: index,
            task_name: t.name.clone(),
            descendant,
            queued,
            inference,
            cpu,
            output: result.map(|s| s.output),
        });
    }
}
/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), `None` if unavailable.
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 || ts.tv_nsec < 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}
