//! The model interface the runtime drives (implemented for [`crate::model::ModelSlot`] in
//! `model/slot.rs`), and a synthetic model that burns a given CPU time per frame (tests,
//! benches, demos).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::thread_cpu_time;

/// A result and the descendant that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<O> {
    /// Descendant index (ladder order) that ran the frame.
    pub descendant: usize,
    /// The model's output.
    pub output: O,
}

/// What the runtime needs from a task's model. `run` is called on the task's own worker
/// thread with that thread's state; `request_descendant` from the thread applying a plan, and
/// must not block for long (on-demand builds happen in the background).
pub trait InferenceModel: Send + Sync + 'static {
    /// One frame's input (e.g. a pre-processed tensor, or a camera image to pre-process).
    type Input: Send + 'static;
    /// One frame's result.
    type Output: Send + 'static;
    /// Errors of running or switching.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Per-worker-thread state.
    type State: Send + 'static;

    /// A fresh state for a worker thread.
    ///
    /// # Errors
    /// If the model cannot create one (the task then does not start).
    fn new_state(&self) -> Result<Self::State, Self::Error>;

    /// Runs one frame on the current descendant.
    ///
    /// # Errors
    /// The model's error; the frame is counted as an error and reported.
    fn run(
        &self,
        state: &mut Self::State,
        input: Self::Input,
    ) -> Result<Served<Self::Output>, Self::Error>;

    /// Asks for descendant `index` (takes effect for the next frames, possibly later).
    ///
    /// # Errors
    /// If `index` is out of range.
    fn request_descendant(&self, index: usize) -> Result<(), Self::Error>;

    /// Number of descendants.
    fn num_descendants(&self) -> usize;

    /// Waits up to `timeout` until the descendant last requested serves frames (an on-demand
    /// build finished); true if it does. The runtime calls it on the worker thread before the
    /// first frame after a task starts or resumes, so that frame runs on the planned
    /// descendant rather than on the one the slot held while idle. Default: true at once
    /// (switches take effect immediately).
    fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        true
    }
}

/// Errors of [`SpinModel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpinError {
    /// Descendant index out of range.
    #[error("descendant {index} is out of range: the model has {count}")]
    NoSuchDescendant {
        /// The index asked for.
        index: usize,
        /// Number of descendants.
        count: usize,
    },
    /// The input asked for a failure (tests of error paths).
    #[error("frame {0} failed on purpose")]
    Requested(u64),
}

/// A synthetic model whose descendant `d` burns `costs[d]` of thread CPU time per frame and
/// returns the input. An input of `u64::MAX` fails with [`SpinError::Requested`].
#[derive(Debug)]
pub struct SpinModel {
    costs: Vec<Duration>,
    current: AtomicUsize,
}

impl SpinModel {
    /// A model with one descendant per entry of `costs`, starting on `initial`
    /// (clamped to the ladder).
    pub fn new(costs: Vec<Duration>, initial: usize) -> Self {
        let initial = initial.min(costs.len().saturating_sub(1));
        SpinModel {
            costs,
            current: AtomicUsize::new(initial),
        }
    }
}

impl InferenceModel for SpinModel {
    type Input = u64;
    type Output = u64;
    type Error = SpinError;
    type State = ();

    fn new_state(&self) -> Result<(), SpinError> {
        Ok(())
    }

    fn run(&self, _state: &mut (), input: u64) -> Result<Served<u64>, SpinError> {
        let d = self.current.load(Ordering::Acquire);
        let cost = self.costs.get(d).copied().unwrap_or_default();
        if input == u64::MAX {
            return Err(SpinError::Requested(input));
        }
        spin_cpu(cost);
        Ok(Served {
            descendant: d,
            output: input,
        })
    }

    fn request_descendant(&self, index: usize) -> Result<(), SpinError> {
        if index >= self.costs.len() {
            return Err(SpinError::NoSuchDescendant {
                index,
                count: self.costs.len(),
            });
        }
        self.current.store(index, Ordering::Release);
        Ok(())
    }

    fn num_descendants(&self) -> usize {
        self.costs.len()
    }
}

/// Busy-loops until this thread has used `d` more CPU time (wall time if the thread clock is
/// unavailable).
pub fn spin_cpu(d: Duration) {
    let wall = std::time::Instant::now();
    match thread_cpu_time() {
        Some(start) => {
            while thread_cpu_time().is_some_and(|t| t.saturating_sub(start) < d) {
                std::hint::spin_loop();
            }
        }
        None => {
            while wall.elapsed() < d {
                std::hint::spin_loop();
            }
        }
    }
}
