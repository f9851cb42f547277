//! What a system runs for one app, with real model loads (issue 11, "a faithful status quo").
//!
//! * **NestDNN** ([`Tenant::nested`]): when the app starts, its multi-capacity model is loaded
//!   from disk ([`MultiCapacityModel::load`]: manifest, master weights, BN statistics, every
//!   hash checked) and the planned descendant is built ([`ModelSlot::new`] with
//!   [`super::workload::SWITCH_POLICY`]: one copy, so the decoded master weights are dropped
//!   and the slot keeps only the active plan). When the app stops the slot is dropped.
//!   Switches re-read the master file and build the target descendant in the background.
//! * **Status quo** ([`Tenant::fixed`]): one fixed model chosen up front, the app's vanilla
//!   model (trained conventionally, not a nested descendant) or one of its standalone smaller
//!   models (pruned from the vanilla model and retrained on their own; the sweep's levels).
//!   It is loaded on the app's first frame ([`MultiCapacityModel::build_status_quo_plan`]:
//!   the ONNX file read from disk, hash-checked, parsed and optimized by tract). The system's loaded models live in one
//!   [`Residency`]: when they exceed the memory budget, the least recently used model of
//!   another app is evicted, and that app reloads on its next frame, paying the load again.
//!
//! Both load on the app's worker thread, inside [`InferenceModel::run`]: the runtime charges
//! the load's thread CPU time to the app like inference (against its share), the frame that
//! triggered it waits for it, and frames that arrive meanwhile replace each other in the
//! app's mailbox (counted as dropped). [`Loads`] counts loads and their CPU.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use nestdnn::model::{DescendantPlan, ModelError, ModelSlot, MultiCapacityModel, PlanState};
use nestdnn::node::frames::top1;
use nestdnn::runtime::{thread_cpu_time, InferenceModel, Served};

/// Model loads of one system in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Loads {
    /// Every load (app starts and reloads).
    pub loads: u64,
    /// Loads of a model evicted while its app ran (status quo only).
    pub reloads: u64,
    /// Evictions (status quo only).
    pub evictions: u64,
    /// Thread CPU seconds of every load.
    pub load_cpu_s: f64,
    /// Of which reloads.
    pub reload_cpu_s: f64,
    /// Wall seconds of every load (the triggering frame waited that long).
    pub load_wall_s: f64,
}

impl std::ops::AddAssign for Loads {
    fn add_assign(&mut self, o: Loads) {
        self.loads += o.loads;
        self.reloads += o.reloads;
        self.evictions += o.evictions;
        self.load_cpu_s += o.load_cpu_s;
        self.reload_cpu_s += o.reload_cpu_s;
        self.load_wall_s += o.load_wall_s;
    }
}

impl Loads {
    fn record(&mut self, reload: bool, cpu_s: f64, wall_s: f64) {
        self.loads += 1;
        self.load_cpu_s += cpu_s;
        self.load_wall_s += wall_s;
        if reload {
            self.reloads += 1;
            self.reload_cpu_s += cpu_s;
        }
    }
}

/// Runs `f`, returning its value with the thread CPU and wall seconds it took.
fn measured<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let c0 = thread_cpu_time();
    let t0 = Instant::now();
    let v = f();
    let cpu = match (c0, thread_cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => 0.0,
    };
    (v, cpu, t0.elapsed().as_secs_f64())
}

#[derive(Debug)]
struct Resident {
    plan: DescendantPlan,
    bytes: u64,
    used: u64,
    generation: u64,
}

/// The status quo's loaded models in one system, at most `budget` bytes while more than one
/// is loaded: admitting a model evicts the least recently used models of other apps until the
/// total fits (a single model larger than the budget stays: the app could not run otherwise,
/// and the time over budget is reported).
#[derive(Debug)]
pub struct Residency {
    budget: u64,
    entries: Vec<Option<Resident>>,
    evicted: Vec<bool>,
    clock: u64,
    generation: u64,
    loads: Loads,
}

