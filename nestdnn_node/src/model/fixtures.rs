//! `fixtures.safetensors`: golden inputs and reference outputs of a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::ModelError;

/// Golden inputs (normalised and raw pixels) and reference logits per descendant.
#[derive(Debug, Clone)]
pub struct Fixtures {
    path: PathBuf,
    input_shape: [usize; 4],
    input: Vec<f32>,
    input_u8: Option<([usize; 3], Vec<u8>)>,
    labels: Option<Vec<i64>>,
    logits: BTreeMap<String, (usize, Vec<f32>)>,
}

fn ferr(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reads a tensor of the given dtype and rank; returns (shape, bytes).
pub(crate) fn tensor<'a>(
    st: &SafeTensors<'a>,
    path: &Path,
    key: &str,
    dtype: Dtype,
    rank: usize,
) -> Result<(Vec<usize>, &'a [u8]), ModelError> {
    let t = st
        .tensor(key)
        .map_err(|e| ferr(path, format!("tensor {key:?}: {e}")))?;
    if t.dtype() != dtype || t.shape().len() != rank {
        return Err(ferr(
            path,
            format!(
                "tensor {key:?} is {:?} {:?}, expected {dtype:?} of rank {rank}",
                t.dtype(),
                t.shape()
            ),
        ));
    }
    Ok((t.shape().to_vec(), t.data()))
}

impl Fixtures {
    /// Reads and checks a fixtures file.
    ///
    /// # Errors
    /// [`ModelError::Io`] if unreadable, [`ModelError::Safetensors`] naming the tensor that is
    /// missing or has the wrong dtype/shape.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            error: e,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses fixtures from the bytes of `path` (used in error messages).
    ///
    /// # Errors
    /// As [`Fixtures::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ModelError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| ferr(path, format!("not a safetensors file: {e}")))?;
        let (shape, data) = tensor(&st, path, "input", Dtype::F32, 4)?;
        let input_shape = [shape[0], shape[1], shape[2], shape[3]];
        let n = input_shape[0];
        if n == 0 {
            return Err(ferr(path, "tensor \"input\" holds no images"));
        }
        let input = le_f32(data);
        let input_u8 = if st.names().contains(&"input_u8") {
            let (s, d) = tensor(&st, path, "input_u8", Dtype::U8, 3)?;
            if s[0] != n {
                return Err(ferr(
                    path,
                    format!("input_u8 has {} images, input has {n}", s[0]),
                ));
            }
            Some(([s[0], s[1], s[2]], d.to_vec()))
        } else {
            None
        };
        let labels = if st.names().contains(&"label") {
            let (s, d) = tensor(&st, path, "label", Dtype::I64, 1)?;
            if s[0] != n {
                return Err(ferr(
                    path,
                    format!("label has {} entries, input has {n}", s[0]),
                ));
            }
            Some(
                d.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            )
        } else {
            None
        };
        let mut logits = BTreeMap::new();
        for name in st.names() {
            if let Some(d) = name.strip_suffix("/logits") {
                let (s, data) = tensor(&st, path, name, Dtype::F32, 2)?;
                if s[0] != n {
                    return Err(ferr(
                        path,
                        format!("{name} has {} rows, input has {n} images", s[0]),
                    ));
                }
                logits.insert(d.to_string(), (s[1], le_f32(data)));
            }
        }
        Ok(Fixtures {
            path: path.to_path_buf(),
            input_shape,
            input,
            input_u8,
            labels,
            logits,
        })
    }

    /// The file the fixtures came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of golden images.
    pub fn len(&self) -> usize {
        self.input_shape[0]
    }

    /// True if there are no images (never for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape `[n, C, H, W]` of the normalised inputs.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Normalised model input of image `i` (`C*H*W` values).
    pub fn input(&self, i: usize) -> Option<&[f32]> {
        let per: usize = self.input_shape[1..].iter().product();
        self.input.get(i * per..(i + 1) * per)
    }

    /// Raw gray pixels of image `i` and its `(height, width)`, if the file has `input_u8`.
    pub fn input_u8(&self, i: usize) -> Option<(&[u8], usize, usize)> {
        let (s, d) = self.input_u8.as_ref()?;
        let per = s[1] * s[2];
        Some((d.get(i * per..(i + 1) * per)?, s[1], s[2]))
    }

    /// Ground-truth class of image `i`, if the file has labels.
    pub fn label(&self, i: usize) -> Option<i64> {
        self.labels.as_ref()?.get(i).copied()
    }

    /// Names with reference logits (descendant names and `vanilla`).
    pub fn logit_names(&self) -> impl Iterator<Item = &str> {
        self.logits.keys().map(String::as_str)
    }

    /// Reference logits of `name` (a descendant or `vanilla`) for image `i`.
    pub fn logits(&self, name: &str, i: usize) -> Option<&[f32]> {
        let (c, d) = self.logits.get(name)?;
        d.get(i * c..(i + 1) * c)
    }
}
