//! A small synthetic multi-capacity model written in the contract format, so model tests do
//! not depend on the offline pipeline: Conv-BN-Relu, Conv-BN, residual Add, Relu,
//! GlobalAveragePool, Flatten, Gemm; input 1x8x8, 4 classes.
#![allow(dead_code)]

pub mod families;

use std::path::Path;

use prost::Message;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use tract_onnx::pb::{self, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};

/// Knobs for breaking the synthetic model in one place.
#[derive(Debug, Clone)]
pub struct Synth {
    /// Channels of (conv1, conv2) per descendant, smallest first.
    pub ladder: Vec<(usize, usize)>,
    /// Tie conv1 and conv2 in the manifest.
    pub tie: bool,
    /// Insert this op (one input, one output) after the first Relu.
    pub extra_op: Option<&'static str>,
    /// Leave out this BN-stat key from bn_stats.safetensors.
    pub drop_bn_key: Option<String>,
    /// Seed for the weights.
    pub seed: u64,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            ladder: vec![(4, 4), (6, 6), (8, 8)],
            tie: true,
            extra_op: None,
            drop_bn_key: None,
            seed: 1,
        }
    }
}

pub struct Lcg(u64);
impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (self.next_f32() + 1.0) * 0.5 * (hi - lo))
            .collect()
    }
}

