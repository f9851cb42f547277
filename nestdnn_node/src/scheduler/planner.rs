//! The planner: task states, triggers, hysteresis and dwell, one [`Plan`] per trigger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::plan::{BudgetSource, Plan, StopReason, TaskPlan, TaskStatus, Trigger};
use super::solve::{solve, Env, Outcome, PauseReason, TaskIn};
use super::{Budget, Ladder, Objective, PriorityUpdate, SchedulerError, Settings, TaskSpec};
use crate::model::SwitchPolicy;

#[derive(Debug, Clone)]
struct TaskState {
    spec: TaskSpec,
    /// The camera is delivering.
    active: bool,
    /// The descendant the task's slot holds (last planned).
    loaded: Option<usize>,
    /// When the task last moved to another descendant.
    last_switch: Option<Instant>,
    /// Running in the current plan.
    running: bool,
}

/// Re-plans on every trigger and keeps plans from flapping.
///
/// Hysteresis, for the optimising objectives: on each trigger the planner solves twice, once
/// with every running task pinned to its current descendant (shares re-optimised: the
/// "keep" plan) and once free (switching costs included). The free plan is adopted only if it
/// lowers the objective by more than `hysteresis_margin` x the keep plan's objective. A task
/// that switched less than `min_dwell` ago stays pinned in the free solve too; if that held
/// back a better plan, [`Planner::next_review`] says when to call [`Planner::review`]. Pins are
/// dropped when they cannot fit the memory budget. `static` and `smallest` re-plan only when
/// the set of running tasks changes, always with the configured default budget for `static`.
#[derive(Debug)]
pub struct Planner {
    settings: Settings,
    tasks: Vec<TaskState>,
    budget: Budget,
    source: BudgetSource,
    epoch: Instant,
    seq: u64,
    current: Arc<Plan>,
    review_at: Option<Instant>,
    /// When the last budget message was taken (the planner's start before any).
    budget_at: Instant,
    /// The budget is stale: planned for `stale_budget_cores` until a message arrives.
    stale: bool,
}

fn unique(specs: &[TaskSpec]) -> Result<(), SchedulerError> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(SchedulerError::DuplicateTask {
                task: s.name.clone(),
            });
        }
        s.validate()?;
    }
    Ok(())
}

impl Planner {
    /// A planner for `tasks` (configuration order) with every task idle; its first plan
    /// (trigger `initial`) has no running task.
    ///
    /// # Errors
    /// [`SchedulerError::InvalidSetting`], [`SchedulerError::DuplicateTask`],
    /// [`SchedulerError::InvalidPriority`], [`SchedulerError::InvalidTargetFps`].
    pub fn new(
        settings: Settings,
        tasks: Vec<TaskSpec>,
        now: Instant,
    ) -> Result<Self, SchedulerError> {
        settings.validate()?;
        unique(&tasks)?;
        let budget = settings.default_budget;
        let tasks = tasks
            .into_iter()
            .map(|spec| TaskState {
                spec,
                active: false,
                loaded: None,
                last_switch: None,
                running: false,
            })
            .collect();
        let mut p = Planner {
            settings,
            tasks,
            budget,
            source: BudgetSource::Default,
            epoch: now,
            seq: 0,
            current: Arc::new(empty_plan()),
            review_at: None,
            budget_at: now,
            stale: false,
        };
        p.current = Arc::new(p.compute(Trigger::Initial, now));
        Ok(p)
    }

    /// The plan in force.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.current
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The budget in force and where it came from.
    pub fn budget(&self) -> (Budget, BudgetSource) {
        (self.budget, self.source)
    }

