//! The perception node without ROS: [`App`], its tasks, planner and task workers, set up here
//! and split by concern into sibling files:
//!
//! - `frames.rs`: one frame from the transport's callback to its published result
//!   (newest-frame slot, decode thread, pre-processing, the task's model, result messages);
//! - `plans.rs`: budgets and priorities in, plans applied and published;
//! - `control.rs`: the control thread (dwell reviews, idle tasks, stale budgets,
//!   calibration, `/diagnostics`).
//!
//! A transport (DDS, r2r through [`super::ros`], bag replay) feeds [`App`] with decoded
//! messages and receives everything the node publishes through [`Outputs`].
//! Bad input never stops the node: it is counted (per task and per kind, reported in
//! `/diagnostics`), logged throttled, and dropped.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::frames::{result_sink, Payload, TaskModel};
use super::throttle::Throttle;
use super::{NodeClock, Shutdown};
use crate::config::{NodeConfig, TaskConfig, Transport};
use crate::interface::Qos;
use crate::model::{ModelError, ModelSlot, MultiCapacityModel, SwitchPolicy};
use crate::msgs::{
    Classification, Clock, DiagnosticArray, InferenceResult, LabelInfo, VisionClass,
};
use crate::preprocess::{self, Preprocessor};
use crate::profile::{load_or_profile, ProfileCache, ProfileError, ProfileOptions};
use crate::runtime::{Runtime, RuntimeError, RuntimeOptions, TaskSetup as RtTaskSetup};
use crate::scheduler::{Ladder, Plan, Planner, SchedulerError, TaskSpec, TaskStatus};

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
    /// The middleware refused a topic (node adapter, [`super::ros`]).
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
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
pub(super) struct Window {
    pub(super) processed: u64,
}

pub(super) struct PlanEntry {
    pub(super) status: TaskStatus,
    pub(super) descendant: String,
    pub(super) share: f64,
    pub(super) expected_fps: f64,
}

/// What the result sink needs about a task.
pub(super) struct TaskMeta {
    pub(super) cfg: TaskConfig,
    pub(super) setup: TaskSetup,
    pub(super) labels: Vec<String>,
    pub(super) descendants: Vec<String>,
    pub(super) pre: Preprocessor,
    pub(super) enabled: AtomicBool,
    pub(super) seq: AtomicU64,
    pub(super) counters: TaskCounters,
    pub(super) window: Mutex<Window>,
    pub(super) plan: Mutex<PlanEntry>,
    /// The newest received frame not yet pre-processed (the decode thread takes it).
    pub(super) pending: Mutex<Option<(Payload, Instant)>>,
    pub(super) wake: Condvar,
}

pub(super) struct Inner {
    pub(super) opts: AppOptions,
    pub(super) tasks: Arc<Vec<TaskMeta>>,
    pub(super) runtime: RwLock<Option<Runtime<TaskModel>>>,
    pub(super) planner: Mutex<Planner>,
    pub(super) outputs: Arc<dyn Outputs>,
    pub(super) stop: Shutdown,
    pub(super) throttle: Arc<Throttle>,
    pub(super) counters: InputCounters,
    pub(super) budget_received: AtomicBool,
    pub(super) last_summary: Mutex<String>,
    /// Sequence number of the last plan applied. Plans are made under the planner lock but
    /// applied after it is released, so two threads (e.g. a budget arriving while the control
    /// thread re-calibrates) may apply in the wrong order; the older plan is then dropped.
    pub(super) applied_seq: Mutex<Option<u64>>,
    /// Every task's ladder from the start-up profile; calibration scales from these.
    pub(super) profiled: Vec<Arc<Ladder>>,
    /// Every task's model (the key of its calibration in the profile cache).
    pub(super) models: Vec<Arc<MultiCapacityModel>>,
    /// The profile cache calibrations persist in (`None`: not persisted).
    pub(super) cache: Option<ProfileCache>,
    /// Per task, the CPU seconds per frame of each descendant the ladder in use is calibrated
    /// with: stored at start (the previous run's), then merged with the runtime's measurements.
    pub(super) observed: Mutex<Vec<Vec<Option<f64>>>>,
    /// The clock of published stamps (`/clock` with `use_sim_time`).
    pub(super) clock: NodeClock,
    /// How often the planner's latencies are re-calibrated from what frames really cost
    /// (`scheduler.calibration_period_s`; `None`: the start-up profile only). A task's ladder
    /// is replaced (and the node re-plans, trigger `profile_changed:<task>`) only when some
    /// latency moved by more than [`CALIBRATION_THRESHOLD`] relative to the ladder in use.
    pub(super) calibration_period: Option<Duration>,
}

