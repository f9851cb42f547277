//! Multi-capacity models: manifest, slicing descendants out of one ONNX file, BatchNorm
//! folding, tract plans, switching policies.
//!
//! ```no_run
//! use nestdnn::model::{MultiCapacityModel, ModelSlot, SwitchPolicy};
//! # fn main() -> Result<(), nestdnn::model::ModelError> {
//! let model = std::sync::Arc::new(MultiCapacityModel::load("models/fashion_vgg".as_ref())?);
//! let plan = model.build_plan(0)?;               // smallest descendant, batch 1
//! let mut state = plan.spawn()?;                 // one per thread
//! let logits = state.run(&vec![0.0; plan.input_len()])?;
//!
//! let slot = ModelSlot::new(model.clone(), SwitchPolicy::OnDemand, 0)?;
//! slot.request(model.num_descendants() - 1)?;    // built in the background, then swapped
//! let (index, plan) = slot.current();            // what the next frame runs
//! # Ok(()) }
//! ```
//!
//! Loading validates the manifest against every file (SHA-256, every sliced tensor's shape,
//! BN statistics, ladder order) so that building a plan later cannot fail on bad data.

mod accuracy;
mod fixtures;
mod graph;
mod manifest;
mod slot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;

pub use accuracy::{
    ci95_half_width, CameraAccuracy, MeasuredAccuracy, ACCURACY_FILE, ACCURACY_FORMAT_VERSION,
};
pub use fixtures::Fixtures;
pub use manifest::{
    Color, DescendantSpec, FileRef, InputSpec, Layer, Manifest, OnnxFile, OutputSpec, Vanilla,
    FORMAT_VERSION,
};
pub use slot::{
    BuildStats, DescendantPlan, ModelSlot, OpTime, PlanState, SwitchPolicy, SwitchRecord,
};

use graph::{Analysis, BnSource, Master};
use slot::BuildJob;

use crate::profile::alloc::ThreadMeasure;

/// Errors of model loading, plan building and running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error (shown in the message, so not a `source`).
        error: std::io::Error,
    },
    /// `manifest.yaml` is not valid YAML or does not match the schema.
    #[error("{}: not a valid manifest (see docs/model-format.md): {error}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The parse error, with line and column (shown in the message).
        error: serde_yaml::Error,
    },
    /// The manifest disagrees with itself or with the model files.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file where the problem was found.
        path: PathBuf,
        /// What is wrong and what to fix.
        what: String,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error("{}: sha256 is {actual}, the manifest says {expected}; re-export the model or fix the manifest", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// SHA-256 in the manifest.
        expected: String,
        /// SHA-256 of the file.
        actual: String,
    },
    /// A safetensors file (BN statistics, fixtures) is unreadable or lacks a tensor.
    #[error("{}: {what}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The graph breaks a slicing rule (format: `docs/model-format.md`, "Graph rules").
    #[error("graph: {what}")]
    Graph {
        /// The node and the rule.
        what: String,
    },
    /// tract failed to build or run a plan.
    #[error("tract: {what}")]
    Tract {
        /// The descendant and the stage.
        what: String,
        /// tract's error chain.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// An input buffer has the wrong number of values.
    #[error("input has {got} values, the model needs {expected} (C*H*W)")]
    InputLength {
        /// `C*H*W`.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A descendant index beyond the ladder.
    #[error("descendant index {index} is out of range: the model has {count} descendants")]
    NoSuchDescendant {
        /// The index asked for.
        index: usize,
        /// Number of descendants.
        count: usize,
    },
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        error: e,
    })
}

fn read_checked(dir: &Path, file: &str, sha: &str) -> Result<(PathBuf, Vec<u8>), ModelError> {
    let path = dir.join(file);
    let bytes = read(&path)?;
    let actual = sha256_hex(&bytes);
    if actual != sha {
        return Err(ModelError::Hash {
            path,
            expected: sha.to_string(),
            actual,
        });
    }
    Ok((path, bytes))
}

