//! Proto-level slicing of the master ONNX graph and Conv+BatchNorm folding.
//!
//! [`Master`] holds the decoded master graph: the node list without initializers plus every
//! float initializer decoded once into `f32`. [`Master::analyze`] walks the nodes in order for
//! one descendant's channel widths, checks every rule of the format (prefix slicing, equal
//! widths at residual `Add`s, depthwise Convs taking the width of the layer feeding them,
//! pooled or channel-major flattened features before the classifier) and records how every
//! initializer is cut. [`Master::materialize`] then writes the descendant as a fresh
//! `ModelProto`: sliced weight copies, each Conv followed by a BatchNormalization folded into
//! the Conv with the descendant's own BN statistics, `value_info` cleared.

use std::collections::{BTreeMap, HashMap, HashSet};

use tract_onnx::pb::{self, tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

use super::ModelError;

/// A float initializer decoded once.
#[derive(Debug, Clone)]
pub(crate) struct FloatTensor {
    pub(crate) dims: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// Channel-tracking state of an activation tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Not channel-tracked (e.g. logits, shapes); must never carry a sliced width.
    Opaque,
    /// Axis 1 is a channel axis: `active` of `full` channels are kept.
    Ch {
        active: usize,
        full: usize,
        /// Spatial axes were reduced to 1x1 (global pooling): one feature per channel.
        pooled: bool,
        /// Flattened (`Flatten` axis=1) without global pooling: axis 1 holds `full * S`
        /// features, channel-major, so `active` channels are the first `active * S` features.
        flat: bool,
    },
}

impl Act {
    fn is_sliced(self) -> bool {
        matches!(self, Act::Ch { active, full, .. } if active < full)
    }
}

/// BatchNormalization parameters for one node, for one descendant.
#[derive(Debug, Clone)]
pub(crate) struct BnUse {
    node: usize,
    scale: String,
    bias: String,
    /// Running-mean initializer name (key suffix in `bn_stats.safetensors`).
    pub(crate) mean: String,
    /// Running-var initializer name.
    pub(crate) var: String,
    /// Channels at this BN in this descendant.
    pub(crate) channels: usize,
    eps: f32,
}

#[derive(Debug, Clone)]
enum Op {
    Copy(usize),
    Conv {
        node: usize,
        weight: String,
        bias: Option<String>,
        out: usize,
        /// Input channels kept per group (1 for a depthwise Conv).
        inp: usize,
        /// Depthwise: the emitted node's `group` becomes `out`.
        depthwise: bool,
        /// BN folded into this Conv, and the name of the bias it gets if it had none.
        fold: Option<(BnUse, String)>,
    },
    Bn(BnUse),
    Gemm {
        node: usize,
        weight: String,
        /// Keep this many input features.
        keep: usize,
        /// True: weight is `[classes, features]` (transB=1), cut columns; false: cut rows.
        cut_columns: bool,
    },
}

/// How one descendant is cut out of the master graph.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    ops: Vec<Op>,
    /// Every BatchNormalization node with its width, in graph order.
    pub(crate) bn: Vec<BnUse>,
    /// Parameters of the descendant (Conv/Gemm weights and biases, BN scale and bias).
    pub(crate) params: u64,
}

/// Where BatchNorm running statistics come from.
pub(crate) enum BnSource<'a> {
    /// The (sliced) running statistics stored in the graph itself.
    Graph,
    /// Per-descendant statistics: `stats["<prefix><initializer name>"]`, already shape-checked.
    Stats {
        stats: &'a HashMap<String, Vec<f32>>,
        prefix: &'a str,
    },
}

/// A materialized descendant.
pub(crate) struct Sliced {
    pub(crate) proto: ModelProto,
    /// Bytes of all initializers in `proto`.
    pub(crate) weight_bytes: u64,
}

/// The decoded master graph.
#[derive(Debug)]
pub(crate) struct Master {
    /// The model proto with an empty initializer list and no value_info.
    skeleton: ModelProto,
    nodes: Vec<NodeProto>,
    floats: HashMap<String, FloatTensor>,
    others: HashMap<String, TensorProto>,
    /// Names of the graph's real inputs (not initializers).
    pub(crate) inputs: Vec<String>,
    /// Names of the graph's outputs.
    pub(crate) outputs: Vec<String>,
    /// Input dims declared in the graph (`None` for symbolic dims), per real input.
    pub(crate) input_dims: Vec<Vec<Option<i64>>>,
    /// Opset of the default domain.
    pub(crate) opset: i64,
}

fn gerr(what: impl Into<String>) -> ModelError {
    ModelError::Graph { what: what.into() }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map(|a| a.f).unwrap_or(default)
}

fn node_label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        format!(
            "{} -> {:?}",
            n.op_type,
            n.output.first().map(String::as_str).unwrap_or("")
        )
    } else {
        format!("{} {:?}", n.op_type, n.name)
    }
}

fn decode_dims(t: &TensorProto) -> Result<Vec<usize>, ModelError> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| gerr(format!("initializer {:?} has a negative dim", t.name)))
        })
        .collect()
}

