//! Camera accuracy: each descendant's top-1 measured on labelled frames from the cameras a
//! task is served from, stored beside the model as `accuracy.yaml` and preferred by the
//! planner over the manifest's validation accuracy.
//!
//! The manifest's accuracies come from the training pipeline's validation images. A camera
//! sees those scenes differently (JPEG artefacts, a ROI in a larger frame, defocus), and the
//! larger descendants can lose more of their edge there than the smaller ones: a planner that
//! pays for capacity the camera's frames do not reward wastes CPU. `nestdnn calibrate`
//! measures the ladder on a labelled recording and writes this file (format below,
//! `docs/calibration.md`); [`CameraAccuracy::load`] reads and checks it.
//!
//! ```yaml
//! format_version: 1
//! task: objects_vgg
//! manifest_sha256: 5926...          # the manifest it was measured for
//! source: calibration_heavy (...)   # where the frames came from
//! frames: 2000
//! descendants:
//! - {name: d0, accuracy: 0.7715, correct: 1543}
//! vanilla: {accuracy: 0.853, correct: 1706}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModelError, MultiCapacityModel};

/// File name of the camera-accuracy calibration in a model folder.
pub const ACCURACY_FILE: &str = "accuracy.yaml";

/// The only `format_version` this build reads and writes.
pub const ACCURACY_FORMAT_VERSION: u32 = 1;

/// One model's top-1 over the calibration frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredAccuracy {
    /// Descendant name (`d0`, ...); absent for the vanilla model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Top-1 over the frames, fraction 0..1.
    pub accuracy: f64,
    /// Frames classified right.
    pub correct: u64,
}

/// A model's camera-accuracy calibration (`accuracy.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraAccuracy {
    /// [`ACCURACY_FORMAT_VERSION`].
    pub format_version: u32,
    /// The manifest's task.
    pub task: String,
    /// SHA-256 of the `manifest.yaml` it was measured for (a re-forged model needs a new
    /// calibration).
    pub manifest_sha256: String,
    /// Where the frames came from (bag, topic, how they were made).
    pub source: String,
    /// Number of labelled frames.
    pub frames: u64,
    /// Every descendant, in manifest order.
    pub descendants: Vec<MeasuredAccuracy>,
    /// The vanilla model, for the record (the planner does not use it).
    pub vanilla: Option<MeasuredAccuracy>,
}

impl CameraAccuracy {
    /// Builds a calibration of `model` from per-descendant counts of right answers over
    /// `frames` frames.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] if the counts do not match the ladder or exceed `frames`.
    pub fn new(
        model: &MultiCapacityModel,
        source: String,
        frames: u64,
        correct: &[u64],
        vanilla_correct: Option<u64>,
    ) -> Result<Self, ModelError> {
        if correct.len() != model.num_descendants() {
            return Err(ModelError::Invalid {
                path: model.dir().join(ACCURACY_FILE),
                what: format!(
                    "{} counts for {} descendants",
                    correct.len(),
                    model.num_descendants()
                ),
            });
        }
        let frac = |c: u64| c as f64 / frames.max(1) as f64;
        let c = CameraAccuracy {
            format_version: ACCURACY_FORMAT_VERSION,
            task: model.manifest().task.clone(),
            manifest_sha256: model.manifest_sha256().to_string(),
            source,
            frames,
            descendants: model
                .manifest()
                .descendants
                .iter()
                .zip(correct)
                .map(|(d, &c)| MeasuredAccuracy {
                    name: Some(d.name.clone()),
                    accuracy: frac(c),
                    correct: c,
                })
                .collect(),
            vanilla: vanilla_correct.map(|c| MeasuredAccuracy {
                name: None,
                accuracy: frac(c),
                correct: c,
            }),
        };
        c.check(model, &model.dir().join(ACCURACY_FILE))?;
        Ok(c)
    }

    /// Reads `accuracy.yaml` from `model`'s folder: `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`ModelError::Io`] if it exists but cannot be read, [`ModelError::Invalid`] if it is not
    /// valid YAML of this format, was measured for another manifest (re-run `nestdnn calibrate`)
    /// or disagrees with the ladder.
    pub fn load(model: &MultiCapacityModel) -> Result<Option<Self>, ModelError> {
        let path = model.dir().join(ACCURACY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ModelError::Io { path, error }),
        };
        let c: CameraAccuracy = serde_yaml::from_str(&text).map_err(|e| ModelError::Invalid {
            path: path.clone(),
            what: format!("not a camera-accuracy file (docs/calibration.md): {e}"),
        })?;
        c.check(model, &path)?;
        Ok(Some(c))
    }

    fn check(&self, model: &MultiCapacityModel, path: &Path) -> Result<(), ModelError> {
        let bad = |what: String| ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        if self.format_version != ACCURACY_FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not {ACCURACY_FORMAT_VERSION}",
                self.format_version
            )));
        }
        let m = model.manifest();
        if self.task != m.task {
            return Err(bad(format!(
                "measured for task {:?}, the model is {:?}",
                self.task, m.task
            )));
        }
        if self.manifest_sha256 != model.manifest_sha256() {
            return Err(bad(format!(
                "measured for another version of the model (manifest SHA-256 {}, the model's is {}); re-measure it with `nestdnn calibrate {} --write` or delete the file",
                self.manifest_sha256,
                model.manifest_sha256(),
                model.dir().display()
            )));
        }
        if self.frames == 0 {
            return Err(bad("measured on 0 frames".into()));
        }
        let names: Vec<_> = self
            .descendants
            .iter()
            .map(|d| d.name.as_deref().unwrap_or(""))
            .collect();
        let want: Vec<_> = m.descendants.iter().map(|d| d.name.as_str()).collect();
        if names != want {
            return Err(bad(format!(
                "descendants {names:?}, the manifest has {want:?}"
            )));
        }
        for d in self.descendants.iter().chain(&self.vanilla) {
            let what = d.name.as_deref().unwrap_or("vanilla");
            if !(d.accuracy.is_finite() && (0.0..=1.0).contains(&d.accuracy)) {
                return Err(bad(format!(
                    "{what}: accuracy {} is not a fraction in [0, 1]",
                    d.accuracy
                )));
            }
            if d.correct > self.frames {
                return Err(bad(format!(
                    "{what}: {} right of {} frames",
                    d.correct, self.frames
                )));
            }
        }
        Ok(())
    }

    /// The accuracies the planner uses, in manifest order.
    pub fn accuracies(&self) -> Vec<f64> {
        self.descendants.iter().map(|d| d.accuracy).collect()
    }

    /// As YAML (what [`CameraAccuracy::load`] reads).
    ///
    /// # Errors
    /// The serializer's error (not expected for this plain structure).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let body = serde_yaml::to_string(self)?;
        Ok(format!(
            "# generated by `nestdnn calibrate`; format: docs/calibration.md\n{body}"
        ))
    }
}

/// Half-width of the 95 % normal-approximation interval of a top-1 `p` over `n` frames.
pub fn ci95_half_width(p: f64, n: u64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    1.96 * (p * (1.0 - p) / n as f64).sqrt()
}
