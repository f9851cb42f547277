//! Guards inference latency: single-thread batch-1 run of every descendant (and the vanilla
//! model) of every model under `models/` (or `$NESTDNN_MODELS_DIR`), on a fixture image.
//! Only optimized plans are timed; one `PlanState` is reused as a serving thread would.

use criterion::{criterion_group, criterion_main, Criterion};
use nestdnn::model::{find_models, models_dir, DescendantPlan, MultiCapacityModel};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dirs = find_models(&models_dir()).unwrap_or_default();
    if dirs.is_empty() {
        eprintln!(
            "no models under {}; set NESTDNN_MODELS_DIR",
            models_dir().display()
        );
    }
    for dir in dirs {
        let model = match MultiCapacityModel::load(&dir) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping {}: {e}", dir.display());
                continue;
            }
        };
        let fx = model.load_fixtures().expect("fixtures");
        let input = fx.input(0).expect("fixture image").to_vec();
        let task = model.manifest().task.clone();
        let mut plans: Vec<DescendantPlan> = (0..model.num_descendants())
            .map(|i| model.build_plan(i).expect("plan"))
            .collect();
        plans.push(model.build_vanilla_plan().expect("vanilla plan"));
        let mut g = c.benchmark_group(format!("latency/{task}"));
        for plan in &plans {
            let mut state = plan.spawn().expect("state");
            g.bench_function(plan.name(), |b| b.iter(|| state.run(&input).expect("run")));
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
