//! Node wiring shared by the transports: the ROS-free node core ([`app`]), shutdown on
//! signals, throttled logging, stamps.

pub mod app;
pub mod shutdown;
pub mod throttle;

pub use shutdown::Shutdown;

use crate::msgs::{Header, Time};

/// Current wall-clock time as a ROS stamp.
pub fn now_stamp() -> Time {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Time::from_nanos(ns)
}

/// A header stamped now with `frame_id`.
pub fn header_now(frame_id: &str) -> Header {
    Header {
        stamp: now_stamp(),
        frame_id: frame_id.to_string(),
    }
}

/// Initialises `env_logger` from the ROS log level (`RUST_LOG` still wins), quietening the
/// chatty DDS crates to warnings unless the level is debug.
pub fn init_logging(level: Option<crate::rosargs::LogLevel>) {
    let filter = level
        .map(|l| l.to_filter())
        .unwrap_or(log::LevelFilter::Info);
    let mut b = env_logger::Builder::new();
    b.filter_level(filter);
    if filter < log::LevelFilter::Debug {
        for noisy in ["rustdds", "ros2_client"] {
            b.filter_module(noisy, log::LevelFilter::Warn.min(filter));
        }
        // RustDDS warns about discovery details that are harmless on loopback
        // (docs/ros2-notes.md P12).
        b.filter_module("rustdds::rtps", log::LevelFilter::Error.min(filter));
        b.filter_module("rustdds::network", log::LevelFilter::Error.min(filter));
    }
    b.format_timestamp_millis();
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let _ = b.try_init();
}
