//! Planner behaviour: triggers, typed errors for bad updates, hysteresis and dwell under
//! jittering budgets, fixed policies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nestdnn::model::SwitchPolicy;
use nestdnn::scheduler::{
    Budget, BudgetSource, Ladder, Objective, Planner, PriorityUpdate, Rung, SchedulerError,
    Settings, TaskSpec, TaskStatus, Trigger,
};

const MB: u64 = 1 << 20;

/// A 4-rung ladder: accuracy 0.80..0.92, latency 4..32 ms.
fn ladder(name: &str) -> Arc<Ladder> {
    let rungs = [(0.80, 4.0), (0.86, 8.0), (0.90, 16.0), (0.92, 32.0)]
        .iter()
        .enumerate()
        .map(|(i, &(a, l))| Rung {
            name: format!("d{i}"),
            accuracy: a,
            latency_s: l / 1e3,
            build_s: 0.01,
            plan_bytes: (i as u64 + 1) * MB,
        })
        .collect();
    Arc::new(Ladder::new(name, rungs, None).unwrap())
}

fn spec(name: &str, prio: f64) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        priority: prio,
        target_fps: 20.0,
        enabled: true,
        ladder: ladder(name),
    }
}

fn settings() -> Settings {
    Settings {
        min_dwell: Duration::from_secs(2),
        hysteresis_margin: 0.05,
        switch_policy: SwitchPolicy::Resident,
        default_budget: Budget::new(1.0, 512 * MB),
        ..Settings::default()
    }
}

fn descendants(p: &nestdnn::scheduler::Plan) -> Vec<usize> {
    p.tasks.iter().map(|t| t.descendant_index).collect()
}

#[test]
fn every_trigger_is_recorded_with_time_and_sequence() {
    let t0 = Instant::now();
    let mut pl = Planner::new(settings(), vec![spec("a", 1.0), spec("b", 1.0)], t0).unwrap();
    let p = pl.plan().clone();
    assert_eq!(p.trigger, Trigger::Initial);
    assert_eq!(p.seq, 0);
    assert!(p
        .tasks
        .iter()
        .all(|t| t.status == TaskStatus::Idle && t.share == 0.0));
    assert_eq!(p.budget_source, BudgetSource::Default);
    assert!(
        p.notes.iter().any(|n| n.contains("default budget")),
        "{:?}",
        p.notes
    );

    let p = pl
        .task_started("a", t0 + Duration::from_millis(100))
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger, Trigger::TaskStarted("a".into()));
    assert_eq!(p.seq, 1);
    assert!((p.at_s - 0.1).abs() < 1e-9);
    assert_eq!(p.tasks[0].status, TaskStatus::Running);
    assert_eq!(p.tasks[1].status, TaskStatus::Idle);
    // A second start of a running task is not a trigger.
    assert!(pl.task_started("a", t0).unwrap().is_none());

    let p = pl
        .task_started("b", t0 + Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger.to_string(), "task_started:b");
    let p = pl
        .update_budget(&Budget::new(0.5, 256 * MB), t0 + Duration::from_secs(2))
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger, Trigger::Budget);
    assert_eq!(p.budget_source, BudgetSource::Received);
    assert!(!p.notes.iter().any(|n| n.contains("default budget")));
    let p = pl
        .update_priority(
            &PriorityUpdate {
                task: "b".into(),
                priority: 3.0,
                enabled: true,
            },
            t0 + Duration::from_secs(3),
        )
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger.to_string(), "priority_changed:b");
    assert_eq!(p.tasks[1].priority, 3.0);
    let p = pl
        .update_profile("a", (*ladder("a")).clone(), t0 + Duration::from_secs(4))
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger.to_string(), "profile_changed:a");
    let p = pl
        .task_stopped("a", t0 + Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger.to_string(), "task_stopped:a:idle");
    assert_eq!(p.tasks[0].status, TaskStatus::Idle);
    let p = pl
        .update_priority(
            &PriorityUpdate {
                task: "b".into(),
                priority: 0.0,
                enabled: false,
            },
            t0 + Duration::from_secs(6),
        )
        .unwrap()
        .unwrap();
    assert_eq!(p.trigger.to_string(), "task_stopped:b:disabled");
    assert_eq!(p.tasks[1].status, TaskStatus::Disabled);
    assert_eq!(
        p.tasks[1].priority, 3.0,
        "priority 0 with enabled=false keeps the priority"
    );
    // A disabled task's camera does not start it.
    assert!(pl
        .task_started("b", t0 + Duration::from_secs(7))
        .unwrap()
        .is_none());
    assert_eq!(pl.plan().seq, 7);
    let json = pl.plan().to_json();
    assert_eq!(json["trigger"], "task_stopped:b:disabled");
    assert_eq!(json["tasks"][1]["status"], "disabled");
}