fn decode_float(t: &TensorProto) -> Result<FloatTensor, ModelError> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err(gerr(format!(
            "initializer {:?} is stored in an external data file; export with the weights inside the .onnx file",
            t.name
        )));
    }
    let dims = decode_dims(t)?;
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = n.ok_or_else(|| gerr(format!("initializer {:?} is too large", t.name)))?;
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != n.saturating_mul(4) {
            return Err(gerr(format!(
                "initializer {:?}: raw_data has {} bytes, dims {:?} need {}",
                t.name,
                t.raw_data.len(),
                dims,
                n.saturating_mul(4)
            )));
        }
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        if t.float_data.len() != n {
            return Err(gerr(format!(
                "initializer {:?}: float_data has {} values, dims {:?} need {n}",
                t.name,
                t.float_data.len(),
                dims
            )));
        }
        t.float_data.clone()
    };
    Ok(FloatTensor { dims, data })
}

fn decode_i64s(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != DataType::Int64 as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if t.raw_data.len() % 8 != 0 {
            return None;
        }
        Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )
    } else {
        Some(t.int64_data.clone())
    }
}

fn float_proto(
    name: &str,
    dims: &[usize],
    data: impl ExactSizeIterator<Item = f32>,
) -> TensorProto {
    let mut raw = Vec::with_capacity(data.len() * 4);
    for v in data {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        name: name.to_string(),
        raw_data: raw,
        ..Default::default()
    }
}

const PASS_THROUGH: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
];

const ELEMENTWISE: &[&str] = &["Add", "Sum", "Mul", "Sub", "Max", "Min"];

impl Master {
    /// Decodes a master `ModelProto` (consumed: its weight bytes are released after decoding).
    pub(crate) fn from_proto(mut proto: ModelProto) -> Result<Self, ModelError> {
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0);
        let mut graph = proto
            .graph
            .take()
            .ok_or_else(|| gerr("the model has no graph"))?;
        if !graph.sparse_initializer.is_empty() {
            return Err(gerr("sparse initializers are not supported"));
        }
        let mut floats = HashMap::new();
        let mut others = HashMap::new();
        for t in std::mem::take(&mut graph.initializer) {
            if t.name.is_empty() {
                return Err(gerr("an initializer has no name"));
            }
            if t.data_type == DataType::Float as i32 {
                let f = decode_float(&t)?;
                floats.insert(t.name, f);
            } else {
                others.insert(t.name.clone(), t);
            }
        }
        graph.value_info.clear();
        graph
            .input
            .retain(|i| !floats.contains_key(&i.name) && !others.contains_key(&i.name));
        let inputs: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
        let input_dims = graph
            .input
            .iter()
            .map(|i| {
                let shape = match &i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                    Some(pb::type_proto::Value::TensorType(tt)) => tt.shape.clone(),
                    _ => None,
                };
                shape
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match d.value {
                                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                                    Some(v)
                                }
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let outputs = graph.output.iter().map(|o| o.name.clone()).collect();
        let nodes = std::mem::take(&mut graph.node);
        proto.graph = Some(graph);
        Ok(Master {
            skeleton: proto,
            nodes,
            floats,
            others,
            inputs,
            outputs,
            input_dims,
            opset,
        })
    }

    /// Bytes held by the decoded float weights.
    pub(crate) fn weight_bytes(&self) -> u64 {
        self.floats
            .values()
            .map(|t| t.data.len() as u64 * 4)
            .sum::<u64>()
            + self
                .others
                .values()
                .map(|t| t.raw_data.len() as u64)
                .sum::<u64>()
    }

    /// The float initializer `name`, if any.
    pub(crate) fn float(&self, name: &str) -> Option<&FloatTensor> {
        self.floats.get(name)
    }

