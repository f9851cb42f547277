//! Plain input types of the scheduler: budgets, priority updates, objectives, settings, errors.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::SwitchPolicy;

/// Errors of the scheduler boundary: bad ladders, bad updates, bad settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A task's capacity ladder has no descendant.
    #[error(
        "task {task:?}: the capacity ladder is empty; the model needs at least one descendant"
    )]
    EmptyLadder {
        /// The task.
        task: String,
    },
    /// A ladder rung has an impossible value (from a broken manifest or profile).
    #[error("task {task:?}, descendant {descendant:?}: {field} is {value}, must be {allowed}")]
    InvalidRung {
        /// The task.
        task: String,
        /// The descendant's name.
        descendant: String,
        /// The field (`accuracy`, `latency_s`, ...).
        field: &'static str,
        /// The value found.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A profile that does not describe the model's ladder.
    #[error("task {task:?}: the profile does not match the model: {what}; re-profile it (`nestdnn profile --reprofile`)")]
    ProfileMismatch {
        /// The task.
        task: String,
        /// What differs.
        what: String,
    },
    /// The model's camera-accuracy file (`accuracy.yaml`) cannot be used.
    #[error("task {task:?}: {what}")]
    Calibration {
        /// The task.
        task: String,
        /// What is wrong and what to fix.
        what: String,
    },
    /// An update or query names a task that is not configured.
    #[error("unknown task {task:?}; configured tasks: {known}")]
    UnknownTask {
        /// The name received.
        task: String,
        /// The configured task names, comma separated.
        known: String,
    },
    /// Two tasks share one name.
    #[error("task {task:?} is configured twice; task names must be unique")]
    DuplicateTask {
        /// The name.
        task: String,
    },
    /// A priority that is not a finite number > 0.
    #[error("task {task:?}: priority {value} is not allowed, must be finite and > 0 (the previous priority is kept)")]
    InvalidPriority {
        /// The task.
        task: String,
        /// The value received.
        value: f64,
    },
    /// A target frame rate that is not a finite number > 0.
    #[error("task {task:?}: target_fps {value} is not allowed, must be finite and > 0")]
    InvalidTargetFps {
        /// The task.
        task: String,
        /// The value received.
        value: f64,
    },
    /// A budget field that cannot be used; the update is ignored and the previous budget kept.
    #[error("budget: {field} is {value}, must be {allowed}; the update was ignored and the previous budget kept")]
    InvalidBudget {
        /// The field (`cpu_cores`).
        field: &'static str,
        /// The value received.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A scheduler setting out of range.
    #[error("scheduler setting {field} is {value}, must be {allowed}")]
    InvalidSetting {
        /// The setting's name (as in the params file, without `scheduler.`).
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        allowed: &'static str,
    },
    /// A name that is not one of the allowed words (objective, solver).
    #[error("{what} {value:?} is not known; use one of {allowed}")]
    UnknownName {
        /// What was being named.
        what: &'static str,
        /// The text given.
        value: String,
        /// The allowed words.
        allowed: &'static str,
    },
}

/// The resources the node may use for inference, from the resource monitor (or the configured
/// default before the first message arrives).
///
/// Validation ([`Budget::validate`]): `cpu_cores` must be finite and >= 0, else the whole update
/// is rejected with [`SchedulerError::InvalidBudget`] and the previous budget stays in force.
/// A budget of **zero** cores or zero bytes is valid and means "no inference now": every task is
/// paused and the plan says why. `cpu_load` and `battery` are informational (NaN = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// CPU time per second the node may spend on inference, in cores (1.0 = one full core).
    pub cpu_cores: f64,
    /// Memory the node may use for model plans, in bytes.
    pub memory_bytes: u64,
    /// Whole-machine CPU load 0..1, NaN if unknown (informational).
    pub cpu_load: f64,
    /// Battery charge 0..1, NaN if unknown (informational).
    pub battery: f64,
}

impl Budget {
    /// A budget of `cpu_cores` and `memory_bytes` with unknown load and battery.
    pub fn new(cpu_cores: f64, memory_bytes: u64) -> Self {
        Budget {
            cpu_cores,
            memory_bytes,
            cpu_load: f64::NAN,
            battery: f64::NAN,
        }
    }

    /// The budget a `ResourceBudget` message carries. Its float32 fields are widened through
    /// their shortest decimal form, so `0.03` on the wire plans for 0.03 cores, not
    /// 0.029999999329 (which would floor to one share step fewer).
    pub fn from_message(m: &crate::msgs::ResourceBudget) -> Self {
        Budget {
            cpu_cores: f32_decimal(m.cpu_cores_available),
            memory_bytes: m.memory_available_bytes,
            cpu_load: f32_decimal(m.cpu_load),
            battery: f32_decimal(m.battery_percentage),
        }
    }

