//! Bag replay: recorded camera streams, budgets and priorities through the whole node core,
//! without ROS (what `nestdnn replay` runs).
//!
//! Frames go to the tasks whose subscribed topic ([`crate::config::TaskConfig::subscribed_topic`],
//! resolved against the root namespace) equals the bag topic; `ResourceBudget` on
//! `/nestdnn/resource_budget` and `TaskPriority` on `/nestdnn/task_priority` drive the
//! [`Planner`] exactly as the node does (same calls, same validation; the planner's clock is
//! `base instant + bag offset`), and so do a task's first frame (`task_started`), its camera
//! going quiet for `idle_timeout_s` (`task_stopped`) and dwell reviews. Ground truth: for an
//! image topic `T`, `T/ground_truth` carries a `vision_msgs/Classification` with the frame's
//! header stamp whose first hypothesis' `class_id` is the class name from the manifest.
//!
//! Two pacings ([`Pacing`]):
//! * **Deterministic** (default): bag time drives [`crate::sim::Simulator`] (the runtime's
//!   mailbox, shares and switching rules in virtual time, with each descendant's profiled
//!   latency). Every frame is really pre-processed on arrival (as the node's decode thread
//!   does) and every frame the simulator serves is really classified by the descendant the
//!   simulator says (tract), so predictions and accuracy are real while timing is virtual.
//!   The same bag and the same profiles give the same plans and the same predictions, as fast
//!   as the CPU allows. Latencies come from [`ProfileSource`]: profile files (portable,
//!   e.g. the committed `test/bags/profiles/`) or this machine's profile cache.
//! * **Realtime**: frames are pushed through the real [`crate::node::app::App`] on the wall
//!   clock at bag pace, so drops and frame rates are those of this CPU (see `realtime`).
//!
//! Both give the same [`Report`]; [`ReplayOptions::out`] also writes the node's outputs to an
//! MCAP bag in ROS 2 form (`/nestdnn/<task>/result` `nestdnn_msgs/InferenceResult`,
//! `/nestdnn/<task>/classification` `vision_msgs/Classification`, `/nestdnn/plan`
//! `nestdnn_msgs/Plan`; message definitions embedded).
//!
//! Bad input: a bag that cannot be opened or holds nothing gives a report with status
//! [`Status::Unusable`]; a damaged storage file (truncated, corrupt chunk) is replayed as far as
//! it reads and gives [`Status::Incomplete`]; single undecodable messages and topics of other
//! types are skipped and counted. Every error names the file and where it failed.

mod realtime;
mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{
    PlanRecord, PlanTask, Progress, ReadSummary, Report, Status, Switch, TaskProgress, TaskReport,
};

use crate::bag::{BagError, BagMessage, BagReader, DecodedMessage, McapWriter, QosProfile};
use crate::config::{NodeConfig, TaskConfig, Transport};
use crate::interface::{TaskOutput, BUDGET, PLAN, PRIORITY};
use crate::model::{DescendantPlan, ModelError, MultiCapacityModel, PlanState};
use crate::msgs::{
    Classification, CompressedImage as CompressedImageMsg, Header, Image as ImageMsg,
    InferenceResult, Plan as PlanMsg, RosMessage, Time,
};
use crate::node::frames::{result_messages, FrameResult, Latencies};
use crate::node::plans::plan_message;
use crate::preprocess::{self, Preprocessor};
use crate::profile::{load_or_profile, ModelProfile, ProfileCache, ProfileError, ProfileOptions};
use crate::scheduler::{Budget, Ladder, Plan, Planner, PriorityUpdate, SchedulerError, TaskStatus};
use crate::sim::{Assignment, DropReason, SimEvent, SimOptions, Simulator};

/// Undecodable messages listed one by one in [`Report::warnings`] (the rest are counted).
const MAX_LISTED: usize = 10;

/// Errors that stop a replay before or while it runs (the bag's own problems are reported in
/// [`Report::status`] / [`Report::errors`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A task's model cannot be loaded or a descendant's plan built.
    #[error("task {task}: {source}")]
    Model {
        /// The task.
        task: String,
        /// Why.
        #[source]
        source: ModelError,
    },
    /// A task's model cannot be profiled (cache source).
    #[error("task {task}: profiling failed: {source}")]
    Profile {
        /// The task.
        task: String,
        /// Why.
        #[source]
        source: ProfileError,
    },
    /// A profile file is missing, unreadable or made for another model.
    #[error("task {task}: profile file {path}: {reason}")]
    ProfileFile {
        /// The task.
        task: String,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The task's model input cannot be made from images (ROI, input spec).
    #[error("task {task}: {source}")]
    Input {
        /// The task.
        task: String,
        /// Why.
        #[source]
        source: preprocess::PreprocessError,
    },
    /// The scheduler refused the configuration.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The output bag cannot be written.
    #[error("output bag: {0}")]
    Output(#[source] BagError),
    /// The node core (realtime pacing) failed to start.
    #[error("node core: {0}")]
    App(#[source] crate::node::app::AppError),
}

/// How bag time is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Virtual time from the bag, through the simulator (deterministic).
    Deterministic,
    /// Wall clock at bag pace through the real node core.
    Realtime,
}

/// Where descendant latencies (the planner's ladders and the simulator's service times) come
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// This machine's profile cache (`None`: the default folder); a model without a cached
    /// profile is profiled now and cached, so later replays use the same numbers.
    Cache(Option<PathBuf>),
    /// A folder of `ModelProfile` JSON files (`nestdnn profile MODEL --json`), one per model,
    /// named `<manifest task>.json`; each must match its model's manifest SHA-256. Portable:
    /// the same plans on every machine.
    Files(PathBuf),
}