/// The running node core (see the module docs). Dropping it without [`App::shutdown`] stops
/// the workers too.
pub struct App {
    pub(super) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
        let cache = opts.profile_cache.as_ref().map(ProfileCache::new);
        let mut loaded = Vec::new();
        for t in &cfg.tasks {
            loaded.push(LoadedTask::load(t, cfg, &opts, cache.as_ref())?);
        }
        let planner = Planner::new(
            cfg.scheduler.clone(),
            loaded.iter().map(|l| l.spec.clone()).collect(),
            now,
        )?;
        let mut setups = Vec::new();
        let mut metas = Vec::new();
        let mut profiled = Vec::new();
        let mut models = Vec::new();
        let mut observed = Vec::new();
        for l in loaded {
            setups.push(l.setup);
            metas.push(l.meta);
            profiled.push(l.profiled);
            models.push(l.model);
            observed.push(l.observed);
        }
        let tasks = Arc::new(metas);
        let throttle = {
            let outputs = outputs.clone();
            Arc::new(Throttle::with_sink(
                Duration::from_secs(5),
                Box::new(move |text: &str| outputs.warning(text)),
            ))
        };
        let sink = result_sink(tasks.clone(), outputs.clone(), throttle.clone());
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
        inner.publish_labels();
        inner.apply(&first, 0.0);
        let threads = inner.spawn_threads()?;
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

/// One configured task, loaded: what [`App::start`] builds the runtime, planner and node
/// state from.
struct LoadedTask {
    model: Arc<MultiCapacityModel>,
    /// The ladder of the start-up profile.
    profiled: Arc<Ladder>,
    /// The previous run's calibration (CPU seconds per frame per descendant), if any.
    observed: Vec<Option<f64>>,
    /// The task as the planner sees it (calibrated ladder).
    spec: TaskSpec,
    setup: RtTaskSetup<TaskModel>,
    meta: TaskMeta,
}

impl LoadedTask {
    /// Loads `t`'s model, its profile (cache or measured) and, with calibration on, the
    /// previous run's calibration, so the first plans use what frames cost in operation.
    fn load(
        t: &TaskConfig,
        cfg: &NodeConfig,
        opts: &AppOptions,
        cache: Option<&ProfileCache>,
    ) -> Result<Self, AppError> {
        let model_err = |source| AppError::Model {
            task: t.name.clone(),
            source,
        };
        let model = Arc::new(MultiCapacityModel::load(&t.model_dir).map_err(model_err)?);
        let (profile, origin) =
            load_or_profile(&model, &opts.profile, cache, false).map_err(|source| {
                AppError::Profile {
                    task: t.name.clone(),
                    source,
                }
            })?;
        log::info!("task {}: profile {origin:?}", t.name);
        let (base, accuracy_source) = Ladder::for_model(&model, &profile)?;
        log::info!("task {}: accuracies from the {accuracy_source}", t.name);
        let stored = match (cache, cfg.calibration_period) {
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
        let pre = t
            .preprocessor(&model.manifest().input)
            .map_err(|source| AppError::Input {
                task: t.name.clone(),
                source,
            })?;
        let model = if cfg.scheduler.switch_policy == SwitchPolicy::OneCopy {
            // The node keeps the model only for its manifest and hashes (calibration files).
            MultiCapacityModel::shed_master(model)
        } else {
            model
        };
        let slot =
            ModelSlot::new(model.clone(), cfg.scheduler.switch_policy, 0).map_err(model_err)?;
        Ok(LoadedTask {
            observed: stored.map(|c| c.cpu_s_per_frame).unwrap_or_default(),
            profiled: Arc::new(base),
            spec: t.spec(ladder),
            setup: RtTaskSetup {
                name: t.name.clone(),
                model: Arc::new(TaskModel { slot }),
                target_fps: t.target_fps,
            },
            meta: TaskMeta::new(t, &model, pre),
            model,
        })
    }
}

impl TaskMeta {
    fn new(t: &TaskConfig, model: &MultiCapacityModel, pre: Preprocessor) -> Self {
        let m = model.manifest();
        TaskMeta {
            setup: TaskSetup {
                name: t.name.clone(),
                topic: t.subscribed_topic(),
                image_topic: t.image_topic.clone(),
                transport: t.transport,
                qos: t.qos(),
            },
            labels: m.labels.clone(),
            descendants: m.descendants.iter().map(|d| d.name.clone()).collect(),
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
        }
    }
}

impl Inner {
    /// Publishes every task's class names (latched `LabelInfo`).
    fn publish_labels(&self) {
        for (i, t) in self.tasks.iter().enumerate() {
            let class_map = t
                .labels
                .iter()
                .enumerate()
                .map(|(k, name)| VisionClass {
                    class_id: k.min(u16::MAX as usize) as u16,
                    class_name: name.clone(),
                })
                .collect();
            self.outputs.label_info(
                i,
                LabelInfo {
                    header: self.clock.header(""),
                    class_map,
                    threshold: 0.0,
                },
            );
        }
    }

    /// Starts the control thread and every task's decode thread.
    fn spawn_threads(self: &Arc<Self>) -> Result<Vec<JoinHandle<()>>, AppError> {
        let mut threads = Vec::new();
        let inn = self.clone();
        threads.push(
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || inn.control())
                .map_err(AppError::Thread)?,
        );
        for i in 0..self.tasks.len() {
            let inn = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("decode-{}", self.tasks[i].cfg.name))
                    .spawn(move || inn.decode_loop(i))
                    .map_err(AppError::Thread)?,
            );
        }
        Ok(threads)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}
