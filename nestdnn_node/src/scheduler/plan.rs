//! Plans: what every task runs, with its share, expected accuracy and frame rate, and why.

use std::fmt;

use serde::{Serialize, Serializer};

use super::{Budget, Objective, SolverKind};

/// Why a task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// No frame for the idle timeout.
    Idle,
    /// Disabled by a priority update.
    Disabled,
}

/// What caused a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The planner was created.
    Initial,
    /// A task's camera began to deliver.
    TaskStarted(String),
    /// A task stopped.
    TaskStopped {
        /// The task.
        task: String,
        /// Idle timeout or disabled.
        reason: StopReason,
    },
    /// A task's priority or enabled flag changed.
    PriorityChanged(String),
    /// A new resource budget arrived.
    Budget,
    /// No budget arrived for `budget_timeout_s`: planned for the safe `stale_budget_cores`.
    BudgetStale,
    /// A task's profile (ladder) changed.
    ProfileChanged(String),
    /// A switch held back by the minimum dwell time became possible.
    DwellExpired,
    /// An explicit request (`nestdnn plan`, tests).
    Manual,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Initial => f.write_str("initial"),
            Trigger::TaskStarted(t) => write!(f, "task_started:{t}"),
            Trigger::TaskStopped {
                task,
                reason: StopReason::Idle,
            } => write!(f, "task_stopped:{task}:idle"),
            Trigger::TaskStopped {
                task,
                reason: StopReason::Disabled,
            } => write!(f, "task_stopped:{task}:disabled"),
            Trigger::PriorityChanged(t) => write!(f, "priority_changed:{t}"),
            Trigger::Budget => f.write_str("budget"),
            Trigger::BudgetStale => f.write_str("budget_stale"),
            Trigger::ProfileChanged(t) => write!(f, "profile_changed:{t}"),
            Trigger::DwellExpired => f.write_str("dwell_expired"),
            Trigger::Manual => f.write_str("manual"),
        }
    }
}

impl Trigger {
    /// The placeholder for the task name in [`Trigger::form`] and [`Trigger::FORMS`].
    pub const TASK: &'static str = "<task>";

    /// Every form a trigger is published in (`nestdnn_msgs/Plan.trigger`, `nestdnn plan`
    /// JSON), `<task>` standing for a task name: the documentation's single source
    /// (`msgs/msg/Plan.msg` lists exactly these; a test checks it).
    pub const FORMS: &'static [&'static str] = &[
        "initial",
        "task_started:<task>",
        "task_stopped:<task>:idle",
        "task_stopped:<task>:disabled",
        "priority_changed:<task>",
        "budget",
        "budget_stale",
        "profile_changed:<task>",
        "dwell_expired",
        "manual",
    ];

    /// One trigger of every variant (and stop reason), task-carrying ones for `task`, in
    /// [`Trigger::FORMS`] order.
    pub fn examples(task: &str) -> Vec<Trigger> {
        let t = || task.to_string();
        vec![
            Trigger::Initial,
            Trigger::TaskStarted(t()),
            Trigger::TaskStopped {
                task: t(),
                reason: StopReason::Idle,
            },
            Trigger::TaskStopped {
                task: t(),
                reason: StopReason::Disabled,
            },
            Trigger::PriorityChanged(t()),
            Trigger::Budget,
            Trigger::BudgetStale,
            Trigger::ProfileChanged(t()),
            Trigger::DwellExpired,
            Trigger::Manual,
        ]
    }

    /// The trigger's form: its [`Display`](fmt::Display) text with the task name replaced by
    /// [`Trigger::TASK`]. The match is exhaustive, so a new variant cannot compile without a
    /// form; add it to [`Trigger::FORMS`], [`Trigger::examples`] and `msgs/msg/Plan.msg`.
    pub fn form(&self) -> String {
        let task = Trigger::TASK.to_string();
        match self {
            Trigger::Initial
            | Trigger::Budget
            | Trigger::BudgetStale
            | Trigger::DwellExpired
            | Trigger::Manual => self.to_string(),
            Trigger::TaskStarted(_) => Trigger::TaskStarted(task).to_string(),
            Trigger::TaskStopped { reason, .. } => Trigger::TaskStopped {
                task,
                reason: *reason,
            }
            .to_string(),
            Trigger::PriorityChanged(_) => Trigger::PriorityChanged(task).to_string(),
            Trigger::ProfileChanged(_) => Trigger::ProfileChanged(task).to_string(),
        }
    }
}

impl Serialize for Trigger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where the plan's budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// `default_budget.*` from the configuration (no budget message yet, or `static`).
    Default,
    /// The latest valid budget message.
    Received,
    /// Given explicitly (`nestdnn plan --cores --memory-mb`).
    Explicit,
    /// `stale_budget_cores`: no budget message for `budget_timeout_s`.
    Stale,
}