/// Reads `file` of `dir`, checks its SHA-256 and decodes it into a [`Master`] graph.
fn read_master(dir: &Path, file: &str, sha: &str) -> Result<(PathBuf, Master), ModelError> {
    let (path, bytes) = read_checked(dir, file, sha)?;
    let proto = decode_onnx(&path, &bytes)?;
    drop(bytes);
    let master = Master::from_proto(proto).map_err(in_file(&path))?;
    Ok((path, master))
}

fn decode_onnx(path: &Path, bytes: &[u8]) -> Result<ModelProto, ModelError> {
    ModelProto::decode(bytes).map_err(|e| ModelError::Invalid {
        path: path.to_path_buf(),
        what: format!("not an ONNX model: {e}"),
    })
}

fn in_file(path: &Path) -> impl Fn(ModelError) -> ModelError + '_ {
    move |e| match e {
        ModelError::Graph { what } => ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        },
        other => other,
    }
}

/// The models directory tests and benches iterate: `$NESTDNN_MODELS_DIR`, else the
/// repository's `models/` (located at compile time).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("NESTDNN_MODELS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models"),
    }
}

/// Every sub-folder of `root` holding a `manifest.yaml`, sorted by name.
///
/// # Errors
/// [`ModelError::Io`] if `root` cannot be listed.
pub fn find_models(root: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let io = |e| ModelError::Io {
        path: root.to_path_buf(),
        error: e,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.join("manifest.yaml").is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// One task's multi-capacity model: the decoded master weights, the validated ladder and the
/// per-descendant BN statistics. Build plans with [`MultiCapacityModel::build_plan`].
///
/// [`MultiCapacityModel::without_master`] drops the decoded master weights; plans are then
/// built from the master file, re-read (hash-checked) for each build: one copy of the weights
/// in memory, the active descendant's ([`SwitchPolicy::OneCopy`]).
pub struct MultiCapacityModel {
    dir: PathBuf,
    manifest: Manifest,
    manifest_sha256: String,
    onnx: tract_onnx::Onnx,
    /// The decoded master weights; `None` once dropped ([`MultiCapacityModel::without_master`]).
    master: Option<Master>,
    analyses: Vec<Analysis>,
    bn: HashMap<String, Vec<f32>>,
    vanilla_params: u64,
}

impl std::fmt::Debug for MultiCapacityModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiCapacityModel")
            .field("dir", &self.dir)
            .field("task", &self.manifest.task)
            .field("descendants", &self.num_descendants())
            .finish_non_exhaustive()
    }
}