    /// True if `name` is the weight (input 1) of some Conv node.
    pub(crate) fn is_conv_weight(&self, name: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.op_type == "Conv" && n.input.get(1).map(String::as_str) == Some(name))
    }

    fn is_initializer(&self, name: &str) -> bool {
        self.floats.contains_key(name) || self.others.contains_key(name)
    }

    fn float_init<'a>(
        &'a self,
        node: &'a NodeProto,
        ix: usize,
        what: &str,
    ) -> Result<(&'a str, &'a FloatTensor), ModelError> {
        let name = node.input.get(ix).map(String::as_str).unwrap_or("");
        match self.floats.get(name) {
            Some(t) => Ok((name, t)),
            None => Err(gerr(format!(
                "{}: input {ix} ({what}) {name:?} must be a float initializer",
                node_label(node)
            ))),
        }
    }

    fn const_i64s(&self, name: &str, constants: &HashMap<&str, &NodeProto>) -> Option<Vec<i64>> {
        if let Some(t) = self.others.get(name) {
            return decode_i64s(t);
        }
        let n = constants.get(name)?;
        let v = attr(n, "value")?.t.as_ref()?;
        decode_i64s(v).or_else(|| attr(n, "value_ints").map(|a| a.ints.clone()))
    }

    /// Plans the descendant with output widths `widths` (Conv weight name -> channels; a Conv
    /// not listed keeps its full width).
    ///
    /// # Errors
    /// [`ModelError::Graph`] naming the node and the rule it breaks.
    pub(crate) fn analyze(
        &self,
        widths: &BTreeMap<String, usize>,
        input_channels: usize,
    ) -> Result<Analysis, ModelError> {
        let mut walk = Walk::new(self, widths, input_channels);
        for (ix, node) in self.nodes.iter().enumerate() {
            let at = walk.at(ix, node)?;
            match node.op_type.as_str() {
                "Constant" => walk.constant(&at)?,
                "Conv" => walk.conv(&at)?,
                "BatchNormalization" => walk.batch_norm(&at)?,
                "Gemm" | "MatMul" => walk.gemm(&at)?,
                op if PASS_THROUGH.contains(&op) => walk.pass_through(&at)?,
                "GlobalAveragePool" | "GlobalMaxPool" => walk.global_pool(&at)?,
                "ReduceMean" | "ReduceMax" => walk.reduce(&at)?,
                "Flatten" => walk.flatten(&at)?,
                op if ELEMENTWISE.contains(&op) => walk.elementwise(&at)?,
                _ => walk.other(&at)?,
            }
        }
        walk.finish()
    }

    /// Writes the descendant planned by `a` as a self-contained `ModelProto`.
    ///
    /// # Errors
    /// [`ModelError::Graph`] if a BN statistic from `bn` is missing or has the wrong length
    /// (load-time validation makes that unreachable for a loaded model).
    pub(crate) fn materialize(
        &self,
        a: &Analysis,
        bn: &BnSource<'_>,
    ) -> Result<Sliced, ModelError> {
        let mut out_nodes: Vec<NodeProto> = Vec::with_capacity(a.ops.len());
        let mut inits: Vec<TensorProto> = Vec::new();
        let mut emitted: HashSet<String> = HashSet::new();
        let stats = |b: &BnUse| -> Result<(Vec<f32>, Vec<f32>), ModelError> {
            let c = b.channels;
            match bn {
                BnSource::Graph => Ok((
                    self.prefix(&b.mean, c)?.to_vec(),
                    self.prefix(&b.var, c)?.to_vec(),
                )),
                BnSource::Stats { stats, prefix } => {
                    let get = |n: &str| -> Result<Vec<f32>, ModelError> {
                        let key = format!("{prefix}{n}");
                        match stats.get(&key) {
                            Some(v) if v.len() == c => Ok(v.clone()),
                            Some(v) => Err(gerr(format!(
                                "BN statistic {key:?} has {} values, needs {c}",
                                v.len()
                            ))),
                            None => Err(gerr(format!("BN statistic {key:?} is missing"))),
                        }
                    };
                    Ok((get(&b.mean)?, get(&b.var)?))
                }
            }
        };
        for op in &a.ops {
            match op {
                Op::Copy(ix) => out_nodes.push(self.nodes[*ix].clone()),
                Op::Conv {
                    node,
                    weight,
                    bias,
                    out,
                    inp,
                    depthwise,
                    fold,
                } => {
                    let mut n = self.nodes[*node].clone();
                    if *depthwise {
                        if let Some(g) = n.attribute.iter_mut().find(|a| a.name == "group") {
                            g.i = *out as i64;
                        }
                    }
                    let w = &self.floats[weight.as_str()];
                    let (full_in, k) = (w.dims[1], w.dims[2] * w.dims[3]);
                    let row = inp * k;
                    let mut b: Vec<f32> = match bias {
                        Some(bn) => self.floats[bn.as_str()].data[..*out].to_vec(),
                        None => vec![0.0; *out],
                    };
                    let mut scale = vec![1.0f32; *out];
                    if let Some((bnu, bias_name)) = fold {
                        let (mean, var) = stats(bnu)?;
                        let gamma = self.prefix(&bnu.scale, *out)?;
                        let beta = self.prefix(&bnu.bias, *out)?;
                        for o in 0..*out {
                            let s = gamma[o] as f64 / (var[o] as f64 + bnu.eps as f64).sqrt();
                            scale[o] = s as f32;
                            b[o] = ((b[o] as f64 - mean[o] as f64) * s + beta[o] as f64) as f32;
                        }
                        let bn_node = &self.nodes[bnu.node];
                        if let (Some(o), Some(bo)) = (n.output.first_mut(), bn_node.output.first())
                        {
                            o.clone_from(bo);
                        }
                        if bias.is_none() {
                            n.input.truncate(2);
                            n.input.push(bias_name.clone());
                        }
                    }
                    let data = (0..*out).flat_map(|o| {
                        let s = scale[o];
                        let start = o * full_in * k;
                        w.data[start..start + row].iter().map(move |v| v * s)
                    });
                    let data: Vec<f32> = data.collect();
                    inits.push(float_proto(
                        weight,
                        &[*out, *inp, w.dims[2], w.dims[3]],
                        data.into_iter(),
                    ));
                    emitted.insert(weight.clone());
                    if bias.is_some() || fold.is_some() {
                        let name = n.input[2].clone();
                        inits.push(float_proto(&name, &[*out], b.into_iter()));
                        emitted.insert(name);
                    }
                    out_nodes.push(n);
                }
                Op::Bn(bnu) => {
                    let c = bnu.channels;
                    let (mean, var) = stats(bnu)?;
                    inits.push(float_proto(
                        &bnu.scale,
                        &[c],
                        self.prefix(&bnu.scale, c)?.iter().copied(),
                    ));
                    inits.push(float_proto(
                        &bnu.bias,
                        &[c],
                        self.prefix(&bnu.bias, c)?.iter().copied(),
                    ));
                    inits.push(float_proto(&bnu.mean, &[c], mean.into_iter()));
                    inits.push(float_proto(&bnu.var, &[c], var.into_iter()));
                    for n in [&bnu.scale, &bnu.bias, &bnu.mean, &bnu.var] {
                        emitted.insert(n.clone());
                    }
                    out_nodes.push(self.nodes[bnu.node].clone());
                }
                Op::Gemm {
                    node,
                    weight,
                    keep,
                    cut_columns,
                } => {
                    let w = &self.floats[weight.as_str()];
                    let (r, c) = (w.dims[0], w.dims[1]);
                    let t = if *cut_columns {
                        let data = (0..r).flat_map(|i| w.data[i * c..i * c + keep].iter().copied());
                        float_proto(weight, &[r, *keep], data.collect::<Vec<_>>().into_iter())
                    } else {
                        float_proto(weight, &[*keep, c], w.data[..keep * c].iter().copied())
                    };
                    inits.push(t);
                    emitted.insert(weight.clone());
                    out_nodes.push(self.nodes[*node].clone());
                }
            }
        }
        // Initializers used unchanged (classifier bias, Clip bounds, ...).
        for n in &out_nodes {
            for inp in &n.input {
                if emitted.contains(inp) {
                    continue;
                }
                if let Some(t) = self.floats.get(inp) {
                    inits.push(float_proto(inp, &t.dims, t.data.iter().copied()));
                    emitted.insert(inp.clone());
                } else if let Some(t) = self.others.get(inp) {
                    inits.push(t.clone());
                    emitted.insert(inp.clone());
                }
            }
        }
        let weight_bytes = inits.iter().map(|t| t.raw_data.len() as u64).sum();
        let mut proto = self.skeleton.clone();
        if let Some(g) = proto.graph.as_mut() {
            g.node = out_nodes;
            g.initializer = inits;
            g.value_info.clear();
        }
        Ok(Sliced {
            proto,
            weight_bytes,
        })
    }

    fn prefix(&self, name: &str, n: usize) -> Result<&[f32], ModelError> {
        self.floats
            .get(name)
            .and_then(|t| t.data.get(..n))
            .ok_or_else(|| {
                gerr(format!(
                    "initializer {name:?} is missing or shorter than {n}"
                ))
            })
    }
}

