//! Slicing the building blocks of torchvision's families beyond the plain residual net:
//! MobileNetV2's depthwise convs (sliced with the layer feeding them) and ReLU6 (`Clip`), and
//! VGG's classifier on a flattened, unpooled feature map. Every descendant sliced by the
//! runtime and run by tract equals an independently sliced standalone network.

mod common;

use common::families::Family;
use common::Lcg;
use nestdnn::model::{ModelError, MultiCapacityModel};

fn load(f: &Family) -> (tempfile::TempDir, Result<MultiCapacityModel, ModelError>) {
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    let m = MultiCapacityModel::load(dir.path());
    (dir, m)
}

fn inputs(n: usize) -> Vec<Vec<f32>> {
    let mut r = Lcg::new(11);
    (0..n).map(|_| r.vec(64, -2.0, 2.0)).collect()
}

/// Every descendant's plan against the hand-sliced reference, parameter counts against the
/// manifest's (computed by hand), and the folded export free of BatchNormalization.
fn check_all_descendants(f: &Family) {
    let (_d, m) = load(f);
    let m = m.unwrap_or_else(|e| panic!("{:?}: {e}", f.kind));
    assert_eq!(m.num_descendants(), f.ladder.len());
    let mut outputs: Vec<Vec<f32>> = Vec::new();
    for k in 0..m.num_descendants() {
        let mut st = m.build_plan(k).unwrap().spawn().unwrap();
        let reference = f.standalone(k);
        for (i, x) in inputs(3).iter().enumerate() {
            let got = st.run(x).unwrap();
            let want = common::reference_logits(&reference, x);
            assert_eq!(got.len(), 4);
            let hi = want.iter().copied().fold(f32::MIN, f32::max);
            let lo = want.iter().copied().fold(f32::MAX, f32::min);
            let tol = 1e-5 * (hi - lo).max(1.0);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= tol,
                    "{:?} d{k}: {got:?} vs {want:?}",
                    f.kind
                );
            }
            if i == 0 {
                outputs.push(got);
            }
        }
        assert_eq!(
            m.graph_params(k),
            Some(m.manifest().descendants[k].params),
            "{:?} d{k}: parameter count",
            f.kind
        );
        let proto = m.descendant_proto(k).unwrap();
        let g = proto.graph.as_ref().unwrap();
        assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
    }
    // The descendants are different networks.
    assert!(outputs
        .windows(2)
        .all(|w| w[0].iter().zip(&w[1]).any(|(a, b)| (a - b).abs() > 1e-4)));
    assert_eq!(m.vanilla_graph_params(), m.manifest().vanilla.params);
    let mut v = m.build_vanilla_plan().unwrap().spawn().unwrap();
    assert!(v.run(&inputs(1)[0]).unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn depthwise_block_descendants_match_independently_sliced_networks() {
    check_all_descendants(&Family::mobile());
}

#[test]
fn depthwise_conv_listed_in_the_manifest_with_its_input_width() {
    // Listed in `layers`, tied to the conv feeding it (the manifest then enforces the width).
    check_all_descendants(&Family {
        list_dw: true,
        tie_dw: true,
        ..Family::mobile()
    });
    // Listed untied with the right widths: accepted as well.
    check_all_descendants(&Family {
        list_dw: true,
        ..Family::mobile()
    });
}

#[test]
fn depthwise_node_gets_the_descendant_width_as_group() {
    let f = Family::mobile();
    let (_d, m) = load(&f);
    let m = m.unwrap();
    for (k, w) in f.ladder.iter().enumerate() {
        let proto = m.descendant_proto(k).unwrap();
        let g = proto.graph.as_ref().unwrap();
        let dw = g
            .node
            .iter()
            .find(|n| n.op_type == "Conv" && n.input[1] == "dw.w")
            .unwrap();
        let group = dw.attribute.iter().find(|a| a.name == "group").unwrap();
        assert_eq!(group.i, w[0] as i64);
        let weight = g.initializer.iter().find(|t| t.name == "dw.w").unwrap();
        assert_eq!(weight.dims, [w[0] as i64, 1, 3, 3]);
    }
}

#[test]
fn flatten_head_descendants_match_independently_sliced_networks() {
    check_all_descendants(&Family::flat());
    check_all_descendants(&Family {
        matmul: true,
        ..Family::flat()
    });
}

#[test]
fn flatten_head_keeps_a_prefix_of_columns() {
    let f = Family::flat();
    let (_d, m) = load(&f);
    let m = m.unwrap();
    for (k, w) in f.ladder.iter().enumerate() {
        let proto = m.descendant_proto(k).unwrap();
        let g = proto.graph.as_ref().unwrap();
        let dims = |name: &str| {
            g.initializer
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .dims
                .clone()
        };
        assert_eq!(dims("fc1.w"), [6, w[0] as i64 * 16]);
        assert_eq!(dims("fc2.w"), [4, 6], "hidden Gemm unchanged");
    }
}

fn expect_err(f: &Family, check: impl FnOnce(&ModelError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    f.write(dir.path());
    match MultiCapacityModel::load(dir.path()) {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => assert!(check(&e), "unexpected error: {e}"),
    }
}

fn in_onnx(e: &ModelError) -> bool {
    matches!(e, ModelError::Invalid { path, .. } if path.ends_with("model.onnx"))
}

#[test]
fn broken_family_models_get_errors_naming_the_node() {
    // Depthwise conv listed with a width other than its input's.
    expect_err(
        &Family {
            list_dw: true,
            dw_widths: Some(vec![3, 4, 6]),
            ..Family::mobile()
        },
        |e| {
            let s = e.to_string();
            in_onnx(e)
                && s.contains("Conv \"Conv_c2\"")
                && s.contains("depthwise")
                && s.contains("has 3 channels")
                && s.contains("its input has 2")
        },
    );
    // Tied with the conv feeding it but different: caught by the manifest already.
    expect_err(
        &Family {
            list_dw: true,
            tie_dw: true,
            dw_widths: Some(vec![3, 4, 6]),
            ..Family::mobile()
        },
        |e| matches!(e, ModelError::Invalid { path, .. } if path.ends_with("manifest.yaml")),
    );
    // Grouped conv that is not depthwise.
    expect_err(
        &Family {
            group: Some(2),
            ..Family::mobile()
        },
        |e| {
            let s = e.to_string();
            in_onnx(e)
                && s.contains("Conv \"Conv_c2\"")
                && s.contains("grouped convolution (group != 1, not depthwise) is not supported")
        },
    );
    // Classifier features not a multiple of the flattened channels.
    expect_err(
        &Family {
            extra_features: 1,
            ..Family::flat()
        },
        |e| {
            let s = e.to_string();
            in_onnx(e)
                && s.contains("Gemm \"Gemm_h\"")
                && s.contains("81 input features")
                && s.contains("not a multiple of the 5 channels")
        },
    );
    // Classifier on an unpooled, unflattened sliced map.
    expect_err(
        &Family {
            flatten: false,
            ..Family::flat()
        },
        |e| {
            let s = e.to_string();
            in_onnx(e) && s.contains("Gemm \"Gemm_h\"") && s.contains("globally pooled")
        },
    );
}
