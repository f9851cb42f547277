//! Model loading, slicing rules, errors and switching, on a synthetic residual model written in
//! the contract format (`common/`), independent of the offline pipeline.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{standalone, write_model, Lcg, Synth};
use nestdnn::model::{
    DescendantPlan, ModelError, ModelSlot, MultiCapacityModel, PlanState, SwitchPolicy,
};

#[global_allocator]
static ALLOC: nestdnn::profile::alloc::CountingAlloc = nestdnn::profile::alloc::CountingAlloc;

fn load(s: &Synth) -> (tempfile::TempDir, Result<MultiCapacityModel, ModelError>) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), s);
    let m = MultiCapacityModel::load(dir.path());
    (dir, m)
}

fn inputs(n: usize) -> Vec<Vec<f32>> {
    let mut r = Lcg::new(7);
    (0..n).map(|_| r.vec(64, -2.0, 2.0)).collect()
}

#[test]
fn descendants_match_independently_sliced_networks() {
    let s = Synth::default();
    let (_d, m) = load(&s);
    let m = m.unwrap();
    assert_eq!(m.num_descendants(), 3);
    for k in 0..3 {
        let plan = m.build_plan(k).unwrap();
        assert_eq!(plan.index(), Some(k));
        let mut st = plan.spawn().unwrap();
        let reference = standalone(&s, k);
        for x in inputs(4) {
            let got = st.run(&x).unwrap();
            let want = common::reference_logits(&reference, &x);
            assert_eq!(got.len(), 4);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "d{k}: {got:?} vs {want:?}");
            }
        }
        // Manifest parameter counts in the synthetic manifest are computed independently.
        assert_eq!(m.graph_params(k), Some(m.manifest().descendants[k].params));
    }
    // Per-descendant BN statistics matter: d0 with d0's stats differs from d0 with d1's.
    let wrong = common::onnx_model(
        s.seed,
        (8, 8),
        (4, 4),
        &common::bn_stats(&s)[1][..]
            .iter()
            .map(|(m, v)| (m[..4].to_vec(), v[..4].to_vec()))
            .collect::<Vec<_>>(),
        None,
    );
    let x = &inputs(1)[0];
    let got = m.build_plan(0).unwrap().spawn().unwrap().run(x).unwrap();
    let other = common::reference_logits(&wrong, x);
    assert!(got.iter().zip(&other).any(|(a, b)| (a - b).abs() > 1e-3));
    let v = m.build_vanilla_plan().unwrap();
    assert_eq!(v.index(), None);
    assert_eq!(v.name(), "vanilla");
    assert!(v
        .spawn()
        .unwrap()
        .run(x)
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn exported_descendant_is_a_standalone_onnx_model() {
    use prost::Message;
    let s = Synth::default();
    let (_d, m) = load(&s);
    let m = m.unwrap();
    let bytes = m.descendant_proto(1).unwrap().encode_to_vec();
    let proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let g = proto.graph.as_ref().unwrap();
    assert!(
        g.node.iter().all(|n| n.op_type != "BatchNormalization"),
        "BN folded into the Convs"
    );
    assert!(g.value_info.is_empty());
    let x = &inputs(1)[0];
    let got = common::reference_logits(&proto, x);
    let want = common::reference_logits(&standalone(&s, 1), x);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5);
    }
}

#[test]
fn plan_memory_is_measured() {
    let (_d, m) = load(&Synth::default());
    let m = m.unwrap();
    let small = m.build_plan(0).unwrap();
    let big = m.build_plan(2).unwrap();
    for p in [&small, &big] {
        let st = p.stats();
        let bytes = st
            .measured_plan_bytes
            .expect("counting allocator installed");
        assert!(bytes > 0 && st.peak_build_bytes.unwrap() >= bytes);
        assert!(st.weight_bytes > 0 && st.build_time >= st.slice_time);
        assert_eq!(p.plan_bytes(), bytes);
    }
    assert!(big.stats().weight_bytes > small.stats().weight_bytes);
}