#[test]
fn bad_updates_get_typed_errors_and_change_nothing() {
    let t0 = Instant::now();
    let mut pl = Planner::new(settings(), vec![spec("a", 1.0)], t0).unwrap();
    pl.task_started("a", t0).unwrap();
    let before = pl.plan().clone();
    let e = pl.task_started("nope", t0).unwrap_err();
    assert!(
        matches!(&e, SchedulerError::UnknownTask { task, known } if task == "nope" && known == "a"),
        "{e}"
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = pl
            .update_priority(
                &PriorityUpdate {
                    task: "a".into(),
                    priority: bad,
                    enabled: true,
                },
                t0,
            )
            .unwrap_err();
        assert!(matches!(e, SchedulerError::InvalidPriority { .. }), "{e}");
    }
    let e = pl
        .update_priority(
            &PriorityUpdate {
                task: "x".into(),
                priority: 1.0,
                enabled: true,
            },
            t0,
        )
        .unwrap_err();
    assert!(matches!(e, SchedulerError::UnknownTask { .. }));
    for bad in [f64::NAN, -0.5, f64::NEG_INFINITY, f64::INFINITY] {
        let e = pl.update_budget(&Budget::new(bad, MB), t0).unwrap_err();
        assert!(matches!(e, SchedulerError::InvalidBudget { .. }), "{e}");
    }
    assert_eq!(
        pl.plan().seq,
        before.seq,
        "a rejected update must not re-plan"
    );
    assert_eq!(pl.plan().tasks, before.tasks);
    assert_eq!(pl.budget().0.cpu_cores, 1.0);
    assert!(pl.update_profile("zz", (*ladder("a")).clone(), t0).is_err());
    assert!(matches!(
        Ladder::new("a", vec![], None),
        Err(SchedulerError::EmptyLadder { .. })
    ));
    let bad_rung = Rung {
        name: "d0".into(),
        accuracy: 0.5,
        latency_s: 0.0,
        build_s: 0.0,
        plan_bytes: 0,
    };
    assert!(matches!(
        Ladder::new("a", vec![bad_rung], None),
        Err(SchedulerError::InvalidRung { .. })
    ));
    // Duplicate names and bad specs are refused at construction.
    assert!(matches!(
        Planner::new(settings(), vec![spec("a", 1.0), spec("a", 1.0)], t0),
        Err(SchedulerError::DuplicateTask { .. })
    ));
    assert!(matches!(
        Planner::new(settings(), vec![spec("a", 0.0)], t0),
        Err(SchedulerError::InvalidPriority { .. })
    ));
    let bad = Settings {
        share_step: 0.0,
        ..settings()
    };
    assert!(matches!(
        Planner::new(bad, vec![spec("a", 1.0)], t0),
        Err(SchedulerError::InvalidSetting { .. })
    ));
}

#[test]
fn zero_budget_pauses_and_recovers() {
    let t0 = Instant::now();
    let mut pl = Planner::new(settings(), vec![spec("a", 1.0), spec("b", 2.0)], t0).unwrap();
    pl.task_started("a", t0).unwrap();
    pl.task_started("b", t0).unwrap();
    let p = pl
        .update_budget(&Budget::new(0.0, 512 * MB), t0)
        .unwrap()
        .unwrap();
    assert!(p
        .tasks
        .iter()
        .all(|t| t.status == TaskStatus::Paused && t.share == 0.0));
    assert!(p.degraded);
    let p = pl.update_budget(&Budget::new(1.0, 0), t0).unwrap().unwrap();
    assert!(p.tasks.iter().all(|t| t.status == TaskStatus::Paused));
    let p = pl
        .update_budget(&Budget::new(1.0, 512 * MB), t0)
        .unwrap()
        .unwrap();
    assert!(p.tasks.iter().all(|t| t.status == TaskStatus::Running));
}

