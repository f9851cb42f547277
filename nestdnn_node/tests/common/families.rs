//! Synthetic models with the building blocks of the torchvision families the runtime slices
//! beyond the plain residual net of `common`: a MobileNetV2-style block (depthwise conv,
//! ReLU6 as `Clip`) and a VGG-style head (Flatten of an unpooled feature map into a Gemm,
//! hidden Gemm, Dropout). Input 1x8x8, 4 classes, written in the contract format.

use std::path::Path;

use prost::Message;
use safetensors::Dtype;
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

use super::{init, int, ints, node, sha, slice, st_bytes, value_info, Lcg};

/// Which synthetic network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// conv 3x3 (E) -> BN -> Relu -> depthwise conv 3x3 (group E, with bias) -> BN ->
    /// Clip(0, 6) -> conv 1x1 (P) -> BN -> GlobalAveragePool -> Flatten -> Gemm.
    /// Free widths per descendant: `[E, P]`.
    Mobile,
    /// conv 3x3 stride 2 (C) -> BN -> Relu -> AveragePool 1x1 -> Flatten ->
    /// Gemm (C*4*4 -> 6) -> Relu -> Dropout -> Gemm (6 -> 4). Free widths: `[C]`.
    Flat,
}

/// Hidden units of the `Flat` head's first Gemm.
const HIDDEN: usize = 6;
/// Spatial positions (4x4) flattened per channel in the `Flat` head.
const SPATIAL: usize = 16;

/// A synthetic model and the knobs that break it.
#[derive(Debug, Clone)]
pub struct Family {
    /// The network.
    pub kind: Kind,
    /// Widths of the freely sliced convs per descendant, smallest first (see [`Kind`]).
    pub ladder: Vec<Vec<usize>>,
    /// Mobile: list the depthwise conv `dw.w` in the manifest's `layers`/`channels`.
    pub list_dw: bool,
    /// Mobile: put `e.w` and `dw.w` (when listed) in tie group `dw`.
    pub tie_dw: bool,
    /// Mobile: widths written for `dw.w` per descendant instead of `e.w`'s.
    pub dw_widths: Option<Vec<usize>>,
    /// Mobile: replace the depthwise conv by a grouped conv with this group.
    pub group: Option<usize>,
    /// Flat: first classifier layer as MatMul + Add instead of Gemm(transB=1).
    pub matmul: bool,
    /// Flat: features added to the first classifier layer beyond C*16.
    pub extra_features: usize,
    /// Flat: leave out the Flatten (the Gemm then sees the unflattened map).
    pub flatten: bool,
    /// Seed for the weights.
    pub seed: u64,
}

impl Family {
    /// The MobileNetV2-style model, depthwise conv not listed in the manifest.
    pub fn mobile() -> Self {
        Family {
            kind: Kind::Mobile,
            ladder: vec![vec![2, 3], vec![4, 5], vec![6, 8]],
            list_dw: false,
            tie_dw: false,
            dw_widths: None,
            group: None,
            matmul: false,
            extra_features: 0,
            flatten: true,
            seed: 3,
        }
    }

    /// The VGG-style flatten head.
    pub fn flat() -> Self {
        Family {
            kind: Kind::Flat,
            ladder: vec![vec![2], vec![3], vec![5]],
            seed: 5,
            ..Family::mobile()
        }
    }

    fn full(&self) -> &[usize] {
        self.ladder.last().unwrap()
    }

    /// BatchNormalization names and widths for free widths `w`.
    fn bns(&self, w: &[usize]) -> Vec<(&'static str, usize)> {
        match self.kind {
            Kind::Mobile => vec![("bn1", w[0]), ("bn2", w[0]), ("bn3", w[1])],
            Kind::Flat => vec![("bn1", w[0])],
        }
    }

    /// Per-descendant BN statistics `(mean, var)`, one per BatchNormalization in graph order.
    pub fn bn_stats(&self) -> Vec<Vec<(Vec<f32>, Vec<f32>)>> {
        let mut r = Lcg::new(self.seed ^ 0xbeef);
        self.ladder
            .iter()
            .map(|w| {
                self.bns(w)
                    .iter()
                    .map(|&(_, c)| (r.vec(c, -0.3, 0.3), r.vec(c, 0.5, 1.5)))
                    .collect()
            })
            .collect()
    }