/// Options of [`replay`].
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Deterministic or realtime.
    pub pacing: Pacing,
    /// Latencies.
    pub profiles: ProfileSource,
    /// Write the outputs to this MCAP file.
    pub out: Option<PathBuf>,
    /// Bag seconds between progress snapshots (> 0; default 1).
    pub progress_period_s: f64,
}

impl ReplayOptions {
    /// The progress period in bag seconds (1 s when the option is not a positive number).
    fn progress_period(&self) -> f64 {
        if self.progress_period_s.is_finite() && self.progress_period_s > 0.0 {
            self.progress_period_s
        } else {
            1.0
        }
    }
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            pacing: Pacing::Deterministic,
            profiles: ProfileSource::Cache(None),
            out: None,
            progress_period_s: 1.0,
        }
    }
}

/// Replays `bag` through the tasks of `cfg`. `progress` is called every
/// [`ReplayOptions::progress_period_s`] of bag time (and once at the end).
///
/// # Errors
/// [`ReplayError`] for problems of the configuration, the models, the profiles or the output
/// file. Problems of the bag itself are in the returned report ([`Report::status`]).
pub fn replay(
    bag: &Path,
    cfg: &NodeConfig,
    opts: &ReplayOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, ReplayError> {
    match opts.pacing {
        Pacing::Deterministic => Deterministic::new(bag, cfg, opts)?.run(bag, progress),
        Pacing::Realtime => realtime::run(bag, cfg, opts, progress),
    }
}

/// Bag topic (fully resolved) -> indices of the tasks it feeds.
type Routes = HashMap<String, Vec<usize>>;

/// The camera routes and the `<camera>/ground_truth` routes of `tasks`.
fn routes(tasks: &[crate::config::TaskConfig]) -> (Routes, Routes) {
    let mut images = Routes::new();
    let mut truth = Routes::new();
    for (i, t) in tasks.iter().enumerate() {
        images
            .entry(resolve(&t.subscribed_topic()))
            .or_default()
            .push(i);
        truth
            .entry(format!(
                "{}/ground_truth",
                resolve(&t.image_topic).trim_end_matches('/')
            ))
            .or_default()
            .push(i);
    }
    (images, truth)
}

/// Fully-qualified topic of a configured (possibly relative) topic name, node at `/`.
fn resolve(topic: &str) -> String {
    if topic.starts_with('/') {
        topic.to_string()
    } else {
        format!("/{}", topic.trim_start_matches('~').trim_start_matches('/'))
    }
}

/// A task's model, its ladder and where the latencies came from.
struct Loaded {
    model: Arc<MultiCapacityModel>,
    ladder: Ladder,
    origin: String,
}

fn load_task(t: &TaskConfig, source: &ProfileSource) -> Result<Loaded, ReplayError> {
    let model = MultiCapacityModel::load(&t.model_dir).map_err(|source| ReplayError::Model {
        task: t.name.clone(),
        source,
    })?;
    let (profile, origin): (ModelProfile, String) = match source {
        ProfileSource::Cache(dir) => {
            let cache = dir
                .clone()
                .or_else(ProfileCache::default_dir)
                .map(ProfileCache::new);
            let (p, o) = load_or_profile(&model, &ProfileOptions::default(), cache.as_ref(), false)
                .map_err(|source| ReplayError::Profile {
                    task: t.name.clone(),
                    source,
                })?;
            (p, format!("{o:?}"))
        }
        ProfileSource::Files(dir) => {
            let path = dir.join(format!("{}.json", model.manifest().task));
            let bad = |reason: String| ReplayError::ProfileFile {
                task: t.name.clone(),
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(format!(
                    "{e}; write it with `nestdnn profile {} --json > {}`",
                    t.model_dir.display(),
                    path.display()
                ))
            })?;
            let p: ModelProfile = serde_json::from_str(&text)
                .map_err(|e| bad(format!("not a profile (nestdnn profile --json): {e}")))?;
            if p.model_sha256 != model.manifest_sha256() {
                return Err(bad(format!(
                    "made for another version of the model (manifest SHA-256 {}, the model's is {}); re-measure it with `nestdnn profile {} --json`",
                    p.model_sha256,
                    model.manifest_sha256(),
                    t.model_dir.display()
                )));
            }
            let origin = format!("file {} ({})", path.display(), p.cpu_model);
            (p, origin)
        }
    };
    let (ladder, accuracy_source) = Ladder::for_model(&model, &profile)?;
    let origin = format!("{origin}; accuracies from the {accuracy_source}");
    Ok(Loaded {
        model: Arc::new(model),
        ladder,
        origin,
    })
}

/// Per-task running totals shared by both pacings.
#[derive(Default)]
struct Tally {
    report: TaskReport,
    /// Ground truth by header stamp (ns) not yet matched to a prediction.
    truth: HashMap<i64, String>,
    /// Predictions (class name, descendant) by stamp not yet matched to ground truth.
    predicted: HashMap<i64, (String, usize)>,
    expected_sum: f64,
    window: u64,
    first_frame: Option<f64>,
    last_frame: f64,
    last_served: Option<usize>,
    /// Header stamps of the task's frames (to tell ground truth of a dropped frame from
    /// ground truth that matches no frame).
    stamps: HashSet<i64>,
    /// A ground-truth class id that is not a label of the model.
    unknown_example: Option<String>,
}