/// Jitter of a few percent around a budget never switches descendants.
#[test]
fn jittering_budget_does_not_flap() {
    let t0 = Instant::now();
    let tasks = vec![spec("a", 1.0), spec("b", 1.5), spec("c", 0.7)];
    let mut pl = Planner::new(settings(), tasks, t0).unwrap();
    for t in ["a", "b", "c"] {
        pl.task_started(t, t0).unwrap();
    }
    // Cores at which the optimum changes: the jitter straddles one of them on purpose.
    let base = [0.35, 0.6, 0.9, 1.3];
    for (round, &b) in base.iter().enumerate() {
        let mut switches = 0;
        let mut last = None;
        for step in 0..400u32 {
            let now = t0
                + Duration::from_secs(100 * (round as u64 + 1))
                + Duration::from_millis(100 * u64::from(step));
            let jitter = ((step * 7919) % 101) as f64 / 100.0 * 0.06 - 0.03; // +-3%
            let p = pl
                .update_budget(&Budget::new(b * (1.0 + jitter), 512 * MB), now)
                .unwrap()
                .unwrap();
            let cores: f64 = p.tasks.iter().map(|t| t.share).sum();
            assert!(
                cores <= b * (1.0 + jitter) + 1e-9,
                "shares follow the budget down at once"
            );
            let d = descendants(&p);
            if step > 0 && last.as_ref() != Some(&d) {
                switches += 1;
            }
            last = Some(d);
        }
        assert!(
            switches <= 1,
            "budget {b} +-3%: {switches} descendant changes in 40 s"
        );
    }
}

/// Large alternating budgets switch at most once per dwell time per task, and a held-back
/// switch is made when the dwell expires (`review`).
#[test]
fn dwell_limits_switch_rate_and_review_catches_up() {
    let t0 = Instant::now();
    let mut pl = Planner::new(settings(), vec![spec("a", 1.0), spec("b", 1.0)], t0).unwrap();
    pl.task_started("a", t0).unwrap();
    pl.task_started("b", t0).unwrap();
    let mut last_switch: Vec<Option<Instant>> = vec![None; 2];
    let mut prev = descendants(pl.plan());
    let mut n = 0;
    for step in 0..100u32 {
        let now = t0 + Duration::from_millis(250 * u64::from(step));
        let cores = if step % 2 == 0 { 0.15 } else { 2.0 };
        let p = pl
            .update_budget(&Budget::new(cores, 512 * MB), now)
            .unwrap()
            .unwrap();
        let d = descendants(&p);
        for k in 0..2 {
            if d[k] != prev[k] {
                n += 1;
                if let Some(l) = last_switch[k] {
                    assert!(
                        now - l >= Duration::from_secs(2),
                        "task {k} switched again after {:?}",
                        now - l
                    );
                }
                last_switch[k] = Some(now);
                assert!(p.tasks[k].switched);
            }
        }
        prev = d;
    }
    assert!(n >= 2, "the alternating budget should cause some switches");

    // A drop that is held back by the dwell is made at review time.
    let now = t0 + Duration::from_secs(100);
    pl.update_budget(&Budget::new(2.0, 512 * MB), now).unwrap();
    pl.update_budget(&Budget::new(2.0, 512 * MB), now + Duration::from_secs(3))
        .unwrap();
    let big = descendants(pl.plan());
    let t = now + Duration::from_secs(10);
    let p = pl
        .update_budget(&Budget::new(0.1, 512 * MB), t)
        .unwrap()
        .unwrap();
    let small = descendants(&p);
    assert_ne!(
        big, small,
        "a large drop switches at once when no dwell holds"
    );
    let p = pl
        .update_budget(&Budget::new(2.0, 512 * MB), t + Duration::from_millis(500))
        .unwrap()
        .unwrap();
    assert_eq!(descendants(&p), small, "dwell holds the switch back");
    let at = pl.next_review().expect("a review time");
    assert_eq!(at, t + Duration::from_secs(2));
    assert!(pl.review(t + Duration::from_secs(1)).is_none());
    let p = pl.review(at).unwrap();
    assert_eq!(p.trigger, Trigger::DwellExpired);
    assert_eq!(descendants(&p), big);
    assert!(pl.next_review().is_none());
}

