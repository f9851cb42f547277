//! Capacity ladders (what each descendant costs and delivers) and task specifications.

use std::sync::Arc;

use serde::Serialize;

use super::SchedulerError;
use crate::model::{CameraAccuracy, Manifest, MultiCapacityModel, SwitchPolicy};
use crate::profile::ModelProfile;

/// One descendant as the scheduler sees it: accuracy from the manifest, latency, build time and
/// plan memory from the on-device profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    /// Descendant name, e.g. `d3`.
    pub name: String,
    /// Top-1 accuracy, fraction 0..1.
    pub accuracy: f64,
    /// Median single-frame inference latency on one core, seconds (> 0).
    pub latency_s: f64,
    /// Build time of the descendant's plan (on-demand switch cost), seconds (>= 0).
    pub build_s: f64,
    /// Bytes the built plan keeps in memory.
    pub plan_bytes: u64,
}

/// A task's capacity ladder, in manifest order (index = descendant index).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ladder {
    rungs: Vec<Rung>,
    master_bytes: u64,
    best_accuracy: f64,
}

impl Ladder {
    /// Builds and checks a ladder. `master_bytes` is what an on-demand slot keeps besides its
    /// active plan (the decoded master weights); `None` uses the largest `plan_bytes`.
    ///
    /// # Errors
    /// [`SchedulerError::EmptyLadder`]; [`SchedulerError::InvalidRung`] if an accuracy is not in
    /// [0, 1], a latency is not finite and > 0, or a build time is not finite and >= 0.
    pub fn new(
        task: &str,
        rungs: Vec<Rung>,
        master_bytes: Option<u64>,
    ) -> Result<Self, SchedulerError> {
        if rungs.is_empty() {
            return Err(SchedulerError::EmptyLadder {
                task: task.to_string(),
            });
        }
        if rungs.len() > u16::MAX as usize {
            return Err(SchedulerError::InvalidRung {
                task: task.to_string(),
                descendant: String::new(),
                field: "ladder length",
                value: rungs.len().to_string(),
                allowed: "at most 65535 descendants",
            });
        }
        for r in &rungs {
            let bad = |field, value: f64, allowed| SchedulerError::InvalidRung {
                task: task.to_string(),
                descendant: r.name.clone(),
                field,
                value: value.to_string(),
                allowed,
            };
            if !(r.accuracy.is_finite() && (0.0..=1.0).contains(&r.accuracy)) {
                return Err(bad("accuracy", r.accuracy, "a fraction in [0, 1]"));
            }
            if !(r.latency_s.is_finite() && r.latency_s > 0.0) {
                return Err(bad("latency_s", r.latency_s, "finite and > 0 seconds"));
            }
            if !(r.build_s.is_finite() && r.build_s >= 0.0) {
                return Err(bad("build_s", r.build_s, "finite and >= 0 seconds"));
            }
        }
        let best_accuracy = rungs.iter().map(|r| r.accuracy).fold(0.0, f64::max);
        let master_bytes =
            master_bytes.unwrap_or_else(|| rungs.iter().map(|r| r.plan_bytes).max().unwrap_or(0));
        Ok(Ladder {
            rungs,
            master_bytes,
            best_accuracy,
        })
    }

    /// The ladder of a model: accuracy from its manifest; median latency, build time and plan
    /// memory from its on-device profile; master bytes from the profile.
    ///
    /// # Errors
    /// [`SchedulerError::ProfileMismatch`] if the profile's descendants are not the manifest's
    /// (count or names; re-profile the model), and as [`Ladder::new`].
    pub fn from_profile(
        manifest: &Manifest,
        profile: &ModelProfile,
    ) -> Result<Self, SchedulerError> {
        let accuracies: Vec<f64> = manifest.descendants.iter().map(|d| d.accuracy).collect();
        Self::from_profile_with(manifest, profile, &accuracies)
    }

