//! The replay report (JSON) and the live progress snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The whole bag was read (single undecodable messages may have been skipped: see
    /// [`ReadSummary::decode_errors`]).
    Ok,
    /// A storage file is damaged (truncated, corrupt chunk, sqlite error): what could be read
    /// was replayed, the rest is missing.
    Incomplete,
    /// The bag could not be opened or holds no message: nothing was replayed.
    Unusable,
}

/// What reading the bag found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadSummary {
    /// Messages read from storage.
    pub messages: u64,
    /// Messages decoded.
    pub decoded: u64,
    /// Messages that failed CDR decoding (skipped).
    pub decode_errors: u64,
    /// Messages of types replay does not use, per topic (skipped).
    pub skipped_unknown: BTreeMap<String, u64>,
    /// Storage errors (each one ends a file or skips a chunk).
    pub storage_errors: u64,
    /// Decoded messages on topics no task or control input uses, per topic.
    pub unused: BTreeMap<String, u64>,
}

/// One change of the descendant that served a task's frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// Bag seconds: start of the first frame served by `descendant`.
    pub time: f64,
    /// Descendant name.
    pub descendant: String,
    /// Its index in the ladder.
    pub descendant_index: usize,
}

/// One task's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Index in the configuration.
    pub index: usize,
    /// Subscribed topic.
    pub topic: String,
    /// Model folder.
    pub model: String,
    /// Frames on the task's topic.
    pub frames: u64,
    /// Frames classified.
    pub processed: u64,
    /// Frames not classified while the task was enabled (sum of the `dropped_*` counts).
    pub dropped: u64,
    /// Replaced by a newer frame in the latest-frame mailbox.
    pub dropped_replaced: u64,
    /// Arrived (or waited) while the plan paused the task.
    pub dropped_paused: u64,
    /// Still waiting when the bag ended.
    pub dropped_at_end: u64,
    /// Arrived while the task was disabled (ignored, as the node does).
    pub ignored_disabled: u64,
    /// Frames that could not be pre-processed (bad size, encoding, data).
    pub bad_frames: u64,
    /// Classified frames that had ground truth.
    pub ground_truth: u64,
    /// Of those, correct.
    pub correct: u64,
    /// `correct / ground_truth`; `None` (null) without ground truth.
    pub accuracy: Option<f64>,
    /// Manifest accuracy of the descendants that served those frames, frame-weighted; `None`
    /// without ground truth.
    pub expected_accuracy: Option<f64>,
    /// Processed frames per bag second, from the task's first to its last frame.
    pub fps: f64,
    /// Frames served per descendant name.
    pub descendants: BTreeMap<String, u64>,
    /// Timeline of the descendant that served frames.
    pub switches: Vec<Switch>,
    /// Seconds of inference (virtual: profiled latencies; realtime: measured).
    pub inference_s: f64,
    /// Ground-truth messages on the task's `<camera>/ground_truth` topic.
    #[serde(default)]
    pub ground_truth_messages: u64,
    /// Of those, whose class id is not a label of the model (not scored; all of them: an
    /// error).
    #[serde(default)]
    pub ground_truth_unknown_label: u64,
    /// Of those, whose stamp matches no frame of the task (not scored; all of them: an error).
    #[serde(default)]
    pub ground_truth_unmatched: u64,
    /// Frames whose region of interest reached past the image and was clipped.
    #[serde(default)]
    pub roi_clipped: u64,
}

/// One task in a recorded plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTask {
    /// Task name.
    pub task: String,
    /// `running`, `paused`, `idle` or `disabled`.
    pub status: String,
    /// Planned descendant (name).
    pub descendant: String,
    /// Its index.
    pub descendant_index: usize,
    /// Share, cores.
    pub share: f64,
    /// Frame rate the plan expects.
    pub expected_fps: f64,
    /// Manifest accuracy of the descendant.
    pub expected_accuracy: f64,
    /// Priority in force.
    pub priority: f64,
}

/// One plan the planner made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// Bag seconds.
    pub time: f64,
    /// The planner's sequence number.
    pub seq: u64,
    /// What caused it (`budget`, `priority_changed:<task>`, `task_started:<task>`, ...).
    pub trigger: String,
    /// CPU budget in force, cores.
    pub budget_cores: f64,
    /// Sum of shares, cores.
    pub cores_planned: f64,
    /// Objective value.
    pub total_cost: f64,
    /// The planner's notes (hysteresis, dwell, pauses).
    pub notes: Vec<String>,
    /// Per task, configuration order.
    pub tasks: Vec<PlanTask>,
}

impl PlanRecord {
    /// The entry of task `name`.
    pub fn task(&self, name: &str) -> Option<&PlanTask> {
        self.tasks.iter().find(|t| t.task == name)
    }
}