/// The state of [`Master::analyze`]'s walk over the graph in topological order: what each
/// tensor is (its channel widths), the ops of the descendant so far, and the parameters.
struct Walk<'a> {
    g: &'a Master,
    widths: &'a BTreeMap<String, usize>,
    acts: HashMap<&'a str, Act>,
    constants: HashMap<&'a str, &'a NodeProto>,
    consumers: HashMap<&'a str, Vec<usize>>,
    outputs: HashSet<&'a str>,
    ops: Vec<Op>,
    bn_uses: Vec<BnUse>,
    /// BN node -> index in `ops` of the Conv it folds into.
    folded: HashMap<usize, usize>,
    sliced_inits: HashSet<&'a str>,
    params: u64,
}

/// One node as the walk reaches it.
struct At<'a> {
    ix: usize,
    node: &'a NodeProto,
    label: String,
    /// Input 0's activation (`None`: a constant or an initializer).
    act0: Option<Act>,
    /// Every input's activation (`None`: a constant, an initializer or absent).
    in_acts: Vec<Option<Act>>,
    /// Output 0's name.
    out0: &'a str,
}

impl At<'_> {
    /// Input 0's activation, which the op needs.
    fn input(&self) -> Result<Act, ModelError> {
        self.act0
            .ok_or_else(|| gerr(format!("{}: input 0 must be an activation", self.label)))
    }
}