    /// As [`Ladder::from_profile`], with descendant d's accuracy `accuracies[d]` (manifest
    /// order; the caller has checked the length against the manifest).
    fn from_profile_with(
        manifest: &Manifest,
        profile: &ModelProfile,
        accuracies: &[f64],
    ) -> Result<Self, SchedulerError> {
        let task = &manifest.task;
        let mismatch = |what: String| SchedulerError::ProfileMismatch {
            task: task.clone(),
            what,
        };
        if profile.descendants.len() != manifest.descendants.len() {
            return Err(mismatch(format!(
                "the profile has {} descendants, the manifest {}",
                profile.descendants.len(),
                manifest.descendants.len()
            )));
        }
        let rungs = manifest
            .descendants
            .iter()
            .zip(&profile.descendants)
            .zip(accuracies)
            .map(|((m, p), &accuracy)| {
                if m.name != p.name {
                    return Err(mismatch(format!(
                        "profile descendant {:?} where the manifest has {:?}",
                        p.name, m.name
                    )));
                }
                Ok(Rung {
                    name: m.name.clone(),
                    accuracy,
                    latency_s: p.latency_ms_median / 1e3,
                    build_s: p.build_ms / 1e3,
                    plan_bytes: p.plan_bytes,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ladder::new(task, rungs, Some(profile.master_bytes))
    }

    /// The ladder the planner uses for `model`: as [`Ladder::from_profile`], with each
    /// descendant's accuracy measured on camera frames (`accuracy.yaml`, see
    /// [`CameraAccuracy`]) where the model folder has one. Returns the ladder and where its
    /// accuracies come from (`manifest` or the calibration's source).
    ///
    /// # Errors
    /// As [`Ladder::from_profile`]; [`SchedulerError::Calibration`] if `accuracy.yaml` exists
    /// but is unreadable, stale or invalid (the message says how to fix it).
    pub fn for_model(
        model: &MultiCapacityModel,
        profile: &ModelProfile,
    ) -> Result<(Self, String), SchedulerError> {
        let cam = CameraAccuracy::load(model).map_err(|e| SchedulerError::Calibration {
            task: model.manifest().task.clone(),
            what: e.to_string(),
        })?;
        match cam {
            None => Ok((
                Self::from_profile(model.manifest(), profile)?,
                "manifest".into(),
            )),
            // `CameraAccuracy::load` checked its descendants against the manifest's.
            Some(c) => Ok((
                Self::from_profile_with(model.manifest(), profile, &c.accuracies())?,
                format!("camera ({}, {} frames)", c.source, c.frames),
            )),
        }
    }

    /// This ladder with latencies measured in operation: `observed[d]` (seconds per frame of
    /// thread CPU time, e.g. from the runtime's counters) replaces descendant d's latency;
    /// descendants without an observation are scaled by the median ratio observed/profiled
    /// of those with one (cold caches and interference slow every descendant alike). Entries
    /// that are missing, not finite or not > 0 are ignored; with none left the ladder is
    /// returned unchanged.
    pub fn calibrated(&self, observed: &[Option<f64>]) -> Ladder {
        let obs = |d: usize| {
            observed
                .get(d)
                .copied()
                .flatten()
                .filter(|x| x.is_finite() && *x > 0.0)
        };
        let mut ratios: Vec<f64> = (0..self.rungs.len())
            .filter_map(|d| obs(d).map(|o| o / self.rungs[d].latency_s))
            .collect();
        if ratios.is_empty() {
            return self.clone();
        }
        ratios.sort_by(f64::total_cmp);
        let ratio = ratios[ratios.len() / 2];
        let mut out = self.clone();
        for (d, r) in out.rungs.iter_mut().enumerate() {
            r.latency_s = obs(d).unwrap_or(r.latency_s * ratio);
        }
        out
    }

    /// The descendants, in manifest order.
    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    /// Number of descendants (>= 1).
    pub fn len(&self) -> usize {
        self.rungs.len()
    }

    /// Always false (a ladder has at least one descendant).
    pub fn is_empty(&self) -> bool {
        self.rungs.is_empty()
    }

    /// Index of the largest descendant (the last one; the vanilla architecture).
    pub fn largest(&self) -> usize {
        self.rungs.len() - 1
    }

    /// A_max: the best accuracy in the ladder.
    pub fn best_accuracy(&self) -> f64 {
        self.best_accuracy
    }

    /// Bytes of the master weights an on-demand slot keeps.
    pub fn master_bytes(&self) -> u64 {
        self.master_bytes
    }

    /// Memory a task running descendant `d` holds under `policy`: resident = every plan;
    /// on-demand = master weights + the active plan; one-copy = the active plan. Out-of-range
    /// `d` counts as the largest.
    pub fn memory_bytes(&self, d: usize, policy: SwitchPolicy) -> u64 {
        let plan = || {
            self.rungs
                .get(d)
                .or(self.rungs.last())
                .map_or(0, |r| r.plan_bytes)
        };
        match policy {
            SwitchPolicy::Resident => self.rungs.iter().map(|r| r.plan_bytes).sum(),
            SwitchPolicy::OnDemand => self.master_bytes + plan(),
            SwitchPolicy::OneCopy => plan(),
        }
    }
}

/// One configured task as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Task name (unique).
    pub name: String,
    /// Weight w_i of the task's cost (> 0).
    pub priority: f64,
    /// Desired frame rate; tau_i = 1 / target_fps (> 0).
    pub target_fps: f64,
    /// False: never planned until enabled.
    pub enabled: bool,
    /// The task's capacity ladder.
    pub ladder: Arc<Ladder>,
}

impl TaskSpec {
    /// Checks priority and target frame rate.
    ///
    /// # Errors
    /// [`SchedulerError::InvalidPriority`], [`SchedulerError::InvalidTargetFps`].
    pub fn validate(&self) -> Result<(), SchedulerError> {
        if !(self.priority.is_finite() && self.priority > 0.0) {
            return Err(SchedulerError::InvalidPriority {
                task: self.name.clone(),
                value: self.priority,
            });
        }
        if !(self.target_fps.is_finite() && self.target_fps > 0.0) {
            return Err(SchedulerError::InvalidTargetFps {
                task: self.name.clone(),
                value: self.target_fps,
            });
        }
        Ok(())
    }
}