    /// Configured task names, in order.
    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.spec.name.as_str()).collect()
    }

    /// The current specification of task `name` (priority, enabled, ladder).
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks
            .iter()
            .find(|t| t.spec.name == name)
            .map(|t| &t.spec)
    }

    fn index(&self, task: &str) -> Result<usize, SchedulerError> {
        self.tasks
            .iter()
            .position(|t| t.spec.name == task)
            .ok_or_else(|| SchedulerError::UnknownTask {
                task: task.to_string(),
                known: self.task_names().join(", "),
            })
    }

    /// A task's camera began to deliver. Re-plans unless the task is disabled or already
    /// active (then `Ok(None)`).
    ///
    /// # Errors
    /// [`SchedulerError::UnknownTask`].
    pub fn task_started(
        &mut self,
        task: &str,
        now: Instant,
    ) -> Result<Option<Arc<Plan>>, SchedulerError> {
        let i = self.index(task)?;
        let t = &mut self.tasks[i];
        if !t.spec.enabled || t.active {
            return Ok(None);
        }
        t.active = true;
        Ok(Some(
            self.replan(Trigger::TaskStarted(task.to_string()), now),
        ))
    }

    /// A task stopped delivering (idle timeout). Re-plans if it was active.
    ///
    /// # Errors
    /// [`SchedulerError::UnknownTask`].
    pub fn task_stopped(
        &mut self,
        task: &str,
        now: Instant,
    ) -> Result<Option<Arc<Plan>>, SchedulerError> {
        let i = self.index(task)?;
        if !self.tasks[i].active {
            return Ok(None);
        }
        self.tasks[i].active = false;
        let trigger = Trigger::TaskStopped {
            task: task.to_string(),
            reason: StopReason::Idle,
        };
        Ok(Some(self.replan(trigger, now)))
    }

    /// Applies a priority/enable update and re-plans (static/smallest: only if the set of
    /// running tasks changed).
    ///
    /// # Errors
    /// [`SchedulerError::UnknownTask`]; [`SchedulerError::InvalidPriority`] (nothing changes)
    /// unless `enabled` is false and the priority is exactly 0 (see [`PriorityUpdate`]).
    pub fn update_priority(
        &mut self,
        u: &PriorityUpdate,
        now: Instant,
    ) -> Result<Option<Arc<Plan>>, SchedulerError> {
        let i = self.index(&u.task)?;
        let keep_old = !u.enabled && u.priority == 0.0;
        let valid = u.priority.is_finite() && u.priority > 0.0;
        if !keep_old && !valid {
            return Err(SchedulerError::InvalidPriority {
                task: u.task.clone(),
                value: u.priority,
            });
        }
        let t = &mut self.tasks[i];
        let was_enabled = t.spec.enabled;
        let old_priority = t.spec.priority;
        if !keep_old {
            t.spec.priority = u.priority;
        }
        t.spec.enabled = u.enabled;
        if !u.enabled {
            t.active = false;
        }
        let trigger = if was_enabled && !u.enabled {
            Trigger::TaskStopped {
                task: u.task.clone(),
                reason: StopReason::Disabled,
            }
        } else {
            Trigger::PriorityChanged(u.task.clone())
        };
        let changed = was_enabled != u.enabled || old_priority != t.spec.priority;
        if !changed {
            return Ok(None);
        }
        if self.settings.objective.is_fixed() && was_enabled == u.enabled {
            return Ok(None);
        }
        Ok(Some(self.replan(trigger, now)))
    }

    /// Takes a new budget and re-plans. `static` and `smallest` ignore budgets (`Ok(None)`).
    ///
    /// # Errors
    /// [`SchedulerError::InvalidBudget`] (NaN, infinite or negative cores): the previous budget
    /// stays in force and no plan is made.
    pub fn update_budget(
        &mut self,
        b: &Budget,
        now: Instant,
    ) -> Result<Option<Arc<Plan>>, SchedulerError> {
        b.validate()?;
        self.budget_at = self.budget_at.max(now);
        if self.settings.objective.is_fixed() {
            return Ok(None);
        }
        let unchanged = !self.stale
            && self.source == BudgetSource::Received
            && self.budget.cpu_cores == b.cpu_cores
            && self.budget.memory_bytes == b.memory_bytes;
        self.budget = *b;
        self.source = BudgetSource::Received;
        if unchanged {
            // The monitor repeats its budget every period: nothing to re-plan or publish.
            return Ok(None);
        }
        self.stale = false;
        Ok(Some(self.replan(Trigger::Budget, now)))
    }

    /// When the budget goes stale if no budget message arrives before (`None`: no budget
    /// received yet (the configured default budget does not go stale), already stale, budgets
    /// ignored by the objective, or `budget_timeout` off).
    pub fn budget_deadline(&self) -> Option<Instant> {
        let timeout = self.settings.budget_timeout?;
        if self.source != BudgetSource::Received || self.settings.objective.is_fixed() {
            return None;
        }
        Some(self.budget_at + timeout)
    }

    /// True while the budget is stale (see [`Planner::check_budget`]).
    pub fn budget_stale(&self) -> bool {
        self.stale
    }

    /// Time since the last budget message (or since the planner's start, before any).
    pub fn budget_age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.budget_at)
    }

    /// Re-plans for the safe budget (`stale_budget_cores`; memory of the last budget) with
    /// trigger `budget_stale` if [`Planner::budget_deadline`] has passed; the next
    /// [`Planner::update_budget`] ends the stale state. Call it periodically.
    pub fn check_budget(&mut self, now: Instant) -> Option<Arc<Plan>> {
        if self.budget_deadline().is_none_or(|d| now < d) {
            return None;
        }
        self.stale = true;
        self.budget = Budget {
            cpu_cores: self.settings.stale_budget_cores,
            ..self.budget
        };
        self.source = BudgetSource::Stale;
        Some(self.replan(Trigger::BudgetStale, now))
    }

    /// Replaces a task's ladder (a new profile) and re-plans if `replan_on_profile_change`
    /// (else the ladder is used from the next plan on).
    ///
    /// # Errors
    /// [`SchedulerError::UnknownTask`].
    pub fn update_profile(
        &mut self,
        task: &str,
        ladder: Ladder,
        now: Instant,
    ) -> Result<Option<Arc<Plan>>, SchedulerError> {
        let i = self.index(task)?;
        let t = &mut self.tasks[i];
        if t.loaded.is_some_and(|d| d >= ladder.len()) {
            t.loaded = None;
        }
        t.spec.ladder = Arc::new(ladder);
        if !self.settings.replan_on_profile_change || self.settings.objective.is_fixed() {
            return Ok(None);
        }
        Ok(Some(
            self.replan(Trigger::ProfileChanged(task.to_string()), now),
        ))
    }

    /// When a switch held back by `min_dwell` may be made: call [`Planner::review`] then.
    pub fn next_review(&self) -> Option<Instant> {
        self.review_at
    }

    /// Re-plans (trigger `dwell_expired`) if [`Planner::next_review`] has passed.
    pub fn review(&mut self, now: Instant) -> Option<Arc<Plan>> {
        match self.review_at {
            Some(t) if t <= now => Some(self.replan(Trigger::DwellExpired, now)),
            _ => None,
        }
    }

    /// Re-plans now with trigger `manual`.
    pub fn replan_now(&mut self, now: Instant) -> Arc<Plan> {
        self.replan(Trigger::Manual, now)
    }

    fn replan(&mut self, trigger: Trigger, now: Instant) -> Arc<Plan> {
        let plan = self.compute(trigger, now);
        for (t, tp) in self.tasks.iter_mut().zip(&plan.tasks) {
            let running = tp.status == TaskStatus::Running;
            if running {
                if t.loaded.is_some_and(|d| d != tp.descendant_index) {
                    t.last_switch = Some(now);
                }
                t.loaded = Some(tp.descendant_index);
            }
            t.running = running;
        }
        self.current = Arc::new(plan);
        self.current.clone()
    }

    fn env(&self) -> Env {
        let s = &self.settings;
        let (cores, memory) =
            if s.objective == Objective::Static && self.source != BudgetSource::Explicit {
                (s.default_budget.cpu_cores, s.default_budget.memory_bytes)
            } else {
                (self.budget.cpu_cores, self.budget.memory_bytes)
            };
        let horizon = s.min_dwell.max(Duration::from_secs(1)).as_secs_f64();
        Env {
            cores,
            memory,
            alpha: s.alpha,
            step: s.share_step,
            headroom: s.share_headroom,
            policy: s.switch_policy,
            solver: s.solver,
            objective: s.objective,
            switch_scale: match s.switch_policy {
                SwitchPolicy::Resident => 0.0,
                SwitchPolicy::OnDemand | SwitchPolicy::OneCopy => s.alpha / horizon,
            },
        }
    }

    fn compute(&mut self, trigger: Trigger, now: Instant) -> Plan {
        let env = self.env();
        let run: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].spec.enabled && self.tasks[i].active)
            .collect();
        let dwell = self.settings.min_dwell;
        let locked = |t: &TaskState| {
            t.running
                && t.loaded.is_some()
                && t.last_switch
                    .is_some_and(|s| now.saturating_duration_since(s) < dwell)
        };
        let inputs = |pin: &dyn Fn(&TaskState) -> bool| -> Vec<TaskIn<'_>> {
            run.iter()
                .map(|&i| {
                    let t = &self.tasks[i];
                    TaskIn {
                        spec: &t.spec,
                        current: t.loaded,
                        pinned: if pin(t) { t.loaded } else { None },
                    }
                })
                .collect()
        };
        let mut notes = Vec::new();
        self.review_at = None;
        let free = solve(&inputs(&|_| false), &env);
        let out: Outcome = if env.objective.is_fixed() {
            free.unwrap_or_else(|| unreachable_outcome(run.len()))
        } else {
            let free = free.unwrap_or_else(|| unreachable_outcome(run.len()));
            let any_prev = run
                .iter()
                .any(|&i| self.tasks[i].running && self.tasks[i].loaded.is_some());
            if !any_prev {
                free
            } else {
                let keep = solve(&inputs(&|t| t.running && t.loaded.is_some()), &env);
                let any_locked = run.iter().any(|&i| locked(&self.tasks[i]));
                let cand = if any_locked {
                    solve(&inputs(&|t| locked(t)), &env).unwrap_or_else(|| free.clone())
                } else {
                    free.clone()
                };
                let margin = self.settings.hysteresis_margin;
                let chosen = match keep {
                    None => cand.clone(),
                    Some(keep) => {
                        if same_descendants(&keep, &cand)
                            || !improves(&keep, &cand, margin, env.objective)
                        {
                            if !same_descendants(&keep, &cand) {
                                notes.push(format!(
                                    "hysteresis: kept the current descendants (a switch would lower the objective by less than {:.0}% after switching costs)",
                                    margin * 100.0
                                ));
                            }
                            keep
                        } else {
                            cand.clone()
                        }
                    }
                };
                if any_locked
                    && !same_descendants(&chosen, &free)
                    && improves(&chosen, &free, margin, env.objective)
                {
                    let at = run
                        .iter()
                        .filter(|&&i| locked(&self.tasks[i]))
                        .filter_map(|&i| self.tasks[i].last_switch.map(|s| s + dwell))
                        .min();
                    if let Some(at) = at {
                        notes.push(format!(
                            "a better plan is held back by min_dwell until t = {:.2} s",
                            at.saturating_duration_since(self.epoch).as_secs_f64()
                        ));
                        self.review_at = Some(at);
                    }
                }
                chosen
            }
        };
        self.assemble(trigger, now, &run, out, notes, &env)
    }

    fn assemble(
        &mut self,
        trigger: Trigger,
        now: Instant,
        run: &[usize],
        out: Outcome,
        mut notes: Vec<String>,
        env: &Env,
    ) -> Plan {
        let seq = if matches!(trigger, Trigger::Initial) {
            0
        } else {
            self.seq + 1
        };
        self.seq = seq;
        let mut pre = Vec::new();
        match (self.source, env.objective) {
            (_, Objective::Static) if self.source != BudgetSource::Explicit => pre.push(format!(
                "static plans use the default budget ({:.2} cores, {:.1} MB) and ignore budget messages",
                env.cores,
                env.memory as f64 / 1048576.0
            )),
            (BudgetSource::Default, _) => pre.push(format!(
                "no budget message received yet: using the default budget ({:.2} cores, {:.1} MB)",
                env.cores,
                env.memory as f64 / 1048576.0
            )),
            (BudgetSource::Stale, _) => pre.push(format!(
                "no budget message for {:.1} s (resource monitor down?): planned for the safe budget of {:.2} cores until one arrives",
                self.settings.budget_timeout.map_or(0.0, |t| t.as_secs_f64()),
                env.cores
            )),
            _ => {}
        }
        let mut tasks = Vec::with_capacity(self.tasks.len());
        let mut degraded = out.notes.iter().any(|n| n.contains("memory budget"));
        let mut slot = 0usize;
        for (i, t) in self.tasks.iter().enumerate() {
            let l = &t.spec.ladder;
            let base = |status, d: usize| {
                let d = d.min(l.largest());
                let r = &l.rungs()[d];
                TaskPlan {
                    task: t.spec.name.clone(),
                    status,
                    descendant: r.name.clone(),
                    descendant_index: d,
                    share: 0.0,
                    expected_accuracy: r.accuracy,
                    expected_fps: 0.0,
                    target_fps: t.spec.target_fps,
                    cost: None,
                    priority: t.spec.priority,
                    latency_ms: r.latency_s * 1e3,
                    memory_bytes: 0,
                    switched: false,
                    reason: None,
                }
            };
            if run.get(slot) != Some(&i) {
                let status = if t.spec.enabled {
                    TaskStatus::Idle
                } else {
                    TaskStatus::Disabled
                };
                tasks.push(base(status, t.loaded.unwrap_or(0)));
                continue;
            }
            let a = &out.assigns[slot];
            slot += 1;
            if let Some(reason) = a.paused {
                let mut tp = base(TaskStatus::Paused, a.d);
                let why = match reason {
                    PauseReason::Compute => format!(
                        "paused (lowest priority first): {:.3} cores allow at most {} tasks at the minimum share of {} cores",
                        env.cores,
                        (env.cores / env.step + 1e-9).floor().max(0.0),
                        env.step
                    ),
                    PauseReason::Memory => format!(
                        "paused (lowest priority first): the smallest descendants of the running tasks do not fit {:.1} MB",
                        env.memory as f64 / 1048576.0
                    ),
                };
                notes.push(format!("{}: {why}", t.spec.name));
                tp.reason = Some(why);
                degraded = true;
                tasks.push(tp);
                continue;
            }
            let mut tp = base(TaskStatus::Running, a.d);
            tp.share = a.share;
            tp.expected_fps = a.fps;
            tp.cost = Some(a.cost);
            tp.memory_bytes = a.mem;
            tp.switched = t.loaded.is_some_and(|d| d != a.d);
            if a.fps + 1e-9 < t.spec.target_fps {
                let why = format!(
                    "below target: {:.1} of {:.1} fps (share {:.2} cores, {:.2} ms per frame)",
                    a.fps, t.spec.target_fps, a.share, tp.latency_ms
                );
                tp.reason = Some(why);
                degraded = true;
            }
            tasks.push(tp);
        }
        pre.extend(out.notes.iter().cloned());
        pre.extend(notes);
        let cores_planned = tasks.iter().map(|t| t.share).sum();
        let memory_planned_bytes = tasks
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.memory_bytes));
        Plan {
            seq,
            at_s: now.saturating_duration_since(self.epoch).as_secs_f64(),
            trigger,
            objective: env.objective,
            solver: out.kind,
            exact: out.exact,
            gap_bound: out.gap_bound,
            budget: Budget {
                cpu_cores: env.cores,
                memory_bytes: env.memory,
                ..self.budget
            },
            budget_source: if env.objective == Objective::Static
                && self.source != BudgetSource::Explicit
            {
                BudgetSource::Default
            } else {
                self.source
            },
            total_cost: out.total,
            max_cost: out.max,
            cores_planned,
            memory_planned_bytes,
            degraded,
            notes: pre,
            tasks,
        }
    }
}

