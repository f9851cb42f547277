//! `nestdnn bench multitenant` (issue 7): NestDNN against the resource-agnostic status quo on
//! the committed models, on this machine.
//!
//! - [`workload`]: the workload, fixed before any result (apps, arrivals, budgets,
//!   background load, settings, systems and the comparison's definitions).
//! - [`data`]: the labelled frames of the bundled recording and the offline pass of every
//!   descendant over them.
//! - [`load`]: the background load process.
//! - [`harness`]: real runs of every system at once on the task runtime.
//! - [`curves`]: accuracy-vs-frame-rate curves and the gains.
//! - [`simulate`]: the same runs in virtual time ([`crate::sim`]), to validate the
//!   simulation against the real runs.
//! - [`report`]: the JSON report, the README table and the SVG plots.

pub mod curves;
pub mod data;
pub mod harness;
pub mod load;
pub mod report;
pub mod simulate;
pub mod workload;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The recording, its sidecar or the frames are unusable.
    #[error("benchmark data: {what}")]
    Data {
        /// What is wrong.
        what: String,
    },
    /// A model could not be loaded, built or run.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The task runtime refused an operation.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The planner refused an input.
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    /// The resource monitor could not read the machine.
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    /// A report could not be read or is not a report of this benchmark.
    #[error("report {path}: {what}")]
    Report {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
}