    /// Checks the fields the scheduler uses.
    ///
    /// # Errors
    /// [`SchedulerError::InvalidBudget`] if `cpu_cores` is NaN, infinite or negative.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        if !(self.cpu_cores.is_finite() && self.cpu_cores >= 0.0) {
            return Err(SchedulerError::InvalidBudget {
                field: "cpu_cores",
                value: format!("{}", self.cpu_cores),
                allowed: "a finite number >= 0 (0 pauses every task)",
            });
        }
        Ok(())
    }
}

/// `x` as the f64 of its shortest decimal representation (what the sender most likely meant).
pub fn f32_decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// A priority/enable request for one task (from the `TaskPriority` topic).
///
/// Validation: the task must be configured ([`SchedulerError::UnknownTask`]); `priority` must be
/// finite and > 0 ([`SchedulerError::InvalidPriority`]), with one exception: when `enabled` is
/// false a priority of exactly 0 is accepted and leaves the stored priority unchanged (so
/// `{task: a, enabled: false}` with the message's default priority disables the task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorityUpdate {
    /// Task name as configured.
    pub task: String,
    /// Relative weight of the task's cost, > 0.
    pub priority: f64,
    /// False stops the task (frames ignored, share and memory freed).
    pub enabled: bool,
}

/// What the planner optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Minimise the sum of the tasks' (priority-weighted) costs: best overall.
    MinTotalCost,
    /// Minimise the largest (priority-weighted) cost, then the sum: fairest.
    MinMaxCost,
    /// The resource-agnostic status quo: every task on its largest descendant (the vanilla
    /// architecture), equal shares of the configured default budget, no re-planning on budget,
    /// priority or profile changes.
    Static,
    /// Every task on its smallest descendant, equal shares: the floor for benchmarks.
    Smallest,
}

impl Objective {
    /// Every objective, in documentation order.
    pub const ALL: [Objective; 4] = [
        Objective::MinTotalCost,
        Objective::MinMaxCost,
        Objective::Static,
        Objective::Smallest,
    ];

    /// The name used in params files, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::MinTotalCost => "min_total_cost",
            Objective::MinMaxCost => "min_max_cost",
            Objective::Static => "static",
            Objective::Smallest => "smallest",
        }
    }

    /// True for the fixed policies that ignore budgets and priorities.
    pub fn is_fixed(self) -> bool {
        matches!(self, Objective::Static | Objective::Smallest)
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Objective {
    type Err = SchedulerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Objective::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| SchedulerError::UnknownName {
                what: "objective",
                value: s.to_string(),
                allowed: "min_total_cost, min_max_cost, static, smallest",
            })
    }
}

/// Which solver the optimising objectives use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverChoice {
    /// Exact unless the instance is larger than [`EXACT_LIMIT`] option-units, then greedy.
    Auto,
    /// Always the exact dynamic programme.
    Exact,
    /// Always the greedy incremental hand-out.
    Greedy,
}

/// `Auto` uses the exact solver while `tasks x descendants x share units per core` is at most
/// this (8 x 8 x 100 = 6400 is well inside; the bench measures 16 x 16 x 100).
pub const EXACT_LIMIT: usize = 40_000;

impl SolverChoice {
    /// The name used in params files.
    pub fn as_str(self) -> &'static str {
        match self {
            SolverChoice::Auto => "auto",
            SolverChoice::Exact => "exact",
            SolverChoice::Greedy => "greedy",
        }
    }
}

impl FromStr for SolverChoice {
    type Err = SchedulerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SolverChoice::Auto,
            SolverChoice::Exact,
            SolverChoice::Greedy,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| SchedulerError::UnknownName {
            what: "solver",
            value: s.to_string(),
            allowed: "auto, exact, greedy",
        })
    }
}

