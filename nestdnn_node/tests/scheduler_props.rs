//! Property tests of the scheduler on synthetic ladders: the exact solvers against brute
//! force, the greedy solvers against the exact ones (within the stated bound, always
//! feasible), monotonicity in the budget, priorities respected, feasibility of every plan.

use std::sync::Arc;

use nestdnn::model::SwitchPolicy;
use nestdnn::scheduler::cost::task_cost;
use nestdnn::scheduler::{
    plan_all, Budget, Ladder, Objective, Plan, Rung, Settings, SolverChoice, SolverKind, TaskSpec,
    TaskStatus,
};
use proptest::prelude::*;

const MB: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Inst {
    tasks: Vec<TaskSpec>,
    cores: f64,
    memory: u64,
}

/// A ladder: accuracy and latency non-decreasing with size, plan bytes increasing.
fn ladder_strategy(max_d: usize) -> impl Strategy<Value = Vec<(f64, f64, u64)>> {
    prop::collection::vec((0.0f64..0.2, 2.0f64..60.0, 1u64..40), 1..=max_d).prop_map(|steps| {
        let mut acc = 0.5;
        let mut lat = 0.0;
        let mut bytes = 0;
        steps
            .into_iter()
            .map(|(da, dl, db)| {
                acc = f64::min(acc + da, 1.0);
                lat += dl;
                bytes += db;
                (acc, lat / 1000.0, bytes * MB / 4)
            })
            .collect()
    })
}

/// Instances whose budgets are a random fraction of what every task needs on its largest
/// descendant at full frame rate, so that the trade-offs bind.
fn inst_strategy(max_t: usize, max_d: usize) -> impl Strategy<Value = Inst> {
    inst_strategy_in(max_t, max_d, 0.05..1.3, 0.3..1.3, false)
}

/// As [`inst_strategy`] with the budget fractions drawn from the given ranges. With
/// `mem_between`, memory is `min + frac x (max - min)` of what the tasks need on their
/// smallest and largest descendants (nothing pauses, memory binds for frac < 1).
fn inst_strategy_in(
    max_t: usize,
    max_d: usize,
    core_frac: std::ops::Range<f64>,
    mem_frac: std::ops::Range<f64>,
    mem_between: bool,
) -> impl Strategy<Value = Inst> {
    (
        prop::collection::vec(
            (
                ladder_strategy(max_d),
                0.2f64..5.0,
                prop::sample::select(vec![5.0, 10.0, 15.0, 30.0]),
            ),
            1..=max_t,
        ),
        core_frac,
        mem_frac,
    )
        .prop_map(move |(ts, core_frac, mem_frac)| {
            let tasks: Vec<TaskSpec> = ts
                .into_iter()
                .enumerate()
                .map(|(i, (rungs, prio, fps))| {
                    let name = format!("t{i}");
                    let rungs = rungs
                        .into_iter()
                        .enumerate()
                        .map(|(d, (a, l, b))| Rung {
                            name: format!("d{d}"),
                            accuracy: a,
                            latency_s: l,
                            build_s: 0.002 * (d + 1) as f64,
                            plan_bytes: b,
                        })
                        .collect();
                    TaskSpec {
                        name: name.clone(),
                        priority: prio,
                        target_fps: fps,
                        enabled: true,
                        ladder: Arc::new(Ladder::new(&name, rungs, None).unwrap()),
                    }
                })
                .collect();
            let need_cores: f64 = tasks
                .iter()
                .map(|t| {
                    f64::min(
                        1.0,
                        t.ladder.rungs()[t.ladder.largest()].latency_s * t.target_fps,
                    )
                })
                .sum();
            let need_mem: u64 = tasks
                .iter()
                .map(|t| {
                    t.ladder
                        .memory_bytes(t.ladder.largest(), SwitchPolicy::OnDemand)
                })
                .sum();
            let min_mem: u64 = tasks
                .iter()
                .map(|t| t.ladder.memory_bytes(0, SwitchPolicy::OnDemand))
                .sum();
            let memory = if mem_between {
                min_mem + (mem_frac * (need_mem - min_mem) as f64) as u64
            } else {
                (mem_frac * need_mem as f64) as u64
            };
            Inst {
                tasks,
                cores: core_frac * need_cores,
                memory,
            }
        })
}

fn settings(obj: Objective, solver: SolverChoice, step: f64) -> Settings {
    Settings {
        objective: obj,
        solver,
        share_step: step,
        alpha: 0.1,
        switch_policy: SwitchPolicy::OnDemand,
        ..Settings::default()
    }
}

