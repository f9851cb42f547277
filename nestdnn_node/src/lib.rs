//! NestDNN: resource-aware multi-tenant on-device CNN inference for ROS 2.
//!
//! The library knows nothing about ROS client libraries; the ROS adapters (pure-Rust DDS, r2r,
//! bag replay) sit at the edges and convert messages there.
//!
//! # Layout
//! - [`model`]: multi-capacity models: manifest, slicing descendants out of one ONNX file,
//!   BatchNorm folding, tract plans, switching policies.
//! - [`profile`]: on-device profiler (latency, build time, memory), cached on disk.
//! - [`preprocess`]: ROS image data (raw and compressed) to model input tensors.
//! - [`config`]: the one parameter model: params files and `-p` overrides
//!   ([`config::Params::from_ros_args`]) for every binary and replay; the node configuration,
//!   validated.
//! - [`interface`]: the nodes' ROS interface declared once: topics with their QoS, QoS
//!   profiles, log levels (no ROS client library).
//! - [`fsio`]: output files: never onto an input, checked before work, written atomically.
//! - [`scheduler`]: cost model and solvers that pick a descendant and a compute share per task.
//! - [`runtime`]: the multi-tenant task runtime: mailboxes, workers, share arbiter, counters.
//! - [`sim`]: the runtime's rules in virtual time: a deterministic executor of plans over frame
//!   arrivals (replay's default pacing, benchmarks).
//! - [`msgs`]: ROS 2 message types with CDR (de)serialisation.
//! - [`bag`]: rosbag2 reading (MCAP, sqlite3) and MCAP writing.
//! - [`replay`]: bag replay through the node core (deterministic on the simulator, or
//!   realtime), report, plot.
//! - [`monitor`]: machine resource readings (/proc, cgroup v2, battery) and the budget they imply.
//! - [`node`]: the node core [`node::app::App`] (split by concern: `frames`, `plans`,
//!   `control`) and the one node adapter [`node::ros`] over [`transport::RosNode`]; shutdown on
//!   signals, stamps, logging.
//! - [`transport`]: the [`transport::RosNode`] trait and its middleware implementations:
//!   pure-Rust DDS (feature `dds`), r2r (feature `r2r`).
//! - [`rosargs`]: the ROS 2 command line (`--ros-args`), name resolution, remaps, domain id.

pub mod bag;
pub mod config;
pub mod fsio;
pub mod interface;
pub mod model;
pub mod monitor;
pub mod msgs;
pub mod node;
pub mod preprocess;
pub mod profile;
pub mod replay;
pub mod rosargs;
pub mod runtime;
pub mod scheduler;
pub mod sim;
pub mod transport;