/// On-demand switching cost: a switch whose gain does not pay for building the plan is not
/// made; with free (resident) switches the same change is made.
#[test]
fn switching_cost_is_part_of_the_decision() {
    let mk = |policy, build_s: f64| {
        let mut s = settings();
        s.switch_policy = policy;
        s.hysteresis_margin = 0.0;
        s.min_dwell = Duration::ZERO;
        let rungs = vec![
            Rung {
                name: "d0".into(),
                accuracy: 0.80,
                latency_s: 0.004,
                build_s,
                plan_bytes: MB,
            },
            Rung {
                name: "d1".into(),
                accuracy: 0.801,
                latency_s: 0.008,
                build_s,
                plan_bytes: 2 * MB,
            },
        ];
        let l = Arc::new(Ladder::new("a", rungs, None).unwrap());
        let t0 = Instant::now();
        let mut pl = Planner::new(
            s,
            vec![TaskSpec {
                name: "a".into(),
                priority: 1.0,
                target_fps: 20.0,
                enabled: true,
                ladder: l,
            }],
            t0,
        )
        .unwrap();
        pl.update_budget(&Budget::new(0.1, 512 * MB), t0).unwrap();
        pl.task_started("a", t0).unwrap();
        assert_eq!(
            pl.plan().tasks[0].descendant,
            "d0",
            "0.1 cores: d1 would miss 20 fps"
        );
        let p = pl
            .update_budget(&Budget::new(1.0, 512 * MB), t0 + Duration::from_secs(10))
            .unwrap()
            .unwrap();
        p.tasks[0].descendant.clone()
    };
    // Gain of moving to d1: 0.001 accuracy. Build cost: alpha * 0.5 s / 1 s = 0.05.
    assert_eq!(mk(SwitchPolicy::OnDemand, 0.5), "d0");
    assert_eq!(mk(SwitchPolicy::Resident, 0.5), "d1");
    assert_eq!(mk(SwitchPolicy::OnDemand, 0.0), "d1");
}

#[test]
fn static_ignores_budgets_and_priorities() {
    let t0 = Instant::now();
    let s = Settings {
        objective: Objective::Static,
        ..settings()
    };
    let mut pl = Planner::new(s, vec![spec("a", 1.0), spec("b", 1.0)], t0).unwrap();
    pl.task_started("a", t0).unwrap();
    let p = pl.task_started("b", t0).unwrap().unwrap();
    assert!(p
        .tasks
        .iter()
        .all(|t| t.descendant == "d3" && (t.share - 0.5).abs() < 1e-12));
    assert_eq!(p.budget_source, BudgetSource::Default);
    assert!(pl
        .update_budget(&Budget::new(0.1, MB), t0)
        .unwrap()
        .is_none());
    assert!(pl
        .update_priority(
            &PriorityUpdate {
                task: "a".into(),
                priority: 5.0,
                enabled: true
            },
            t0
        )
        .unwrap()
        .is_none());
    // Stopping a task re-plans: the other gets the whole default budget (capped at 1 core).
    let p = pl.task_stopped("b", t0).unwrap().unwrap();
    assert!((p.tasks[0].share - 1.0).abs() < 1e-12);
    // 32 ms at 1 core: 31.25 fps possible, target 20.
    assert_eq!(p.tasks[0].expected_fps, 20.0);
}