/// Scheduler settings (the `scheduler.*` and `default_budget.*` parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// What to optimise.
    pub objective: Objective,
    /// Exact, greedy or automatic.
    pub solver: SolverChoice,
    /// Weight of the normalised frame-rate shortfall against accuracy loss (>= 0).
    pub alpha: f64,
    /// Share quantum in cores: shares are multiples of it ([0.005, 0.5]).
    pub share_step: f64,
    /// Spare budget handed to tasks that already reach their target, as a fraction of their
    /// share, to absorb latency jitter ([0, 1]). Does not change expected fps or cost.
    pub share_headroom: f64,
    /// A plan that switches descendants is adopted only if it lowers the objective by more than
    /// this fraction of the current plan's objective ([0, 1)).
    pub hysteresis_margin: f64,
    /// A task keeps a descendant at least this long before switching again.
    pub min_dwell: Duration,
    /// Resident or on-demand descendants (memory model and switching cost).
    pub switch_policy: SwitchPolicy,
    /// A task with no frame for this long stops (runtime/node side).
    pub idle_timeout: Duration,
    /// Re-plan when a task's profile changes.
    pub replan_on_profile_change: bool,
    /// The budget used before any budget message arrives (and always by `static`).
    pub default_budget: Budget,
    /// A received budget older than this is stale (the resource monitor is presumed dead):
    /// [`crate::scheduler::Planner::check_budget`] then re-plans with
    /// [`Settings::stale_budget_cores`] (trigger `budget_stale`). `None`: budgets never go
    /// stale. Measured from the last budget message; the default budget, before any message,
    /// does not go stale.
    pub budget_timeout: Option<Duration>,
    /// The safe CPU budget, cores, planned for while the budget is stale (memory: the last
    /// received budget's, else the default budget's).
    pub stale_budget_cores: f64,
}

/// Default of [`Settings::budget_timeout`]: three periods of the resource monitor (1 s).
pub const DEFAULT_BUDGET_TIMEOUT: Duration = Duration::from_secs(3);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            objective: Objective::MinTotalCost,
            solver: SolverChoice::Auto,
            alpha: 0.1,
            share_step: 0.01,
            share_headroom: 0.1,
            hysteresis_margin: 0.05,
            min_dwell: Duration::from_secs(2),
            switch_policy: SwitchPolicy::OnDemand,
            idle_timeout: Duration::from_secs(2),
            replan_on_profile_change: true,
            default_budget: Budget::new(1.0, 512 << 20),
            budget_timeout: Some(DEFAULT_BUDGET_TIMEOUT),
            stale_budget_cores: 0.5,
        }
    }
}

fn setting(
    ok: bool,
    field: &'static str,
    value: impl fmt::Display,
    allowed: &'static str,
) -> Result<(), SchedulerError> {
    if ok {
        Ok(())
    } else {
        Err(SchedulerError::InvalidSetting {
            field,
            value: value.to_string(),
            allowed,
        })
    }
}

impl Settings {
    /// Checks every range.
    ///
    /// # Errors
    /// [`SchedulerError::InvalidSetting`] naming the setting, its value and the allowed range.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let a = self.alpha;
        setting(
            a.is_finite() && (0.0..=100.0).contains(&a),
            "alpha",
            a,
            "in [0, 100]",
        )?;
        let s = self.share_step;
        setting(
            s.is_finite() && (0.005..=0.5).contains(&s),
            "share_step",
            s,
            "in [0.005, 0.5] cores",
        )?;
        let h = self.share_headroom;
        setting(
            h.is_finite() && (0.0..=1.0).contains(&h),
            "share_headroom",
            h,
            "in [0, 1]",
        )?;
        let m = self.hysteresis_margin;
        setting(
            m.is_finite() && (0.0..1.0).contains(&m),
            "hysteresis_margin",
            m,
            "in [0, 1)",
        )?;
        setting(
            self.min_dwell <= Duration::from_secs(3600),
            "min_dwell_s",
            self.min_dwell.as_secs_f64(),
            "in [0, 3600] seconds",
        )?;
        setting(
            !self.idle_timeout.is_zero() && self.idle_timeout <= Duration::from_secs(3600),
            "idle_timeout_s",
            self.idle_timeout.as_secs_f64(),
            "in (0, 3600] seconds",
        )?;
        let c = self.default_budget.cpu_cores;
        setting(
            c.is_finite() && c > 0.0 && c <= 1024.0,
            "default_budget.cpu_cores",
            c,
            "in (0, 1024] cores",
        )?;
        setting(
            self.budget_timeout
                .is_none_or(|t| !t.is_zero() && t <= Duration::from_secs(3600)),
            "budget_timeout_s",
            self.budget_timeout.map_or(0.0, |t| t.as_secs_f64()),
            "0 (never stale) or in (0, 3600] seconds",
        )?;
        let c = self.stale_budget_cores;
        setting(
            c.is_finite() && (0.0..=1024.0).contains(&c),
            "stale_budget_cores",
            c,
            "in [0, 1024] cores",
        )?;
        setting(
            self.default_budget.memory_bytes > 0,
            "default_budget.memory_mb",
            self.default_budget.memory_bytes,
            "> 0",
        )?;
        Ok(())
    }
}
