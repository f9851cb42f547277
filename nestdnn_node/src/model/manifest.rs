//! `manifest.yaml`: the description of one multi-capacity model (format: `docs/model-format.md`).
//!
//! Unknown keys are ignored (forward compatibility: the offline stage may add fields).
//! [`Manifest::from_yaml`] parses and checks everything that can be checked without the other
//! files (ladder order, tie groups, input spec); [`super::MultiCapacityModel::load`] then checks
//! the manifest against the ONNX graph, the BatchNorm statistics and the file hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The only manifest format version this runtime reads.
pub const FORMAT_VERSION: u32 = 1;

/// Parsed `manifest.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must be [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Task name (the folder name by convention).
    pub task: String,
    /// Training data set, e.g. `fashion-mnist`.
    pub dataset: String,
    /// Backbone family, e.g. `vgg` or `resnet`.
    pub architecture: String,
    /// Class names; index = class id.
    pub labels: Vec<String>,
    /// What the model expects as input.
    pub input: InputSpec,
    /// What the model produces.
    pub output: OutputSpec,
    /// The master ONNX file (the largest descendant).
    pub onnx: OnnxFile,
    /// Per-descendant BatchNorm running statistics.
    pub bn_stats: FileRef,
    /// Golden inputs and outputs.
    pub fixtures: FileRef,
    /// Every sliced Conv, in graph order.
    pub layers: Vec<Layer>,
    /// The conventionally trained, unpruned baseline model.
    pub vanilla: Vanilla,
    /// The capacity ladder, smallest first.
    pub descendants: Vec<DescendantSpec>,
    /// Optional standalone smaller models, largest first (same fields as [`Vanilla`]): what a
    /// user trains today to get a cheaper fixed model (the forge exports its pruned and
    /// retrained roadmap models here). Not nested and never served by the node: the
    /// benchmark's status quo levels beyond the vanilla model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_quo: Vec<Vanilla>,
}

/// Colour space the runtime converts camera pixels to before normalising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// One channel, luminance.
    Gray,
    /// Three channels in R, G, B order.
    Rgb,
}

/// Model input description: `x = (pixel * scale - mean[c]) / std[c]`, layout NCHW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// ONNX input name.
    pub name: String,
    /// Must be `NCHW`.
    pub layout: String,
    /// 1 (gray) or 3 (rgb).
    pub channels: usize,
    /// Colour the camera pixels are converted to.
    pub color: Color,
    /// Input height in pixels.
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// Multiplier applied to the 8-bit pixel value (usually 1/255).
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: Vec<f32>,
}

impl InputSpec {
    /// Number of f32 values in one input image (`channels * height * width`).
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when the input has no elements (never for a validated manifest).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Model output description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// ONNX output name.
    pub name: String,
    /// Number of classes (length of the logits vector).
    pub classes: usize,
}

/// A file next to the manifest with its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// File name relative to the model folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// The master ONNX file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxFile {
    /// File name relative to the model folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// ONNX operator set the file was exported with.
    pub opset: i64,
}

/// One sliced Conv layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Name of the Conv's weight initializer.
    pub name: String,
    /// Output channels in `model.onnx` (the largest descendant).
    pub out_channels: usize,
    /// Tie group: layers meeting at a residual `Add` share one width in every descendant.
    #[serde(default)]
    pub tie: Option<String>,
}

/// The vanilla (status-quo) model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vanilla {
    /// File name relative to the model folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// Top-1 accuracy on the held-out split, fraction 0..1.
    pub accuracy: f64,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Parameters (incl. BN affine, excluding running statistics).
    pub params: u64,
    /// Accuracy on the cross-domain set, if any.
    #[serde(default)]
    pub cross_domain_accuracy: Option<f64>,
}

/// One rung of the capacity ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescendantSpec {
    /// Descendant name, e.g. `d0`.
    pub name: String,
    /// Output channels per sliced Conv (keyed by weight initializer name).
    pub channels: BTreeMap<String, usize>,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Parameters (incl. BN affine, excluding running statistics).
    pub params: u64,
    /// Top-1 accuracy on the held-out split, fraction 0..1.
    pub accuracy: f64,
    /// Accuracy on the cross-domain set, if any.
    #[serde(default)]
    pub cross_domain_accuracy: Option<f64>,
    /// Key prefix of this descendant's tensors in `bn_stats.safetensors` (and fixtures).
    pub bn_stats_prefix: String,
}