#[test]
fn priority_raise_moves_capacity_to_the_task() {
    let t0 = Instant::now();
    let mut s = settings();
    s.hysteresis_margin = 0.0;
    s.min_dwell = Duration::ZERO;
    let mut pl = Planner::new(s, vec![spec("a", 1.0), spec("b", 1.0)], t0).unwrap();
    // 0.7 cores: both on d2 (0.32 cores each for 20 fps); d3 needs 0.64.
    pl.update_budget(&Budget::new(0.7, 512 * MB), t0).unwrap();
    pl.task_started("a", t0).unwrap();
    let before = pl.task_started("b", t0).unwrap().unwrap();
    let after = pl
        .update_priority(
            &PriorityUpdate {
                task: "a".into(),
                priority: 10.0,
                enabled: true,
            },
            t0 + Duration::from_secs(1),
        )
        .unwrap()
        .unwrap();
    let (a0, a1) = (&before.tasks[0], &after.tasks[0]);
    assert!(
        a1.descendant_index > a0.descendant_index || a1.share > a0.share,
        "a: {} {} -> {} {}",
        a0.descendant,
        a0.share,
        a1.descendant,
        a1.share
    );
    assert!(a1.cost.unwrap() / 10.0 <= a0.cost.unwrap() + 1e-12);
}

#[test]
fn calibration_replaces_observed_latencies_and_scales_the_rest() {
    let l = ladder("a");
    // d1 observed at 12 ms (profiled 8 ms): ratio 1.5 for the others.
    let c = l.calibrated(&[None, Some(0.012)]);
    let lat: Vec<f64> = c.rungs().iter().map(|r| r.latency_s * 1e3).collect();
    for (got, want) in lat.iter().zip([6.0, 12.0, 24.0, 48.0]) {
        assert!((got - want).abs() < 1e-9, "{lat:?}");
    }
    // Accuracy, memory untouched; bad observations ignored.
    assert_eq!(c.rungs()[3].accuracy, l.rungs()[3].accuracy);
    assert_eq!(
        c.memory_bytes(2, SwitchPolicy::OnDemand),
        l.memory_bytes(2, SwitchPolicy::OnDemand)
    );
    assert_eq!(&l.calibrated(&[Some(f64::NAN), Some(-1.0), Some(0.0)]), &*l);
    assert_eq!(&l.calibrated(&[]), &*l);
}

/// Issue 12: a dead resource monitor is noticed. After `budget_timeout` without a budget the
/// planner re-plans for the safe budget (trigger `budget_stale`); the next budget ends it; a
/// repeated identical budget makes no plan; the default budget never goes stale.
#[test]
fn stale_budget_is_replanned_for_the_safe_budget_and_recovers() {
    let t0 = Instant::now();
    let s = Settings {
        budget_timeout: Some(Duration::from_secs(3)),
        stale_budget_cores: 0.02,
        ..settings()
    };
    let mut pl = Planner::new(s, vec![spec("a", 1.0)], t0).unwrap();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    pl.task_started("a", at(0.1)).unwrap();
    // No budget yet: the configured default is in force and does not go stale.
    assert_eq!(pl.budget_deadline(), None);
    assert!(pl.check_budget(at(100.0)).is_none());

    let p = pl
        .update_budget(&Budget::new(0.5, 256 * MB), at(1.0))
        .unwrap();
    assert_eq!(p.unwrap().trigger, Trigger::Budget);
    assert_eq!(pl.budget_deadline(), Some(at(4.0)));
    // The monitor repeats the same budget every period: no plan, but the budget is fresh.
    let seq = pl.plan().seq;
    assert!(pl
        .update_budget(&Budget::new(0.5, 256 * MB), at(2.0))
        .unwrap()
        .is_none());
    assert_eq!(pl.plan().seq, seq);
    assert_eq!(pl.budget_deadline(), Some(at(5.0)));
    assert!(pl.check_budget(at(4.9)).is_none());

    let p = pl.check_budget(at(5.0)).expect("stale at the deadline");
    assert_eq!(p.trigger, Trigger::BudgetStale);
    assert_eq!(p.trigger.to_string(), "budget_stale");
    assert_eq!(p.budget_source, BudgetSource::Stale);
    assert_eq!(p.budget.cpu_cores, 0.02);
    assert_eq!(p.budget.memory_bytes, 256 * MB, "memory of the last budget");
    assert!(p.tasks[0].share <= 0.02 + 1e-9);
    assert!(
        p.notes.iter().any(|n| n.contains("safe budget")),
        "{:?}",
        p.notes
    );
    assert!(pl.budget_stale());
    assert!(pl.budget_age(at(6.0)) >= Duration::from_secs(4));
    assert!(
        pl.check_budget(at(9.0)).is_none(),
        "stale once, not every call"
    );

    // The same budget as before the outage is a change now: re-planned, fresh again.
    let p = pl
        .update_budget(&Budget::new(0.5, 256 * MB), at(10.0))
        .unwrap()
        .expect("recovery re-plans");
    assert_eq!(p.trigger, Trigger::Budget);
    assert_eq!(p.budget_source, BudgetSource::Received);
    assert!(!pl.budget_stale());
    assert_eq!(pl.budget_deadline(), Some(at(13.0)));

    // budget_timeout off: never stale.
    let s = Settings {
        budget_timeout: None,
        ..settings()
    };
    let mut pl = Planner::new(s, vec![spec("a", 1.0)], t0).unwrap();
    pl.update_budget(&Budget::new(0.5, 256 * MB), at(1.0))
        .unwrap();
    assert_eq!(pl.budget_deadline(), None);
    assert!(pl.check_budget(at(1e5)).is_none());
}

