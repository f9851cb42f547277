//! Golden differential test: every descendant (and the vanilla and standalone status-quo
//! models) of every model under `models/` (or `$NESTDNN_MODELS_DIR`), sliced and BN-folded at
//! run time and run by tract, reproduces the logits of the standalone PyTorch network in
//! `fixtures.safetensors`.
//!
//! Tolerance: a network passes when max |diff| <= 1e-4 * max(1, max(ref) - min(ref)) over all
//! its fixture logits (1e-4 relative to the logit range; absolute for ranges below 1).

use std::path::PathBuf;

use nestdnn::model::{find_models, models_dir, DescendantPlan, Fixtures, MultiCapacityModel};
use tract_onnx::prelude::*;

/// Relative tolerance: allowed max |diff| per unit of the reference logits' range.
const REL_TOL: f32 = 1e-4;

/// Max |diff| against the reference and the reference logits' range.
#[derive(Debug, Clone, Copy)]
struct Diff {
    abs: f32,
    range: f32,
}

impl Diff {
    fn new() -> Self {
        Diff {
            abs: 0.0,
            range: 0.0,
        }
    }

    /// Allowed max |diff|: `REL_TOL * max(1, range)`.
    fn tol(self) -> f32 {
        REL_TOL * self.range.max(1.0)
    }

    fn ok(self) -> bool {
        self.abs <= self.tol()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max |diff| {:.2e}, logit range {:.3} (tolerance {:.2e})",
            self.abs,
            self.range,
            self.tol()
        )
    }
}

/// Accumulates `(got, want)` logit pairs: max |diff| and the range of `want`.
struct DiffAcc {
    worst: f32,
    lo: f32,
    hi: f32,
}

impl DiffAcc {
    fn new() -> Self {
        DiffAcc {
            worst: 0.0,
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
        }
    }

    fn add(&mut self, name: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{name}: logits length");
        for (g, w) in got.iter().zip(want) {
            assert!(g.is_finite(), "{name}: non-finite logit");
            self.worst = self.worst.max((g - w).abs());
            self.lo = self.lo.min(*w);
            self.hi = self.hi.max(*w);
        }
    }

    fn finish(self) -> Diff {
        if self.lo > self.hi {
            return Diff::new();
        }
        Diff {
            abs: self.worst,
            range: self.hi - self.lo,
        }
    }
}

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

fn max_diff(plan: &DescendantPlan, fx: &Fixtures, name: &str) -> Diff {
    let mut state = plan.spawn().unwrap();
    let mut acc = DiffAcc::new();
    for i in 0..fx.len() {
        let want = fx
            .logits(name, i)
            .unwrap_or_else(|| panic!("fixtures lack {name}/logits"));
        let got = state.run(fx.input(i).unwrap()).unwrap();
        acc.add(name, &got, want);
    }
    acc.finish()
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
                "{} {}: {d} over {} images",
                model.manifest().task,
                plan.name(),
                fx.len()
            );
            assert!(d.ok(), "{} {}: {d}", dir.display(), plan.name());
        }
        let plan = model.build_vanilla_plan().unwrap();
        let d = max_diff(&plan, &fx, "vanilla");
        eprintln!("{} vanilla: {d}", model.manifest().task);
        assert!(d.ok(), "{} vanilla: {d}", dir.display());
        // The standalone smaller models (status quo levels), where the folder has them.
        for k in 1..model.num_status_quo() {
            let plan = model.build_status_quo_plan(k).unwrap();
            let d = max_diff(&plan, &fx, &format!("status_quo{k}"));
            eprintln!("{} status_quo{k}: {d}", model.manifest().task);
            assert!(d.ok(), "{} status_quo{k}: {d}", dir.display());
        }
        assert!(model.build_status_quo_plan(model.num_status_quo()).is_err());
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
        let mut acc = DiffAcc::new();
        for i in 0..fx.len() {
            let x = fx.input(i).unwrap();
            let got = state.run(x).unwrap();
            let t = Tensor::from_shape(&model.input_shape(), x).unwrap();
            let out = reference.run(tvec!(t.into_tvalue())).unwrap();
            let want: Vec<f32> = out[0]
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            acc.add(plan.name(), &got, &want);
        }
        let d = acc.finish();
        eprintln!(
            "{} {} vs unsliced model.onnx: {d}",
            model.manifest().task,
            plan.name()
        );
        assert!(d.ok(), "{}: {d}", dir.display());
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
