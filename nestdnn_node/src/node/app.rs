//! The perception node without ROS: tasks, planner, task workers, diagnostics.
//!
//! A transport (DDS, r2r, bag replay) feeds [`App`] with decoded messages (`on_image`,
//! `on_compressed`, `on_budget`, `on_priority`, `on_bad_sample`) and receives everything the
//! node publishes through [`Outputs`]. One frame's path: `on_image` (on the transport's
//! thread; it only keeps the newest frame per task) -> the task's decode thread:
//! pre-processing to the model's input tensor -> [`crate::runtime::Runtime::push`] into the
//! task's latest-frame mailbox -> the task's worker thread runs the descendant the
//! plan chose, within the task's CPU share -> top-1 -> `Outputs::classification` and
//! `Outputs::result`. Pre-processing runs before the mailbox so that the share, which the
//! planner sizes from the profiled model latency, pays for inference only.
//!
//! Re-planning: every budget, every priority/enable change, a task's camera starting or going
//! idle, and the planner's dwell reviews produce a plan, which [`crate::runtime::Runtime::apply`]
//! turns into each task's descendant, share and enabled flag.
//!
//! Bad input never stops the node: it is counted (per task and per kind, reported in
//! `/diagnostics`), logged throttled, and dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::throttle::Throttle;
use super::{NodeClock, Shutdown};
use crate::config::{NodeConfig, QosPreset, TaskConfig, Transport};
use crate::model::{ModelError, ModelSlot, MultiCapacityModel};
use crate::msgs::{
    Classification, Clock, CompressedImage, DiagnosticArray, DiagnosticStatus, Header, Image,
    InferenceResult, KeyValue, LabelInfo, ObjectHypothesis, ResourceBudget, TaskPriority,
    VisionClass,
};
use crate::preprocess::{self, Preprocessor};
use crate::profile::{load_or_profile, Calibration, ProfileCache, ProfileError, ProfileOptions};
use crate::runtime::{
    Completed, InferenceModel, PushOutcome, Runtime, RuntimeError, RuntimeOptions, Served,
    TaskCounters as RtCounters, TaskSetup as RtTaskSetup,
};
use crate::scheduler::{
    Budget, Ladder, Plan, Planner, PriorityUpdate, Rung, SchedulerError, TaskSpec, TaskStatus,
};
use crate::transport::Qos;

/// Errors of starting the node core.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A task's model could not be loaded or its plan built.
    #[error("task {task}: {source}")]
    Model {
        /// The task.
        task: String,
        /// Why.
        source: ModelError,
    },
    /// A task's model could not be profiled.
    #[error("task {task}: profiling failed: {source}")]
    Profile {
        /// The task.
        task: String,
        /// Why.
        source: ProfileError,
    },
    /// The model's input cannot be produced from images.
    #[error("task {task}: {source}")]
    Input {
        /// The task.
        task: String,
        /// Why.
        source: preprocess::PreprocessError,
    },
    /// The scheduler refused the configuration.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// A worker thread could not start.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The task runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Everything the node publishes, by kind. Called from worker and transport threads.
pub trait Outputs: Send + Sync + 'static {
    /// A `vision_msgs/Classification` of task `task` (index in configuration order).
    fn classification(&self, task: usize, msg: Classification);
    /// The matching `nestdnn_msgs/InferenceResult`.
    fn result(&self, task: usize, msg: InferenceResult);
    /// A new plan (latched).
    fn plan(&self, msg: crate::msgs::Plan);
    /// One `/diagnostics` array (every task), about once per second.
    fn diagnostics(&self, msg: DiagnosticArray);
    /// Task `task`'s class names (latched), published once at start.
    fn label_info(&self, task: usize, msg: LabelInfo);
    /// A warning the node logged (throttled as logged): bad input, a stale budget, ...
    /// Transports ignore it (the log has it); replay puts it in its report.
    fn warning(&self, _text: &str) {}
}

/// What a transport needs to know about a task to subscribe and publish for it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSetup {
    /// Task name.
    pub name: String,
    /// Topic to subscribe (ROS name as configured; `/compressed` appended for compressed).
    pub topic: String,
    /// The configured `image_topic` (the base topic; for a compressed task the transport
    /// subscribes its `image_transport` subtopic, see
    /// [`crate::rosargs::NameContext::image_transport_topic`]).
    pub image_topic: String,
    /// Raw or compressed.
    pub transport: Transport,
    /// Subscription QoS.
    pub qos: Qos,
}

/// Options of [`App::start`] that are not ROS parameters.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Fully-qualified node name, for diagnostics names (`"<node>: <task>"`).
    pub node_name: String,
    /// Profile cache folder (`None`: profile at every start).
    pub profile_cache: Option<std::path::PathBuf>,
    /// How much to measure when profiling.
    pub profile: ProfileOptions,
    /// Period of `/diagnostics`.
    pub diagnostics_period: Duration,
}

/// Relative latency change below which a calibration is not worth a re-plan (hysteresis).
pub const CALIBRATION_THRESHOLD: f64 = 0.15;

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            node_name: "/nestdnn_node".into(),
            profile_cache: ProfileCache::default_dir(),
            profile: ProfileOptions::default(),
            diagnostics_period: Duration::from_secs(1),
        }
    }
}

/// A received frame.
enum Payload {
    Raw(Image),
    Compressed(CompressedImage),
}

/// A frame turned into the model's input, with what its result needs.
pub struct Prepared {
    tensor: Vec<f32>,
    header: Header,
    seq: u64,
    arrived: Instant,
    preprocess: Duration,
}

/// The result of one frame: its metadata and the logits.
pub struct Classified {
    meta: Prepared,
    logits: Vec<f32>,
}

