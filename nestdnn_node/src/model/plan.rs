//! Optimized tract plans for one descendant, and per-thread run states.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::ModelError;
use crate::profile::alloc::ThreadMeasure;

/// How a plan came to be and what it costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildStats {
    /// Wall time of slice + BN fold + tract parse/optimize, on the building thread.
    pub build_time: Duration,
    /// Of which slicing and BN folding.
    pub slice_time: Duration,
    /// Bytes of the descendant's (sliced, folded) f32 weights.
    pub weight_bytes: u64,
    /// Heap bytes the finished plan holds, measured by the counting allocator
    /// (`None` when [`crate::profile::alloc::CountingAlloc`] is not the global allocator).
    pub measured_plan_bytes: Option<u64>,
    /// Highest transient heap use above the start level while building (`None` as above).
    pub peak_build_bytes: Option<u64>,
}

/// Everything [`DescendantPlan::build`] needs besides the tract framework.
pub(crate) struct BuildJob<'a> {
    pub(crate) proto: ModelProto,
    pub(crate) name: &'a str,
    pub(crate) index: Option<usize>,
    pub(crate) input_shape: [usize; 4],
    pub(crate) classes: usize,
    pub(crate) started: Instant,
    pub(crate) slice_time: Duration,
    pub(crate) weight_bytes: u64,
    pub(crate) measure: ThreadMeasure,
}

#[derive(Debug)]
struct PlanInner {
    plan: Arc<TypedSimplePlan>,
    name: String,
    index: Option<usize>,
    input_shape: [usize; 4],
    classes: usize,
    stats: BuildStats,
}

/// An optimized batch-1 tract plan for one descendant (or the vanilla model).
///
/// Cheap to clone (an `Arc`), `Send + Sync`. A frame holding a clone keeps the plan alive even
/// after a switch replaced it in its [`super::ModelSlot`].
#[derive(Debug, Clone)]
pub struct DescendantPlan {
    inner: Arc<PlanInner>,
}

/// Time spent in one node of an optimized plan (see [`PlanState::op_times`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// tract node name (derived from the ONNX node names).
    pub node: String,
    /// tract operator, e.g. `Conv`, `OptMatMul`, `Max`.
    pub op: String,
    /// Median wall time per run, microseconds.
    pub micros: f64,
}

/// Per-thread execution state of a [`DescendantPlan`] (tract's states are `Send`, not `Sync`).
#[derive(Debug)]
pub struct PlanState {
    plan: DescendantPlan,
    state: TypedSimpleState,
}

fn tract_err(what: String) -> impl FnOnce(TractError) -> ModelError {
    move |e| ModelError::Tract {
        what,
        source: e.into(),
    }
}

impl DescendantPlan {
    /// Builds a plan from an already sliced and folded proto, filling in build time and
    /// memory from `job`'s start time and measurement.
    pub(crate) fn build(onnx: &tract_onnx::Onnx, job: BuildJob<'_>) -> Result<Self, ModelError> {
        let BuildJob {
            proto,
            name,
            index,
            input_shape,
            classes,
            started,
            slice_time,
            weight_bytes,
            measure,
        } = job;
        let what = |stage: &str| format!("descendant {name:?}: {stage}");
        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(tract_err(what("parsing the sliced graph")))?;
        drop(proto);
        model
            .set_input_fact(0, f32::fact(input_shape).into())
            .map_err(tract_err(what("setting the batch-1 input fact")))?;
        let typed = model
            .into_optimized()
            .map_err(tract_err(what("optimizing")))?;
        let out_fact = typed
            .output_fact(0)
            .map_err(tract_err(what("reading the output fact")))?;
        let want = [1usize, classes];
        let shape = out_fact.shape.as_concrete().map(<[usize]>::to_vec);
        if shape.as_deref() != Some(&want[..]) {
            return Err(ModelError::Graph {
                what: format!(
                    "descendant {name:?}: output shape is {:?}, the manifest says [1, {classes}]",
                    out_fact.shape
                ),
            });
        }
        let plan = typed
            .into_runnable()
            .map_err(tract_err(what("making the plan runnable")))?;
        let build_time = started.elapsed();
        let measured = measure.finish();
        let stats = BuildStats {
            build_time,
            slice_time,
            weight_bytes,
            measured_plan_bytes: measured.map(|m| m.retained),
            peak_build_bytes: measured.map(|m| m.peak),
        };
        Ok(DescendantPlan {
            inner: Arc::new(PlanInner {
                plan,
                name: name.to_string(),
                index,
                input_shape,
                classes,
                stats,
            }),
        })
    }

