//! A task's model slot: the descendants' optimized tract plans and the per-thread states
//! that run them (one frame: [`ModelSlot::run`] -> [`PlanState::run`]), and switching a task
//! between descendants: resident plans or on-demand builds.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::{ModelError, MultiCapacityModel};
use crate::profile::alloc::ThreadMeasure;
use crate::runtime::{InferenceModel, Served};

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

/// How a [`ModelSlot`] holds its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchPolicy {
    /// Every descendant's plan is built at start; a switch is a pointer swap (microseconds).
    /// Memory: the sum of all plans (no master weights kept).
    Resident,
    /// Only the master weights and the active plan are kept; a switch builds the target plan
    /// on a background thread (milliseconds) and then swaps. Memory: master + active plan
    /// (+ the target plan while it is being built).
    OnDemand,
    /// One copy of the multi-capacity model, as the paper's runtime holds it: only the active
    /// descendant's plan is kept. A switch re-reads the master file (hash-checked), slices the
    /// target, builds its plan on a background thread and swaps; the master weights are
    /// dropped again ([`MultiCapacityModel::without_master`]). Memory: the active plan
    /// (+ the master weights and the target plan while building). A switch costs the file's
    /// read, hash and decode on top of an on-demand build.
    OneCopy,
}

/// One completed switch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwitchRecord {
    /// Descendant index before the switch.
    pub from: usize,
    /// Descendant index after the switch.
    pub to: usize,
    /// From the (latest) request to the swap: what a task waits before frames use the new plan.
    pub latency: Duration,
    /// Plan build time (on-demand only).
    pub build: Option<Duration>,
}

#[derive(Debug)]
struct Active {
    index: usize,
    plan: DescendantPlan,
}

#[derive(Debug, Default)]
struct Status {
    target: usize,
    requested_at: Option<Instant>,
    building: bool,
    last: Option<SwitchRecord>,
    switches: u64,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    task: String,
    policy: SwitchPolicy,
    count: usize,
    active: ArcSwap<Active>,
    resident: Vec<DescendantPlan>,
    model: Option<Arc<MultiCapacityModel>>,
    status: Mutex<Status>,
    idle: Condvar,
}

/// The descendant a task currently runs, switchable without blocking frames.
///
/// Frames call [`ModelSlot::current`] (a lock-free load) and keep the returned plan for the
/// whole frame, so a switch that happens meanwhile neither blocks nor disturbs them: the old
/// plan lives until its last frame drops it.
#[derive(Debug)]
pub struct ModelSlot {
    shared: Arc<Shared>,
    tx: Option<Sender<()>>,
    worker: Option<JoinHandle<()>>,
}

impl ModelSlot {
    /// Runs the planned descendant on `input` (one frame) with this thread's `state`: the
    /// descendant in force now ([`ModelSlot::current`]; a switch never blocks a frame), its
    /// per-thread tract state made or remade when the descendant changed. Returns the
    /// descendant's index and the logits.
    ///
    /// # Errors
    /// [`ModelError`] when the state cannot be made or tract fails.
    pub fn run(
        &self,
        state: &mut Option<PlanState>,
        input: &[f32],
    ) -> Result<(usize, Vec<f32>), ModelError> {
        let (index, plan) = self.current();
        let st = match state {
            Some(s) if s.plan().same_plan(&plan) => s,
            _ => state.insert(plan.spawn()?),
        };
        Ok((index, st.run(input)?))
    }