/// A task's model as the runtime drives it: the [`ModelSlot`] (descendant switching) on
/// pre-processed tensors, carrying the frame's metadata through to the result.
pub struct TaskModel {
    slot: ModelSlot,
}

impl InferenceModel for TaskModel {
    type Input = Prepared;
    type Output = Classified;
    type Error = ModelError;
    type State = <ModelSlot as InferenceModel>::State;

    fn new_state(&self) -> Result<Self::State, ModelError> {
        InferenceModel::new_state(&self.slot)
    }

    fn run(
        &self,
        state: &mut Self::State,
        mut input: Prepared,
    ) -> Result<Served<Classified>, ModelError> {
        let tensor = std::mem::take(&mut input.tensor);
        let served = InferenceModel::run(&self.slot, state, tensor)?;
        Ok(Served {
            descendant: served.descendant,
            output: Classified {
                meta: input,
                logits: served.output,
            },
        })
    }

    fn request_descendant(&self, index: usize) -> Result<(), ModelError> {
        self.slot.request(index)
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        InferenceModel::wait_ready(&self.slot, timeout)
    }

    fn num_descendants(&self) -> usize {
        self.slot.num_descendants()
    }
}

/// Counters the node keeps besides the runtime's (monotonic since start).
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Frames that could not be pre-processed (bad size, encoding, data).
    pub bad_frames: AtomicU64,
    /// Frames that arrived while the task was disabled (not pre-processed).
    pub ignored: AtomicU64,
    /// Frames replaced by a newer one before they were pre-processed.
    pub dropped_before_decode: AtomicU64,
    /// Frames whose region of interest reached past the image (clipped; still classified).
    pub roi_clipped: AtomicU64,
    /// Frames the transport saw lost before they reached the node (publisher sequence gaps:
    /// network drops, reader-cache overwrites), as reported by [`App::on_frames_lost`].
    pub lost_in_transport: AtomicU64,
}

/// Node-level counters of rejected control input.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Budgets rejected (NaN, infinite, negative cores).
    pub budgets_rejected: AtomicU64,
    /// Budgets accepted.
    pub budgets_accepted: AtomicU64,
    /// Accepted budgets of zero cores or bytes (every task paused).
    pub budgets_zero: AtomicU64,
    /// Priority messages rejected (unknown task, invalid priority).
    pub priorities_rejected: AtomicU64,
    /// Priority messages accepted.
    pub priorities_accepted: AtomicU64,
    /// Samples the transport could not decode.
    pub undecodable: AtomicU64,
}

#[derive(Default)]
struct Window {
    processed: u64,
}

struct PlanEntry {
    status: TaskStatus,
    descendant: String,
    share: f64,
    expected_fps: f64,
}

/// What the result sink needs about a task.
struct TaskMeta {
    cfg: TaskConfig,
    setup: TaskSetup,
    labels: Vec<String>,
    descendants: Vec<String>,
    pre: Preprocessor,
    enabled: AtomicBool,
    seq: AtomicU64,
    counters: TaskCounters,
    window: Mutex<Window>,
    plan: Mutex<PlanEntry>,
    /// The newest received frame not yet pre-processed (the decode thread takes it).
    pending: Mutex<Option<(Payload, Instant)>>,
    wake: Condvar,
}

struct Inner {
    opts: AppOptions,
    tasks: Arc<Vec<TaskMeta>>,
    runtime: RwLock<Option<Runtime<TaskModel>>>,
    planner: Mutex<Planner>,
    outputs: Arc<dyn Outputs>,
    stop: Shutdown,
    throttle: Arc<Throttle>,
    counters: InputCounters,
    budget_received: AtomicBool,
    last_summary: Mutex<String>,
    /// Sequence number of the last plan applied. Plans are made under the planner lock but
    /// applied after it is released, so two threads (e.g. a budget arriving while the control
    /// thread re-calibrates) may apply in the wrong order; the older plan is then dropped.
    applied_seq: Mutex<Option<u64>>,
    /// Every task's ladder from the start-up profile; calibration scales from these.
    profiled: Vec<Arc<Ladder>>,
    /// Every task's model (the key of its calibration in the profile cache).
    models: Vec<Arc<MultiCapacityModel>>,
    /// The profile cache calibrations persist in (`None`: not persisted).
    cache: Option<ProfileCache>,
    /// Per task, the CPU seconds per frame of each descendant the ladder in use is calibrated
    /// with: stored at start (the previous run's), then merged with the runtime's measurements.
    observed: Mutex<Vec<Vec<Option<f64>>>>,
    /// The clock of published stamps (`/clock` with `use_sim_time`).
    clock: NodeClock,
    /// How often the planner's latencies are re-calibrated from what frames really cost
    /// (`scheduler.calibration_period_s`; `None`: the start-up profile only). A task's ladder
    /// is replaced (and the node re-plans, trigger `profile_changed:<task>`) only when some
    /// latency moved by more than [`CALIBRATION_THRESHOLD`] relative to the ladder in use.
    calibration_period: Option<Duration>,
}