    /// Descendant name (`vanilla` for the vanilla model).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Index in the ladder, `None` for the vanilla model.
    pub fn index(&self) -> Option<usize> {
        self.inner.index
    }

    /// Input shape `[1, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.inner.input_shape
    }

    /// Number of f32 values one input image has (`C * H * W`).
    pub fn input_len(&self) -> usize {
        self.inner.input_shape.iter().product()
    }

    /// Length of the logits vector.
    pub fn classes(&self) -> usize {
        self.inner.classes
    }

    /// Build time and memory.
    pub fn stats(&self) -> &BuildStats {
        &self.inner.stats
    }

    /// Bytes the plan keeps in memory: measured when the counting allocator is installed,
    /// else the descendant's weight bytes (tract's packed copies are 1.0-1.35x that).
    pub fn plan_bytes(&self) -> u64 {
        self.inner
            .stats
            .measured_plan_bytes
            .unwrap_or(self.inner.stats.weight_bytes)
    }

    /// True if `self` and `other` are the same built plan (not merely the same descendant).
    pub fn same_plan(&self, other: &DescendantPlan) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A fresh run state for the calling thread.
    ///
    /// # Errors
    /// [`ModelError::Tract`] if tract cannot create the state.
    pub fn spawn(&self) -> Result<PlanState, ModelError> {
        let state = self.inner.plan.spawn().map_err(tract_err(format!(
            "descendant {:?}: spawning a state",
            self.name()
        )))?;
        Ok(PlanState {
            plan: self.clone(),
            state,
        })
    }
}

impl PlanState {
    /// The plan this state runs.
    pub fn plan(&self) -> &DescendantPlan {
        &self.plan
    }

    /// Runs one image (`C*H*W` f32 values, NCHW, already normalised) and returns the logits.
    ///
    /// # Errors
    /// [`ModelError::InputLength`] if `input` has the wrong length, [`ModelError::Tract`] if
    /// tract fails.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let shape = self.plan.inner.input_shape;
        let want = self.plan.input_len();
        if input.len() != want {
            return Err(ModelError::InputLength {
                expected: want,
                got: input.len(),
            });
        }
        let name = &self.plan.inner.name;
        let t = Tensor::from_shape(&shape, input)
            .map_err(tract_err(format!("descendant {name:?}: input tensor")))?;
        let out = self
            .state
            .run(tvec!(t.into_tvalue()))
            .map_err(tract_err(format!("descendant {name:?}: running")))?;
        let first = out.first().ok_or_else(|| ModelError::Graph {
            what: format!("descendant {name:?}: no output"),
        })?;
        let view = first.try_as_plain_ram().map_err(tract_err(format!(
            "descendant {name:?}: reading the output"
        )))?;
        let logits = view.as_slice::<f32>().map_err(tract_err(format!(
            "descendant {name:?}: reading the output"
        )))?;
        Ok(logits.to_vec())
    }

    /// Runs `input` `runs` times timing every node; returns the median time of each node in
    /// plan order (diagnostics: where a descendant's latency goes).
    ///
    /// # Errors
    /// As [`PlanState::run`].
    pub fn op_times(&mut self, input: &[f32], runs: usize) -> Result<Vec<OpTime>, ModelError> {
        let want = self.plan.input_len();
        if input.len() != want {
            return Err(ModelError::InputLength {
                expected: want,
                got: input.len(),
            });
        }
        let shape = self.plan.inner.input_shape;
        let name = self.plan.inner.name.clone();
        let mut samples: Vec<(String, String, Vec<f64>)> = Vec::new();
        for _ in 0..runs.max(1) {
            let t = Tensor::from_shape(&shape, input)
                .map_err(tract_err(format!("descendant {name:?}: input tensor")))?;
            let mut k = 0;
            self.state
                .run_plan_with_eval(tvec!(t.into_tvalue()), |ctx, st, node, inputs| {
                    let t0 = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                    let us = t0.elapsed().as_secs_f64() * 1e6;
                    if samples.len() <= k {
                        samples.push((node.name.clone(), node.op().name().to_string(), Vec::new()));
                    }
                    samples[k].2.push(us);
                    k += 1;
                    r
                })
                .map_err(tract_err(format!("descendant {name:?}: running")))?;
        }
        Ok(samples
            .into_iter()
            .map(|(node, op, mut t)| {
                t.sort_by(f64::total_cmp);
                OpTime {
                    node,
                    op,
                    micros: t[t.len() / 2],
                }
            })
            .collect())
    }
}