impl Residency {
    /// An empty residency for `apps` apps and a memory budget of `budget` bytes.
    pub fn new(apps: usize, budget: u64) -> Self {
        Residency {
            budget,
            entries: (0..apps).map(|_| None).collect(),
            evicted: vec![false; apps],
            clock: 0,
            generation: 0,
            loads: Loads::default(),
        }
    }

    /// The loaded plan of `app` and its generation (marks it used), `None` when not loaded.
    fn get(&mut self, app: usize) -> Option<(DescendantPlan, u64)> {
        self.clock += 1;
        let e = self.entries.get_mut(app)?.as_mut()?;
        e.used = self.clock;
        Some((e.plan.clone(), e.generation))
    }

    /// Admits `app`'s freshly loaded `plan` (loaded in `cpu_s` / `wall_s`), evicting other
    /// apps' models, least recently used first, while the total exceeds the budget. Returns
    /// the plan's generation.
    fn admit(&mut self, app: usize, plan: DescendantPlan, cpu_s: f64, wall_s: f64) -> u64 {
        let reload = self.evicted.get(app).copied().unwrap_or(false);
        self.loads.record(reload, cpu_s, wall_s);
        if let Some(e) = self.evicted.get_mut(app) {
            *e = false;
        }
        self.clock += 1;
        self.generation += 1;
        let bytes = plan.plan_bytes();
        if let Some(slot) = self.entries.get_mut(app) {
            *slot = Some(Resident {
                plan,
                bytes,
                used: self.clock,
                generation: self.generation,
            });
        }
        while self.total() > self.budget {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|&(i, e)| i != app && e.is_some())
                .min_by_key(|(_, e)| e.as_ref().map_or(u64::MAX, |e| e.used))
                .map(|(i, _)| i);
            let Some(v) = victim else { break };
            self.entries[v] = None;
            self.evicted[v] = true;
            self.loads.evictions += 1;
        }
        self.generation
    }

    /// `app` stopped: its model is unloaded (not an eviction; the next start loads it again).
    fn release(&mut self, app: usize) {
        if let Some(e) = self.entries.get_mut(app) {
            *e = None;
        }
        if let Some(e) = self.evicted.get_mut(app) {
            *e = false;
        }
    }

    /// Bytes of the loaded models.
    pub fn total(&self) -> u64 {
        self.entries.iter().flatten().map(|e| e.bytes).sum()
    }

    /// Bytes of `app`'s loaded model (0 when not loaded).
    pub fn bytes(&self, app: usize) -> u64 {
        self.entries
            .get(app)
            .and_then(Option::as_ref)
            .map_or(0, |e| e.bytes)
    }

    /// The loads so far.
    pub fn loads(&self) -> Loads {
        self.loads
    }
}

enum Kind {
    Nested {
        slot: RwLock<Option<ModelSlot>>,
        target: AtomicUsize,
        loads: Mutex<Loads>,
        /// Incremented on every stop, so that a load that finishes after its app stopped
        /// does not stay resident.
        epoch: AtomicU64,
    },
    Fixed {
        residency: Arc<Mutex<Residency>>,
        /// The app's status-quo model (index into its status-quo models).
        level: usize,
    },
}

/// The status-quo model app `model` runs at the sweep's `level`: its `level`-th model (0: the
/// vanilla model, then its standalone smaller models, largest first), or its smallest one
/// where it has fewer (the light apps ship only the vanilla model).
pub fn status_quo_model(model: &MultiCapacityModel, level: usize) -> usize {
    clamp_level(level, model.num_status_quo())
}

/// The model index that sweep `level` selects among an app's `count` status-quo models (its
/// smallest where it has fewer).
pub fn clamp_level(level: usize, count: usize) -> usize {
    level.min(count.saturating_sub(1))
}