/// Issue 12: a budget of exactly 0.03 cores sent as float32 (0.029999999) plans for 0.03
/// cores, i.e. three 0.01-core share steps, not two.
#[test]
fn float32_budget_keeps_its_decimal_value() {
    let msg = nestdnn::msgs::ResourceBudget {
        cpu_cores_available: 0.03,
        memory_available_bytes: 256 * MB,
        ..Default::default()
    };
    let b = Budget::from_message(&msg);
    assert_eq!(b.cpu_cores, 0.03);
    assert_eq!(nestdnn::scheduler::f32_decimal(0.0301), 0.0301);
    assert!(nestdnn::scheduler::f32_decimal(f32::NAN).is_nan());
    let t0 = Instant::now();
    let s = Settings {
        share_step: 0.01,
        share_headroom: 0.0,
        ..settings()
    };
    let mut pl = Planner::new(s, vec![spec("a", 1.0)], t0).unwrap();
    pl.task_started("a", t0).unwrap();
    let p = pl.update_budget(&b, t0).unwrap().unwrap();
    assert!(
        (p.tasks[0].share - 0.03).abs() < 1e-9,
        "share {} of a 0.03-core budget",
        p.tasks[0].share
    );
}

/// One copy of the model counts only the active plan, so a memory budget that cannot hold
/// two on-demand slots (master weights + plan each) still runs both tasks, on the largest
/// descendants that fit together.
#[test]
fn one_copy_memory_counts_the_active_plan_only() {
    let l = ladder("x");
    // `ladder` keeps the largest plan (4 MB) as its master weights.
    assert_eq!(l.memory_bytes(1, SwitchPolicy::OneCopy), 2 * MB);
    assert_eq!(l.memory_bytes(1, SwitchPolicy::OnDemand), 6 * MB);
    assert_eq!(l.memory_bytes(9, SwitchPolicy::OneCopy), 4 * MB);
    let t0 = Instant::now();
    let run = |policy: SwitchPolicy| {
        let s = Settings {
            switch_policy: policy,
            default_budget: Budget::new(2.0, 6 * MB),
            ..settings()
        };
        let mut pl = Planner::new(s, vec![spec("a", 1.0), spec("b", 1.0)], t0).unwrap();
        pl.task_started("a", t0).unwrap();
        pl.task_started("b", t0).unwrap();
        let p = pl.plan().clone();
        let running: Vec<_> = p
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Running)
            .map(|t| t.descendant_index)
            .collect();
        let memory: u64 = running
            .iter()
            .map(|&d| ladder("x").memory_bytes(d, policy))
            .sum();
        (running, memory)
    };
    let (one, mem) = run(SwitchPolicy::OneCopy);
    assert_eq!(one.len(), 2, "both tasks run under one copy: {one:?}");
    assert!(mem <= 6 * MB, "{mem}");
    assert_eq!(
        one.iter().sum::<usize>(),
        4,
        "two 3-MB plans or 2 + 4 MB: {one:?}"
    );
    let (on_demand, mem) = run(SwitchPolicy::OnDemand);
    assert!(mem <= 6 * MB, "{mem}");
    assert!(
        on_demand.len() < 2,
        "two on-demand slots need >= 10 MB: {on_demand:?}"
    );
}