/// A task's state in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Has a share and runs its descendant.
    Running,
    /// Wants to run but does not fit (last resort; see `reason`).
    Paused,
    /// Enabled, but its camera is not delivering.
    Idle,
    /// Disabled by configuration or a priority update.
    Disabled,
}

/// One task's part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskPlan {
    /// Task name.
    pub task: String,
    /// Running, paused, idle or disabled.
    pub status: TaskStatus,
    /// Name of the descendant the task runs (idle/paused/disabled: the one its slot holds).
    pub descendant: String,
    /// Index of that descendant in the ladder (0 = smallest).
    pub descendant_index: usize,
    /// CPU share the runtime enforces, cores (0 unless running).
    pub share: f64,
    /// Top-1 accuracy of the descendant, fraction.
    pub expected_accuracy: f64,
    /// Frames per second the task should deliver: `min(target_fps, share_for_cost / latency)`.
    pub expected_fps: f64,
    /// The task's target frame rate, frames per second.
    pub target_fps: f64,
    /// Priority-weighted cost `C_i` (null unless running).
    pub cost: Option<f64>,
    /// The priority (weight) used.
    pub priority: f64,
    /// Median latency of the descendant on one core, milliseconds.
    pub latency_ms: f64,
    /// Memory the task holds under the switch policy, bytes (0 unless running).
    pub memory_bytes: u64,
    /// True if this plan moves the task to another descendant.
    pub switched: bool,
    /// Why the task is paused or below its target frame rate.
    pub reason: Option<String>,
}

/// A complete plan for every configured task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Sequence number, 0 for the first plan of a planner.
    pub seq: u64,
    /// Seconds since the planner was created.
    pub at_s: f64,
    /// What caused this plan.
    pub trigger: Trigger,
    /// The objective.
    pub objective: Objective,
    /// The solver that produced it.
    pub solver: SolverKind,
    /// True if the plan is optimal for its objective (fixed policies: true by definition).
    pub exact: bool,
    /// Upper bound on (objective - optimum) when known (greedy with slack memory).
    pub gap_bound: Option<f64>,
    /// The budget planned for.
    pub budget: Budget,
    /// Where the budget came from.
    pub budget_source: BudgetSource,
    /// Sum of running tasks' costs.
    pub total_cost: f64,
    /// Largest running task's cost.
    pub max_cost: f64,
    /// Sum of enforced shares, cores.
    pub cores_planned: f64,
    /// Sum of running tasks' memory, bytes.
    pub memory_planned_bytes: u64,
    /// True if a task is paused, below its target frame rate, or forced to a smaller
    /// descendant by memory.
    pub degraded: bool,
    /// Human-readable remarks: default budget in use, pauses, hysteresis decisions.
    pub notes: Vec<String>,
    /// Every configured task, in configuration order.
    pub tasks: Vec<TaskPlan>,
}

impl Plan {
    /// The entry of task `name`.
    pub fn task(&self, name: &str) -> Option<&TaskPlan> {
        self.tasks.iter().find(|t| t.task == name)
    }

    /// The JSON document `nestdnn plan --json` prints (`objective`, `tasks[]` with `task`,
    /// `descendant`, `share`, `expected_accuracy`, `expected_fps`, `cost`, and more).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A fixed-width table for terminals.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "objective {} ({:?} solver{}), budget {:.2} cores / {:.1} MB ({:?}), trigger {}\n",
            self.objective,
            self.solver,
            if self.exact { ", optimal" } else { "" },
            self.budget.cpu_cores,
            self.budget.memory_bytes as f64 / 1048576.0,
            self.budget_source,
            self.trigger,
        );
        out.push_str(&format!(
            "{:<18} {:<9} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
            "task", "status", "descendant", "share", "accuracy", "fps", "target", "cost", "mem_MB"
        ));
        for t in &self.tasks {
            out.push_str(&format!(
                "{:<18} {:<9} {:<10} {:>6.2} {:>8.3} {:>8.1} {:>8.1} {:>8} {:>9.2}\n",
                t.task,
                format!("{:?}", t.status).to_lowercase(),
                t.descendant,
                t.share,
                t.expected_accuracy,
                t.expected_fps,
                t.target_fps,
                t.cost.map_or("-".to_string(), |c| format!("{c:.4}")),
                t.memory_bytes as f64 / 1048576.0,
            ));
        }
        out.push_str(&format!(
            "total cost {:.4}, max cost {:.4}, {:.2} cores, {:.1} MB planned\n",
            self.total_cost,
            self.max_cost,
            self.cores_planned,
            self.memory_planned_bytes as f64 / 1048576.0
        ));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}