    /// Parameters (conv/gemm weights and biases, BN scale and bias) at free widths `w`,
    /// counted by hand.
    pub fn params(&self, w: &[usize]) -> usize {
        match self.kind {
            Kind::Mobile => {
                let (e, p) = (w[0], w[1]);
                // conv + bn1, depthwise (weight e*1*3*3, bias e) + bn2, 1x1 conv + bn3, fc
                (e * 9 + 2 * e) + (e * 9 + e + 2 * e) + (p * e + 2 * p) + (4 * p + 4)
            }
            Kind::Flat => {
                let c = w[0];
                // The graph count covers Conv/Gemm/MatMul weights and a Gemm's own bias input;
                // the bias of MatMul + Add sits in the Add and is not counted.
                let fc1_bias = if self.matmul { 0 } else { HIDDEN };
                (c * 9 + 2 * c) + (HIDDEN * c * SPATIAL + fc1_bias) + (4 * HIDDEN + 4)
            }
        }
    }

    /// The graph with random weights fixed by `seed`, cut naively to free widths `w` of the
    /// full widths (the ladder's last entry), with BN statistics `bn` sized for `w`.
    pub fn onnx(&self, seed: u64, w: &[usize], bn: &[(Vec<f32>, Vec<f32>)]) -> pb::ModelProto {
        let mut r = Lcg::new(seed);
        let full = self.full().to_vec();
        let mut inits = Vec::new();
        let mut nodes = Vec::new();
        let bn_node = |inits: &mut Vec<TensorProto>,
                       nodes: &mut Vec<NodeProto>,
                       r: &mut Lcg,
                       k: usize,
                       full_c: usize,
                       input: &str,
                       output: &str| {
            let (name, c) = self.bns(w)[k];
            let g = r.vec(full_c, 0.5, 1.5);
            let b = r.vec(full_c, -0.2, 0.2);
            inits.extend([
                init(&format!("{name}.g"), &[c], &g[..c]),
                init(&format!("{name}.b"), &[c], &b[..c]),
                init(&format!("{name}.m"), &[c], &bn[k].0),
                init(&format!("{name}.v"), &[c], &bn[k].1),
            ]);
            let ins: Vec<String> = ["", ".g", ".b", ".m", ".v"]
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        input.to_string()
                    } else {
                        format!("{name}{s}")
                    }
                })
                .collect();
            let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
            nodes.push(node("BatchNormalization", &ins, output, vec![]));
        };
        let conv_attrs = |k: i64, stride: i64, group: Option<usize>| {
            let p = k / 2;
            let mut a = vec![
                ints("kernel_shape", &[k, k]),
                ints("pads", &[p, p, p, p]),
                ints("strides", &[stride, stride]),
            ];
            if let Some(g) = group {
                a.push(int("group", g as i64));
            }
            a
        };
        let classes = 4;
        match self.kind {
            Kind::Mobile => {
                let (fe, fp) = (full[0], full[1]);
                let (e, p) = (w[0], w[1]);
                let we = r.vec(fe * 9, -0.5, 0.5);
                inits.push(init(
                    "e.w",
                    &[e, 1, 3, 3],
                    &slice(&we, &[fe, 1, 3, 3], &[e, 1, 3, 3]),
                ));
                nodes.push(node(
                    "Conv",
                    &["input", "e.w"],
                    "c1",
                    conv_attrs(3, 1, None),
                ));
                bn_node(&mut inits, &mut nodes, &mut r, 0, fe, "c1", "b1");
                nodes.push(node("Relu", &["b1"], "r1", vec![]));
                // Depthwise (or, to break it, grouped) conv with a bias.
                let (per_group, group) = match self.group {
                    Some(g) => (fe / g, g),
                    None => (1, e),
                };
                let wd = r.vec(fe * per_group * 9, -1.5, 1.5);
                let bd = r.vec(fe, -0.3, 0.3);
                let (rows, cols) = if self.group.is_some() {
                    (fe, per_group)
                } else {
                    (e, 1)
                };
                inits.push(init(
                    "dw.w",
                    &[rows, cols, 3, 3],
                    &slice(&wd, &[fe, per_group, 3, 3], &[rows, cols, 3, 3]),
                ));
                inits.push(init("dw.b", &[rows], &bd[..rows]));
                nodes.push(node(
                    "Conv",
                    &["r1", "dw.w", "dw.b"],
                    "c2",
                    conv_attrs(3, 1, Some(group)),
                ));
                bn_node(&mut inits, &mut nodes, &mut r, 1, fe, "c2", "b2");
                // ReLU6: min from a Constant node, max from an initializer.
                nodes.push(NodeProto {
                    op_type: "Constant".into(),
                    name: "clip_min".into(),
                    output: vec!["clip.min".into()],
                    attribute: vec![AttributeProto {
                        name: "value".into(),
                        r#type: 4,
                        t: Some(init("", &[], &[0.0])),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                inits.push(init("clip.max", &[], &[6.0]));
                nodes.push(node("Clip", &["b2", "clip.min", "clip.max"], "r2", vec![]));
                let wp = r.vec(fp * fe, -0.5, 0.5);
                inits.push(init(
                    "p.w",
                    &[p, e, 1, 1],
                    &slice(&wp, &[fp, fe, 1, 1], &[p, e, 1, 1]),
                ));
                nodes.push(node("Conv", &["r2", "p.w"], "c3", conv_attrs(1, 1, None)));
                bn_node(&mut inits, &mut nodes, &mut r, 2, fp, "c3", "b3");
                nodes.push(node("GlobalAveragePool", &["b3"], "gp", vec![]));
                nodes.push(node("Flatten", &["gp"], "f", vec![int("axis", 1)]));
                let fw = r.vec(classes * fp, -1.0, 1.0);
                let fb = r.vec(classes, -0.1, 0.1);
                inits.push(init(
                    "fc.w",
                    &[classes, p],
                    &slice(&fw, &[classes, fp], &[classes, p]),
                ));
                inits.push(init("fc.b", &[classes], &fb));
                nodes.push(node(
                    "Gemm",
                    &["f", "fc.w", "fc.b"],
                    "logits",
                    vec![int("transB", 1)],
                ));
            }
            Kind::Flat => {
                let (fc, c) = (full[0], w[0]);
                let wc = r.vec(fc * 9, -0.5, 0.5);
                inits.push(init(
                    "c.w",
                    &[c, 1, 3, 3],
                    &slice(&wc, &[fc, 1, 3, 3], &[c, 1, 3, 3]),
                ));
                nodes.push(node(
                    "Conv",
                    &["input", "c.w"],
                    "c1",
                    conv_attrs(3, 2, None),
                ));
                bn_node(&mut inits, &mut nodes, &mut r, 0, fc, "c1", "b1");
                nodes.push(node("Relu", &["b1"], "r1", vec![]));
                nodes.push(node(
                    "AveragePool",
                    &["r1"],
                    "ap",
                    vec![ints("kernel_shape", &[1, 1]), ints("strides", &[1, 1])],
                ));
                let x = if self.flatten {
                    nodes.push(node("Flatten", &["ap"], "f", vec![int("axis", 1)]));
                    "f"
                } else {
                    "ap"
                };
                // Channel-major features: channel i owns features i*16 .. i*16+16.
                let (ff, f) = (
                    fc * SPATIAL + self.extra_features,
                    c * SPATIAL + self.extra_features,
                );
                let w1 = r.vec(HIDDEN * ff, -0.3, 0.3);
                let b1 = r.vec(HIDDEN, -0.1, 0.1);
                let cut = slice(&w1, &[HIDDEN, ff], &[HIDDEN, f]);
                inits.push(init("fc1.b", &[HIDDEN], &b1));
                if self.matmul {
                    // Same weights stored transposed: [features, hidden].
                    let t: Vec<f32> = (0..f)
                        .flat_map(|i| (0..HIDDEN).map(move |h| (h, i)))
                        .map(|(h, i)| cut[h * f + i])
                        .collect();
                    inits.push(init("fc1.w", &[f, HIDDEN], &t));
                    nodes.push(node("MatMul", &[x, "fc1.w"], "h0", vec![]));
                    nodes.push(node("Add", &["h0", "fc1.b"], "h", vec![]));
                } else {
                    inits.push(init("fc1.w", &[HIDDEN, f], &cut));
                    nodes.push(node(
                        "Gemm",
                        &[x, "fc1.w", "fc1.b"],
                        "h",
                        vec![int("transB", 1)],
                    ));
                }
                nodes.push(node("Relu", &["h"], "hr", vec![]));
                nodes.push(node("Dropout", &["hr"], "hd", vec![]));
                let w2 = r.vec(classes * HIDDEN, -1.0, 1.0);
                let b2 = r.vec(classes, -0.1, 0.1);
                inits.push(init("fc2.w", &[classes, HIDDEN], &w2));
                inits.push(init("fc2.b", &[classes], &b2));
                nodes.push(node(
                    "Gemm",
                    &["hd", "fc2.w", "fc2.b"],
                    "logits",
                    vec![int("transB", 1)],
                ));
            }
        }
        inits.sort_by(|a, b| a.name.cmp(&b.name));
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            producer_name: "nestdnn-tests".into(),
            graph: Some(pb::GraphProto {
                name: "synth_family".into(),
                node: nodes,
                initializer: inits,
                input: vec![value_info("input", &[None, Some(1), Some(8), Some(8)])],
                output: vec![value_info("logits", &[None, Some(classes as i64)])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Descendant `k` as an independent standalone ONNX model (weights cut naively, the
    /// depthwise conv's `group` set by hand, its own BN statistics left in BatchNormalization
    /// nodes): the reference for the runtime's slicer.
    pub fn standalone(&self, k: usize) -> pb::ModelProto {
        self.onnx(self.seed, &self.ladder[k], &self.bn_stats()[k])
    }

    /// Writes the model folder; returns the manifest text (also written).
    pub fn write(&self, dir: &Path) -> String {
        std::fs::create_dir_all(dir).unwrap();
        let all = self.bn_stats();
        let mut stats: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
        for (k, (w, per)) in self.ladder.iter().zip(&all).enumerate() {
            for ((bn, _), (m, v)) in self.bns(w).iter().zip(per) {
                for (suffix, data) in [("m", m), ("v", v)] {
                    stats.push((
                        format!("d{k}/{bn}.{suffix}"),
                        vec![data.len()],
                        data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        Dtype::F32,
                    ));
                }
            }
        }
        let top = all.last().unwrap();
        let model = self.onnx(self.seed, self.full(), top).encode_to_vec();
        let vanilla = self.onnx(self.seed + 100, self.full(), top).encode_to_vec();
        let bn = st_bytes(&stats);
        let input = Lcg::new(self.seed ^ 0xf00d).vec(2 * 64, -1.0, 1.0);
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
        // (name, out_channels in model.onnx, tie, width per descendant)
        let mut layers: Vec<(&str, usize, &str, Vec<usize>)> = Vec::new();
        let col = |i: usize| self.ladder.iter().map(|w| w[i]).collect::<Vec<_>>();
        let full = self.full();
        match self.kind {
            Kind::Mobile => {
                let tie = if self.tie_dw { "dw" } else { "null" };
                layers.push(("e.w", full[0], tie, col(0)));
                if self.list_dw {
                    let ws = self.dw_widths.clone().unwrap_or_else(|| col(0));
                    layers.push(("dw.w", full[0], tie, ws));
                }
                layers.push(("p.w", full[1], "null", col(1)));
            }
            Kind::Flat => layers.push(("c.w", full[0], "null", col(0))),
        }
        let mut m = format!(
            "format_version: 1\ntask: synth_family\ndataset: fashion-mnist\narchitecture: {:?}\n\
             labels: [a, b, c, d]\n\
             input: {{name: input, layout: NCHW, channels: 1, color: gray, height: 8, width: 8, \
             scale: 0.00392156862745098, mean: [0.5], std: [0.25]}}\n\
             output: {{name: logits, classes: 4}}\n\
             onnx: {{file: model.onnx, sha256: {}, opset: 17}}\n\
             bn_stats: {{file: bn_stats.safetensors, sha256: {}}}\n\
             fixtures: {{file: fixtures.safetensors, sha256: {}}}\n\
             layers:\n",
            self.kind,
            sha(&model),
            sha(&bn),
            sha(&fixtures),
        );
        for (name, out, tie, _) in &layers {
            m.push_str(&format!(
                "  - {{name: {name}, out_channels: {out}, tie: {tie}}}\n"
            ));
        }
        m.push_str(&format!(
            "vanilla: {{file: vanilla.onnx, sha256: {}, accuracy: 0.9, macs: 1000, params: {}, \
             cross_domain_accuracy: null}}\ndescendants:\n",
            sha(&vanilla),
            self.params(full)
        ));
        for (k, w) in self.ladder.iter().enumerate() {
            let channels: Vec<String> = layers
                .iter()
                .map(|(name, _, _, ws)| format!("{name}: {}", ws[k]))
                .collect();
            m.push_str(&format!(
                "  - {{name: d{k}, channels: {{{}}}, macs: {}, params: {}, accuracy: {}, \
                 cross_domain_accuracy: null, bn_stats_prefix: \"d{k}/\"}}\n",
                channels.join(", "),
                1000 * (k + 1),
                self.params(w),
                0.5 + 0.1 * k as f64
            ));
        }
        std::fs::write(dir.join("manifest.yaml"), &m).unwrap();
        m
    }
}