fn expect_err(s: &Synth, edit: impl FnOnce(&Path), check: impl FnOnce(&ModelError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), s);
    edit(dir.path());
    match MultiCapacityModel::load(dir.path()) {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => assert!(check(&e), "unexpected error: {e}"),
    }
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("manifest.yaml");
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "manifest lacks {from:?}");
    std::fs::write(p, t.replacen(from, to, 1)).unwrap();
}

#[test]
fn bad_models_get_typed_errors_naming_the_problem() {
    let ok = Synth::default();
    // Changed file: hash mismatch naming the file.
    expect_err(
        &ok,
        |d| {
            let p = d.join("model.onnx");
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len() - 1;
            b[n] ^= 1;
            std::fs::write(p, b).unwrap();
        },
        |e| matches!(e, ModelError::Hash { path, .. } if path.ends_with("model.onnx")),
    );
    // Missing BN statistic.
    let s = Synth {
        drop_bn_key: Some("d0/bn2.v".into()),
        ..Synth::default()
    };
    expect_err(
        &s,
        |_| {},
        |e| matches!(e, ModelError::Safetensors { .. }) && e.to_string().contains("d0/bn2.v"),
    );
    // Residual Add with untied widths.
    let s = Synth {
        ladder: vec![(4, 6), (8, 8)],
        tie: false,
        ..Synth::default()
    };
    expect_err(
        &s,
        |_| {},
        |e| matches!(e, ModelError::Invalid { .. }) && e.to_string().contains("tie group"),
    );
    // Tie declared but widths differ: caught in the manifest already.
    let s = Synth {
        ladder: vec![(4, 6), (8, 8)],
        tie: true,
        ..Synth::default()
    };
    expect_err(
        &s,
        |_| {},
        |e| matches!(e, ModelError::Invalid { path, .. } if path.ends_with("manifest.yaml")),
    );
    // Unsupported op on a sliced tensor.
    let s = Synth {
        extra_op: Some("Transpose"),
        ..Synth::default()
    };
    expect_err(
        &s,
        |_| {},
        |e| e.to_string().contains("Transpose") && e.to_string().contains("not supported"),
    );
    // Ladder not nested.
    let s = Synth {
        ladder: vec![(6, 6), (4, 4), (8, 8)],
        ..Synth::default()
    };
    expect_err(&s, |_| {}, |e| e.to_string().contains("ladder order"));
    // Layer shape disagrees with the graph.
    let untied = Synth {
        tie: false,
        ..Synth::default()
    };
    expect_err(
        &untied,
        |d| {
            edit_manifest(
                d,
                "{name: w1, out_channels: 8",
                "{name: w1, out_channels: 7",
            );
            edit_manifest(d, "channels: {w1: 8, w2: 8}", "channels: {w1: 7, w2: 8}");
        },
        |e| {
            matches!(e, ModelError::Invalid { path, .. } if path.ends_with("model.onnx"))
                && e.to_string().contains("has dims [8, 1, 3, 3]")
        },
    );
    // A layer that is not a Conv weight.
    expect_err(
        &ok,
        |d| {
            edit_manifest(d, "name: w1,", "name: fc.w,");
            let p = d.join("manifest.yaml");
            let t = std::fs::read_to_string(&p).unwrap().replace("w1:", "fc.w:");
            std::fs::write(p, t).unwrap();
        },
        |e| e.to_string().contains("not the weight of a Conv"),
    );
    // Not YAML of the schema.
    expect_err(
        &ok,
        |d| std::fs::write(d.join("manifest.yaml"), "format_version: [").unwrap(),
        |e| matches!(e, ModelError::Manifest { .. }),
    );
    expect_err(
        &ok,
        |d| edit_manifest(d, "task: synth\n", ""),
        |e| matches!(e, ModelError::Manifest { .. }),
    );
    // Missing file.
    expect_err(
        &ok,
        |d| std::fs::remove_file(d.join("vanilla.onnx")).unwrap(),
        |e| matches!(e, ModelError::Io { path, .. } if path.ends_with("vanilla.onnx")),
    );
    // Channels beyond the layer.
    expect_err(
        &ok,
        |d| edit_manifest(d, "channels: {w1: 4, w2: 4}", "channels: {w1: 9, w2: 9}"),
        |e| e.to_string().contains("must be 1..=8"),
    );
}