impl MultiCapacityModel {
    /// Loads and validates the model in `dir` (`manifest.yaml` and the files it names).
    ///
    /// # Errors
    /// [`ModelError`] naming the file and what to fix: unreadable files, manifest schema or
    /// consistency errors, SHA-256 mismatches, graphs that break the slicing rules, tensors
    /// whose shapes disagree with `layers`/`channels`, missing or mis-shaped BN statistics.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let mpath = dir.join("manifest.yaml");
        let mbytes = read(&mpath)?;
        let text = std::str::from_utf8(&mbytes).map_err(|e| ModelError::Invalid {
            path: mpath.clone(),
            what: format!("not UTF-8: {e}"),
        })?;
        let manifest = Manifest::from_yaml(&mpath, text)?;
        let manifest_sha256 = sha256_hex(&mbytes);
        let invalid = |path: &Path, what: String| ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        };

        // Master graph.
        let (opath, master) = read_master(dir, &manifest.onnx.file, &manifest.onnx.sha256)?;
        Self::check_io(&manifest, &master, &opath)?;
        if master.opset != manifest.onnx.opset {
            return Err(invalid(
                &opath,
                format!(
                    "opset is {}, the manifest says {}",
                    master.opset, manifest.onnx.opset
                ),
            ));
        }
        for l in &manifest.layers {
            let Some(w) = master
                .float(&l.name)
                .filter(|_| master.is_conv_weight(&l.name))
            else {
                return Err(invalid(
                    &opath,
                    format!(
                        "layers names {:?}, which is not the weight of a Conv in this graph",
                        l.name
                    ),
                ));
            };
            if w.dims.len() != 4 || w.dims[0] != l.out_channels {
                return Err(invalid(
                    &opath,
                    format!(
                        "Conv weight {:?} has dims {:?}; the manifest says {} out channels",
                        l.name, w.dims, l.out_channels
                    ),
                ));
            }
        }
        let channels = manifest.input.channels;
        let mut analyses = Vec::with_capacity(manifest.descendants.len());
        for d in &manifest.descendants {
            let a = master.analyze(&d.channels, channels).map_err(|e| match e {
                ModelError::Graph { what } => {
                    invalid(&opath, format!("descendant {:?}: {what}", d.name))
                }
                other => other,
            })?;
            if a.params != d.params {
                log::warn!(
                    "{}: descendant {:?} has {} parameters in the graph, the manifest says {}",
                    mpath.display(),
                    d.name,
                    a.params,
                    d.params
                );
            }
            analyses.push(a);
        }

        // Per-descendant BN statistics.
        let (bpath, bbytes) =
            read_checked(dir, &manifest.bn_stats.file, &manifest.bn_stats.sha256)?;
        let st = SafeTensors::deserialize(&bbytes).map_err(|e| ModelError::Safetensors {
            path: bpath.clone(),
            what: format!("not a safetensors file: {e}"),
        })?;
        let mut bn = HashMap::new();
        for (d, a) in manifest.descendants.iter().zip(&analyses) {
            for u in &a.bn {
                for name in [&u.mean, &u.var] {
                    let key = format!("{}{name}", d.bn_stats_prefix);
                    let (shape, data) = fixtures::tensor(&st, &bpath, &key, Dtype::F32, 1)
                        .map_err(|e| ModelError::Safetensors {
                            path: bpath.clone(),
                            what: format!("descendant {:?} needs {key:?}: {e}", d.name),
                        })?;
                    if shape != [u.channels] {
                        return Err(ModelError::Safetensors {
                            path: bpath.clone(),
                            what: format!(
                                "{key:?} has shape {shape:?}; descendant {:?} has {} channels at that BatchNormalization",
                                d.name, u.channels
                            ),
                        });
                    }
                    let v: Vec<f32> = data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if name == &u.var && v.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
                        return Err(ModelError::Safetensors {
                            path: bpath.clone(),
                            what: format!("{key:?}: running variances must be finite and >= 0"),
                        });
                    }
                    bn.insert(key, v);
                }
            }
        }
        drop(st);
        drop(bbytes);

        // Fixtures: hash only (tests read them with `load_fixtures`).
        read_checked(dir, &manifest.fixtures.file, &manifest.fixtures.sha256)?;

        // Vanilla: validated now, decoded again when a vanilla plan is built.
        let vanilla = Self::load_vanilla(dir, &manifest)?;
        let vanilla_params = vanilla.1.params;
        if vanilla_params != manifest.vanilla.params {
            log::warn!(
                "{}: vanilla has {vanilla_params} parameters in the graph, the manifest says {}",
                mpath.display(),
                manifest.vanilla.params
            );
        }

        Ok(MultiCapacityModel {
            dir: dir.to_path_buf(),
            manifest,
            manifest_sha256,
            onnx: tract_onnx::onnx(),
            master: Some(master),
            analyses,
            bn,
            vanilla_params,
        })
    }

    fn check_io(manifest: &Manifest, master: &Master, path: &Path) -> Result<(), ModelError> {
        let invalid = |what: String| ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        if master.inputs != [manifest.input.name.clone()] {
            return Err(invalid(format!(
                "graph inputs are {:?}, the manifest says one input {:?}",
                master.inputs, manifest.input.name
            )));
        }
        if master.outputs != [manifest.output.name.clone()] {
            return Err(invalid(format!(
                "graph outputs are {:?}, the manifest says one output {:?}",
                master.outputs, manifest.output.name
            )));
        }
        let i = &manifest.input;
        if let Some(dims) = master.input_dims.first() {
            let want = [
                None,
                Some(i.channels as i64),
                Some(i.height as i64),
                Some(i.width as i64),
            ];
            let ok = dims.len() == 4
                && dims
                    .iter()
                    .zip(want)
                    .skip(1)
                    .all(|(d, w)| d.is_none() || *d == w);
            if !ok {
                return Err(invalid(format!(
                    "input {:?} has dims {dims:?}, the manifest says [N, {}, {}, {}]",
                    i.name, i.channels, i.height, i.width
                )));
            }
        }
        Ok(())
    }

    fn load_vanilla(dir: &Path, manifest: &Manifest) -> Result<(Master, Analysis), ModelError> {
        Self::load_standalone(dir, manifest, &manifest.vanilla)
    }

    /// Reads, hash-checks and analyses a standalone (unsliced) model file of the folder.
    fn load_standalone(
        dir: &Path,
        manifest: &Manifest,
        spec: &manifest::Vanilla,
    ) -> Result<(Master, Analysis), ModelError> {
        let (vpath, master) = read_master(dir, &spec.file, &spec.sha256)?;
        Self::check_io(manifest, &master, &vpath)?;
        let a = master
            .analyze(&BTreeMap::new(), manifest.input.channels)
            .map_err(in_file(&vpath))?;
        Ok((master, a))
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of `manifest.yaml` (which pins every other file by its hash).
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }

    /// Number of descendants in the ladder.
    pub fn num_descendants(&self) -> usize {
        self.manifest.descendants.len()
    }

    /// The manifest entry of descendant `index`.
    pub fn descendant(&self, index: usize) -> Option<&DescendantSpec> {
        self.manifest.descendants.get(index)
    }

    /// Input shape `[1, C, H, W]` of every plan.
    pub fn input_shape(&self) -> [usize; 4] {
        let i = &self.manifest.input;
        [1, i.channels, i.height, i.width]
    }

    /// Parameters of descendant `index` counted in the graph (Conv/Gemm weights and biases,
    /// BN scale and bias), for cross-checking the manifest.
    pub fn graph_params(&self, index: usize) -> Option<u64> {
        self.analyses.get(index).map(|a| a.params)
    }

    /// Parameters of the vanilla model counted in its graph.
    pub fn vanilla_graph_params(&self) -> u64 {
        self.vanilla_params
    }

    /// Bytes of the decoded master weights this model keeps for on-demand builds (0 once
    /// [`MultiCapacityModel::without_master`] dropped them).
    pub fn master_bytes(&self) -> u64 {
        self.master.as_ref().map_or(0, Master::weight_bytes)
    }

    /// True while the decoded master weights are in memory.
    pub fn holds_master(&self) -> bool {
        self.master.is_some()
    }

    /// This model without its decoded master weights: every later plan build (and
    /// [`MultiCapacityModel::descendant_proto`]) re-reads the master ONNX file, checks it
    /// against the manifest's SHA-256 and slices the descendant from it. Builds then cost the
    /// file's read, hash and decode (milliseconds) on top of the slice and optimize, and fail
    /// with [`ModelError::Hash`] if the file changed since loading; in exchange the model keeps
    /// only its ladder, graph analyses and BN statistics (kilobytes) between builds.
    pub fn without_master(mut self) -> Self {
        self.master = None;
        self
    }

    /// [`MultiCapacityModel::without_master`] for a shared model: drops the master weights if
    /// `model` is the only reference, otherwise returns it unchanged (the other owners keep the
    /// weights in memory).
    pub fn shed_master(model: std::sync::Arc<Self>) -> std::sync::Arc<Self> {
        match std::sync::Arc::try_unwrap(model) {
            Ok(m) => std::sync::Arc::new(m.without_master()),
            Err(shared) => shared,
        }
    }

    /// Reads the model's `fixtures.safetensors`.
    ///
    /// # Errors
    /// As [`Fixtures::load`].
    pub fn load_fixtures(&self) -> Result<Fixtures, ModelError> {
        Fixtures::load(&self.dir.join(&self.manifest.fixtures.file))
    }

    fn check_index(&self, index: usize) -> Result<(), ModelError> {
        if index >= self.num_descendants() {
            return Err(ModelError::NoSuchDescendant {
                index,
                count: self.num_descendants(),
            });
        }
        Ok(())
    }

    /// Descendant `index` as a standalone ONNX model: sliced, BN folded with its own statistics.
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`]; [`ModelError::Graph`] cannot happen for a loaded model.
    pub fn descendant_proto(&self, index: usize) -> Result<ModelProto, ModelError> {
        Ok(self.slice(index)?.proto)
    }

    fn slice(&self, index: usize) -> Result<graph::Sliced, ModelError> {
        self.check_index(index)?;
        let d = &self.manifest.descendants[index];
        let src = BnSource::Stats {
            stats: &self.bn,
            prefix: &d.bn_stats_prefix,
        };
        let a = &self.analyses[index];
        match &self.master {
            Some(m) => m.materialize(a, &src),
            None => {
                let onnx = &self.manifest.onnx;
                let (path, master) = read_master(&self.dir, &onnx.file, &onnx.sha256)?;
                master.materialize(a, &src).map_err(in_file(&path))
            }
        }
    }

    /// The vanilla model as a standalone ONNX model with BN folded.
    ///
    /// # Errors
    /// File errors if `vanilla.onnx` changed since loading.
    pub fn vanilla_proto(&self) -> Result<ModelProto, ModelError> {
        let (m, a) = Self::load_vanilla(&self.dir, &self.manifest)?;
        Ok(m.materialize(&a, &BnSource::Graph)?.proto)
    }

    /// Builds the optimized batch-1 plan of descendant `index` (slice, fold BN with its own
    /// statistics, tract optimize). Runs on the calling thread; takes milliseconds.
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`], [`ModelError::Tract`] if tract rejects the graph.
    pub fn build_plan(&self, index: usize) -> Result<DescendantPlan, ModelError> {
        self.check_index(index)?;
        let name = &self.manifest.descendants[index].name;
        self.build(name, Some(index), || self.slice(index))
    }

    /// Builds the plan of the vanilla model (re-reading `vanilla.onnx`, hash-checked); its
    /// build time therefore includes reading and decoding the file.
    ///
    /// # Errors
    /// File errors if `vanilla.onnx` changed since loading, [`ModelError::Tract`].
    pub fn build_vanilla_plan(&self) -> Result<DescendantPlan, ModelError> {
        self.build("vanilla", None, || {
            let (m, a) = Self::load_vanilla(&self.dir, &self.manifest)?;
            m.materialize(&a, &BnSource::Graph)
        })
    }

    /// Number of status-quo models: the vanilla model, then the manifest's standalone smaller
    /// models (`status_quo`, largest first).
    pub fn num_status_quo(&self) -> usize {
        1 + self.manifest.status_quo.len()
    }

    /// The manifest entry of status-quo model `level` (0: the vanilla model).
    pub fn status_quo_spec(&self, level: usize) -> Option<&manifest::Vanilla> {
        match level {
            0 => Some(&self.manifest.vanilla),
            k => self.manifest.status_quo.get(k - 1),
        }
    }

    /// Builds the plan of status-quo model `level` (0: [`Self::build_vanilla_plan`]; k: the
    /// k-th standalone smaller model), re-reading its file (hash-checked), as a user's node
    /// loads its one fixed model.
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`] for a level the manifest lacks; file errors;
    /// [`ModelError::Tract`].
    pub fn build_status_quo_plan(&self, level: usize) -> Result<DescendantPlan, ModelError> {
        let spec = self
            .status_quo_spec(level)
            .ok_or(ModelError::NoSuchDescendant {
                index: level,
                count: self.num_status_quo(),
            })?;
        if level == 0 {
            return self.build_vanilla_plan();
        }
        self.build("status_quo", None, || {
            let (m, a) = Self::load_standalone(&self.dir, &self.manifest, spec)?;
            m.materialize(&a, &BnSource::Graph)
        })
    }

    /// Builds a plan from the graph `slice` makes, timing the slicing and measuring memory
    /// from before it.
    fn build(
        &self,
        name: &str,
        index: Option<usize>,
        slice: impl FnOnce() -> Result<graph::Sliced, ModelError>,
    ) -> Result<DescendantPlan, ModelError> {
        let started = Instant::now();
        let measure = ThreadMeasure::start();
        let sliced = slice()?;
        let slice_time = started.elapsed();
        let job = BuildJob {
            proto: sliced.proto,
            name,
            index,
            input_shape: self.input_shape(),
            classes: self.manifest.output.classes,
            started,
            slice_time,
            weight_bytes: sliced.weight_bytes,
            measure,
        };
        DescendantPlan::build(&self.onnx, job)
    }
}