fn init(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: 2,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Naive prefix slice of a row-major tensor.
fn slice(data: &[f32], dims: &[usize], keep: &[usize]) -> Vec<f32> {
    let mut out = Vec::new();
    let n: usize = dims.iter().product();
    for (flat, v) in data.iter().enumerate().take(n) {
        let mut rem = flat;
        let mut ok = true;
        for ax in (0..dims.len()).rev() {
            let i = rem % dims[ax];
            rem /= dims[ax];
            ok &= i < keep[ax];
        }
        if ok {
            out.push(*v);
        }
    }
    out
}

/// A graph with random weights (fixed by `seed`), cut naively to widths `(c1, c2)` of the
/// full widths `full`, with BN statistics `bn` (sized for `(c1, c2)`).
pub fn onnx_model(
    seed: u64,
    full: (usize, usize),
    (c1, c2): (usize, usize),
    bn: &[(Vec<f32>, Vec<f32>)],
    extra_op: Option<&str>,
) -> pb::ModelProto {
    let mut r = Lcg::new(seed);
    let (f1, f2) = full;
    let w1 = r.vec(f1 * 9, -0.5, 0.5);
    let g1 = r.vec(f1, 0.5, 1.5);
    let b1 = r.vec(f1, -0.2, 0.2);
    let w2 = r.vec(f2 * f1 * 9, -0.3, 0.3);
    let g2 = r.vec(f2, 0.5, 1.5);
    let b2 = r.vec(f2, -0.2, 0.2);
    let fw = r.vec(4 * f2, -1.0, 1.0);
    let fb = r.vec(4, -0.1, 0.1);
    let mut inits = vec![
        init(
            "w1",
            &[c1, 1, 3, 3],
            &slice(&w1, &[f1, 1, 3, 3], &[c1, 1, 3, 3]),
        ),
        init("bn1.g", &[c1], &g1[..c1]),
        init("bn1.b", &[c1], &b1[..c1]),
        init("bn1.m", &[c1], &bn[0].0),
        init("bn1.v", &[c1], &bn[0].1),
        init(
            "w2",
            &[c2, c1, 3, 3],
            &slice(&w2, &[f2, f1, 3, 3], &[c2, c1, 3, 3]),
        ),
        init("bn2.g", &[c2], &g2[..c2]),
        init("bn2.b", &[c2], &b2[..c2]),
        init("bn2.m", &[c2], &bn[1].0),
        init("bn2.v", &[c2], &bn[1].1),
        init("fc.w", &[4, c2], &slice(&fw, &[4, f2], &[4, c2])),
        init("fc.b", &[4], &fb),
    ];
    let pads = || vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])];
    let mut nodes = vec![
        node("Conv", &["input", "w1"], "c1", pads()),
        node(
            "BatchNormalization",
            &["c1", "bn1.g", "bn1.b", "bn1.m", "bn1.v"],
            "b1",
            vec![],
        ),
        node("Relu", &["b1"], "r1", vec![]),
    ];
    let mut r1 = "r1";
    if let Some(op) = extra_op {
        nodes.push(node(op, &["r1"], "x1", vec![]));
        r1 = "x1";
    }
    nodes.extend([
        node("Conv", &[r1, "w2"], "c2", pads()),
        node(
            "BatchNormalization",
            &["c2", "bn2.g", "bn2.b", "bn2.m", "bn2.v"],
            "b2",
            vec![],
        ),
        node("Add", &["b2", r1], "a2", vec![]),
        node("Relu", &["a2"], "r2", vec![]),
        node("GlobalAveragePool", &["r2"], "p", vec![]),
        node("Flatten", &["p"], "f", vec![int("axis", 1)]),
        node(
            "Gemm",
            &["f", "fc.w", "fc.b"],
            "logits",
            vec![int("transB", 1)],
        ),
    ]);
    inits.sort_by(|a, b| a.name.cmp(&b.name));
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "nestdnn-tests".into(),
        graph: Some(pb::GraphProto {
            name: "synth".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("input", &[None, Some(1), Some(8), Some(8)])],
            output: vec![value_info("logits", &[None, Some(4)])],
            // Stale annotation on purpose: the loader must clear value_info.
            value_info: vec![value_info("c1", &[None, Some(c1 as i64), Some(8), Some(8)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Logits of a synthetic model (input [1,1,8,8]) run by tract straight from `proto`: the
/// reference that runtime-sliced descendants are compared with.
pub fn reference_logits(proto: &pb::ModelProto, x: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 1, 8, 8]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let t = Tensor::from_shape(&[1, 1, 8, 8], x).unwrap();
    let out = plan.run(tvec!(t.into_tvalue())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn st_bytes(tensors: &[(String, Vec<usize>, Vec<u8>, Dtype)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d, t)| (n.clone(), TensorView::new(*t, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Per-descendant BN statistics `[(mean, var); 2]` of the synthetic model.
pub fn bn_stats(s: &Synth) -> Vec<Vec<(Vec<f32>, Vec<f32>)>> {
    let mut r = Lcg::new(s.seed ^ 0xbeef);
    s.ladder
        .iter()
        .map(|&(c1, c2)| {
            [c1, c2]
                .iter()
                .map(|&c| (r.vec(c, -0.3, 0.3), r.vec(c, 0.5, 1.5)))
                .collect()
        })
        .collect()
}

/// Descendant `k` as an independent standalone ONNX model (weights cut naively, its own BN
/// statistics left in BatchNormalization nodes): the reference for the runtime's slicer.
pub fn standalone(s: &Synth, k: usize) -> pb::ModelProto {
    let full = *s.ladder.last().unwrap();
    onnx_model(s.seed, full, s.ladder[k], &bn_stats(s)[k], s.extra_op)
}

/// Writes the model folder; returns the manifest text (also written).
pub fn write_model(dir: &Path, s: &Synth) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let all = bn_stats(s);
    let mut stats: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    for (k, per) in all.iter().enumerate() {
        for (bn, (m, v)) in ["bn1", "bn2"].iter().zip(per) {
            for (suffix, data) in [("m", m), ("v", v)] {
                let key = format!("d{k}/{bn}.{suffix}");
                if s.drop_bn_key.as_deref() != Some(key.as_str()) {
                    stats.push((
                        key,
                        vec![data.len()],
                        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        Dtype::F32,
                    ));
                }
            }
        }
    }
    let full = *s.ladder.last().unwrap();
    let top = all.last().unwrap();
    let model = onnx_model(s.seed, full, full, top, s.extra_op).encode_to_vec();
    let vanilla = onnx_model(s.seed + 100, full, full, top, s.extra_op).encode_to_vec();
    let bn = st_bytes(&stats);
    let input = Lcg::new(s.seed ^ 0xf00d).vec(2 * 64, -1.0, 1.0);
    let fixtures = st_bytes(&[(
        "input".into(),
        vec![2, 1, 8, 8],
        input.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F32,
    )]);
    for (name, bytes) in [
        ("model.onnx", &model),
        ("vanilla.onnx", &vanilla),
        ("bn_stats.safetensors", &bn),
        ("fixtures.safetensors", &fixtures),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let (f1, f2) = *s.ladder.last().unwrap();
    let tie = if s.tie { "s1" } else { "null" };
    let mut m = format!(
        "format_version: 1\ntask: synth\ndataset: fashion-mnist\narchitecture: resnet\n\
         labels: [a, b, c, d]\n\
         input: {{name: input, layout: NCHW, channels: 1, color: gray, height: 8, width: 8, \
         scale: 0.00392156862745098, mean: [0.5], std: [0.25]}}\n\
         output: {{name: logits, classes: 4}}\n\
         onnx: {{file: model.onnx, sha256: {}, opset: 17}}\n\
         bn_stats: {{file: bn_stats.safetensors, sha256: {}}}\n\
         fixtures: {{file: fixtures.safetensors, sha256: {}}}\n\
         layers:\n  - {{name: w1, out_channels: {f1}, tie: {tie}}}\n  - {{name: w2, out_channels: {f2}, tie: {tie}}}\n\
         vanilla: {{file: vanilla.onnx, sha256: {}, accuracy: 0.9, macs: 1000, params: 1000, cross_domain_accuracy: null}}\n\
         descendants:\n",
        sha(&model),
        sha(&bn),
        sha(&fixtures),
        sha(&vanilla)
    );
    for (k, &(c1, c2)) in s.ladder.iter().enumerate() {
        let params = c1 * 9 + 2 * c1 + c2 * c1 * 9 + 2 * c2 + 4 * c2 + 4;
        m.push_str(&format!(
            "  - {{name: d{k}, channels: {{w1: {c1}, w2: {c2}}}, macs: {}, params: {params}, \
             accuracy: {}, cross_domain_accuracy: null, bn_stats_prefix: \"d{k}/\"}}\n",
            1000 * (k + 1),
            0.5 + 0.1 * k as f64
        ));
    }
    std::fs::write(dir.join("manifest.yaml"), &m).unwrap();
    m
}