/// The whole report (`--report FILE`). JSON keys other tools read: `tasks.<task>.{frames,
/// processed, dropped, accuracy}` and `plans[].{time, trigger}` (times in bag seconds,
/// accuracy a fraction or null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The bag replayed.
    pub bag: String,
    /// Its storage files.
    pub files: Vec<String>,
    /// The parameters file.
    pub params: Option<String>,
    /// `deterministic` or `realtime`.
    pub pacing: String,
    /// Where latencies came from (profile files or cache, per task).
    pub profiles: BTreeMap<String, String>,
    /// How the replay ended.
    pub status: Status,
    /// Why it is not `ok` (each names the file and the point of failure).
    pub errors: Vec<String>,
    /// Problems that were skipped or counted (the first few undecodable messages, rejected
    /// events, ground truth that matches no frame, clipped ROIs, stale budgets, bags without
    /// CRCs).
    pub warnings: Vec<String>,
    /// Outputs that could not be written (the replay itself completed).
    #[serde(default)]
    pub output_errors: Vec<String>,
    /// What reading found.
    pub read: ReadSummary,
    /// Bag time of the first message, ns since the epoch (bag seconds count from here).
    pub start_time_ns: u64,
    /// Bag seconds replayed.
    pub duration_s: f64,
    /// Wall-clock seconds the replay took.
    pub wall_s: f64,
    /// Budget and priority messages that were rejected (invalid values, unknown tasks).
    pub rejected_events: u64,
    /// Per task.
    pub tasks: BTreeMap<String, TaskReport>,
    /// Every plan, in order.
    pub plans: Vec<PlanRecord>,
}

impl Report {
    /// Process exit status the CLI uses: 0 for [`Status::Ok`], else 1.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.status != Status::Ok)
    }
}

/// One task in a live snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskProgress {
    /// Task name.
    pub task: String,
    /// Plan status (`running`, `paused`, `idle`, `disabled`).
    pub status: String,
    /// Planned descendant, when running.
    pub descendant: Option<String>,
    /// Share, cores.
    pub share: f64,
    /// Frames processed per second over the last period.
    pub fps: f64,
    /// Accuracy so far (None without ground truth yet).
    pub accuracy: Option<f64>,
    /// Frames processed so far.
    pub processed: u64,
    /// Frames dropped so far.
    pub dropped: u64,
    /// Cores the task needs at its target frame rate on its largest descendant (its share of
    /// the demand), where the replay knows its latencies (deterministic replay).
    pub need_cores: Option<f64>,
}

/// State at one bag time, for live tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Bag seconds.
    pub time: f64,
    /// CPU budget in force, cores.
    pub budget_cores: f64,
    /// Plans made so far.
    pub plans: usize,
    /// Per task, configuration order.
    pub tasks: Vec<TaskProgress>,
}

impl Progress {
    /// Demand: the cores the running and paused tasks need at their target frame rates on
    /// their largest descendants (the sum of their `need_cores`); `None` where the replay does
    /// not know the tasks' needs.
    pub fn demand_cores(&self) -> Option<f64> {
        if self.tasks.iter().any(|t| t.need_cores.is_none()) {
            return None;
        }
        let demanding = self
            .tasks
            .iter()
            .filter(|t| matches!(t.status.as_str(), "running" | "paused"));
        demanding.map(|t| t.need_cores).sum()
    }

    /// A compact text table (one header line, one line per task).
    pub fn table(&self) -> String {
        let demand = match self.demand_cores() {
            Some(d) if self.budget_cores > 0.0 => format!(
                "  demand {d:.3} cores ({:.1}x the budget)",
                d / self.budget_cores
            ),
            Some(d) => format!("  demand {d:.3} cores"),
            None => String::new(),
        };
        let mut s = format!(
            "t={:5.1}s  budget {:.3} cores{demand}  plans {}\n",
            self.time, self.budget_cores, self.plans
        );
        s.push_str(&format!(
            "  {:<16} {:<9} {:>6} {:>6} {:>6} {:>7} {:>9} {:>6}\n",
            "task", "desc", "need", "share", "fps", "acc", "processed", "drops"
        ));
        for t in &self.tasks {
            let desc = match (&t.descendant, t.status.as_str()) {
                (Some(d), "running") => d.clone(),
                _ => t.status.clone(),
            };
            let acc = t
                .accuracy
                .map_or_else(|| "-".to_string(), |a| format!("{:.1}%", a * 100.0));
            let need = t
                .need_cores
                .map_or_else(|| "-".to_string(), |n| format!("{n:.3}"));
            s.push_str(&format!(
                "  {:<16} {:<9} {:>6} {:>6.3} {:>6.1} {:>7} {:>9} {:>6}\n",
                t.task, desc, need, t.share, t.fps, acc, t.processed, t.dropped
            ));
        }
        s
    }
}
