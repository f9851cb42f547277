//! Guards the scheduler's decision time: the target is <= 1 ms for 8 tasks x 8
//! descendants with the exact solver (share step 0.01 cores = 100 steps per core). Also
//! measured: min-max, a binding memory budget (the Pareto programme), one planner trigger
//! (keep + free solves and hysteresis), and the greedy solver on 8 x 8 and 64 x 16.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use nestdnn::model::SwitchPolicy;
use nestdnn::scheduler::{
    plan_all, Budget, Ladder, Objective, Planner, Rung, Settings, SolverChoice, TaskSpec,
};

const MB: u64 = 1 << 20;

/// `tasks` tasks with `ds` descendants each: accuracy concave in size, latency and memory
/// growing with size, assorted targets and priorities (deterministic).
fn tasks(tasks: usize, ds: usize) -> Vec<TaskSpec> {
    (0..tasks)
        .map(|i| {
            let scale = 1.0 + (i % 3) as f64 * 0.5;
            let rungs = (0..ds)
                .map(|d| {
                    let x = (d + 1) as f64 / ds as f64;
                    Rung {
                        name: format!("d{d}"),
                        accuracy: 0.70 + 0.22 * x.sqrt() - 0.002 * ((i + d) % 2) as f64,
                        latency_s: scale * (0.5 + 12.0 * x * x) / 1e3,
                        build_s: 0.002 + 0.01 * x,
                        plan_bytes: ((1.0 + 30.0 * x * x) * MB as f64) as u64,
                    }
                })
                .collect();
            let name = format!("task{i}");
            TaskSpec {
                name: name.clone(),
                priority: 1.0 + (i % 4) as f64 * 0.5,
                target_fps: [10.0, 15.0, 30.0][i % 3],
                enabled: true,
                ladder: Arc::new(Ladder::new(&name, rungs, None).unwrap()),
            }
        })
        .collect()
}

fn settings(objective: Objective, solver: SolverChoice) -> Settings {
    Settings {
        objective,
        solver,
        share_step: 0.01,
        switch_policy: SwitchPolicy::OnDemand,
        ..Settings::default()
    }
}

fn bench(c: &mut Criterion) {
    let t8 = tasks(8, 8);
    let mut g = c.benchmark_group("decision");
    // 2 cores for 8 tasks that want ~2.9 at their largest descendants: compute binds.
    let slack = Budget::new(2.0, 4096 * MB);
    // Memory for about the middle descendants: memory binds too.
    let tight = Budget::new(2.0, 8 * 40 * MB);
    for (name, obj, solver, budget) in [
        (
            "min_total_exact_8x8",
            Objective::MinTotalCost,
            SolverChoice::Exact,
            slack,
        ),
        (
            "min_max_exact_8x8",
            Objective::MinMaxCost,
            SolverChoice::Exact,
            slack,
        ),
        (
            "min_total_exact_8x8_memory_binding",
            Objective::MinTotalCost,
            SolverChoice::Exact,
            tight,
        ),
        (
            "min_max_exact_8x8_memory_binding",
            Objective::MinMaxCost,
            SolverChoice::Exact,
            tight,
        ),
        (
            "min_total_greedy_8x8",
            Objective::MinTotalCost,
            SolverChoice::Greedy,
            slack,
        ),
        (
            "min_max_greedy_8x8",
            Objective::MinMaxCost,
            SolverChoice::Greedy,
            slack,
        ),
    ] {
        let s = settings(obj, solver);
        g.bench_function(name, |b| {
            b.iter(|| plan_all(s.clone(), black_box(t8.clone()), black_box(budget)).unwrap())
        });
    }
    let t64 = tasks(64, 16);
    let s = settings(Objective::MinTotalCost, SolverChoice::Greedy);
    g.bench_function("min_total_greedy_64x16", |b| {
        b.iter(|| {
            plan_all(
                s.clone(),
                black_box(t64.clone()),
                Budget::new(12.0, 1 << 40),
            )
            .unwrap()
        })
    });

    // One budget trigger on a running planner (keep + free solves, hysteresis), budgets
    // alternating so that every trigger has real work.
    let s = Settings {
        min_dwell: Duration::ZERO,
        ..settings(Objective::MinTotalCost, SolverChoice::Exact)
    };
    let t0 = Instant::now();
    let mut pl = Planner::new(s, t8.clone(), t0).unwrap();
    for t in &t8 {
        pl.task_started(&t.name, t0).unwrap();
    }
    let mut k = 0u32;
    g.bench_function("planner_budget_trigger_8x8", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let cores = [1.2, 2.0, 2.8][k as usize % 3];
            pl.update_budget(
                &Budget::new(cores, 4096 * MB),
                t0 + Duration::from_secs(u64::from(k)),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