impl Tally {
    /// An empty tally of task `index`, configured as `t`.
    fn for_task(index: usize, t: &TaskConfig) -> Tally {
        Tally {
            report: TaskReport {
                index,
                topic: resolve(&t.subscribed_topic()),
                model: t.model_dir.display().to_string(),
                ..TaskReport::default()
            },
            ..Tally::default()
        }
    }

    fn score(&mut self, truth: &str, predicted: &str, accuracy: f64) {
        self.report.ground_truth += 1;
        self.report.correct += u64::from(truth == predicted);
        self.expected_sum += accuracy;
    }

    fn on_truth(&mut self, stamp: i64, class: String, accuracies: &[f64]) {
        match self.predicted.remove(&stamp) {
            Some((p, d)) => self.score(&class, &p, accuracies.get(d).copied().unwrap_or(0.0)),
            None => {
                self.truth.insert(stamp, class);
            }
        }
    }

    /// Ground truth for the frame stamped `stamp`; not scored (counted) when `class` is not
    /// one of the model's `labels`.
    fn on_truth_checked(
        &mut self,
        stamp: i64,
        class: String,
        labels: &[String],
        accuracies: &[f64],
    ) {
        self.report.ground_truth_messages += 1;
        if !labels.contains(&class) {
            self.report.ground_truth_unknown_label += 1;
            self.unknown_example.get_or_insert(class);
            return;
        }
        self.on_truth(stamp, class, accuracies);
    }

    /// A frame of this task stamped `stamp` arrived at bag time `t`.
    fn frame_arrived(&mut self, t: f64, stamp: i64) {
        self.frame_seen(t);
        self.stamps.insert(stamp);
    }

    /// Warnings and errors about the ground truth, after the bag: labels the model does not
    /// have and stamps that match no frame (all of them: the accuracy would be meaningless).
    fn audit(&mut self, task: &str, labels: &[String], warnings: &mut Vec<String>) -> Vec<String> {
        let mut errors = Vec::new();
        let unmatched = self
            .truth
            .keys()
            .filter(|s| !self.stamps.contains(s))
            .count() as u64;
        let r = &mut self.report;
        r.ground_truth_unmatched = unmatched;
        let n = r.ground_truth_messages;
        if r.ground_truth_unknown_label > 0 {
            let shown: Vec<&str> = labels.iter().take(12).map(String::as_str).collect();
            let text = format!(
                "task {task}: {} of {n} ground-truth class ids are not labels of the model (e.g. {:?}; its labels: {}{}); they were not scored",
                r.ground_truth_unknown_label,
                self.unknown_example.as_deref().unwrap_or(""),
                shown.join(", "),
                if labels.len() > shown.len() { ", ..." } else { "" }
            );
            if r.ground_truth_unknown_label == n {
                errors.push(format!(
                    "{text}: ground truth must carry the model's label names (manifest `labels`)"
                ));
            } else {
                warnings.push(text);
            }
        }
        let known = n - r.ground_truth_unknown_label;
        if unmatched > 0 {
            let text = format!(
                "task {task}: {unmatched} of {known} ground-truth messages match no frame's header stamp; they were not scored"
            );
            if unmatched == known && r.frames > 0 {
                errors.push(format!(
                    "{text}: ground truth must carry the stamp of the frame it labels"
                ));
            } else {
                warnings.push(text);
            }
        }
        if r.roi_clipped > 0 {
            warnings.push(format!(
                "task {task}: the region of interest reached past the image in {} of {} frames and was clipped (check `{task}.roi` against the camera resolution)",
                r.roi_clipped, r.frames
            ));
        }
        errors
    }

    fn on_prediction(&mut self, stamp: i64, class: &str, d: usize, accuracies: &[f64]) {
        match self.truth.remove(&stamp) {
            Some(t) => self.score(&t, class, accuracies.get(d).copied().unwrap_or(0.0)),
            None => {
                self.predicted.insert(stamp, (class.to_string(), d));
            }
        }
    }

    fn served(&mut self, t: f64, d: usize, names: &[String], inference_s: f64) {
        let name = names.get(d).cloned().unwrap_or_else(|| format!("#{d}"));
        if self.last_served != Some(d) {
            self.report.switches.push(Switch {
                time: t,
                descendant: name.clone(),
                descendant_index: d,
            });
            self.last_served = Some(d);
        }
        *self.report.descendants.entry(name).or_default() += 1;
        self.report.processed += 1;
        self.report.inference_s += inference_s;
        self.window += 1;
    }

    fn frame_seen(&mut self, t: f64) {
        self.report.frames += 1;
        self.first_frame.get_or_insert(t);
        self.last_frame = t;
    }

    fn accuracy(&self) -> Option<f64> {
        (self.report.ground_truth > 0)
            .then(|| self.report.correct as f64 / self.report.ground_truth as f64)
    }

