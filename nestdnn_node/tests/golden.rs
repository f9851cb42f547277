//! Golden differential test: every descendant (and the vanilla model) of every model under
//! `models/` (or `$NESTDNN_MODELS_DIR`), sliced and BN-folded at run time and run by tract,
//! reproduces the logits of the standalone PyTorch network in `fixtures.safetensors`.

use std::path::PathBuf;

use nestdnn::model::{find_models, models_dir, DescendantPlan, Fixtures, MultiCapacityModel};
use tract_onnx::prelude::*;

const TOL: f32 = 1e-4;

fn models() -> Vec<PathBuf> {
    let root = models_dir();
    let found = find_models(&root).unwrap_or_else(|e| panic!("cannot list models: {e}"));
    assert!(
        !found.is_empty(),
        "no models (no */manifest.yaml) under {}; commit models or set NESTDNN_MODELS_DIR",
        root.display()
    );
    found
}

fn max_diff(plan: &DescendantPlan, fx: &Fixtures, name: &str) -> f32 {
    let mut state = plan.spawn().unwrap();
    let mut worst = 0f32;
    for i in 0..fx.len() {
        let want = fx
            .logits(name, i)
            .unwrap_or_else(|| panic!("fixtures lack {name}/logits"));
        let got = state.run(fx.input(i).unwrap()).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: logits length");
        for (g, w) in got.iter().zip(want) {
            assert!(g.is_finite(), "{name}: non-finite logit");
            worst = worst.max((g - w).abs());
        }
    }
    worst
}

#[test]
fn every_descendant_matches_pytorch() {
    for dir in models() {
        let model =
            MultiCapacityModel::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let fx = model.load_fixtures().unwrap();
        assert_eq!(
            fx.input_shape()[1..],
            model.input_shape()[1..],
            "{}: fixture input shape",
            dir.display()
        );
        for i in 0..model.num_descendants() {
            let plan = model.build_plan(i).unwrap();
            let d = max_diff(&plan, &fx, plan.name());
            eprintln!(
                "{} {}: max |diff| {d:.2e} over {} images",
                model.manifest().task,
                plan.name(),
                fx.len()
            );
            assert!(
                d <= TOL,
                "{} {}: max |diff| {d} > {TOL}",
                dir.display(),
                plan.name()
            );
        }
        let plan = model.build_vanilla_plan().unwrap();
        let d = max_diff(&plan, &fx, "vanilla");
        eprintln!("{} vanilla: max |diff| {d:.2e}", model.manifest().task);
        assert!(
            d <= TOL,
            "{} vanilla: max |diff| {d} > {TOL}",
            dir.display()
        );
    }
}

/// The largest descendant, sliced and folded in Rust with its own BN statistics, agrees with
/// tract running `model.onnx` untouched (BatchNorm left to tract).
#[test]
fn largest_descendant_matches_unsliced_file() {
    for dir in models() {
        let model = MultiCapacityModel::load(&dir).unwrap();
        let fx = model.load_fixtures().unwrap();
        let top = model.num_descendants() - 1;
        let plan = model.build_plan(top).unwrap();
        let mut state = plan.spawn().unwrap();
        let reference = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(dir.join(&model.manifest().onnx.file))
            .unwrap()
            .with_input_fact(0, f32::fact(model.input_shape()).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        for i in 0..fx.len() {
            let x = fx.input(i).unwrap();
            let got = state.run(x).unwrap();
            let t = Tensor::from_shape(&model.input_shape(), x).unwrap();
            let out = reference.run(tvec!(t.into_tvalue())).unwrap();
            let want = out[0].to_plain_array_view::<f32>().unwrap();
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= TOL, "{}: {g} vs {w}", dir.display());
            }
        }
    }
}

/// The manifest's parameter counts are what the graphs hold.
#[test]
fn manifest_params_match_graph() {
    for dir in models() {
        let model = MultiCapacityModel::load(&dir).unwrap();
        for (i, d) in model.manifest().descendants.iter().enumerate() {
            assert_eq!(
                model.graph_params(i),
                Some(d.params),
                "{} {}",
                dir.display(),
                d.name
            );
        }
        assert_eq!(
            model.vanilla_graph_params(),
            model.manifest().vanilla.params,
            "{} vanilla",
            dir.display()
        );
    }
}