#[test]
fn run_rejects_wrong_input_length() {
    let (_d, m) = load(&Synth::default());
    let plan = m.unwrap().build_plan(0).unwrap();
    let err = plan.spawn().unwrap().run(&[0.0; 10]).unwrap_err();
    assert!(matches!(
        err,
        ModelError::InputLength {
            expected: 64,
            got: 10
        }
    ));
}

/// Frames on two threads keep running while a third thread switches as fast as it can; every
/// frame's logits are exactly those of the descendant it ran.
fn hammer(policy: SwitchPolicy, switches: usize) {
    let (_d, m) = load(&Synth::default());
    let m = Arc::new(m.unwrap());
    let x = inputs(1).remove(0);
    let expected: Vec<Vec<f32>> = (0..3)
        .map(|k| m.build_plan(k).unwrap().spawn().unwrap().run(&x).unwrap())
        .collect();
    // The slot holds the only reference, so a one-copy slot drops the master weights.
    let slot = Arc::new(ModelSlot::new(m, policy, 0).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (slot, stop, frames, x, expected) = (
                slot.clone(),
                stop.clone(),
                frames.clone(),
                x.clone(),
                expected.clone(),
            );
            std::thread::spawn(move || {
                let mut states: HashMap<usize, PlanState> = HashMap::new();
                let mut seen = [false; 3];
                while !stop.load(Ordering::Relaxed) {
                    let (k, plan): (usize, DescendantPlan) = slot.current();
                    assert_eq!(plan.index(), Some(k));
                    let st = states.entry(k).or_insert_with(|| plan.spawn().unwrap());
                    if !st.plan().same_plan(&plan) {
                        *st = plan.spawn().unwrap();
                    }
                    let got = st.run(&x).unwrap();
                    for (g, w) in got.iter().zip(&expected[k]) {
                        assert!((g - w).abs() < 1e-6, "frame on d{k} corrupted");
                    }
                    seen[k] = true;
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    for i in 0..switches {
        slot.request((i * 7 + 1) % 3).unwrap();
        if policy != SwitchPolicy::Resident && i % 4 == 0 {
            assert!(slot.wait_idle(Duration::from_secs(10)));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(slot.wait_idle(Duration::from_secs(10)));
    stop.store(true, Ordering::Relaxed);
    let mut seen = [false; 3];
    for w in workers {
        let s = w.join().expect("frame thread panicked");
        for k in 0..3 {
            seen[k] |= s[k];
        }
    }
    assert!(frames.load(Ordering::Relaxed) > 0);
    assert!(
        seen.iter().filter(|s| **s).count() >= 2,
        "frames saw switches: {seen:?}"
    );
    assert!(slot.switch_count() > 0);
    assert_eq!(slot.current().0, slot.target());
    assert_eq!(slot.last_error(), None);
}

#[test]
fn resident_switches_never_disturb_frames() {
    hammer(SwitchPolicy::Resident, 300);
}

#[test]
fn on_demand_switches_never_disturb_frames() {
    hammer(SwitchPolicy::OnDemand, 60);
}

#[test]
fn one_copy_switches_never_disturb_frames() {
    hammer(SwitchPolicy::OneCopy, 40);
}

/// One copy: the slot keeps only the active plan; a switch re-reads the master file and
/// checks its hash, and a changed file fails the build without disturbing the running plan.
#[test]
fn one_copy_keeps_only_the_active_plan_and_rereads_the_checked_master() {
    let (dir, m) = load(&Synth::default());
    let m = m.unwrap();
    let full = Arc::new(MultiCapacityModel::load(dir.path()).unwrap());
    let x = inputs(1).remove(0);
    let want2 = full
        .build_plan(2)
        .unwrap()
        .spawn()
        .unwrap()
        .run(&x)
        .unwrap();
    let onnx = dir.path().join(&m.manifest().onnx.file);
    assert!(m.holds_master() && m.master_bytes() > 0);

    let slot = ModelSlot::new(Arc::new(m), SwitchPolicy::OneCopy, 0).unwrap();
    assert_eq!(slot.policy(), SwitchPolicy::OneCopy);
    assert_eq!(slot.memory_bytes(), slot.current().1.plan_bytes());
    slot.request(2).unwrap();
    assert!(slot.wait_idle(Duration::from_secs(10)));
    let (k, plan) = slot.current();
    assert_eq!(k, 2);
    assert_eq!(slot.memory_bytes(), plan.plan_bytes());
    let on_demand = ModelSlot::new(full.clone(), SwitchPolicy::OnDemand, 2).unwrap();
    assert!(slot.memory_bytes() + full.master_bytes() <= on_demand.memory_bytes());
    let got = plan.spawn().unwrap().run(&x).unwrap();
    for (g, w) in got.iter().zip(&want2) {
        assert!((g - w).abs() < 1e-6, "one-copy d2 differs: {g} vs {w}");
    }
    let rec = slot.last_switch().unwrap();
    assert_eq!((rec.from, rec.to), (0, 2));
    assert!(rec.build.is_some());

    // The master file changes under the running node: the build fails on its hash, the slot
    // stays on d2 and keeps serving.
    let mut bytes = std::fs::read(&onnx).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&onnx, &bytes).unwrap();
    slot.request(1).unwrap();
    assert!(slot.wait_idle(Duration::from_secs(10)));
    assert_eq!(slot.current().0, 2);
    assert_eq!(slot.target(), 2);
    let err = slot
        .last_error()
        .expect("the changed file must fail the build");
    assert!(err.contains("sha256 is"), "{err}");
    assert!(slot.current().1.spawn().unwrap().run(&x).is_ok());

    // A model shared with another owner keeps its weights, and the slot counts them.
    let shared = ModelSlot::new(full.clone(), SwitchPolicy::OneCopy, 0).unwrap();
    assert!(full.holds_master());
    assert!(shared.memory_bytes() >= full.master_bytes());
}

#[test]
fn policies_report_memory_and_switch_time() {
    let (_d, m) = load(&Synth::default());
    let m = Arc::new(m.unwrap());
    let resident = ModelSlot::new(m.clone(), SwitchPolicy::Resident, 0).unwrap();
    let on_demand = ModelSlot::new(m.clone(), SwitchPolicy::OnDemand, 0).unwrap();
    let plans: Vec<_> = (0..3)
        .map(|k| m.build_plan(k).unwrap().plan_bytes())
        .collect();
    let sum: u64 = plans.iter().sum();
    let r = resident.memory_bytes();
    assert!(
        r > plans[2] && r <= sum * 2,
        "resident {r} vs plans {plans:?}"
    );
    assert!(on_demand.memory_bytes() >= m.master_bytes());

    // An in-flight frame keeps its plan across a switch.
    let (k0, held) = on_demand.current();
    on_demand.request(2).unwrap();
    assert!(on_demand.wait_idle(Duration::from_secs(10)));
    assert_eq!(on_demand.current().0, 2);
    assert_eq!(held.index(), Some(k0));
    assert!(held.spawn().unwrap().run(&inputs(1)[0]).is_ok());
    let rec = on_demand.last_switch().unwrap();
    assert_eq!((rec.from, rec.to), (0, 2));
    assert!(rec.build.is_some() && rec.latency >= rec.build.unwrap());

    resident.request(2).unwrap();
    assert_eq!(resident.current().0, 2);
    let rec = resident.last_switch().unwrap();
    assert!(rec.build.is_none() && rec.latency < Duration::from_secs(1));
    assert!(matches!(
        resident.request(3),
        Err(ModelError::NoSuchDescendant { index: 3, count: 3 })
    ));
    assert!(ModelSlot::new(m, SwitchPolicy::OnDemand, 5).is_err());
}

#[test]
fn shared_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<MultiCapacityModel>();
    send_sync::<DescendantPlan>();
    send_sync::<ModelSlot>();
    send_sync::<ModelError>();
    send::<PlanState>();
}
