//! Switching a task between descendants: resident plans or on-demand builds.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::{DescendantPlan, ModelError, MultiCapacityModel};

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
    /// Creates a slot for `model` running descendant `initial`.
    ///
    /// `Resident` builds every plan now (sequentially, on this thread) and does not keep the
    /// master weights; `OnDemand` builds `initial` now and starts the background builder.
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
            SwitchPolicy::OnDemand => {
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
            SwitchPolicy::OnDemand => {
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

    /// Bytes the slot keeps: resident = all plans; on-demand = master weights + active plan.
    pub fn memory_bytes(&self) -> u64 {
        let sh = &self.shared;
        match sh.policy {
            SwitchPolicy::Resident => sh.resident.iter().map(DescendantPlan::plan_bytes).sum(),
            SwitchPolicy::OnDemand => {
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