fn invalid(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains('\\') && s != "." && s != ".."
}

impl Manifest {
    /// Parses `text` (the content of the file at `path`, used in error messages) and checks
    /// everything that does not need the other files.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] for YAML/schema errors, [`ModelError::Invalid`] for
    /// inconsistent content; both name the file and what to fix.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Self, ModelError> {
        let m: Manifest = serde_yaml::from_str(text).map_err(|e| ModelError::Manifest {
            path: path.to_path_buf(),
            error: e,
        })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Index of the largest descendant (the one stored in `model.onnx`).
    pub fn largest(&self) -> usize {
        self.descendants.len().saturating_sub(1)
    }

    /// Checks the manifest's internal consistency; `path` is used in error messages.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] naming the first problem found and what to fix.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        if self.format_version != FORMAT_VERSION {
            return Err(invalid(
                path,
                format!(
                    "format_version is {}, this runtime reads version {FORMAT_VERSION}",
                    self.format_version
                ),
            ));
        }
        if self.task.trim().is_empty() {
            return Err(invalid(path, "task is empty"));
        }
        let inp = &self.input;
        if inp.layout != "NCHW" {
            return Err(invalid(
                path,
                format!("input.layout is {:?}, must be \"NCHW\"", inp.layout),
            ));
        }
        let want_channels = match inp.color {
            Color::Gray => 1,
            Color::Rgb => 3,
        };
        if inp.channels != want_channels {
            return Err(invalid(
                path,
                format!(
                    "input.channels is {} but input.color {:?} needs {want_channels}",
                    inp.channels, inp.color
                ),
            ));
        }
        if inp.height == 0 || inp.width == 0 || inp.height > 4096 || inp.width > 4096 {
            return Err(invalid(
                path,
                format!(
                    "input.height x width = {} x {} must be 1..=4096 each",
                    inp.height, inp.width
                ),
            ));
        }
        if !(inp.scale.is_finite() && inp.scale > 0.0) {
            return Err(invalid(
                path,
                format!("input.scale {} must be finite and > 0", inp.scale),
            ));
        }
        if inp.mean.len() != inp.channels || inp.std.len() != inp.channels {
            return Err(invalid(
                path,
                format!(
                    "input.mean and input.std need {} value(s) each (one per channel), got {} and {}",
                    inp.channels,
                    inp.mean.len(),
                    inp.std.len()
                ),
            ));
        }
        if inp.mean.iter().any(|m| !m.is_finite())
            || inp.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(invalid(
                path,
                "input.mean must be finite and input.std finite and > 0",
            ));
        }
        if self.output.classes == 0 {
            return Err(invalid(path, "output.classes must be > 0"));
        }
        if self.labels.len() != self.output.classes {
            return Err(invalid(
                path,
                format!(
                    "labels has {} entries but output.classes is {}",
                    self.labels.len(),
                    self.output.classes
                ),
            ));
        }
        for (what, file, sha) in [
            ("onnx", &self.onnx.file, &self.onnx.sha256),
            ("bn_stats", &self.bn_stats.file, &self.bn_stats.sha256),
            ("fixtures", &self.fixtures.file, &self.fixtures.sha256),
            ("vanilla", &self.vanilla.file, &self.vanilla.sha256),
        ]
        .into_iter()
        .chain(
            self.status_quo
                .iter()
                .map(|m| ("status_quo", &m.file, &m.sha256)),
        ) {
            if !is_plain_file_name(file) {
                return Err(invalid(
                    path,
                    format!("{what}.file {file:?} must be a plain file name in the model folder"),
                ));
            }
            if !is_sha256_hex(sha) {
                return Err(invalid(
                    path,
                    format!("{what}.sha256 {sha:?} is not 64 lower-case hex digits"),
                ));
            }
        }
        if !(9..=18).contains(&self.onnx.opset) {
            return Err(invalid(
                path,
                format!(
                    "onnx.opset {} is outside 9..=18 (tract supports those); export with 17",
                    self.onnx.opset
                ),
            ));
        }
        self.validate_layers(path)?;
        self.validate_ladder(path)
    }

    fn validate_layers(&self, path: &Path) -> Result<(), ModelError> {
        if self.layers.is_empty() {
            return Err(invalid(path, "layers is empty: list every sliced Conv"));
        }
        let mut seen = HashSet::new();
        let mut tie_width: HashMap<&str, usize> = HashMap::new();
        for l in &self.layers {
            if !seen.insert(l.name.as_str()) {
                return Err(invalid(path, format!("layer {:?} is listed twice", l.name)));
            }
            if l.out_channels == 0 {
                return Err(invalid(
                    path,
                    format!("layer {:?} has out_channels 0", l.name),
                ));
            }
            if let Some(t) = &l.tie {
                let w = *tie_width.entry(t).or_insert(l.out_channels);
                if w != l.out_channels {
                    return Err(invalid(
                        path,
                        format!(
                            "tie group {t:?}: layer {:?} has out_channels {} but the group's first layer has {w}",
                            l.name, l.out_channels
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_ladder(&self, path: &Path) -> Result<(), ModelError> {
        if self.descendants.is_empty() {
            return Err(invalid(
                path,
                "descendants is empty: at least one descendant is needed",
            ));
        }
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        for (k, d) in self.descendants.iter().enumerate() {
            let charset_ok = d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if d.name.is_empty()
                || d.name == "vanilla"
                || !charset_ok
                || !names.insert(d.name.as_str())
            {
                return Err(invalid(
                    path,
                    format!(
                        "descendant #{k} name {:?} is empty, duplicated, reserved (vanilla) or not made of A-Z a-z 0-9 _ . -",
                        d.name
                    ),
                ));
            }
            if !prefixes.insert(d.bn_stats_prefix.as_str()) {
                return Err(invalid(
                    path,
                    format!(
                        "descendant {:?}: bn_stats_prefix {:?} is used twice",
                        d.name, d.bn_stats_prefix
                    ),
                ));
            }
            if !(0.0..=1.0).contains(&d.accuracy) {
                return Err(invalid(
                    path,
                    format!(
                        "descendant {:?}: accuracy {} is not a fraction 0..1",
                        d.name, d.accuracy
                    ),
                ));
            }
            for l in &self.layers {
                let Some(&c) = d.channels.get(&l.name) else {
                    return Err(invalid(
                        path,
                        format!(
                            "descendant {:?} has no channels entry for layer {:?}",
                            d.name, l.name
                        ),
                    ));
                };
                if c == 0 || c > l.out_channels {
                    return Err(invalid(
                        path,
                        format!(
                            "descendant {:?}: layer {:?} has {c} channels, must be 1..={}",
                            d.name, l.name, l.out_channels
                        ),
                    ));
                }
            }
            if let Some(extra) = d
                .channels
                .keys()
                .find(|n| !self.layers.iter().any(|l| &l.name == *n))
            {
                return Err(invalid(
                    path,
                    format!(
                        "descendant {:?} names channels for {extra:?}, which is not in layers",
                        d.name
                    ),
                ));
            }
            let mut tie_width: HashMap<&str, (usize, &str)> = HashMap::new();
            for l in &self.layers {
                if let Some(t) = &l.tie {
                    let c = d.channels[&l.name];
                    let (w, first) = *tie_width.entry(t).or_insert((c, l.name.as_str()));
                    if w != c {
                        return Err(invalid(
                            path,
                            format!(
                                "descendant {:?}: tie group {t:?} needs one width but {first:?} has {w} and {:?} has {c}",
                                d.name, l.name
                            ),
                        ));
                    }
                }
            }
            if k > 0 {
                let prev = &self.descendants[k - 1];
                for l in &self.layers {
                    if d.channels[&l.name] < prev.channels[&l.name] {
                        return Err(invalid(
                            path,
                            format!(
                                "ladder order: layer {:?} shrinks from {} in {:?} to {} in {:?}; list descendants smallest first, nested",
                                l.name, prev.channels[&l.name], prev.name, d.channels[&l.name], d.name
                            ),
                        ));
                    }
                }
                if d.accuracy < prev.accuracy {
                    return Err(invalid(
                        path,
                        format!(
                            "ladder order: accuracy drops from {} ({:?}) to {} ({:?}); the contract needs non-decreasing accuracy",
                            prev.accuracy, prev.name, d.accuracy, d.name
                        ),
                    ));
                }
            }
        }
        let largest = &self.descendants[self.largest()];
        for l in &self.layers {
            if largest.channels[&l.name] != l.out_channels {
                return Err(invalid(
                    path,
                    format!(
                        "the largest descendant {:?} must use all {} channels of layer {:?} (model.onnx is the largest descendant), it uses {}",
                        largest.name, l.out_channels, l.name, largest.channels[&l.name]
                    ),
                ));
            }
        }
        Ok(())
    }
}