impl<'a> Walk<'a> {
    fn new(g: &'a Master, widths: &'a BTreeMap<String, usize>, input_channels: usize) -> Self {
        let mut acts: HashMap<&str, Act> = HashMap::new();
        for name in &g.inputs {
            acts.insert(
                name.as_str(),
                Act::Ch {
                    active: input_channels,
                    full: input_channels,
                    pooled: false,
                    flat: false,
                },
            );
        }
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
        }
        Walk {
            g,
            widths,
            acts,
            constants: HashMap::new(),
            consumers,
            outputs: g.outputs.iter().map(String::as_str).collect(),
            ops: Vec::with_capacity(g.nodes.len()),
            bn_uses: Vec::new(),
            folded: HashMap::new(),
            sliced_inits: HashSet::new(),
            params: 0,
        }
    }

    /// Node `ix` with its inputs' activations, which must be known already (topological
    /// order); an initializer may not be shared with another sliced node.
    fn at(&self, ix: usize, node: &'a NodeProto) -> Result<At<'a>, ModelError> {
        let label = node_label(node);
        let mut in_acts: Vec<Option<Act>> = Vec::with_capacity(node.input.len());
        for inp in &node.input {
            if inp.is_empty()
                || self.g.is_initializer(inp)
                || self.constants.contains_key(inp.as_str())
            {
                in_acts.push(None);
            } else if let Some(a) = self.acts.get(inp.as_str()) {
                in_acts.push(Some(*a));
            } else {
                return Err(gerr(format!(
                    "{label}: input {inp:?} is not produced by an earlier node (graph not topologically sorted?)"
                )));
            }
        }
        for (k, inp) in node.input.iter().enumerate() {
            if k > 0 && self.g.floats.contains_key(inp) && self.sliced_inits.contains(inp.as_str())
            {
                return Err(gerr(format!(
                    "{label}: initializer {inp:?} is shared with another sliced node"
                )));
            }
        }
        Ok(At {
            ix,
            node,
            label,
            act0: in_acts.first().copied().flatten(),
            in_acts,
            out0: node.output.first().map(String::as_str).unwrap_or(""),
        })
    }

    /// The analysis, once every node is walked: no graph output may be sliced.
    fn finish(self) -> Result<Analysis, ModelError> {
        for o in &self.g.outputs {
            match self.acts.get(o.as_str()) {
                Some(a) if a.is_sliced() => {
                    return Err(gerr(format!(
                        "graph output {o:?} would be sliced; the output width must not change"
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(gerr(format!(
                        "graph output {o:?} is not produced by any node"
                    )))
                }
            }
        }
        Ok(Analysis {
            ops: self.ops,
            bn: self.bn_uses,
            params: self.params,
        })
    }

    /// `Constant`: its outputs are known constants (e.g. `ReduceMean` axes).
    fn constant(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node) = (at.ix, at.node);
        for o in &node.output {
            self.constants.insert(o.as_str(), node);
        }
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// `Conv` (group 1, or depthwise sliced with the layer feeding it); a BN that is its
    /// output's only consumer is folded into it.
    fn conv(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, act0, out0) = (at.ix, at.node, at.label.as_str(), at.act0, at.out0);
        let (wname, w) = self.g.float_init(node, 1, "weight")?;
        if w.dims.len() != 4 {
            return Err(gerr(format!(
                "{label}: weight {wname:?} must have rank 4, has dims {:?}",
                w.dims
            )));
        }
        let (full_out, full_in) = (w.dims[0], w.dims[1]);
        let group = attr_i(node, "group", 1);
        // (active, full) input channels; an untracked input is taken at full width.
        let (in_active, in_full) = match act0 {
            Some(a @ Act::Ch { flat: true, .. }) if a.is_sliced() => {
                return Err(gerr(format!(
                    "{label}: input is a flattened sliced tensor; a Conv needs its channel axis"
                )))
            }
            Some(Act::Ch { active, full, .. }) => (active, full),
            Some(Act::Opaque) => {
                let g = usize::try_from(group).unwrap_or(0);
                (full_in * g, full_in * g)
            }
            None => return Err(gerr(format!("{label}: input 0 must be an activation"))),
        };
        let depthwise = group != 1
            && usize::try_from(group).ok() == Some(full_out)
            && full_out == in_full
            && full_in == 1;
        let (inp, out) = if depthwise {
            // Sliced together with the layer feeding it: one filter per channel.
            match self.widths.get(wname) {
                Some(&c) if c != in_active => {
                    return Err(gerr(format!(
                        "{label}: depthwise convolution {wname:?} has {c} channels in this descendant but its input has {in_active}; a depthwise Conv takes the width of the layer feeding it (list it with that width, e.g. in that layer's tie group, or leave it out of layers)"
                    )))
                }
                _ => (1, in_active),
            }
        } else {
            if group != 1 {
                return Err(gerr(format!(
                    "{label}: grouped convolution (group != 1, not depthwise) is not supported (group {group}, weight {wname:?} dims {:?}, {in_full} input channels)",
                    w.dims
                )));
            }
            if in_full != full_in {
                return Err(gerr(format!(
                    "{label}: weight {wname:?} expects {full_in} input channels but its input has {in_full}"
                )));
            }
            let out = match self.widths.get(wname) {
                Some(&c) if c >= 1 && c <= full_out => c,
                Some(&c) => {
                    return Err(gerr(format!(
                        "{label}: {c} channels requested for {wname:?}, which has {full_out}"
                    )))
                }
                None => full_out,
            };
            (in_active, out)
        };
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => {
                let (bname, b) = self.g.float_init(node, 2, "bias")?;
                if b.dims != [full_out] {
                    return Err(gerr(format!(
                        "{label}: bias {bname:?} has dims {:?}, needs [{full_out}]",
                        b.dims
                    )));
                }
                self.sliced_inits.insert(bname);
                Some(bname.to_string())
            }
            None => None,
        };
        self.sliced_inits.insert(wname);
        self.params +=
            (out * inp * w.dims[2] * w.dims[3]) as u64 + bias.as_ref().map_or(0, |_| out as u64);
        self.acts.insert(
            out0,
            Act::Ch {
                active: out,
                full: full_out,
                pooled: false,
                flat: false,
            },
        );
        // Fold a directly following BN that is the conv output's only consumer.
        let cons = self.consumers.get(out0).map(Vec::as_slice).unwrap_or(&[]);
        let fold_bn = match cons {
            [only]
                if !self.outputs.contains(out0)
                    && self.g.nodes[*only].op_type == "BatchNormalization"
                    && self.g.nodes[*only].input.first().map(String::as_str) == Some(out0) =>
            {
                Some(*only)
            }
            _ => None,
        };
        if let Some(bn_ix) = fold_bn {
            self.folded.insert(bn_ix, self.ops.len());
        }
        self.ops.push(Op::Conv {
            node: ix,
            weight: wname.to_string(),
            bias,
            out,
            inp,
            depthwise,
            fold: None,
        });
        Ok(())
    }

    /// `BatchNormalization` (inference mode): sliced to its input's width, or folded into
    /// the Conv before it.
    fn batch_norm(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, act0, out0) = (at.ix, at.node, at.label.as_str(), at.act0, at.out0);
        if attr_i(node, "training_mode", 0) != 0
            || node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(gerr(format!(
                "{label}: BatchNormalization in training mode; export with the model in eval() and TrainingMode.PRESERVE"
            )));
        }
        let (sname, s) = self.g.float_init(node, 1, "scale")?;
        let full = s.dims.first().copied().unwrap_or(0);
        let mut names = [sname, "", "", ""];
        for (k, what) in [(2, "bias"), (3, "mean"), (4, "var")] {
            let (n, t) = self.g.float_init(node, k, what)?;
            if t.dims != [full] {
                return Err(gerr(format!(
                    "{label}: {what} {n:?} has dims {:?}, needs [{full}]",
                    t.dims
                )));
            }
            names[k - 1] = n;
        }
        if s.dims.len() != 1 {
            return Err(gerr(format!("{label}: scale {sname:?} must have rank 1")));
        }
        let channels = match act0 {
            Some(Act::Ch {
                active, full: f, ..
            }) if f == full => active,
            Some(Act::Ch { full: f, .. }) => {
                return Err(gerr(format!(
                    "{label}: has {full} channels but its input has {f}"
                )))
            }
            Some(Act::Opaque) => full,
            None => return Err(gerr(format!("{label}: input 0 must be an activation"))),
        };
        for n in names {
            self.sliced_inits.insert(n);
        }
        self.params += 2 * channels as u64;
        let bn = BnUse {
            node: ix,
            scale: names[0].to_string(),
            bias: names[1].to_string(),
            mean: names[2].to_string(),
            var: names[3].to_string(),
            channels,
            eps: attr_f(node, "epsilon", 1e-5),
        };
        self.acts.insert(out0, act0.unwrap_or(Act::Opaque));
        self.bn_uses.push(bn.clone());
        if let Some(&op_ix) = self.folded.get(&ix) {
            if let Some(Op::Conv {
                fold, weight, out, ..
            }) = self.ops.get_mut(op_ix)
            {
                if *out != channels {
                    return Err(gerr(format!(
                        "{label}: width {channels} differs from its Conv's {out}"
                    )));
                }
                let mut bias_name = format!("{weight}::folded_bias");
                while self.g.is_initializer(&bias_name) {
                    bias_name.push('_');
                }
                *fold = Some((bn, bias_name));
            }
        } else {
            self.ops.push(Op::Bn(bn));
        }
        Ok(())
    }

    /// `Gemm` / `MatMul` classifier: its input features cut to the active channels (pooled, or
    /// flattened channel-major).
    fn gemm(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, act0, out0) = (at.ix, at.node, at.label.as_str(), at.act0, at.out0);
        let (wname, w) = self.g.float_init(node, 1, "weight")?;
        if w.dims.len() != 2 {
            return Err(gerr(format!("{label}: weight {wname:?} must have rank 2")));
        }
        let gemm = node.op_type == "Gemm";
        if gemm && attr_i(node, "transA", 0) != 0 {
            return Err(gerr(format!("{label}: transA=1 is not supported")));
        }
        let cut_columns = gemm && attr_i(node, "transB", 0) != 0;
        let features = if cut_columns { w.dims[1] } else { w.dims[0] };
        let keep = match act0 {
            Some(Act::Ch {
                active,
                full,
                pooled: false,
                flat: true,
            }) => {
                // Flatten(axis=1) of [N, C, H, W]: F = C * S features, channel-major.
                if full == 0 || features % full != 0 {
                    return Err(gerr(format!(
                        "{label}: weight {wname:?} has {features} input features, which is not a multiple of the {full} channels flattened into it"
                    )));
                }
                active * (features / full)
            }
            Some(Act::Ch {
                active,
                full,
                pooled,
                ..
            }) => {
                if active < full && !pooled {
                    return Err(gerr(format!(
                        "{label}: the classifier's input must be globally pooled (GlobalAveragePool or ReduceMean over [2,3]) or flattened (Flatten axis=1) to slice it"
                    )));
                }
                if full != features {
                    return Err(gerr(format!(
                        "{label}: weight {wname:?} expects {features} features but its input has {full} channels"
                    )));
                }
                active
            }
            Some(Act::Opaque) => features,
            None => return Err(gerr(format!("{label}: input 0 must be an activation"))),
        };
        let classes = if cut_columns { w.dims[0] } else { w.dims[1] };
        let bias_len = node
            .input
            .get(2)
            .filter(|s| !s.is_empty())
            .and_then(|b| self.g.floats.get(b.as_str()))
            .map_or(0, |b| b.data.len());
        self.sliced_inits.insert(wname);
        self.params += (keep * classes + bias_len) as u64;
        self.acts.insert(out0, Act::Opaque);
        self.ops.push(Op::Gemm {
            node: ix,
            weight: wname.to_string(),
            keep,
            cut_columns,
        });
        Ok(())
    }

    /// Element-wise unary ops ([`PASS_THROUGH`]): the width passes through.
    fn pass_through(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, out0, op) = (
            at.ix,
            at.node,
            at.label.as_str(),
            at.out0,
            at.node.op_type.as_str(),
        );
        let a = at.input()?;
        if op == "PRelu" && a.is_sliced() {
            return Err(gerr(format!(
                "{label}: PRelu on a sliced tensor is not supported"
            )));
        }
        self.acts.insert(out0, a);
        for o in node.output.iter().skip(1).filter(|o| !o.is_empty()) {
            self.acts.insert(o.as_str(), Act::Opaque);
        }
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// Global pooling: the width passes through, marked pooled.
    fn global_pool(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, label, out0) = (at.ix, at.label.as_str(), at.out0);
        let a = at.input()?;
        let a = match a {
            Act::Ch {
                flat: true, full, ..
            } if a.is_sliced() => {
                return Err(gerr(format!(
                    "{label}: global pooling of a flattened sliced tensor ({full} channels) is not supported"
                )))
            }
            Act::Ch { active, full, .. } => Act::Ch {
                active,
                full,
                pooled: true,
                flat: false,
            },
            o => o,
        };
        self.acts.insert(out0, a);
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// `ReduceMean` / `ReduceMax`: pooled over [2, 3], or opaque (never over a sliced channel
    /// axis).
    fn reduce(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, out0) = (at.ix, at.node, at.label.as_str(), at.out0);
        let a = at.input()?;
        let axes = attr(node, "axes").map(|a| a.ints.clone()).or_else(|| {
            node.input
                .get(1)
                .filter(|s| !s.is_empty())
                .and_then(|n| self.g.const_i64s(n, &self.constants))
        });
        let out = match (a, axes) {
            (
                Act::Ch {
                    active,
                    full,
                    pooled,
                    flat,
                },
                Some(axes),
            ) => {
                let mut ax: Vec<i64> = axes
                    .iter()
                    .map(|&x| if x < 0 { x + 4 } else { x })
                    .collect();
                ax.sort_unstable();
                ax.dedup();
                if ax.contains(&1) || ax.contains(&0) || flat {
                    if a.is_sliced() {
                        return Err(gerr(format!(
                            "{label}: reduces over the channel axis of a sliced tensor"
                        )));
                    }
                    Act::Opaque
                } else {
                    Act::Ch {
                        active,
                        full,
                        pooled: pooled || ax == [2, 3],
                        flat: false,
                    }
                }
            }
            (Act::Ch { .. }, None) if a.is_sliced() => {
                return Err(gerr(format!(
                    "{label}: axes are not constant; cannot slice through it"
                )))
            }
            _ => Act::Opaque,
        };
        self.acts.insert(out0, out);
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// `Flatten(axis=1)`: a flattened width (the classifier cuts a prefix of its features).
    fn flatten(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label, out0) = (at.ix, at.node, at.label.as_str(), at.out0);
        let a = at.input()?;
        let axis = attr_i(node, "axis", 1);
        let out = match a {
            Act::Ch {
                active,
                full,
                pooled,
                ..
            } if axis == 1 => Act::Ch {
                active,
                full,
                pooled,
                flat: true,
            },
            _ if a.is_sliced() => {
                return Err(gerr(format!(
                    "{label}: Flatten of a sliced tensor needs axis=1 (it has axis={axis})"
                )))
            }
            _ => Act::Opaque,
        };
        self.acts.insert(out0, out);
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// Binary element-wise ops ([`ELEMENTWISE`], residual Adds): every channel input must have
    /// one width.
    fn elementwise(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, label) = (at.ix, at.label.as_str());
        let in_acts = &at.in_acts;
        let out0 = at.out0;
        let acts_in: Vec<Act> = in_acts.iter().flatten().copied().collect();
        let any_const = in_acts.iter().any(Option::is_none);
        let chans: Vec<Act> = acts_in
            .iter()
            .copied()
            .filter(|a| matches!(a, Act::Ch { .. }))
            .collect();
        let first = chans.iter().find_map(|c| match c {
            Act::Ch { active, full, .. } => Some((*active, *full)),
            Act::Opaque => None,
        });
        let out = if let Some((active, full)) = first {
            for c in &chans {
                if let Act::Ch {
                    active: a2,
                    full: f2,
                    ..
                } = c
                {
                    if *a2 != active || *f2 != full {
                        return Err(gerr(format!(
                            "{label}: residual inputs have widths {a2}/{f2} and {active}/{full}; layers meeting at an Add must be in one tie group"
                        )));
                    }
                }
            }
            if chans.len() != acts_in.len() && active < full {
                return Err(gerr(format!(
                    "{label}: mixes a sliced tensor with an untracked one"
                )));
            }
            if any_const && active < full {
                return Err(gerr(format!(
                    "{label}: a sliced tensor meets a constant; cannot slice the constant"
                )));
            }
            let pooled = chans
                .iter()
                .all(|c| matches!(c, Act::Ch { pooled: true, .. }));
            let flats = chans
                .iter()
                .filter(|c| matches!(c, Act::Ch { flat: true, .. }))
                .count();
            if flats != 0 && flats != chans.len() && active < full {
                return Err(gerr(format!(
                    "{label}: mixes a flattened sliced tensor with an unflattened one"
                )));
            }
            Act::Ch {
                active,
                full,
                pooled,
                flat: flats != 0,
            }
        } else {
            Act::Opaque
        };
        self.acts.insert(out0, out);
        self.ops.push(Op::Copy(ix));
        Ok(())
    }

    /// Any other op: allowed only on tensors that are not sliced.
    fn other(&mut self, at: &At<'a>) -> Result<(), ModelError> {
        let (ix, node, label) = (at.ix, at.node, at.label.as_str());
        let in_acts = &at.in_acts;
        let op = at.node.op_type.as_str();
        if in_acts.iter().flatten().any(|a| a.is_sliced()) {
            return Err(gerr(format!(
                "{label}: op {op} is not supported on a sliced tensor (supported: Conv with group 1 or depthwise, BatchNormalization, Gemm, MatMul, {}, {}, GlobalAveragePool, ReduceMean, Flatten)",
                PASS_THROUGH.join(", "),
                ELEMENTWISE.join(", ")
            )));
        }
        for o in &node.output {
            self.acts.insert(o.as_str(), Act::Opaque);
        }
        self.ops.push(Op::Copy(ix));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dims: &[usize]) -> TensorProto {
        let n: usize = dims.iter().product();
        float_proto(name, dims, (0..n).map(|i| i as f32 * 0.01))
    }

    fn n(op: &str, inputs: &[&str], out: &str, attrs: &[(&str, i64)]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: format!("{op}_{out}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            attribute: attrs
                .iter()
                .map(|&(k, v)| pb::AttributeProto {
                    name: k.into(),
                    i: v,
                    r#type: 2,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn master(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Master {
        let input = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        Master::from_proto(ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![input("x")],
                output: vec![input("y")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn widths(w: &[(&str, usize)]) -> BTreeMap<String, usize> {
        w.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    /// x[3] -> conv a (4) -> depthwise (group `group`) -> GAP -> Flatten -> Gemm (2 classes).
    fn depthwise(group: i64) -> Master {
        let per_group = (4 / group) as usize;
        master(
            vec![
                n("Conv", &["x", "a.w"], "a", &[]),
                n("Conv", &["a", "dw.w"], "d", &[("group", group)]),
                n("GlobalAveragePool", &["d"], "p", &[]),
                n("Flatten", &["p"], "f", &[("axis", 1)]),
                n("Gemm", &["f", "fc.w"], "y", &[("transB", 1)]),
            ],
            vec![
                t("a.w", &[4, 3, 1, 1]),
                t("dw.w", &[4, per_group, 3, 3]),
                t("fc.w", &[2, 4]),
            ],
        )
    }

    #[test]
    fn depthwise_takes_its_input_width() {
        let m = depthwise(4);
        let a = m.analyze(&widths(&[("a.w", 2)]), 3).unwrap();
        // a: 2*3, depthwise: 2*1*3*3, classifier: 2*2.
        assert_eq!(a.params, 6 + 18 + 4);
        assert!(a.ops.iter().any(|op| matches!(
            op,
            Op::Conv {
                out: 2,
                inp: 1,
                depthwise: true,
                ..
            }
        )));
        let s = m.materialize(&a, &BnSource::Graph).unwrap();
        let g = s.proto.graph.unwrap();
        let dw = g.node.iter().find(|n| n.input[1] == "dw.w").unwrap();
        assert_eq!(attr_i(dw, "group", 1), 2);
        let w = g.initializer.iter().find(|t| t.name == "dw.w").unwrap();
        assert_eq!(w.dims, [2, 1, 3, 3]);
        // Listed with its input width: fine; with another: an error naming the node.
        assert!(m.analyze(&widths(&[("a.w", 2), ("dw.w", 2)]), 3).is_ok());
        let e = m
            .analyze(&widths(&[("a.w", 2), ("dw.w", 3)]), 3)
            .unwrap_err();
        assert!(
            matches!(&e, ModelError::Graph { what } if what.contains("Conv \"Conv_d\"") && what.contains("depthwise")),
            "{e}"
        );
    }

    #[test]
    fn grouped_conv_that_is_not_depthwise_is_refused() {
        let e = depthwise(2).analyze(&BTreeMap::new(), 3).unwrap_err();
        assert!(
            e.to_string().contains(
                "Conv \"Conv_d\": grouped convolution (group != 1, not depthwise) is not supported"
            ),
            "{e}"
        );
    }

    /// x[3] -> conv a (4) -> Flatten -> Gemm with `features` inputs.
    fn flat(features: usize, flatten: bool) -> Master {
        let mut nodes = vec![n("Conv", &["x", "a.w"], "a", &[])];
        let x = if flatten {
            nodes.push(n("Flatten", &["a"], "f", &[("axis", 1)]));
            "f"
        } else {
            "a"
        };
        nodes.push(n("Gemm", &[x, "fc.w"], "y", &[("transB", 1)]));
        master(
            nodes,
            vec![t("a.w", &[4, 3, 3, 3]), t("fc.w", &[2, features])],
        )
    }

    #[test]
    fn flatten_head_keeps_a_prefix_of_channel_major_features() {
        let a = flat(4 * 5, true)
            .analyze(&widths(&[("a.w", 1)]), 3)
            .unwrap();
        assert_eq!(a.params, 27 + 2 * 5);
        assert!(a.ops.iter().any(|op| matches!(
            op,
            Op::Gemm {
                keep: 5,
                cut_columns: true,
                ..
            }
        )));
        // Full width: unchanged.
        let a = flat(4 * 5, true).analyze(&BTreeMap::new(), 3).unwrap();
        assert_eq!(a.params, 4 * 27 + 2 * 20);
        let e = flat(4 * 5 + 1, true)
            .analyze(&widths(&[("a.w", 1)]), 3)
            .unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let e = flat(4, false)
            .analyze(&widths(&[("a.w", 1)]), 3)
            .unwrap_err();
        assert!(e.to_string().contains("globally pooled"), "{e}");
    }
}