fn run(inst: &Inst, obj: Objective, solver: SolverChoice, step: f64) -> Plan {
    plan_all(
        settings(obj, solver, step),
        inst.tasks.clone(),
        Budget::new(inst.cores, inst.memory),
    )
    .unwrap()
}

/// Every plan respects the budget and the one-core cap; costs and fps follow the model.
fn check_feasible(inst: &Inst, p: &Plan, step: f64) {
    let cores: f64 = p.tasks.iter().map(|t| t.share).sum();
    assert!(
        cores <= inst.cores + 1e-9,
        "shares {cores} > budget {}",
        inst.cores
    );
    let mem: u64 = p.tasks.iter().map(|t| t.memory_bytes).sum();
    assert!(mem <= inst.memory, "memory {mem} > budget {}", inst.memory);
    for (t, spec) in p.tasks.iter().zip(&inst.tasks) {
        assert!(
            t.share <= 1.0 + 1e-9,
            "{}: share {} > 1 core",
            t.task,
            t.share
        );
        match t.status {
            TaskStatus::Running => {
                assert!(t.share >= step - 1e-9);
                let r = &spec.ladder.rungs()[t.descendant_index];
                assert!(t.expected_fps <= spec.target_fps + 1e-9);
                assert!(t.expected_fps <= t.share / r.latency_s + 1e-9);
            }
            TaskStatus::Paused => assert_eq!(t.share, 0.0),
            s => panic!("unexpected status {s:?}"),
        }
    }
}