    fn finish(&mut self) {
        let accuracy = self.accuracy();
        let r = &mut self.report;
        r.dropped = r.dropped_replaced + r.dropped_paused + r.dropped_at_end;
        r.accuracy = accuracy;
        r.expected_accuracy =
            (r.ground_truth > 0).then(|| self.expected_sum / r.ground_truth as f64);
        let span = self.first_frame.map_or(0.0, |f| self.last_frame - f);
        // n frames over a span of (n - 1) periods: rate = processed / (span + one period).
        let period = if r.frames > 1 {
            span / (r.frames - 1) as f64
        } else {
            0.0
        };
        r.fps = if span + period > 0.0 {
            r.processed as f64 / (span + period)
        } else {
            0.0
        };
    }
}

fn plan_record(p: &Plan, t: f64) -> PlanRecord {
    PlanRecord {
        time: t,
        seq: p.seq,
        trigger: p.trigger.to_string(),
        budget_cores: p.budget.cpu_cores,
        cores_planned: p.cores_planned,
        total_cost: p.total_cost,
        notes: p.notes.clone(),
        tasks: p
            .tasks
            .iter()
            .map(|tp| PlanTask {
                task: tp.task.clone(),
                status: format!("{:?}", tp.status).to_lowercase(),
                descendant: tp.descendant.clone(),
                descendant_index: tp.descendant_index,
                share: tp.share,
                expected_fps: tp.expected_fps,
                expected_accuracy: tp.expected_accuracy,
                priority: tp.priority,
            })
            .collect(),
    }
}

/// A task's result topic in the output bag (the node's, at the root namespace).
fn result_topic(task: &str) -> String {
    format!("/{}", TaskOutput::Result.name(task))
}

/// A task's classification topic in the output bag.
fn classification_topic(task: &str) -> String {
    format!("/{}", TaskOutput::Classification.name(task))
}

fn stamp_ns(h: &Header) -> i64 {
    h.stamp.as_nanos()
}

/// The output bag. A write that fails (disk full, folder gone) stops the output, not the
/// replay: the error is kept for [`Report::output_errors`], the partial file is removed and
/// the replay goes on to its summary and report.
struct Output {
    writer: Option<McapWriter>,
    error: Option<String>,
}

impl Output {
    /// The output bag `opts.out` asks for, created now (`None` without one).
    fn for_options(
        opts: &ReplayOptions,
        tasks: &[TaskConfig],
    ) -> Result<Option<Self>, ReplayError> {
        opts.out
            .as_deref()
            .map(|p| Output::create(p, tasks))
            .transpose()
    }

    fn create(path: &Path, tasks: &[TaskConfig]) -> Result<Self, ReplayError> {
        let mut writer = McapWriter::create(path).map_err(ReplayError::Output)?;
        let reliable = [QosProfile::DEFAULT];
        for t in tasks {
            writer
                .add_topic::<InferenceResult>(&result_topic(&t.name), &reliable)
                .map_err(ReplayError::Output)?;
            writer
                .add_topic::<Classification>(&classification_topic(&t.name), &reliable)
                .map_err(ReplayError::Output)?;
        }
        writer
            .add_topic::<PlanMsg>(&PLAN.in_root(), &[QosProfile::LATCHED])
            .map_err(ReplayError::Output)?;
        Ok(Output {
            writer: Some(writer),
            error: None,
        })
    }

    fn check(&mut self, r: Result<(), BagError>) {
        if let Err(e) = r {
            self.error = Some(e.to_string());
            // Dropping the unfinished writer removes its temporary file.
            self.writer = None;
        }
    }

    fn result(&mut self, task: &str, time_ns: u64, c: &Classification, r: &InferenceResult) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let res = w
            .write(&result_topic(task), time_ns, r)
            .and_then(|()| w.write(&classification_topic(task), time_ns, c));
        self.check(res);
    }

    fn plan(&mut self, time_ns: u64, p: &PlanMsg) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let res = w.write(&PLAN.in_root(), time_ns, p);
        self.check(res);
    }

    /// Finishes the file; the error that stopped it, if any (nothing is left at the path
    /// then).
    fn finish(mut self, report: &mut Report) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finish() {
                self.error = Some(e.to_string());
            }
        }
        if let Some(e) = self.error {
            report
                .output_errors
                .push(format!("output bag not written: {e}"));
        }
    }
}

/// How a bag read error changes the report.
fn record_bag_error(report: &mut Report, e: &BagError, listed: &mut usize) {
    match e {
        BagError::Decode { .. } => {
            if *listed < MAX_LISTED {
                report.warnings.push(format!("skipped: {e}"));
            }
            *listed += 1;
        }
        BagError::Empty { .. } => {
            report.status = Status::Unusable;
            report.errors.push(e.to_string());
        }
        _ => {
            if report.status == Status::Ok {
                report.status = Status::Incomplete;
            }
            report.errors.push(e.to_string());
        }
    }
}

/// The pre-processor of task `t` (its model's input, its ROI).
fn preprocessor(t: &TaskConfig, model: &MultiCapacityModel) -> Result<Preprocessor, ReplayError> {
    t.preprocessor(&model.manifest().input)
        .map_err(|source| ReplayError::Input {
            task: t.name.clone(),
            source,
        })
}

/// Marks the report unusable with `errors` (none: unchanged).
fn fail_with(report: &mut Report, errors: Vec<String>) {
    if !errors.is_empty() {
        report.status = Status::Unusable;
        report.errors.extend(errors);
    }
}