/// One app in one system: its model with real loads; [`InferenceModel`] for the task
/// runtime. Inputs carry their frame index; the output says whether the top-1 class matches
/// the frame's ground truth.
pub struct Tenant {
    app: usize,
    model: Arc<MultiCapacityModel>,
    labels: Arc<Vec<usize>>,
    kind: Kind,
    /// Per descendant (the status quo: its one model), thread CPU seconds of inference alone
    /// summed over the frames it served, and their count (loads left out); sized at
    /// construction.
    inference: Mutex<Vec<(f64, u64)>>,
}

/// A worker thread's state: the tract state of the plan it runs and the plan's generation.
#[derive(Default)]
pub struct TenantState {
    plan: Option<PlanState>,
    generation: u64,
}

impl Tenant {
    /// NestDNN's tenant for app `app`: `model`'s folder is loaded from disk when the app
    /// starts (its first frame), at descendant `initial` or the one requested since.
    pub fn nested(
        app: usize,
        model: Arc<MultiCapacityModel>,
        labels: Arc<Vec<usize>>,
        initial: usize,
    ) -> Self {
        let inference = Mutex::new(vec![(0.0, 0); model.num_descendants()]);
        Tenant {
            app,
            model,
            labels,
            inference,
            kind: Kind::Nested {
                slot: RwLock::new(None),
                target: AtomicUsize::new(initial),
                loads: Mutex::new(Loads::default()),
                epoch: AtomicU64::new(0),
            },
        }
    }

    /// The status quo's tenant for app `app`: `model`'s status-quo model `level` (0: the
    /// vanilla model; k: its k-th standalone smaller model, or its smallest where it has
    /// fewer, see [`status_quo_model`]), loaded into the system's `residency`.
    pub fn fixed(
        app: usize,
        model: Arc<MultiCapacityModel>,
        labels: Arc<Vec<usize>>,
        residency: Arc<Mutex<Residency>>,
        level: usize,
    ) -> Self {
        let model_level = status_quo_model(&model, level);
        Tenant {
            app,
            model,
            labels,
            inference: Mutex::new(vec![(0.0, 0)]),
            kind: Kind::Fixed {
                residency,
                level: model_level,
            },
        }
    }

    /// The app stopped: its model is unloaded.
    pub fn stop(&self) {
        match &self.kind {
            Kind::Nested { slot, epoch, .. } => {
                epoch.fetch_add(1, Ordering::AcqRel);
                *slot.write() = None;
            }
            Kind::Fixed { residency, .. } => residency.lock().release(self.app),
        }
    }

    /// Bytes the app's loaded model holds (NestDNN: master + active plan; status quo: the
    /// vanilla plan while resident); 0 when not loaded.
    pub fn memory_bytes(&self) -> u64 {
        match &self.kind {
            Kind::Nested { slot, .. } => slot.read().as_ref().map_or(0, ModelSlot::memory_bytes),
            Kind::Fixed { residency, .. } => residency.lock().bytes(self.app),
        }
    }

    /// The loads of this tenant (NestDNN); the status quo's are the residency's.
    pub fn loads(&self) -> Option<Loads> {
        match &self.kind {
            Kind::Nested { loads, .. } => Some(*loads.lock()),
            Kind::Fixed { .. } => None,
        }
    }

    /// Per descendant (the status quo: its one model), the mean thread CPU seconds of
    /// inference alone per frame over the frames it served (`None`: none). Unlike the
    /// runtime's [`nestdnn::runtime::Runtime::cpu_per_frame`], which times the whole frame,
    /// this leaves out the model loads that some frames pay first.
    pub fn inference_cpu_per_frame(&self) -> Vec<Option<f64>> {
        self.inference
            .lock()
            .iter()
            .map(|&(sum, n)| (n > 0).then(|| sum / n as f64))
            .collect()
    }