/// The plan the node would make right now for every enabled task as if all cameras were
/// delivering, with an explicit budget (what `nestdnn plan` prints).
///
/// # Errors
/// As [`Planner::new`], and [`SchedulerError::InvalidBudget`] for NaN, infinite or negative
/// cores.
pub fn plan_all(
    settings: Settings,
    tasks: Vec<TaskSpec>,
    budget: Budget,
) -> Result<Plan, SchedulerError> {
    budget.validate()?;
    let now = Instant::now();
    let mut p = Planner::new(settings, tasks, now)?;
    for t in &mut p.tasks {
        t.active = t.spec.enabled;
    }
    p.budget = budget;
    p.source = BudgetSource::Explicit;
    let plan = p.replan(Trigger::Manual, now);
    Ok((*plan).clone())
}

fn same_descendants(a: &Outcome, b: &Outcome) -> bool {
    a.assigns.len() == b.assigns.len()
        && a.assigns
            .iter()
            .zip(&b.assigns)
            .all(|(x, y)| x.d == y.d && x.paused == y.paused)
}

/// True if `b` beats `a` by more than the margin (decision values include switching costs).
fn improves(a: &Outcome, b: &Outcome, margin: f64, objective: Objective) -> bool {
    let (at, am) = a.decision;
    let (bt, bm) = b.decision;
    let better = |x: f64, y: f64| x - y > margin * x.abs() + 1e-12;
    match objective {
        Objective::MinMaxCost => {
            better(am, bm) || ((am - bm).abs() <= 1e-12 * am.abs().max(1.0) && better(at, bt))
        }
        _ => better(at, bt),
    }
}

