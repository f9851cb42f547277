//! The nodes' ROS interface, declared once and free of any ROS client library: topic names
//! with their QoS, the QoS profiles themselves, and ROS log levels.
//!
//! The transports (`transport::{dds, r2r}`), the node adapter ([`crate::node::ros`]), the
//! resource monitor, bag replay and the tools all take topic names and profiles from here.
//! Names are relative (they resolve in the node's namespace, [`crate::rosargs::NameContext`])
//! unless they start with `/`.

/// DDS reliability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// No repair; what cameras publish (REP-2003 sensor data).
    BestEffort,
    /// Repaired and acknowledged.
    Reliable,
}

/// DDS durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Late joiners get nothing old.
    Volatile,
    /// Late joiners get the last `depth` samples ("latched").
    TransientLocal,
}

/// A QoS profile, independent of the middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    /// Reliability.
    pub reliability: Reliability,
    /// Durability.
    pub durability: Durability,
    /// History depth (keep last N).
    pub depth: u32,
}

impl Qos {
    /// ROS sensor-data profile: best effort, volatile, keep last 5 (cameras).
    pub const SENSOR_DATA: Qos = Qos {
        reliability: Reliability::BestEffort,
        durability: Durability::Volatile,
        depth: 5,
    };
    /// Latched state (budgets, plans, label info): reliable, transient local, depth 1.
    pub const LATCHED: Qos = Qos {
        reliability: Reliability::Reliable,
        durability: Durability::TransientLocal,
        depth: 1,
    };
    /// ROS default: reliable, volatile, keep last 10 (results, priorities, diagnostics).
    pub const RELIABLE: Qos = Qos {
        reliability: Reliability::Reliable,
        durability: Durability::Volatile,
        depth: 10,
    };
    /// rclcpp's `ClockQoS` for `/clock` (with `use_sim_time`): best effort, volatile, keep
    /// last 1 (matches reliable and best-effort clock publishers alike).
    pub const CLOCK: Qos = Qos {
        reliability: Reliability::BestEffort,
        durability: Durability::Volatile,
        depth: 1,
    };
}

/// A topic of the nodes' interface: its name and the QoS the nodes use on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    /// The name (relative unless it starts with `/`).
    pub name: &'static str,
    /// The QoS profile.
    pub qos: Qos,
}

impl Topic {
    /// The name as it reads in the root namespace (`/nestdnn/plan`): the names bags and
    /// replay use.
    pub fn in_root(&self) -> String {
        if self.name.starts_with('/') {
            self.name.to_string()
        } else {
            format!("/{}", self.name)
        }
    }
}

/// `nestdnn_msgs/ResourceBudget` in: what perception may use (latched).
pub const BUDGET: Topic = Topic {
    name: "nestdnn/resource_budget",
    qos: Qos::LATCHED,
};
/// `nestdnn_msgs/TaskPriority` in: operators' priorities and task switches.
pub const PRIORITY: Topic = Topic {
    name: "nestdnn/task_priority",
    qos: Qos::RELIABLE,
};
/// `nestdnn_msgs/Plan` out: every plan the node applies (latched).
pub const PLAN: Topic = Topic {
    name: "nestdnn/plan",
    qos: Qos::LATCHED,
};
/// `diagnostic_msgs/DiagnosticArray` out: per-task counters and state.
pub const DIAGNOSTICS: Topic = Topic {
    name: "/diagnostics",
    qos: Qos::RELIABLE,
};
/// `rosgraph_msgs/Clock` in (with `use_sim_time`).
pub const CLOCK: Topic = Topic {
    name: "/clock",
    qos: Qos::CLOCK,
};

/// The per-task output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutput {
    /// `vision_msgs/Classification`.
    Classification,
    /// `nestdnn_msgs/InferenceResult`.
    Result,
    /// `vision_msgs/LabelInfo` (latched).
    LabelInfo,
}

impl TaskOutput {
    /// The topic name for task `task` (relative: `nestdnn/<task>/classification`, ...).
    pub fn name(self, task: &str) -> String {
        let leaf = match self {
            TaskOutput::Classification => "classification",
            TaskOutput::Result => "result",
            TaskOutput::LabelInfo => "label_info",
        };
        format!("nestdnn/{task}/{leaf}")
    }

    /// The QoS the node publishes it with.
    pub fn qos(self) -> Qos {
        match self {
            TaskOutput::Classification | TaskOutput::Result => Qos::RELIABLE,
            TaskOutput::LabelInfo => Qos::LATCHED,
        }
    }
}

/// A log level name ROS does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected debug, info, warn, error or fatal)")]
pub struct UnknownLogLevel(pub String);

/// A ROS log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
    /// `FATAL` (logged as error).
    Fatal,
}

impl LogLevel {
    /// Parses a level name, case-insensitively (`DEBUG`, `info`, `WARNING` is accepted too).
    ///
    /// # Errors
    /// [`UnknownLogLevel`].
    pub fn parse(s: &str) -> Result<LogLevel, UnknownLogLevel> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "fatal" => Ok(LogLevel::Fatal),
            _ => Err(UnknownLogLevel(s.to_string())),
        }
    }

    /// The matching `log` crate filter.
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Fatal => log::LevelFilter::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_levels() {
        assert_eq!(BUDGET.in_root(), "/nestdnn/resource_budget");
        assert_eq!(DIAGNOSTICS.in_root(), "/diagnostics");
        assert_eq!(TaskOutput::Result.name("digits"), "nestdnn/digits/result");
        assert_eq!(TaskOutput::LabelInfo.qos(), Qos::LATCHED);
        assert_eq!(LogLevel::parse("WARNING"), Ok(LogLevel::Warn));
        assert!(LogLevel::parse("loud").is_err());
    }
}