    /// Creates a slot for `model` running descendant `initial`.
    ///
    /// `Resident` builds every plan now (sequentially, on this thread) and does not keep the
    /// master weights; `OnDemand` builds `initial` now and starts the background builder;
    /// `OneCopy` does the same after dropping the model's master weights when this slot holds
    /// the only reference to `model` (otherwise the weights stay in memory and
    /// [`ModelSlot::memory_bytes`] counts them).
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`], plan build errors, [`ModelError::Io`] if the builder
    /// thread cannot be started.
    pub fn new(
        model: Arc<MultiCapacityModel>,
        policy: SwitchPolicy,
        initial: usize,
    ) -> Result<Self, ModelError> {
        let count = model.num_descendants();
        if initial >= count {
            return Err(ModelError::NoSuchDescendant {
                index: initial,
                count,
            });
        }
        match policy {
            SwitchPolicy::Resident => {
                let plans = (0..count)
                    .map(|i| model.build_plan(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::resident_from_plans(&model.manifest().task, plans, initial)
            }
            SwitchPolicy::OnDemand | SwitchPolicy::OneCopy => {
                let model = if policy == SwitchPolicy::OneCopy {
                    MultiCapacityModel::shed_master(model)
                } else {
                    model
                };
                let plan = model.build_plan(initial)?;
                let shared = Arc::new(Shared {
                    task: model.manifest().task.clone(),
                    policy,
                    count,
                    active: ArcSwap::from_pointee(Active {
                        index: initial,
                        plan,
                    }),
                    resident: Vec::new(),
                    model: Some(model.clone()),
                    status: Mutex::new(Status {
                        target: initial,
                        ..Default::default()
                    }),
                    idle: Condvar::new(),
                });
                let (tx, rx) = crossbeam_channel::unbounded();
                let s = shared.clone();
                let worker = std::thread::Builder::new()
                    .name(format!("nestdnn-switch-{}", shared.task))
                    .spawn(move || builder(s, rx))
                    .map_err(|e| ModelError::Io {
                        path: model.dir().to_path_buf(),
                        error: e,
                    })?;
                Ok(ModelSlot {
                    shared,
                    tx: Some(tx),
                    worker: Some(worker),
                })
            }
        }
    }

    /// A resident slot from plans built elsewhere (e.g. by the profiler), ladder order.
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`] if `initial` is not an index of `plans`.
    pub fn resident_from_plans(
        task: &str,
        plans: Vec<DescendantPlan>,
        initial: usize,
    ) -> Result<Self, ModelError> {
        let count = plans.len();
        let plan = plans
            .get(initial)
            .cloned()
            .ok_or(ModelError::NoSuchDescendant {
                index: initial,
                count,
            })?;
        let shared = Arc::new(Shared {
            task: task.to_string(),
            policy: SwitchPolicy::Resident,
            count,
            active: ArcSwap::from_pointee(Active {
                index: initial,
                plan,
            }),
            resident: plans,
            model: None,
            status: Mutex::new(Status {
                target: initial,
                ..Default::default()
            }),
            idle: Condvar::new(),
        });
        Ok(ModelSlot {
            shared,
            tx: None,
            worker: None,
        })
    }

    /// The slot's policy.
    pub fn policy(&self) -> SwitchPolicy {
        self.shared.policy
    }

    /// Number of descendants.
    pub fn num_descendants(&self) -> usize {
        self.shared.count
    }

    /// The descendant frames use now, and its plan (keep the plan for the whole frame).
    pub fn current(&self) -> (usize, DescendantPlan) {
        let a = self.shared.active.load();
        (a.index, a.plan.clone())
    }

    /// The descendant most recently requested (equals `current().0` once a switch completed).
    pub fn target(&self) -> usize {
        self.shared.status.lock().target
    }

    /// Asks for descendant `index`. Resident: swapped before this returns. On-demand: returns
    /// at once; the plan is built in the background and swapped in when ready (a newer
    /// request supersedes an older one still queued).
    ///
    /// # Errors
    /// [`ModelError::NoSuchDescendant`].
    pub fn request(&self, index: usize) -> Result<(), ModelError> {
        let sh = &self.shared;
        if index >= sh.count {
            return Err(ModelError::NoSuchDescendant {
                index,
                count: sh.count,
            });
        }
        match sh.policy {
            SwitchPolicy::Resident => {
                let t0 = Instant::now();
                let mut st = sh.status.lock();
                let from = sh.active.load().index;
                st.target = index;
                if from == index {
                    return Ok(());
                }
                sh.active.store(Arc::new(Active {
                    index,
                    plan: sh.resident[index].clone(),
                }));
                st.last = Some(SwitchRecord {
                    from,
                    to: index,
                    latency: t0.elapsed(),
                    build: None,
                });
                st.switches += 1;
            }
            SwitchPolicy::OnDemand | SwitchPolicy::OneCopy => {
                let mut st = sh.status.lock();
                st.target = index;
                st.requested_at = Some(Instant::now());
                if sh.active.load().index == index && !st.building {
                    return Ok(());
                }
                st.building = true;
                drop(st);
                if let Some(tx) = &self.tx {
                    // The builder only exits when `tx` is dropped, so this cannot fail.
                    let _ = tx.send(());
                }
            }
        }
        Ok(())
    }

    /// Waits until the requested descendant is active (or its build failed); true if idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.status.lock();
        while st.building {
            if self.shared.idle.wait_until(&mut st, deadline).timed_out() {
                return !st.building;
            }
        }
        true
    }

    /// The last completed switch.
    pub fn last_switch(&self) -> Option<SwitchRecord> {
        self.shared.status.lock().last
    }

    /// Number of completed switches.
    pub fn switch_count(&self) -> u64 {
        self.shared.status.lock().switches
    }

    /// The last background build error, if any (the slot then stays on its current plan).
    pub fn last_error(&self) -> Option<String> {
        self.shared.status.lock().last_error.clone()
    }

    /// Bytes the slot keeps: resident = all plans; on-demand = master weights + active plan;
    /// one-copy = the active plan (+ the master weights if another owner of the model keeps
    /// them).
    pub fn memory_bytes(&self) -> u64 {
        let sh = &self.shared;
        match sh.policy {
            SwitchPolicy::Resident => sh.resident.iter().map(DescendantPlan::plan_bytes).sum(),
            SwitchPolicy::OnDemand | SwitchPolicy::OneCopy => {
                sh.model.as_ref().map_or(0, |m| m.master_bytes())
                    + sh.active.load().plan.plan_bytes()
            }
        }
    }
}