/// Checks the bag's topics against the tasks before replaying: a subscribed topic recorded
/// with another message type is an error (the task would get no frame: returns false, report
/// unusable); a subscribed topic the bag lacks, a ground-truth topic of another type and a
/// storage file without CRCs (damage inside it cannot be detected) are warnings.
fn check_bag<'a>(
    reader: &BagReader,
    tasks: impl IntoIterator<Item = &'a TaskConfig>,
    report: &mut Report,
) -> bool {
    let mut errors = Vec::new();
    for t in tasks {
        let topic = resolve(&t.subscribed_topic());
        let want = match t.transport {
            Transport::Raw => ImageMsg::TYPE_NAME,
            Transport::Compressed => CompressedImageMsg::TYPE_NAME,
        };
        match reader.topics().iter().find(|i| i.name == topic) {
            Some(i) if i.type_name != want => errors.push(format!(
                "task {}: the bag records {topic} as {}, but the task subscribes to it as {want} (transport {:?}): fix `{}.transport` or `{}.image_topic`",
                t.name,
                i.type_name,
                t.transport,
                t.name,
                t.name
            )),
            Some(_) => {}
            None => report.warnings.push(format!(
                "task {}: the bag has no topic {topic} (the task gets no frame)",
                t.name
            )),
        }
        let truth = format!(
            "{}/ground_truth",
            resolve(&t.image_topic).trim_end_matches('/')
        );
        if let Some(i) = reader.topics().iter().find(|i| i.name == truth) {
            if i.type_name != Classification::TYPE_NAME {
                report.warnings.push(format!(
                    "task {}: ground truth {truth} is recorded as {}, not {}; not used",
                    t.name,
                    i.type_name,
                    Classification::TYPE_NAME
                ));
            }
        }
    }
    for d in reader.damage() {
        report.warnings.push(d.to_string());
    }
    for f in reader.unchecked_files() {
        report.warnings.push(format!(
            "{} carries no CRCs (its writer did not compute them): damage inside it cannot be detected",
            f.display()
        ));
    }
    let ok = errors.is_empty();
    fail_with(report, errors);
    ok
}

fn empty_report(bag: &Path, cfg: &NodeConfig, pacing: &str) -> Report {
    Report {
        bag: bag.display().to_string(),
        files: Vec::new(),
        params: cfg.source.as_ref().map(|p| p.display().to_string()),
        pacing: pacing.to_string(),
        profiles: BTreeMap::new(),
        status: Status::Ok,
        errors: Vec::new(),
        warnings: Vec::new(),
        output_errors: Vec::new(),
        read: ReadSummary::default(),
        start_time_ns: 0,
        duration_s: 0.0,
        wall_s: 0.0,
        rejected_events: 0,
        tasks: BTreeMap::new(),
        plans: Vec::new(),
    }
}

/// A task in deterministic replay.
struct SimTask {
    cfg: TaskConfig,
    model: Arc<MultiCapacityModel>,
    pre: Preprocessor,
    labels: Vec<String>,
    names: Vec<String>,
    accuracies: Vec<f64>,
    /// Cores the task needs at its target frame rate on its largest descendant.
    need_cores: f64,
    plans: Vec<Option<(DescendantPlan, PlanState)>>,
    /// Pre-processed frames offered to the simulator, by frame id.
    /// Each with its header, arrival (bag s) and measured pre-processing time (wall s).
    waiting: HashMap<u64, (Header, Vec<f32>, f64, f64)>,
    active: bool,
    tally: Tally,
}

impl SimTask {
    fn state(&mut self, d: usize) -> Result<&mut PlanState, ReplayError> {
        if self.plans.len() <= d {
            self.plans.resize_with(d + 1, || None);
        }
        if self.plans[d].is_none() {
            let err = |source| ReplayError::Model {
                task: self.cfg.name.clone(),
                source,
            };
            let plan = self.model.build_plan(d).map_err(err)?;
            let state = plan.spawn().map_err(err)?;
            self.plans[d] = Some((plan, state));
        }
        match &mut self.plans[d] {
            Some((_, s)) => Ok(s),
            None => unreachable!("built above"),
        }
    }
}

struct Deterministic {
    tasks: Vec<SimTask>,
    planner: Planner,
    sim: Simulator,
    base: Instant,
    t0_ns: Option<u64>,
    now: f64,
    image_routes: HashMap<String, Vec<usize>>,
    truth_routes: HashMap<String, Vec<usize>>,
    idle_timeout: f64,
    next_tick: f64,
    period: f64,
    frame_ids: u64,
    report: Report,
    out: Option<Output>,
    counts: Vec<usize>,
}

