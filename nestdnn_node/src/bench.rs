//! `nestdnn bench multitenant` (issue 7): NestDNN against the resource-agnostic status quo on
//! the committed models, on this machine.
//!
//! - [`workload`]: the workload, fixed before any result (apps, arrivals, budgets,
//!   background load, settings, systems and the comparison's definitions).

pub mod workload;
