//! On-device profiler: per-descendant latency, plan build time and memory, cached on disk.

pub mod alloc;