/// The running node core (see the module docs). Dropping it without [`App::shutdown`] stops
/// the workers too.
pub struct App {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn ladder_of(
    task: &str,
    model: &MultiCapacityModel,
    opts: &AppOptions,
) -> Result<Ladder, AppError> {
    let cache = opts.profile_cache.as_ref().map(ProfileCache::new);
    let (profile, origin) =
        load_or_profile(model, &opts.profile, cache.as_ref(), false).map_err(|source| {
            AppError::Profile {
                task: task.to_string(),
                source,
            }
        })?;
    log::info!("task {task}: profile {origin:?}");
    let rungs = profile
        .descendants
        .iter()
        .zip(&model.manifest().descendants)
        .map(|(p, d)| Rung {
            name: d.name.clone(),
            accuracy: d.accuracy,
            latency_s: p.latency_ms_median / 1e3,
            build_s: p.build_ms / 1e3,
            plan_bytes: p.plan_bytes,
        })
        .collect();
    Ok(Ladder::new(task, rungs, Some(profile.master_bytes))?)
}

fn qos_of(t: &TaskConfig) -> Qos {
    let base = match t.qos {
        QosPreset::SensorData => Qos::SENSOR_DATA,
        QosPreset::Reliable => Qos::RELIABLE,
    };
    Qos {
        depth: t.qos_depth.clamp(1, 1000) as u32,
        ..base
    }
}

/// The top-1 class of `logits` and its softmax probability (`None` without a finite logit).
pub fn top1(logits: &[f32]) -> Option<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let (i, v) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    Some((i, (v - max).exp() / sum))
}