fn builder(sh: Arc<Shared>, rx: Receiver<()>) {
    let Some(model) = sh.model.clone() else {
        return;
    };
    while rx.recv().is_ok() {
        while rx.try_recv().is_ok() {}
        loop {
            let (target, requested_at) = {
                let st = sh.status.lock();
                (st.target, st.requested_at)
            };
            let from = sh.active.load().index;
            if target == from {
                break;
            }
            let t0 = Instant::now();
            match model.build_plan(target) {
                Ok(plan) => {
                    let build = t0.elapsed();
                    let mut st = sh.status.lock();
                    sh.active.store(Arc::new(Active {
                        index: target,
                        plan,
                    }));
                    let latency = requested_at.map_or(build, |r| r.elapsed());
                    st.last = Some(SwitchRecord {
                        from,
                        to: target,
                        latency,
                        build: Some(build),
                    });
                    st.switches += 1;
                }
                Err(e) => {
                    log::error!(
                        "task {:?}: building descendant {target} failed: {e}",
                        sh.task
                    );
                    let mut st = sh.status.lock();
                    st.last_error = Some(e.to_string());
                    if st.target == target {
                        st.target = from;
                    }
                }
            }
        }
        let mut st = sh.status.lock();
        if st.target == sh.active.load().index {
            st.building = false;
            sh.idle.notify_all();
        }
    }
}

impl Drop for ModelSlot {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A real task model: a [`ModelSlot`] (resident or on-demand switching); inputs are
/// pre-processed `C*H*W` tensors, outputs logits.
impl InferenceModel for ModelSlot {
    type Input = Vec<f32>;
    type Output = Vec<f32>;
    type Error = ModelError;
    type State = Option<PlanState>;

    fn new_state(&self) -> Result<Self::State, ModelError> {
        Ok(None)
    }

    fn run(
        &self,
        state: &mut Option<PlanState>,
        input: Vec<f32>,
    ) -> Result<Served<Vec<f32>>, ModelError> {
        let (descendant, output) = ModelSlot::run(self, state, &input)?;
        Ok(Served { descendant, output })
    }

    fn request_descendant(&self, index: usize) -> Result<(), ModelError> {
        self.request(index)
    }

    fn num_descendants(&self) -> usize {
        ModelSlot::num_descendants(self)
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_idle(timeout)
    }
}
