//! Guards switching cost under both policies (acceptance: resident switch <= 0.1 ms,
//! on-demand build <= 15 ms for the largest descendant), for every model under `models/`
//! (or `$NESTDNN_MODELS_DIR`):
//! - `switch/resident/<task>`: `ModelSlot::request` flipping between the smallest and the
//!   largest descendant (a pointer swap);
//! - `switch/build/<task>/<descendant>`: building one plan from the in-memory master (slice,
//!   BN fold, tract optimize): the on-demand switch cost;
//! - `switch/on_demand/<task>`: `request` + wait until the background builder swapped the
//!   largest (or smallest) descendant in: build plus thread hand-off.
//! - `switch/one_copy/<task>`: the same with one copy of the model (no master weights in
//!   memory): each build re-reads, hash-checks and decodes the master file first.
//!
//! Also prints each policy's memory (counting allocator).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use nestdnn::model::{find_models, models_dir, ModelSlot, MultiCapacityModel, SwitchPolicy};

#[global_allocator]
static ALLOC: nestdnn::profile::alloc::CountingAlloc = nestdnn::profile::alloc::CountingAlloc;

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
            Ok(m) => Arc::new(m),
            Err(e) => {
                eprintln!("skipping {}: {e}", dir.display());
                continue;
            }
        };
        let task = model.manifest().task.clone();
        let top = model.num_descendants() - 1;

        let resident = ModelSlot::new(model.clone(), SwitchPolicy::Resident, 0).expect("slot");
        let on_demand = ModelSlot::new(model.clone(), SwitchPolicy::OnDemand, 0).expect("slot");
        let kib = |b: u64| b as f64 / 1024.0;
        let od_top = {
            on_demand.request(top).expect("request");
            on_demand.wait_idle(Duration::from_secs(30));
            on_demand.memory_bytes()
        };
        on_demand.request(0).expect("request");
        on_demand.wait_idle(Duration::from_secs(30));
        eprintln!(
            "memory {task}: resident {:.1} KiB (all {} plans); on-demand {:.1} KiB (master {:.1} KiB + smallest plan) .. {:.1} KiB (+ largest plan)",
            kib(resident.memory_bytes()),
            model.num_descendants(),
            kib(on_demand.memory_bytes()),
            kib(model.master_bytes()),
            kib(od_top)
        );

        let mut next = top;
        c.bench_function(&format!("switch/resident/{task}"), |b| {
            b.iter(|| {
                resident.request(next).expect("request");
                next = top - next;
            })
        });

        let mut g = c.benchmark_group(format!("switch/build/{task}"));
        for i in 0..model.num_descendants() {
            let name = model.manifest().descendants[i].name.clone();
            g.bench_function(&name, |b| {
                b.iter_with_large_drop(|| model.build_plan(i).expect("build"))
            });
        }
        g.finish();

        flips(c, "switch/on_demand", &task, &on_demand, top);

        // A model of its own, so the slot holds the only reference and drops the weights.
        let one_copy = match MultiCapacityModel::load(&dir) {
            Ok(m) => ModelSlot::new(Arc::new(m), SwitchPolicy::OneCopy, 0).expect("slot"),
            Err(e) => {
                eprintln!("skipping one_copy for {}: {e}", dir.display());
                continue;
            }
        };
        let oc_small = one_copy.memory_bytes();
        one_copy.request(top).expect("request");
        one_copy.wait_idle(Duration::from_secs(30));
        eprintln!(
            "memory {task}: one-copy {:.1} KiB (smallest plan) .. {:.1} KiB (largest plan)",
            kib(oc_small),
            kib(one_copy.memory_bytes())
        );
        flips(c, "switch/one_copy", &task, &one_copy, top);
    }
}

/// `group/task`: `request` + wait until the background builder swapped the other end of the
/// ladder in (smallest <-> largest, `top`), starting from where `slot` is now.
fn flips(c: &mut Criterion, group: &str, task: &str, slot: &ModelSlot, top: usize) {
    let mut next = top - slot.target().min(top);
    let mut g = c.benchmark_group(group);
    g.bench_function(task, |b| {
        b.iter(|| {
            slot.request(next).expect("request");
            assert!(slot.wait_idle(Duration::from_secs(30)));
            next = top - next;
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