impl Deterministic {
    fn new(bag: &Path, cfg: &NodeConfig, opts: &ReplayOptions) -> Result<Self, ReplayError> {
        let mut report = empty_report(bag, cfg, "deterministic");
        let mut tasks = Vec::new();
        let mut specs = Vec::new();
        let mut latencies = Vec::new();
        let (image_routes, truth_routes) = routes(&cfg.tasks);
        for (i, t) in cfg.tasks.iter().enumerate() {
            let l = load_task(t, &opts.profiles)?;
            report.profiles.insert(t.name.clone(), l.origin.clone());
            let pre = preprocessor(t, &l.model)?;
            let need_cores = l.ladder.rungs()[l.ladder.largest()].latency_s * t.target_fps;
            latencies.push(l.ladder.rungs().iter().map(|r| r.latency_s).collect());
            specs.push(t.spec(l.ladder));
            let m = l.model.manifest();
            let tally = Tally::for_task(i, t);
            tasks.push(SimTask {
                cfg: t.clone(),
                labels: m.labels.clone(),
                names: m.descendants.iter().map(|d| d.name.clone()).collect(),
                accuracies: m.descendants.iter().map(|d| d.accuracy).collect(),
                need_cores,
                model: l.model,
                pre,
                plans: Vec::new(),
                waiting: HashMap::new(),
                active: false,
                tally,
            });
        }
        let base = Instant::now();
        let planner = Planner::new(cfg.scheduler.clone(), specs, base)?;
        let sim = Simulator::with_options(
            latencies,
            SimOptions {
                target_fps: cfg.tasks.iter().map(|t| t.target_fps).collect(),
                ..SimOptions::default()
            },
        );
        let out = Output::for_options(opts, &cfg.tasks)?;
        let period = opts.progress_period();
        let counts = tasks.iter().map(|t| t.names.len()).collect();
        Ok(Deterministic {
            tasks,
            planner,
            sim,
            base,
            t0_ns: None,
            now: 0.0,
            image_routes,
            truth_routes,
            idle_timeout: cfg.scheduler.idle_timeout.as_secs_f64(),
            next_tick: period,
            period,
            frame_ids: 0,
            report,
            out,
            counts,
        })
    }

    fn instant(&self, t: f64) -> Instant {
        self.base + Duration::from_secs_f64(t.max(0.0))
    }

    fn bag_ns(&self, t: f64) -> u64 {
        self.t0_ns.unwrap_or(0) + (t.max(0.0) * 1e9).round() as u64
    }