/// Brute force over every (descendant, units) per running task.
fn brute(inst: &Inst, p: &Plan, step: f64, obj: Objective) -> Option<(f64, f64)> {
    let run: Vec<&TaskSpec> = inst
        .tasks
        .iter()
        .zip(&p.tasks)
        .filter(|(_, t)| t.status == TaskStatus::Running)
        .map(|(s, _)| s)
        .collect();
    let u1 = (1.0 / step + 1e-9).floor() as usize;
    let units = ((inst.cores / step) + 1e-9).floor() as usize;
    let opts: Vec<Vec<(f64, usize, u64)>> = run
        .iter()
        .map(|s| {
            let l = &s.ladder;
            let mut v = Vec::new();
            for (d, r) in l.rungs().iter().enumerate() {
                for u in 1..=u1 {
                    let c = task_cost(
                        s.priority,
                        0.1,
                        s.target_fps,
                        l.best_accuracy(),
                        r.accuracy,
                        r.latency_s,
                        u as f64 * step,
                    );
                    v.push((c, u, l.memory_bytes(d, SwitchPolicy::OnDemand)));
                }
            }
            v
        })
        .collect();
    // (max, total) lexicographic for min-max; total for min-total.
    let mut best: Option<(f64, f64)> = None;
    let mut idx = vec![0usize; opts.len()];
    loop {
        let (mut tot, mut mx, mut u, mut m) = (0.0, 0.0f64, 0usize, 0u64);
        for (k, &i) in idx.iter().enumerate() {
            let (c, uu, mm) = opts[k][i];
            tot += c;
            mx = mx.max(c);
            u += uu;
            m += mm;
        }
        if u <= units && m <= inst.memory {
            let key = match obj {
                Objective::MinMaxCost => (mx, tot),
                _ => (tot, mx),
            };
            let better = match best {
                None => true,
                Some(b) => key.0 < b.0 - 1e-12 || (key.0 <= b.0 + 1e-12 && key.1 < b.1 - 1e-12),
            };
            if better {
                best = Some(key);
            }
        }
        let mut k = 0;
        loop {
            if k == idx.len() {
                return best;
            }
            idx[k] += 1;
            if idx[k] < opts[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The exact solvers find the brute-force optimum (coarse shares keep brute force small).
    #[test]
    fn exact_matches_brute_force(inst in inst_strategy(3, 3)) {
        let step = 0.1;
        for obj in [Objective::MinTotalCost, Objective::MinMaxCost] {
            let p = run(&inst, obj, SolverChoice::Exact, step);
            check_feasible(&inst, &p, step);
            prop_assert_eq!(p.solver, SolverKind::Exact);
            let b = brute(&inst, &p, step, obj);
            if p.tasks.iter().all(|t| t.status != TaskStatus::Running) {
                continue;
            }
            let (b0, b1) = b.expect("brute force found no plan although the solver did");
            match obj {
                Objective::MinMaxCost => {
                    prop_assert!(close(p.max_cost, b0), "max {} vs brute {}", p.max_cost, b0);
                    prop_assert!(close(p.total_cost, b1), "total {} vs brute {}", p.total_cost, b1);
                }
                _ => prop_assert!(close(p.total_cost, b0), "total {} vs brute {}", p.total_cost, b0),
            }
        }
    }

    /// Greedy: feasible whenever a plan exists, within its stated gap bound of the optimum.
    #[test]
    fn greedy_within_stated_bound(inst in inst_strategy(6, 6)) {
        let step = 0.01;
        for obj in [Objective::MinTotalCost, Objective::MinMaxCost] {
            let e = run(&inst, obj, SolverChoice::Exact, step);
            let g = run(&inst, obj, SolverChoice::Greedy, step);
            check_feasible(&inst, &e, step);
            check_feasible(&inst, &g, step);
            prop_assert_eq!(g.solver, SolverKind::Greedy);
            // The same tasks run (pausing is decided before either solver).
            let st = |p: &Plan| p.tasks.iter().map(|t| t.status).collect::<Vec<_>>();
            prop_assert_eq!(st(&e), st(&g));
            let (ev, gv) = match obj {
                Objective::MinMaxCost => (e.max_cost, g.max_cost),
                _ => (e.total_cost, g.total_cost),
            };
            prop_assert!(gv >= ev - 1e-9 * ev.abs().max(1.0), "greedy {} beat exact {}", gv, ev);
            if let Some(bound) = g.gap_bound {
                prop_assert!(gv <= ev + bound + 1e-9 * ev.abs().max(1.0),
                    "greedy {} > exact {} + bound {}", gv, ev, bound);
            }
        }
    }

    /// More cores or more memory never makes the plan worse: fewer paused tasks, or the same
    /// tasks at no higher objective.
    #[test]
    fn more_budget_never_worse(inst in inst_strategy(5, 5), extra_cores in 0.0f64..2.0, extra_mb in 0u64..100) {
        for obj in [Objective::MinTotalCost, Objective::MinMaxCost] {
            let a = run(&inst, obj, SolverChoice::Exact, 0.01);
            let mut more = inst.clone();
            more.cores += extra_cores;
            more.memory += extra_mb * MB;
            let b = run(&more, obj, SolverChoice::Exact, 0.01);
            let paused = |p: &Plan| p.tasks.iter().filter(|t| t.status == TaskStatus::Paused).map(|t| t.priority).sum::<f64>();
            let (pa, pb) = (paused(&a), paused(&b));
            prop_assert!(pb <= pa + 1e-12, "more budget paused more: {} > {}", pb, pa);
            if (pa - pb).abs() <= 1e-12 {
                let (va, vb) = match obj {
                    Objective::MinMaxCost => (a.max_cost, b.max_cost),
                    _ => (a.total_cost, b.total_cost),
                };
                prop_assert!(vb <= va + 1e-9 * va.abs().max(1.0), "objective rose from {} to {}", va, vb);
            }
        }
    }

    /// Raising one task's priority never lowers its service: its own (unweighted) cost does
    /// not rise, so its accuracy or its frame rate does not fall.
    #[test]
    fn raising_priority_never_lowers_capacity(inst in inst_strategy(4, 5), who in 0usize..4, factor in 1.0f64..10.0) {
        let who = who % inst.tasks.len();
        for obj in [Objective::MinTotalCost, Objective::MinMaxCost] {
            let a = run(&inst, obj, SolverChoice::Exact, 0.01);
            let mut hi = inst.clone();
            hi.tasks[who].priority *= factor;
            let b = run(&hi, obj, SolverChoice::Exact, 0.01);
            let (ta, tb) = (&a.tasks[who], &b.tasks[who]);
            if ta.status == TaskStatus::Running {
                prop_assert_eq!(tb.status, TaskStatus::Running, "raising the priority paused the task");
                let ca = ta.cost.unwrap() / ta.priority;
                let cb = tb.cost.unwrap() / tb.priority;
                prop_assert!(cb <= ca + 1e-9, "{:?}: own cost rose from {} to {} ({} -> {}, {} -> {} cores)",
                    obj, ca, cb, ta.descendant, tb.descendant, ta.share, tb.share);
                prop_assert!(tb.expected_accuracy >= ta.expected_accuracy - 1e-12 || tb.expected_fps >= ta.expected_fps - 1e-9);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The same with a memory budget that binds (the Pareto programme and the memory-aware
    /// min-max search).
    #[test]
    fn exact_matches_brute_force_when_memory_binds(inst in inst_strategy_in(3, 4, 0.3..1.5, 0.0..0.9, true)) {
        let step = 0.1;
        for obj in [Objective::MinTotalCost, Objective::MinMaxCost] {
            let p = run(&inst, obj, SolverChoice::Exact, step);
            check_feasible(&inst, &p, step);
            if p.tasks.iter().all(|t| t.status != TaskStatus::Running) {
                continue;
            }
            let (b0, b1) = brute(&inst, &p, step, obj).expect("brute force found no plan");
            match obj {
                Objective::MinMaxCost => {
                    prop_assert!(close(p.max_cost, b0), "max {} vs brute {}", p.max_cost, b0);
                    prop_assert!(close(p.total_cost, b1), "total {} vs brute {}", p.total_cost, b1);
                }
                _ => prop_assert!(close(p.total_cost, b0), "total {} vs brute {}", p.total_cost, b0),
            }
        }
    }
}

/// Zero cores pauses every task and says why; the planner never fails for a valid budget.
#[test]
fn zero_budget_pauses_everything_and_says_so() {
    let inst = Inst {
        tasks: (0..3)
            .map(|i| TaskSpec {
                name: format!("t{i}"),
                priority: 1.0 + i as f64,
                target_fps: 10.0,
                enabled: true,
                ladder: Arc::new(
                    Ladder::new(
                        "t",
                        vec![Rung {
                            name: "d0".into(),
                            accuracy: 0.9,
                            latency_s: 0.01,
                            build_s: 0.001,
                            plan_bytes: MB,
                        }],
                        None,
                    )
                    .unwrap(),
                ),
            })
            .collect(),
        cores: 0.0,
        memory: 100 * MB,
    };
    let p = run(&inst, Objective::MinTotalCost, SolverChoice::Auto, 0.01);
    assert!(p.tasks.iter().all(|t| t.status == TaskStatus::Paused));
    assert!(p.degraded);
    assert!(p.tasks[0]
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("paused"));
    // 0.02 cores = 2 units for 3 tasks: the lowest priority (t0) pauses.
    let mut some = inst.clone();
    some.cores = 0.02;
    let p = run(&some, Objective::MinTotalCost, SolverChoice::Auto, 0.01);
    let st: Vec<TaskStatus> = p.tasks.iter().map(|t| t.status).collect();
    assert_eq!(
        st,
        [TaskStatus::Paused, TaskStatus::Running, TaskStatus::Running]
    );
    // 2.5 MB memory for 3 tasks needing 2 MB each (on-demand: master + plan).
    let mut tight = inst.clone();
    tight.cores = 1.0;
    tight.memory = 5 * MB;
    let p = run(&tight, Objective::MinTotalCost, SolverChoice::Auto, 0.01);
    let st: Vec<TaskStatus> = p.tasks.iter().map(|t| t.status).collect();
    assert_eq!(
        st,
        [TaskStatus::Paused, TaskStatus::Running, TaskStatus::Running]
    );
    assert!(
        p.notes.iter().any(|n| n.contains("do not fit")),
        "{:?}",
        p.notes
    );
    // NaN, infinite and negative budgets are rejected with a typed error.
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        let e = plan_all(
            Settings::default(),
            inst.tasks.clone(),
            Budget::new(bad, MB),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cpu_cores"), "{e}");
    }
}

/// Large instances: the greedy runs on 64 tasks x 16 descendants and stays feasible.
#[test]
fn auto_uses_greedy_for_large_instances() {
    let rungs: Vec<Rung> = (0..16)
        .map(|d| Rung {
            name: format!("d{d}"),
            accuracy: 0.5 + 0.03 * d as f64 - 0.002 * (d % 3) as f64,
            latency_s: 0.002 * (1 + d * d) as f64,
            build_s: 0.001,
            plan_bytes: (d as u64 + 1) * MB,
        })
        .collect();
    let one = TaskSpec {
        name: "t".into(),
        priority: 1.0,
        target_fps: 15.0,
        enabled: true,
        ladder: Arc::new(Ladder::new("t", rungs, None).unwrap()),
    };
    let tasks: Vec<TaskSpec> = (0..64)
        .map(|i| TaskSpec {
            name: format!("t{i}"),
            priority: 1.0 + (i % 5) as f64,
            ..one.clone()
        })
        .collect();
    let big = Inst {
        tasks,
        cores: 12.0,
        memory: 1 << 40,
    };
    let p = run(&big, Objective::MinTotalCost, SolverChoice::Auto, 0.01);
    assert_eq!(p.solver, SolverKind::Greedy);
    check_feasible(&big, &p, 0.01);
    assert!(p.gap_bound.is_some());
}
