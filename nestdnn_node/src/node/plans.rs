//! Plans in the node core: budgets and priorities in, a plan applied to the runtime and the
//! tasks, the plan published ([`plan_message`], shared with bag replay) and logged.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::app::{App, Inner};
use crate::msgs::{Header, ResourceBudget, TaskPriority};
use crate::scheduler::{Budget, Plan, PriorityUpdate, TaskStatus};

impl App {
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
    /// Applies `plan` to the runtime and the tasks' state and publishes it, unless a newer
    /// plan was applied already (plans are applied in sequence order).
    pub(super) fn apply(&self, plan: &Plan, solve_ms: f64) {
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
}
