//! Node wiring shared by the transports: the ROS-free node core ([`app`]), shutdown on
//! signals, throttled logging, stamps.

pub mod app;
mod control;
pub mod frames;
pub mod plans;
pub mod ros;
pub mod shutdown;
pub mod throttle;

pub use shutdown::Shutdown;

use std::sync::atomic::{AtomicI64, Ordering};

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

/// The clock the node stamps what it publishes with (plans, diagnostics, class names): the
/// wall clock, or with `use_sim_time` the ROS time of the latest `/clock` message
/// (`rosgraph_msgs/Clock`; zero until the first one arrives, as in rclcpp). Only stamps follow
/// it: the timers that pace the node (frame rates, CPU shares, dwell, idle and budget
/// timeouts, calibration, the diagnostics period) run on the machine's monotonic clock.
#[derive(Debug)]
pub struct NodeClock {
    sim: bool,
    /// Nanoseconds of the latest `/clock` message (sim time only).
    sim_now: AtomicI64,
}

impl NodeClock {
    /// The wall clock (`use_sim_time: false`).
    pub fn wall() -> NodeClock {
        NodeClock::new(false)
    }

    /// `/clock`-driven time if `use_sim_time`, else the wall clock.
    pub fn new(use_sim_time: bool) -> NodeClock {
        NodeClock {
            sim: use_sim_time,
            sim_now: AtomicI64::new(0),
        }
    }

    /// True if stamps come from `/clock`.
    pub fn is_sim(&self) -> bool {
        self.sim
    }

    /// A `/clock` message arrived: sim time is now `t` (also backwards: a bag played in a
    /// loop restarts its clock). Ignored on the wall clock.
    pub fn set(&self, t: Time) {
        if self.sim {
            self.sim_now.store(t.as_nanos(), Ordering::Relaxed);
        }
    }

    /// The time now on this clock.
    pub fn now(&self) -> Time {
        if self.sim {
            Time::from_nanos(self.sim_now.load(Ordering::Relaxed))
        } else {
            now_stamp()
        }
    }

    /// A header stamped [`NodeClock::now`] with `frame_id`.
    pub fn header(&self, frame_id: &str) -> Header {
        Header {
            stamp: self.now(),
            frame_id: frame_id.to_string(),
        }
    }
}

impl Default for NodeClock {
    fn default() -> Self {
        NodeClock::wall()
    }
}

/// The `main` of a node binary: installs signal handling, runs `run` with it, and turns the
/// outcome into the exit status (an error is printed as `NAME: error: ...` with its causes).
pub fn main_with<E: std::fmt::Display>(
    name: &str,
    run: impl FnOnce(Shutdown) -> Result<(), E>,
) -> std::process::ExitCode {
    let shutdown = match Shutdown::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: cannot install signal handling: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(shutdown) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Initialises `env_logger` from the ROS log level (`RUST_LOG` still wins), quietening the
/// chatty DDS crates to warnings unless the level is debug.
pub fn init_logging(level: Option<crate::interface::LogLevel>) {
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
        // (docs/ros2.md, section 8).
        b.filter_module("rustdds::rtps", log::LevelFilter::Error.min(filter));
        b.filter_module("rustdds::network", log::LevelFilter::Error.min(filter));
    }
    b.format_timestamp_millis();
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let _ = b.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_follows_clock_messages_wall_clock_ignores_them() {
        let sim = NodeClock::new(true);
        assert!(sim.is_sim());
        assert_eq!(sim.now(), Time::default(), "zero before the first /clock");
        let t = Time {
            sec: 42,
            nanosec: 7,
        };
        sim.set(t);
        assert_eq!(sim.now(), t);
        assert_eq!(sim.header("f").stamp, t);
        assert_eq!(sim.header("f").frame_id, "f");
        let back = Time { sec: 1, nanosec: 0 };
        sim.set(back);
        assert_eq!(sim.now(), back, "a restarted bag clock goes back");

        let wall = NodeClock::wall();
        assert!(!wall.is_sim());
        wall.set(t);
        let now = wall.now();
        assert!(now.sec > 1_600_000_000, "wall clock: {now:?}");
        let sys = now_stamp();
        assert!((sys.as_secs_f64() - now.as_secs_f64()).abs() < 5.0);
    }
}