    fn run(
        mut self,
        bag: &Path,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Report, ReplayError> {
        let wall = Instant::now();
        let first = self.planner.plan().clone();
        self.apply(&first, 0.0)?;
        let reader = match BagReader::open(bag) {
            Ok(r) => r,
            Err(e) => return self.fail(e, wall),
        };
        self.report.files = reader
            .files()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !check_bag(&reader, self.tasks.iter().map(|k| &k.cfg), &mut self.report) {
            return self.finish(wall);
        }
        let mut it = match reader.decoded() {
            Ok(it) => it,
            Err(e) => return self.fail(e, wall),
        };
        let mut listed = 0usize;
        for item in it.by_ref() {
            match item {
                Ok(m) => {
                    let t0 = *self.t0_ns.get_or_insert(m.timestamp_ns);
                    let t = (m.timestamp_ns.saturating_sub(t0) as f64 / 1e9).max(self.now);
                    self.advance_to(t, progress)?;
                    self.now = t;
                    self.handle(m, t)?;
                }
                Err(e) => record_bag_error(&mut self.report, &e, &mut listed),
            }
        }
        if listed > MAX_LISTED {
            self.report.warnings.push(format!(
                "... and {} more undecodable messages",
                listed - MAX_LISTED
            ));
        }
        let s = it.stats().clone();
        self.report.read.messages = s.messages;
        self.report.read.decoded = s.decoded;
        self.report.read.decode_errors = s.decode_errors;
        self.report.read.skipped_unknown = s.skipped_unknown;
        self.report.read.storage_errors = s.storage_errors;
        let events = self.sim.finish();
        self.handle_events(events)?;
        self.report.duration_s = self.now;
        if self.now - (self.next_tick - self.period) > 0.25 * self.period {
            // The last partial period, unless it is a sliver after the last whole one.
            progress(&self.progress());
        }
        self.finish(wall)
    }

    fn fail(mut self, e: BagError, wall: Instant) -> Result<Report, ReplayError> {
        self.report.status = Status::Unusable;
        self.report.errors.push(e.to_string());
        self.finish(wall)
    }

    fn finish(mut self, wall: Instant) -> Result<Report, ReplayError> {
        for t in &mut self.tasks {
            let errors = t
                .tally
                .audit(&t.cfg.name, &t.labels, &mut self.report.warnings);
            fail_with(&mut self.report, errors);
            t.tally.finish();
            self.report
                .tasks
                .insert(t.cfg.name.clone(), t.tally.report.clone());
        }
        self.report.start_time_ns = self.t0_ns.unwrap_or(0);
        if let Some(out) = self.out.take() {
            out.finish(&mut self.report);
        }
        self.report.wall_s = wall.elapsed().as_secs_f64();
        Ok(self.report)
    }

    /// Runs time forward to `t`: progress ticks, dwell reviews and idle timeouts due before.
    fn advance_to(
        &mut self,
        t: f64,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), ReplayError> {
        loop {
            let review = self
                .planner
                .next_review()
                .map(|r| r.saturating_duration_since(self.base).as_secs_f64());
            let idle = self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, k)| k.active)
                .map(|(i, k)| (k.tally.last_frame + self.idle_timeout, i))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let stale_at = self.planner.budget_deadline();
            let stale = stale_at.map(|r| r.saturating_duration_since(self.base).as_secs_f64());
            let mut next = self.next_tick;
            if let Some(r) = review {
                next = next.min(r);
            }
            if let Some(r) = stale {
                next = next.min(r);
            }
            if let Some((x, _)) = idle {
                next = next.min(x);
            }
            if next > t {
                return Ok(());
            }
            let next = next.max(self.now);
            let events = self.sim.advance(next);
            self.handle_events(events)?;
            self.now = next;
            if review.is_some_and(|r| r <= next) {
                let at = self.instant(next);
                if let Some(p) = self.planner.review(at) {
                    self.apply(&p, next)?;
                }
            } else if let Some(deadline) = stale_at.filter(|_| stale.is_some_and(|r| r <= next)) {
                // At the deadline at the earliest (seconds round-trip through f64).
                let at = self.instant(next).max(deadline);
                if let Some(p) = self.planner.check_budget(at) {
                    self.report.warnings.push(format!(
                        "no budget for {:.1} s at {next:.3} s: planned for the stale budget ({:.2} cores)",
                        self.planner.budget_age(at).as_secs_f64(),
                        p.budget.cpu_cores
                    ));
                    self.apply(&p, next)?;
                }
            } else if let Some((_, i)) = idle.filter(|(x, _)| *x <= next) {
                self.tasks[i].active = false;
                let name = self.tasks[i].cfg.name.clone();
                let at = self.instant(next);
                if let Some(p) = self.planner.task_stopped(&name, at)? {
                    self.apply(&p, next)?;
                }
            } else {
                progress(&self.progress());
                for k in &mut self.tasks {
                    k.tally.window = 0;
                }
                self.next_tick += self.period;
            }
        }
    }

    fn progress(&self) -> Progress {
        let plan = self.planner.plan();
        let (budget, _) = self.planner.budget();
        // Frames counted since the last snapshot (a whole period at a tick, less at the end).
        let window = (self.now - (self.next_tick - self.period)).clamp(1e-3, self.period);
        Progress {
            time: self.now,
            budget_cores: budget.cpu_cores,
            plans: self.report.plans.len(),
            tasks: self
                .tasks
                .iter()
                .zip(&plan.tasks)
                .map(|(k, tp)| TaskProgress {
                    task: k.cfg.name.clone(),
                    status: format!("{:?}", tp.status).to_lowercase(),
                    descendant: (tp.status == TaskStatus::Running).then(|| tp.descendant.clone()),
                    share: tp.share,
                    fps: k.tally.window as f64 / window,
                    accuracy: k.tally.accuracy(),
                    processed: k.tally.report.processed,
                    dropped: k.tally.report.dropped_replaced
                        + k.tally.report.dropped_paused
                        + k.tally.report.dropped_at_end,
                    need_cores: Some(k.need_cores),
                })
                .collect(),
        }
    }

    fn apply(&mut self, p: &Plan, t: f64) -> Result<(), ReplayError> {
        self.report.plans.push(plan_record(p, t));
        let ns = self.bag_ns(t);
        if let Some(out) = &mut self.out {
            let header = Header {
                stamp: Time::from_nanos(self.t0_ns.unwrap_or(0) as i64 + (t * 1e9).round() as i64),
                frame_id: String::new(),
            };
            let msg = plan_message(p, &self.counts, 0.0, header);
            out.plan(ns, &msg);
        }
        let events = self.sim.set_plan(t, &Assignment::from_plan(p));
        self.handle_events(events)
    }

    fn handle(&mut self, m: DecodedMessage, t: f64) -> Result<(), ReplayError> {
        let topic = m.topic.name.as_str();
        match m.msg {
            BagMessage::Image(img) => {
                let Some(route) = self.image_routes.get(topic).cloned() else {
                    return self.unused(topic);
                };
                for i in route {
                    if self.tasks[i].cfg.transport != Transport::Raw {
                        continue;
                    }
                    let started = Instant::now();
                    let r = self.tasks[i].pre.raw_input(&(&img).into());
                    let pre_s = started.elapsed().as_secs_f64();
                    self.frame(i, t, &img.header, r, pre_s)?;
                }
            }
            BagMessage::CompressedImage(img) => {
                let Some(route) = self.image_routes.get(topic).cloned() else {
                    return self.unused(topic);
                };
                for i in route {
                    if self.tasks[i].cfg.transport != Transport::Compressed {
                        continue;
                    }
                    let started = Instant::now();
                    let r = self.tasks[i].pre.compressed_input(&(&img).into());
                    let pre_s = started.elapsed().as_secs_f64();
                    self.frame(i, t, &img.header, r, pre_s)?;
                }
            }
            BagMessage::Classification(c) => {
                let Some(route) = self.truth_routes.get(topic).cloned() else {
                    return self.unused(topic);
                };
                let Some(first) = c.results.first() else {
                    self.report.warnings.push(format!(
                        "ground truth on {topic} at {t:.3} s has no hypothesis; ignored"
                    ));
                    return Ok(());
                };
                for i in route {
                    let k = &mut self.tasks[i];
                    k.tally.on_truth_checked(
                        stamp_ns(&c.header),
                        first.class_id.clone(),
                        &k.labels,
                        &k.accuracies,
                    );
                }
            }
            BagMessage::ResourceBudget(b) if topic == BUDGET.in_root() => {
                let budget = Budget::from_message(&b);
                let at = self.instant(t);
                match self.planner.update_budget(&budget, at) {
                    Ok(Some(p)) => self.apply(&p, t)?,
                    Ok(None) => {}
                    Err(e) => self.rejected(t, &e),
                }
            }
            BagMessage::TaskPriority(p) if topic == PRIORITY.in_root() => {
                let u = PriorityUpdate {
                    task: p.task.clone(),
                    priority: f64::from(p.priority),
                    enabled: p.enabled,
                };
                let at = self.instant(t);
                match self.planner.update_priority(&u, at) {
                    Ok(plan) => {
                        if !p.enabled {
                            if let Some(k) = self.tasks.iter_mut().find(|k| k.cfg.name == p.task) {
                                k.active = false;
                            }
                        }
                        if let Some(plan) = plan {
                            self.apply(&plan, t)?;
                        }
                    }
                    Err(e) => self.rejected(t, &e),
                }
            }
            BagMessage::ResourceBudget(_) | BagMessage::TaskPriority(_) => {
                return self.unused(topic);
            }
        }
        Ok(())
    }

    fn unused(&mut self, topic: &str) -> Result<(), ReplayError> {
        *self
            .report
            .read
            .unused
            .entry(topic.to_string())
            .or_default() += 1;
        Ok(())
    }

    fn rejected(&mut self, t: f64, e: &SchedulerError) {
        self.report.rejected_events += 1;
        if self.report.rejected_events as usize <= MAX_LISTED {
            self.report
                .warnings
                .push(format!("event at {t:.3} s rejected: {e}"));
        }
    }

    fn frame(
        &mut self,
        i: usize,
        t: f64,
        header: &Header,
        input: Result<preprocess::Input, preprocess::PreprocessError>,
        pre_s: f64,
    ) -> Result<(), ReplayError> {
        let name = self.tasks[i].cfg.name.clone();
        self.tasks[i].tally.frame_arrived(t, stamp_ns(header));
        if input.as_ref().is_ok_and(|x| x.roi_clipped) {
            self.tasks[i].tally.report.roi_clipped += 1;
        }
        let enabled = self.planner.task(&name).is_some_and(|s| s.enabled);
        if !enabled {
            self.tasks[i].tally.report.ignored_disabled += 1;
            return Ok(());
        }
        let tensor = match input {
            Ok(x) => x.tensor,
            Err(e) => {
                let k = &mut self.tasks[i];
                k.tally.report.bad_frames += 1;
                if k.tally.report.bad_frames <= 3 {
                    self.report
                        .warnings
                        .push(format!("task {name}: frame at {t:.3} s dropped: {e}"));
                }
                return Ok(());
            }
        };
        if !self.tasks[i].active {
            self.tasks[i].active = true;
            let at = self.instant(t);
            if let Some(p) = self.planner.task_started(&name, at)? {
                self.apply(&p, t)?;
            }
        }
        let id = self.frame_ids;
        self.frame_ids += 1;
        self.tasks[i]
            .waiting
            .insert(id, (header.clone(), tensor, t, pre_s));
        let events = self.sim.frame(t, i, id);
        self.handle_events(events)
    }

    fn handle_events(&mut self, events: Vec<SimEvent>) -> Result<(), ReplayError> {
        for e in events {
            match e {
                SimEvent::Processed {
                    task,
                    frame,
                    descendant,
                    start,
                    end,
                } => self.serve(task, frame, descendant, start, end)?,
                SimEvent::Dropped {
                    task,
                    frame,
                    reason,
                    ..
                } => {
                    let Some(k) = self.tasks.get_mut(task) else {
                        continue;
                    };
                    k.waiting.remove(&frame);
                    let r = &mut k.tally.report;
                    match reason {
                        DropReason::Replaced => r.dropped_replaced += 1,
                        DropReason::Paused => r.dropped_paused += 1,
                        DropReason::Finished => r.dropped_at_end += 1,
                    }
                }
            }
        }
        Ok(())
    }

    fn serve(
        &mut self,
        task: usize,
        frame: u64,
        d: usize,
        start: f64,
        end: f64,
    ) -> Result<(), ReplayError> {
        let t0_ns = self.t0_ns.unwrap_or(0);
        let Some(k) = self.tasks.get_mut(task) else {
            return Ok(());
        };
        let Some((header, tensor, arrived, pre_s)) = k.waiting.remove(&frame) else {
            return Ok(());
        };
        let logits = k
            .state(d)?
            .run(&tensor)
            .map_err(|source| ReplayError::Model {
                task: k.cfg.name.clone(),
                source,
            })?;
        let ms = |s: f64| s * 1e3;
        let names = k.names.clone();
        let msgs = result_messages(FrameResult {
            header,
            task: &k.cfg.name,
            labels: &k.labels,
            descendants: &names,
            descendant: d,
            logits: &logits,
            latency_ms: Latencies {
                queue: ms(start - arrived),
                // Measured (wall clock); queue and inference are the simulator's times.
                preprocess: ms(pre_s),
                inference: ms(end - start),
                total: ms(end - arrived),
            },
            frame_seq: k.tally.report.processed + 1,
            frames_dropped: k.tally.report.bad_frames,
        });
        let Some((c, r)) = msgs else {
            k.tally.report.bad_frames += 1;
            return Ok(());
        };
        let accuracies = k.accuracies.clone();
        let stamp = stamp_ns(&r.header);
        k.tally.on_prediction(stamp, &r.class_name, d, &accuracies);
        k.tally.served(start, d, &names, end - start);
        if let Some(out) = &mut self.out {
            let ns = t0_ns + (end.max(0.0) * 1e9).round() as u64;
            out.result(&k.cfg.name, ns, &c, &r);
        }
        Ok(())
    }
}