    /// Adds one frame's inference on model `index`, `cpu_s` thread CPU seconds.
    fn record_inference(&self, index: usize, cpu_s: f64) {
        if let Some((sum, n)) = self.inference.lock().get_mut(index) {
            *sum += cpu_s;
            *n += 1;
        }
    }

    fn verdict(&self, frame: usize, logits: &[f32]) -> bool {
        self.labels.get(frame) == top1(logits).map(|(c, _)| c).as_ref()
    }

    fn run_nested(
        &self,
        state: &mut TenantState,
        frame: usize,
        input: &[f32],
    ) -> Result<Served<bool>, ModelError> {
        let Kind::Nested {
            slot,
            target,
            loads,
            epoch,
        } = &self.kind
        else {
            unreachable!("run_nested on a fixed tenant")
        };
        if slot.read().is_none() {
            // Load without holding the lock: the thread applying plans (request_descendant)
            // and stopping apps must never wait for a load. Only this app's worker loads.
            let started = epoch.load(Ordering::Acquire);
            let initial = target.load(Ordering::Relaxed);
            let dir = self.model.dir().to_path_buf();
            let (s, cpu, wall) = measured(|| {
                let m = MultiCapacityModel::load(&dir)?;
                ModelSlot::new(Arc::new(m), super::workload::SWITCH_POLICY, initial)
            });
            let s = s?;
            loads.lock().record(false, cpu, wall);
            let mut w = slot.write();
            if epoch.load(Ordering::Acquire) != started {
                // The app stopped while it loaded: drop the model, serve this frame with it.
                drop(w);
                let (r, cpu, _) = measured(|| s.run(&mut state.plan, input));
                let (descendant, logits) = r?;
                self.record_inference(descendant, cpu);
                state.plan = None;
                return Ok(Served {
                    descendant,
                    output: self.verdict(frame, &logits),
                });
            }
            // A descendant requested while the model loaded.
            let t = target.load(Ordering::Relaxed);
            if s.target() != t {
                s.request(t)?;
            }
            *w = Some(s);
            state.plan = None;
        }
        let r = slot.read();
        let s = r.as_ref().ok_or_else(|| ModelError::Graph {
            what: "the model was unloaded while a frame ran".into(),
        })?;
        let (r, cpu, _) = measured(|| s.run(&mut state.plan, input));
        let (descendant, logits) = r?;
        self.record_inference(descendant, cpu);
        Ok(Served {
            descendant,
            output: self.verdict(frame, &logits),
        })
    }

    fn run_fixed(
        &self,
        residency: &Mutex<Residency>,
        level: usize,
        state: &mut TenantState,
        frame: usize,
        input: &[f32],
    ) -> Result<Served<bool>, ModelError> {
        let hit = residency.lock().get(self.app);
        let (plan, generation) = match hit {
            Some(x) => x,
            None => {
                let (plan, cpu, wall) = measured(|| self.model.build_status_quo_plan(level));
                let plan = plan?;
                let g = residency.lock().admit(self.app, plan.clone(), cpu, wall);
                (plan, g)
            }
        };
        if state.generation != generation || state.plan.is_none() {
            state.plan = Some(plan.spawn()?);
            state.generation = generation;
        }
        let st = state.plan.as_mut().ok_or_else(|| ModelError::Graph {
            what: "no plan state".into(),
        })?;
        let (logits, cpu, _) = measured(|| st.run(input));
        let logits = logits?;
        self.record_inference(0, cpu);
        Ok(Served {
            descendant: 0,
            output: self.verdict(frame, &logits),
        })
    }
}

impl InferenceModel for Tenant {
    type Input = (usize, Vec<f32>);
    type Output = bool;
    type Error = ModelError;
    type State = TenantState;

    fn new_state(&self) -> Result<TenantState, ModelError> {
        Ok(TenantState::default())
    }