fn empty_plan() -> Plan {
    Plan {
        seq: 0,
        at_s: 0.0,
        trigger: Trigger::Initial,
        objective: Objective::MinTotalCost,
        solver: super::SolverKind::Fixed,
        exact: true,
        gap_bound: None,
        budget: Budget::new(0.0, 0),
        budget_source: BudgetSource::Default,
        total_cost: 0.0,
        max_cost: 0.0,
        cores_planned: 0.0,
        memory_planned_bytes: 0,
        degraded: false,
        notes: Vec::new(),
        tasks: Vec::new(),
    }
}

/// `solve` without pins always returns a plan (pauses make the minimum fit); this is the
/// defensive fallback if that ever failed: every task paused.
fn unreachable_outcome(n: usize) -> Outcome {
    use super::solve::Assign;
    Outcome {
        assigns: (0..n)
            .map(|_| Assign {
                paused: Some(PauseReason::Memory),
                d: 0,
                share: 0.0,
                cost: f64::INFINITY,
                switch_cost: 0.0,
                fps: 0.0,
                mem: 0,
            })
            .collect(),
        kind: super::SolverKind::Fixed,
        exact: false,
        gap_bound: None,
        notes: vec!["internal: the solver found no plan; every task paused".to_string()],
        total: 0.0,
        max: 0.0,
        decision: (0.0, 0.0),
    }
}