impl App {
    /// Loads every task's model, profiles it (or reads the cache), makes the first plan with
    /// the configured default budget, starts the runtime, and publishes class names and the
    /// first plan.
    ///
    /// # Errors
    /// [`AppError`] naming the task whose model, profile or input spec is unusable.
    pub fn start(
        cfg: &NodeConfig,
        opts: AppOptions,
        outputs: Arc<dyn Outputs>,
    ) -> Result<App, AppError> {
        let now = Instant::now();
        let policy = cfg.scheduler.switch_policy;
        let mut metas = Vec::new();
        let mut specs = Vec::new();
        let mut setups = Vec::new();
        let mut profiled = Vec::new();
        let mut models = Vec::new();
        let mut observed = Vec::new();
        let cache = opts.profile_cache.as_ref().map(ProfileCache::new);
        for t in &cfg.tasks {
            let model = Arc::new(MultiCapacityModel::load(&t.model_dir).map_err(|source| {
                AppError::Model {
                    task: t.name.clone(),
                    source,
                }
            })?);
            let base = ladder_of(&t.name, &model, &opts)?;
            // The previous run's calibration (same model, machine and crate version), so the
            // first plans use what frames cost in operation, not the cold profile.
            let stored = match (&cache, cfg.calibration_period) {
                (Some(c), Some(_)) => c.load_calibration(&model),
                _ => None,
            };
            let ladder = match &stored {
                Some(c) => {
                    let l = base.calibrated(&c.cpu_s_per_frame);
                    log::info!(
                        "task {}: calibration from the previous run ({}): {}",
                        t.name,
                        c.cpu_s_per_frame.iter().filter(|x| x.is_some()).count(),
                        l.rungs()
                            .iter()
                            .map(|r| format!("{}={:.2}ms", r.name, r.latency_s * 1e3))
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    l
                }
                None => base.clone(),
            };
            observed.push(stored.map(|c| c.cpu_s_per_frame).unwrap_or_default());
            profiled.push(Arc::new(base));
            models.push(model.clone());
            let roi = t.roi.map(|r| preprocess::Roi {
                x: r.x,
                y: r.y,
                width: r.width,
                height: r.height,
            });
            let pre = Preprocessor::new(&model.manifest().input, roi).map_err(|source| {
                AppError::Input {
                    task: t.name.clone(),
                    source,
                }
            })?;
            let slot =
                ModelSlot::new(model.clone(), policy, 0).map_err(|source| AppError::Model {
                    task: t.name.clone(),
                    source,
                })?;
            specs.push(TaskSpec {
                name: t.name.clone(),
                priority: t.priority,
                target_fps: t.target_fps,
                enabled: t.enabled,
                ladder: Arc::new(ladder),
            });
            setups.push(RtTaskSetup {
                name: t.name.clone(),
                model: Arc::new(TaskModel { slot }),
                target_fps: t.target_fps,
            });
            metas.push(TaskMeta {
                setup: TaskSetup {
                    name: t.name.clone(),
                    topic: t.subscribed_topic(),
                    image_topic: t.image_topic.clone(),
                    transport: t.transport,
                    qos: qos_of(t),
                },
                labels: model.manifest().labels.clone(),
                descendants: model
                    .manifest()
                    .descendants
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
                cfg: t.clone(),
                pre,
                enabled: AtomicBool::new(t.enabled),
                seq: AtomicU64::new(0),
                counters: TaskCounters::default(),
                window: Mutex::new(Window::default()),
                pending: Mutex::new(None),
                wake: Condvar::new(),
                plan: Mutex::new(PlanEntry {
                    status: TaskStatus::Idle,
                    descendant: String::new(),
                    share: 0.0,
                    expected_fps: 0.0,
                }),
            });
        }
        let planner = Planner::new(cfg.scheduler.clone(), specs, now)?;
        let tasks = Arc::new(metas);
        let throttle = {
            let outputs = outputs.clone();
            Arc::new(Throttle::with_sink(
                Duration::from_secs(5),
                Box::new(move |text: &str| outputs.warning(text)),
            ))
        };
        let sink = {
            let tasks = tasks.clone();
            let outputs = outputs.clone();
            let throttle = throttle.clone();
            move |done: Completed<Classified, ModelError>| {
                deliver(&tasks, &*outputs, &throttle, done)
            }
        };
        let runtime = Runtime::start(setups, RuntimeOptions::default(), sink)?;
        let b = cfg.scheduler.default_budget;
        log::info!(
            "no ResourceBudget received yet: starting from the default budget of {:.2} cores, {:.0} MB",
            b.cpu_cores,
            b.memory_bytes as f64 / 1048576.0
        );
        let first = planner.plan().clone();
        let inner = Arc::new(Inner {
            calibration_period: cfg.calibration_period,
            opts,
            tasks,
            runtime: RwLock::new(Some(runtime)),
            planner: Mutex::new(planner),
            outputs,
            stop: Shutdown::new(),
            throttle,
            counters: InputCounters::default(),
            budget_received: AtomicBool::new(false),
            last_summary: Mutex::new(String::new()),
            applied_seq: Mutex::new(None),
            profiled,
            models,
            cache,
            observed: Mutex::new(observed),
            clock: NodeClock::new(cfg.use_sim_time),
        });
        for (i, t) in inner.tasks.iter().enumerate() {
            let class_map = t
                .labels
                .iter()
                .enumerate()
                .map(|(k, name)| VisionClass {
                    class_id: k.min(u16::MAX as usize) as u16,
                    class_name: name.clone(),
                })
                .collect();
            inner.outputs.label_info(
                i,
                LabelInfo {
                    header: inner.clock.header(""),
                    class_map,
                    threshold: 0.0,
                },
            );
        }
        inner.apply(&first, 0.0);
        let mut threads = Vec::new();
        let inn = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || inn.control())
                .map_err(AppError::Thread)?,
        );
        for i in 0..inner.tasks.len() {
            let inn = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("decode-{}", inner.tasks[i].cfg.name))
                    .spawn(move || inn.decode_loop(i))
                    .map_err(AppError::Thread)?,
            );
        }
        Ok(App {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// The tasks, in configuration order (for the transport's subscriptions).
    pub fn tasks(&self) -> Vec<TaskSetup> {
        self.inner.tasks.iter().map(|t| t.setup.clone()).collect()
    }

    /// Task `task`'s node-side counters (the runtime's are in `/diagnostics`).
    pub fn task_counters(&self, task: usize) -> Option<&TaskCounters> {
        self.inner.tasks.get(task).map(|t| &t.counters)
    }

    /// Counters of rejected and accepted control input.
    pub fn input_counters(&self) -> &InputCounters {
        &self.inner.counters
    }

    /// The plan in force.
    pub fn plan(&self) -> Arc<Plan> {
        self.inner.planner.lock().plan().clone()
    }

    /// A raw image for task `task`.
    pub fn on_image(&self, task: usize, msg: Image) {
        self.inner.submit(task, Payload::Raw(msg));
    }

    /// A compressed image for task `task`.
    pub fn on_compressed(&self, task: usize, msg: CompressedImage) {
        self.inner.submit(task, Payload::Compressed(msg));
    }

    /// True if the node runs on sim time (`use_sim_time`): the transport then subscribes
    /// `/clock` and passes each message to [`App::on_clock`].
    pub fn uses_sim_time(&self) -> bool {
        self.inner.clock.is_sim()
    }

    /// A `/clock` message: with `use_sim_time`, stamps of plans, diagnostics and class names
    /// take this time from now on (ignored on the wall clock).
    pub fn on_clock(&self, msg: &Clock) {
        self.inner.clock.set(msg.clock);
    }

    /// The time the node stamps what it publishes with now (see [`NodeClock`]).
    pub fn now(&self) -> crate::msgs::Time {
        self.inner.clock.now()
    }

    /// A `ResourceBudget`: re-plans, or counts and logs an invalid one (the previous budget
    /// stays in force).
    pub fn on_budget(&self, msg: &ResourceBudget) {
        let b = Budget::from_message(msg);
        let t0 = Instant::now();
        let was_stale = self.inner.planner.lock().budget_stale();
        let r = self.inner.planner.lock().update_budget(&b, t0);
        if was_stale && r.is_ok() {
            log::info!(
                "ResourceBudget received again ({:.2} cores): the budget is no longer stale",
                b.cpu_cores
            );
        }
        match r {
            Ok(plan) => {
                self.inner
                    .counters
                    .budgets_accepted
                    .fetch_add(1, Ordering::Relaxed);
                if b.cpu_cores == 0.0 || b.memory_bytes == 0 {
                    self.inner
                        .counters
                        .budgets_zero
                        .fetch_add(1, Ordering::Relaxed);
                    self.inner.throttle.warn("zero budget", || {
                        "ResourceBudget of 0 cores or 0 bytes: every task is paused until a larger budget arrives"
                            .to_string()
                    });
                }
                if !self.inner.budget_received.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "first ResourceBudget: {:.2} cores, {:.0} MB",
                        b.cpu_cores,
                        b.memory_bytes as f64 / 1048576.0
                    );
                }
                if let Some(p) = plan {
                    self.inner.apply(&p, t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Err(e) => {
                self.inner
                    .counters
                    .budgets_rejected
                    .fetch_add(1, Ordering::Relaxed);
                self.inner.throttle.warn("budget", || {
                    format!("ResourceBudget rejected, previous budget kept: {e}")
                });
            }
        }
    }

    /// A `TaskPriority`: re-plans, or counts and logs an invalid one (unknown task, bad
    /// priority).
    pub fn on_priority(&self, msg: &TaskPriority) {
        let u = PriorityUpdate {
            task: msg.task.clone(),
            priority: f64::from(msg.priority),
            enabled: msg.enabled,
        };
        let t0 = Instant::now();
        let r = self.inner.planner.lock().update_priority(&u, t0);
        match r {
            Ok(plan) => {
                self.inner
                    .counters
                    .priorities_accepted
                    .fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "task {}: priority {} enabled {}",
                    msg.task,
                    msg.priority,
                    msg.enabled
                );
                if let Some(p) = plan {
                    self.inner.apply(&p, t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Err(e) => {
                self.inner
                    .counters
                    .priorities_rejected
                    .fetch_add(1, Ordering::Relaxed);
                self.inner
                    .throttle
                    .warn("priority", || format!("TaskPriority rejected: {e}"));
            }
        }
    }

    /// The transport noticed `n` frames of task `task` lost before delivery (sequence gaps of
    /// the camera's publisher): counted in `/diagnostics` (`frames_lost_transport`) and
    /// logged throttled; the node keeps serving.
    pub fn on_frames_lost(&self, task: usize, n: u64) {
        let Some(t) = self.inner.tasks.get(task) else {
            return;
        };
        t.counters.lost_in_transport.fetch_add(n, Ordering::Relaxed);
        self.inner.throttle.warn_for(&t.cfg.name, "lost_in_transport", || {
            format!(
                "task {}: {n} camera frame(s) lost before they reached the node (publisher sequence gap: network or a full reader cache)",
                t.cfg.name
            )
        });
    }

    /// A sample the transport could not decode (counted; logged throttled).
    pub fn on_bad_sample(&self, what: &str, err: &dyn std::fmt::Display) {
        self.inner
            .counters
            .undecodable
            .fetch_add(1, Ordering::Relaxed);
        let key = format!("undecodable {what}");
        self.inner
            .throttle
            .warn(&key, || format!("dropped an undecodable sample: {err}"));
    }

    /// Stops taking frames, lets each task finish the frame in hand and the one waiting in
    /// its mailbox (results are published), and stops the workers. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stop.request();
        for t in self.inner.tasks.iter() {
            t.wake.notify_all();
        }
        for h in std::mem::take(&mut *self.threads.lock()) {
            let _ = h.join();
        }
        let rt = self.inner.runtime.write().take();
        if let Some(rt) = rt {
            let counters = rt.shutdown(true);
            let processed: u64 = counters.iter().map(|c| c.processed).sum();
            let dropped: u64 = counters.iter().map(|c| c.dropped).sum();
            log::info!("node core stopped: {processed} frames classified, {dropped} dropped");
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Turns a finished frame into the published messages (on the task's worker thread).
fn deliver(
    tasks: &[TaskMeta],
    outputs: &dyn Outputs,
    throttle: &Throttle,
    done: Completed<Classified, ModelError>,
) {
    let Some(t) = tasks.get(done.task) else {
        return;
    };
    let c = match done.output {
        Ok(c) => c,
        Err(e) => {
            throttle.warn(&format!("infer {}", t.cfg.name), || {
                format!("task {}: inference failed: {e}", t.cfg.name)
            });
            return;
        }
    };
    let Some((class, score)) = top1(&c.logits) else {
        throttle.warn(&format!("logits {}", t.cfg.name), || {
            format!("task {}: the model returned no finite logits", t.cfg.name)
        });
        return;
    };
    let index = done.descendant.unwrap_or(0);
    let class_name = t
        .labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| class.to_string());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total = c.meta.arrived.elapsed();
    outputs.classification(
        done.task,
        Classification {
            header: c.meta.header.clone(),
            results: vec![ObjectHypothesis {
                class_id: class_name.clone(),
                score: f64::from(score),
            }],
        },
    );
    outputs.result(
        done.task,
        InferenceResult {
            header: c.meta.header,
            task: t.cfg.name.clone(),
            descendant: t.descendants.get(index).cloned().unwrap_or_default(),
            descendant_index: index.min(u16::MAX as usize) as u16,
            class_id: class.min(u16::MAX as usize) as u16,
            class_name,
            score,
            latency_queue_ms: ms(done.queued) as f32,
            latency_preprocess_ms: ms(c.meta.preprocess) as f32,
            latency_inference_ms: ms(done.inference) as f32,
            latency_total_ms: ms(total) as f32,
            frame_seq: c.meta.seq,
            frames_dropped: t.counters.bad_frames.load(Ordering::Relaxed),
        },
    );
    t.window.lock().processed += 1;
}

/// A plan as the node publishes it (`nestdnn_msgs/Plan`): `descendant_counts[i]` is task
/// i's ladder length, `solve_ms` the time the planner took, `header` the message header (the
/// node stamps it with the current time, bag replay with the bag time of the plan).
pub fn plan_message(
    p: &Plan,
    descendant_counts: &[usize],
    solve_ms: f64,
    header: Header,
) -> crate::msgs::Plan {
    use crate::scheduler::Objective;
    let objective_value = match p.objective {
        Objective::MinMaxCost => p.max_cost,
        _ => p.total_cost,
    };
    crate::msgs::Plan {
        header,
        plan_id: p.seq + 1,
        trigger: p.trigger.to_string(),
        objective: p.objective.as_str().to_string(),
        objective_value: objective_value as f32,
        cpu_cores_budget: p.budget.cpu_cores as f32,
        cpu_cores_used: p.cores_planned as f32,
        memory_budget_bytes: p.budget.memory_bytes,
        memory_used_bytes: p.memory_planned_bytes,
        solve_time_ms: solve_ms as f32,
        tasks: p
            .tasks
            .iter()
            .enumerate()
            .map(|(i, tp)| crate::msgs::TaskPlan {
                task: tp.task.clone(),
                enabled: tp.status != TaskStatus::Disabled,
                paused: tp.status != TaskStatus::Running,
                descendant: tp.descendant.clone(),
                descendant_index: tp.descendant_index.min(u16::MAX as usize) as u16,
                descendant_count: descendant_counts
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .min(u16::MAX as usize) as u16,
                share_cores: tp.share as f32,
                expected_accuracy: tp.expected_accuracy as f32,
                expected_fps: tp.expected_fps as f32,
                target_fps: tp.target_fps as f32,
                priority: tp.priority as f32,
                latency_ms: tp.latency_ms as f32,
                cost_cores: (tp.latency_ms / 1e3 * tp.target_fps) as f32,
                memory_bytes: tp.memory_bytes,
            })
            .collect(),
    }
}

impl Inner {
    fn with_runtime<R>(&self, f: impl FnOnce(&Runtime<TaskModel>) -> R) -> Option<R> {
        self.runtime.read().as_ref().map(f)
    }

    /// On the transport's thread: keep only the newest frame per task for its decode thread
    /// (no pre-processing here, so one slow camera cannot stall the DDS executor).
    fn submit(&self, task: usize, payload: Payload) {
        let Some(t) = self.tasks.get(task) else {
            return;
        };
        if self.stop.is_requested() {
            return;
        }
        if !t.enabled.load(Ordering::Relaxed) {
            t.counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if t.pending
            .lock()
            .replace((payload, Instant::now()))
            .is_some()
        {
            t.counters
                .dropped_before_decode
                .fetch_add(1, Ordering::Relaxed);
        }
        t.wake.notify_one();
    }

    /// Task `task`'s decode thread: pre-processes the newest frame and hands it to the runtime.
    fn decode_loop(&self, task: usize) {
        let Some(t) = self.tasks.get(task) else {
            return;
        };
        loop {
            let (payload, arrived) = {
                let mut slot = t.pending.lock();
                loop {
                    if self.stop.is_requested() {
                        return;
                    }
                    if let Some(p) = slot.take() {
                        break p;
                    }
                    t.wake.wait_for(&mut slot, Duration::from_millis(200));
                }
            };
            self.prepare_and_push(task, t, &payload, arrived);
        }
    }

    fn prepare_and_push(&self, task: usize, t: &TaskMeta, payload: &Payload, arrived: Instant) {
        let started = Instant::now();
        let (header, input) = match payload {
            Payload::Raw(m) => (
                &m.header,
                t.pre.raw_input(&preprocess::RawImage {
                    width: m.width,
                    height: m.height,
                    encoding: &m.encoding,
                    is_bigendian: m.is_bigendian != 0,
                    step: m.step,
                    data: &m.data,
                }),
            ),
            Payload::Compressed(m) => (
                &m.header,
                t.pre.compressed_input(&preprocess::CompressedImage {
                    format: &m.format,
                    data: &m.data,
                }),
            ),
        };
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                t.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                // Per task and kind: a frequent kind must not hide another one.
                self.throttle.warn_for(&t.cfg.name, e.kind(), || {
                    format!("task {}: dropped a frame ({}): {e}", t.cfg.name, e.kind())
                });
                return;
            }
        };
        if input.roi_clipped {
            t.counters.roi_clipped.fetch_add(1, Ordering::Relaxed);
            self.throttle.warn_for(&t.cfg.name, "roi_clipped", || {
                format!(
                    "task {}: the region of interest {:?} reaches past the image and is clipped: the model sees less than configured (check `{}.roi` against the camera resolution)",
                    t.cfg.name,
                    t.pre.roi(),
                    t.cfg.name
                )
            });
        }
        let prepared = Prepared {
            tensor: input.tensor,
            header: header.clone(),
            seq: t.seq.fetch_add(1, Ordering::Relaxed) + 1,
            arrived,
            preprocess: started.elapsed(),
        };
        let outcome = self.with_runtime(|rt| rt.push(task, prepared));
        if outcome == Some(PushOutcome::Started) {
            let r = self
                .planner
                .lock()
                .task_started(&t.cfg.name, Instant::now());
            match r {
                Ok(Some(p)) => self.apply(&p, started.elapsed().as_secs_f64() * 1e3),
                Ok(None) => {}
                Err(e) => log::error!("task {}: {e}", t.cfg.name),
            }
        }
    }

    /// Applies `plan` to the runtime and the tasks' state and publishes it, unless a newer
    /// plan was applied already (plans are applied in sequence order).
    fn apply(&self, plan: &Plan, solve_ms: f64) {
        let mut applied = self.applied_seq.lock();
        if let Some(last) = applied.filter(|&last| plan.seq <= last) {
            log::debug!(
                "plan {} ({}) superseded by plan {last}: not applied",
                plan.seq,
                plan.trigger
            );
            return;
        }
        *applied = Some(plan.seq);
        if let Some(Err(e)) = self.with_runtime(|rt| rt.apply(plan)) {
            log::error!("applying plan {}: {e}", plan.seq);
        }
        for (t, tp) in self.tasks.iter().zip(&plan.tasks) {
            t.enabled
                .store(tp.status != TaskStatus::Disabled, Ordering::Relaxed);
            let mut pe = t.plan.lock();
            pe.status = tp.status;
            pe.descendant = tp.descendant.clone();
            pe.share = tp.share;
            pe.expected_fps = tp.expected_fps;
        }
        let summary = plan
            .tasks
            .iter()
            .map(|t| {
                format!("{}={}@{:.2}c/{:?}", t.task, t.descendant, t.share, t.status).to_lowercase()
            })
            .collect::<Vec<_>>()
            .join(" ");
        // Every plan is published; only plans that change an assignment are logged at info.
        let changed = {
            let mut last = self.last_summary.lock();
            let changed = *last != summary;
            if changed {
                last.clone_from(&summary);
            }
            changed
        };
        let level = if changed {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "plan {} ({}, budget {:.2} cores): {summary}",
            plan.seq,
            plan.trigger,
            plan.budget.cpu_cores
        );
        self.outputs.plan(self.plan_msg(plan, solve_ms));
    }
    fn plan_msg(&self, p: &Plan, solve_ms: f64) -> crate::msgs::Plan {
        let counts: Vec<usize> = self.tasks.iter().map(|t| t.descendants.len()).collect();
        plan_message(p, &counts, solve_ms, self.clock.header(""))
    }

    fn control(&self) {
        let period = self.opts.diagnostics_period;
        let mut last = Instant::now();
        let mut prev: Vec<RtCounters> = Vec::new();
        let mut calibrated_at = Instant::now();
        loop {
            let (review, stale_at) = {
                let p = self.planner.lock();
                (p.next_review(), p.budget_deadline())
            };
            let wake = match (review, stale_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = wake
                .map(|r| r.saturating_duration_since(Instant::now()))
                .unwrap_or(period)
                .min(period.saturating_sub(last.elapsed()))
                .max(Duration::from_millis(10));
            if self.stop.wait_timeout(wait) {
                return;
            }
            let now = Instant::now();
            let review = self.planner.lock().review(now);
            if let Some(p) = review {
                self.apply(&p, 0.0);
            }
            let stale = self.planner.lock().check_budget(now);
            if let Some(p) = stale {
                let age = self.planner.lock().budget_age(now).as_secs_f64();
                self.throttle.warn("budget stale", || {
                    format!(
                        "no ResourceBudget for {age:.1} s (is the resource monitor running?): planning for the safe budget of {:.2} cores (scheduler.stale_budget_cores) until one arrives",
                        p.budget.cpu_cores
                    )
                });
                self.apply(&p, 0.0);
            }
            let timeout = self.planner.lock().settings().idle_timeout;
            let idle = self
                .with_runtime(|rt| rt.poll_idle(now, timeout))
                .unwrap_or_default();
            for i in idle {
                let Some(t) = self.tasks.get(i) else { continue };
                let r = self.planner.lock().task_stopped(&t.cfg.name, now);
                match r {
                    Ok(Some(p)) => self.apply(&p, 0.0),
                    Ok(None) => {}
                    Err(e) => log::error!("task {}: {e}", t.cfg.name),
                }
            }
            if let Some(every) = self.calibration_period {
                if calibrated_at.elapsed() >= every {
                    calibrated_at = Instant::now();
                    self.calibrate(calibrated_at);
                }
            }
            if last.elapsed() >= period {
                let dt = last.elapsed().as_secs_f64();
                last = Instant::now();
                let counters = self
                    .with_runtime(|rt| rt.all_counters())
                    .unwrap_or_default();
                self.outputs
                    .diagnostics(self.diagnostics(dt, &counters, &prev));
                prev = counters;
            }
        }
    }

    /// Replaces each task's ladder by the start-up profile calibrated with what frames cost
    /// in operation, where a latency moved by more than [`CALIBRATION_THRESHOLD`]; re-plans.
    fn calibrate(&self, now: Instant) {
        for (i, t) in self.tasks.iter().enumerate() {
            let Some(measured) = self.with_runtime(|rt| rt.cpu_per_frame(i)) else {
                return;
            };
            let Some(base) = self.profiled.get(i) else {
                continue;
            };
            // This run's measurements, and the stored ones for descendants not served yet.
            let observed: Vec<Option<f64>> = {
                let stored = self.observed.lock();
                let prev = stored.get(i).map_or(&[][..], Vec::as_slice);
                (0..base.len())
                    .map(|d| {
                        measured
                            .get(d)
                            .copied()
                            .flatten()
                            .or_else(|| prev.get(d).copied().flatten())
                    })
                    .collect()
            };
            let fresh = base.calibrated(&observed);
            let r = {
                let mut planner = self.planner.lock();
                let Some(current) = planner.task(&t.cfg.name).map(|s| s.ladder.clone()) else {
                    continue;
                };
                let moved = fresh
                    .rungs()
                    .iter()
                    .zip(current.rungs())
                    .map(|(a, b)| (a.latency_s / b.latency_s - 1.0).abs())
                    .fold(0.0, f64::max);
                if moved.is_nan() || moved <= CALIBRATION_THRESHOLD {
                    continue;
                }
                log::info!(
                    "task {}: calibrated latencies from operation (moved up to {:.0}%): {}",
                    t.cfg.name,
                    moved * 100.0,
                    fresh
                        .rungs()
                        .iter()
                        .map(|r| format!("{}={:.2}ms", r.name, r.latency_s * 1e3))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                planner.update_profile(&t.cfg.name, fresh, now)
            };
            self.persist_calibration(i, observed);
            match r {
                Ok(Some(p)) => self.apply(&p, 0.0),
                Ok(None) => {}
                Err(e) => log::error!("task {}: {e}", t.cfg.name),
            }
        }
    }

    /// Keeps task `task`'s calibration (CPU seconds per frame per descendant) for the next
    /// start, in the profile cache (atomic write); failures are logged, not fatal.
    fn persist_calibration(&self, task: usize, observed: Vec<Option<f64>>) {
        let (Some(cache), Some(model)) = (&self.cache, self.models.get(task)) else {
            return;
        };
        let name = self.tasks.get(task).map_or("", |t| t.cfg.name.as_str());
        let cal = Calibration::new(model, &observed);
        if let Some(slot) = self.observed.lock().get_mut(task) {
            *slot = observed;
        }
        match cache.store_calibration(model, &cal) {
            Ok(path) => log::debug!("task {name}: calibration kept in {}", path.display()),
            Err(e) => self.throttle.warn_for(name, "calibration_store", || {
                format!("task {name}: cannot keep the calibration: {e}")
            }),
        }
    }

    fn diagnostics(&self, dt: f64, now: &[RtCounters], prev: &[RtCounters]) -> DiagnosticArray {
        let kv = |k: &str, v: String| KeyValue {
            key: k.to_string(),
            value: v,
        };
        let node = self.opts.node_name.trim_start_matches('/');
        let mut status = Vec::with_capacity(self.tasks.len() + 1);
        for (i, t) in self.tasks.iter().enumerate() {
            let w = std::mem::take(&mut *t.window.lock());
            let pe = t.plan.lock();
            let rc = now.get(i).cloned();
            let errors_now = rc.as_ref().map_or(0, |c| c.errors);
            let errors_before = prev.get(i).map_or(errors_now, |c| c.errors);
            let rate = w.processed as f64 / dt.max(1e-3);
            let (level, message) = match pe.status {
                TaskStatus::Disabled => (DiagnosticStatus::OK, "disabled".to_string()),
                TaskStatus::Idle => (DiagnosticStatus::STALE, "no frames".to_string()),
                TaskStatus::Paused => (
                    DiagnosticStatus::WARN,
                    "paused: the budget does not cover it".to_string(),
                ),
                TaskStatus::Running if errors_now > errors_before => (
                    DiagnosticStatus::ERROR,
                    format!("{} inference errors", errors_now - errors_before),
                ),
                TaskStatus::Running if rate < 0.5 * pe.expected_fps => (
                    DiagnosticStatus::WARN,
                    format!("{rate:.1} fps, plan expects {:.1}", pe.expected_fps),
                ),
                TaskStatus::Running => (
                    DiagnosticStatus::OK,
                    format!("{rate:.1} fps on {}", pe.descendant),
                ),
            };
            let c = &t.counters;
            let bad = c.bad_frames.load(Ordering::Relaxed);
            let ignored = c.ignored.load(Ordering::Relaxed);
            let rc = rc.unwrap_or(RtCounters {
                task: t.cfg.name.clone(),
                received: 0,
                processed: 0,
                dropped: 0,
                ignored: 0,
                errors: 0,
                switches: 0,
                descendant: None,
                cpu_time_s: 0.0,
                share: 0.0,
                enabled: false,
                active: false,
                latency: Default::default(),
            });
            status.push(DiagnosticStatus {
                level,
                name: format!("{node}: {}", t.cfg.name),
                message,
                hardware_id: String::new(),
                values: vec![
                    kv("status", format!("{:?}", pe.status).to_lowercase()),
                    kv("descendant", pe.descendant.clone()),
                    kv("share_cores", format!("{:.3}", pe.share)),
                    kv("expected_fps", format!("{:.2}", pe.expected_fps)),
                    kv("rate_fps", format!("{rate:.2}")),
                    kv("latency_ms_mean", format!("{:.2}", rc.latency.mean_ms)),
                    kv("latency_ms_p90", format!("{:.2}", rc.latency.p90_ms)),
                    kv("latency_ms_max", format!("{:.2}", rc.latency.max_ms)),
                    kv("inference_cpu_s", format!("{:.3}", rc.cpu_time_s)),
                    kv(
                        "frames_received",
                        (rc.received + rc.ignored + bad + ignored).to_string(),
                    ),
                    kv("frames_processed", rc.processed.to_string()),
                    kv(
                        "frames_dropped_overrun",
                        (rc.dropped + c.dropped_before_decode.load(Ordering::Relaxed)).to_string(),
                    ),
                    kv(
                        "frames_dropped_inactive",
                        (rc.ignored + ignored).to_string(),
                    ),
                    kv("frames_bad", bad.to_string()),
                    kv(
                        "frames_lost_transport",
                        c.lost_in_transport.load(Ordering::Relaxed).to_string(),
                    ),
                    kv(
                        "frames_roi_clipped",
                        c.roi_clipped.load(Ordering::Relaxed).to_string(),
                    ),
                    kv("inference_errors", rc.errors.to_string()),
                    kv("descendant_switches", rc.switches.to_string()),
                ],
            });
        }
        let c = &self.counters;
        let (stale, age, timeout) = {
            let p = self.planner.lock();
            (
                p.budget_stale(),
                p.budget_age(Instant::now()).as_secs_f64(),
                p.settings().budget_timeout,
            )
        };
        let received = self.budget_received.load(Ordering::Relaxed);
        let (level, message) = if stale {
            (
                DiagnosticStatus::WARN,
                format!(
                    "budget stale: last budget {age:.1} s ago (timeout {:.1} s); planning for scheduler.stale_budget_cores",
                    timeout.map_or(0.0, |t| t.as_secs_f64())
                ),
            )
        } else if received {
            (
                DiagnosticStatus::OK,
                format!("budget received {age:.1} s ago"),
            )
        } else {
            (DiagnosticStatus::OK, "default budget in use".to_string())
        };
        status.push(DiagnosticStatus {
            level,
            name: format!("{node}: inputs"),
            message,
            hardware_id: String::new(),
            values: vec![
                kv("budget_stale", stale.to_string()),
                kv(
                    "budget_age_s",
                    if received || stale {
                        format!("{age:.2}")
                    } else {
                        "-".to_string()
                    },
                ),
                kv(
                    "budgets_accepted",
                    c.budgets_accepted.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "budgets_rejected",
                    c.budgets_rejected.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "budgets_zero",
                    c.budgets_zero.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "priorities_accepted",
                    c.priorities_accepted.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "priorities_rejected",
                    c.priorities_rejected.load(Ordering::Relaxed).to_string(),
                ),
                kv(
                    "samples_undecodable",
                    c.undecodable.load(Ordering::Relaxed).to_string(),
                ),
            ],
        });
        DiagnosticArray {
            header: self.clock.header(""),
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_is_softmax_argmax() {
        let (i, p) = top1(&[0.0, 2.0, 1.0]).unwrap();
        assert_eq!(i, 1);
        let e = [0f32, 2.0, 1.0].map(f32::exp);
        assert!((p - e[1] / e.iter().sum::<f32>()).abs() < 1e-6);
        assert!(top1(&[f32::NAN, 1.0]).is_some());
        assert!(top1(&[]).is_none());
        assert!(top1(&[f32::NAN]).is_none());
    }
}
