//! Resource-aware scheduler: per running task, one descendant and a compute share.
//!
//! Inputs are plain structs (the ROS adapters convert messages): each task's [`Ladder`]
//! (accuracy from the manifest; latency, build time and plan memory from the profile), its
//! priority and target frame rate ([`TaskSpec`]), and the [`Budget`]. The cost of task i on
//! descendant d with share u cores is ([`cost`] module):
//!
//! ```text
//! C_i(d, u) = w_i * [ (A_max,i - A_i(d)) + alpha * max(0, L_i(d)/u - tau_i) / tau_i ]
//! ```
//!
//! Constraints: the sum of shares is at most the budget's cores, each share at most one core
//! (one frame at a time per task), the sum of memory (resident: every plan; on-demand: master
//! weights + the active plan) at most the budget's memory. Objectives: [`Objective`]. The
//! [`Planner`] re-plans on every trigger with hysteresis; [`plan_all`] makes one plan for
//! every enabled task (what `nestdnn plan` prints).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use nestdnn::scheduler::{plan_all, Budget, Ladder, Rung, Settings, TaskSpec};
//!
//! let rung = |name: &str, accuracy, latency_ms: f64| Rung {
//!     name: name.into(), accuracy, latency_s: latency_ms / 1e3, build_s: 0.005, plan_bytes: 1 << 20,
//! };
//! let ladder = Ladder::new("cam", vec![rung("d0", 0.80, 5.0), rung("d1", 0.90, 20.0)], None)?;
//! let task = TaskSpec { name: "cam".into(), priority: 1.0, target_fps: 30.0, enabled: true,
//!                       ladder: Arc::new(ladder) };
//! // 0.3 cores: d1 would need 0.6 cores for 30 fps; d0 needs 0.15.
//! let plan = plan_all(Settings::default(), vec![task], Budget::new(0.3, 256 << 20))?;
//! let t = plan.task("cam").unwrap();
//! assert_eq!(t.descendant, "d0");
//! assert_eq!(t.expected_fps, 30.0);
//! # Ok::<(), nestdnn::scheduler::SchedulerError>(())
//! ```

pub mod cost;
mod ladder;
mod plan;
mod planner;
mod solve;
mod types;

pub use ladder::{Ladder, Rung, TaskSpec};
pub use plan::{BudgetSource, Plan, StopReason, TaskPlan, TaskStatus, Trigger};
pub use planner::{plan_all, Planner};
pub use solve::SolverKind;
pub use types::{
    f32_decimal, Budget, Objective, PriorityUpdate, SchedulerError, Settings, SolverChoice,
    DEFAULT_BUDGET_TIMEOUT, EXACT_LIMIT,
};