    fn run(
        &self,
        state: &mut TenantState,
        (frame, input): (usize, Vec<f32>),
    ) -> Result<Served<bool>, ModelError> {
        match &self.kind {
            Kind::Nested { .. } => self.run_nested(state, frame, &input),
            Kind::Fixed { residency, level } => {
                self.run_fixed(residency, *level, state, frame, &input)
            }
        }
    }

    fn request_descendant(&self, index: usize) -> Result<(), ModelError> {
        match &self.kind {
            Kind::Nested { slot, target, .. } => {
                let count = self.model.num_descendants();
                if index >= count {
                    return Err(ModelError::NoSuchDescendant { index, count });
                }
                target.store(index, Ordering::Relaxed);
                match slot.read().as_ref() {
                    Some(s) => s.request(index),
                    None => Ok(()),
                }
            }
            // The status quo never changes models.
            Kind::Fixed { .. } => Ok(()),
        }
    }

    fn num_descendants(&self) -> usize {
        match &self.kind {
            Kind::Nested { .. } => self.model.num_descendants(),
            Kind::Fixed { .. } => 1,
        }
    }
}

/// Work-conserving shares, as the OS shares a processor: `total` cores split max-min fairly
/// over the apps by their demand (`None`: not running, share 0). An app that needs less than
/// an equal share gets what it needs and the rest goes to the others; what no app needs is
/// split equally among the running apps. Each share is capped at one core (one worker
/// thread per app).
pub fn water_fill(demand: &[Option<f64>], total: f64) -> Vec<f64> {
    let mut share = vec![0.0; demand.len()];
    let mut open: Vec<usize> = (0..demand.len()).filter(|&i| demand[i].is_some()).collect();
    if open.is_empty() || total.is_nan() || total <= 0.0 {
        return share;
    }
    let running = open.clone();
    open.sort_by(|&a, &b| {
        demand[a]
            .unwrap_or(0.0)
            .total_cmp(&demand[b].unwrap_or(0.0))
    });
    let mut left = total;
    let mut n = open.len();
    for &i in &open {
        let fair = left / n as f64;
        // An unknown (non-finite) demand wants a whole core.
        let want = match demand[i] {
            Some(d) if d.is_finite() => d.clamp(0.0, 1.0),
            _ => 1.0,
        };
        let s = want.min(fair);
        share[i] = s;
        left -= s;
        n -= 1;
    }
    if left > 0.0 {
        let extra = left / running.len() as f64;
        for &i in &running {
            share[i] = (share[i] + extra).min(1.0);
        }
    }
    share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_gives_unneeded_share_to_the_others() {
        // Three apps on 0.9 cores: one needs 0.1, the others want more than a third.
        let s = water_fill(&[Some(0.1), Some(0.5), Some(0.6), None], 0.9);
        assert!((s[0] - 0.1).abs() < 1e-12, "{s:?}");
        assert!((s[1] - 0.4).abs() < 1e-12, "{s:?}");
        assert!((s[2] - 0.4).abs() < 1e-12, "{s:?}");
        assert_eq!(s[3], 0.0);
        assert!((s.iter().sum::<f64>() - 0.9).abs() < 1e-12);
        // Everyone satisfied: the rest is split equally, nothing is lost.
        let s = water_fill(&[Some(0.1), Some(0.2)], 1.0);
        assert!(
            (s[0] - 0.45).abs() < 1e-12 && (s[1] - 0.55).abs() < 1e-12,
            "{s:?}"
        );
        // Capped at one core per app.
        let s = water_fill(&[Some(3.0)], 4.0);
        assert_eq!(s, vec![1.0]);
        assert_eq!(water_fill(&[None, None], 1.0), vec![0.0, 0.0]);
        // An unknown demand takes a fair share.
        let s = water_fill(&[Some(f64::NAN), Some(0.1)], 0.5);
        assert!(
            (s[0] - 0.4).abs() < 1e-12 && (s[1] - 0.1).abs() < 1e-12,
            "{s:?}"
        );
    }
}
