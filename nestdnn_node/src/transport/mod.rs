//! ROS transports: the thin adapters between ROS 2 middleware and the ROS-free core.
//!
//! - `dds` (feature `dds`, default): ROS 2 over DDS with the pure-Rust ros2-client / RustDDS
//!   stack; no ROS installation needed.
//! - `r2r` (feature `r2r`): ROS 2 over rcl via r2r, raw publish/subscribe with this crate's
//!   CDR types (needs a sourced ROS 2 to link).
//!
//! Both take fully-resolved topic names (see [`crate::rosargs::NameContext`]), the QoS
//! descriptions of this module, and [`crate::msgs::RosMessage`] types, and deliver received
//! messages to callbacks, so the node wiring is the same for both.

#[cfg(feature = "dds")]
pub mod dds;
#[cfg(feature = "r2r")]
pub mod r2r;

use crate::msgs::MsgError;
use crate::rosargs::RosArgsError;

/// Errors of the transport boundary.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The middleware refused to create a participant, node, topic, reader or writer.
    #[error("cannot create {what}: {detail}")]
    Create {
        /// What was being created (with its topic name).
        what: String,
        /// The middleware's message.
        detail: String,
    },
    /// A topic or node name is invalid.
    #[error(transparent)]
    Name(#[from] RosArgsError),
    /// A type name is not `pkg/msg/Type`.
    #[error("type name {0:?} is not pkg/msg/Type")]
    TypeName(String),
    /// A received sample could not be decoded.
    #[error("{topic}: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// What was wrong with the bytes.
        source: MsgError,
    },
    /// The middleware reported a read error.
    #[error("{topic}: read failed: {detail}")]
    Read {
        /// The topic.
        topic: String,
        /// The middleware's message.
        detail: String,
    },
    /// A QoS name from the configuration is unknown.
    #[error("unknown QoS profile {0:?} (expected sensor_data, best_effort, reliable or latched)")]
    QosName(String),
}

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

    /// A profile by configuration name: `sensor_data` (alias `best_effort`), `reliable`
    /// (alias `default`, `system_default`), `latched` (alias `transient_local`).
    ///
    /// # Errors
    /// [`TransportError::QosName`].
    pub fn by_name(name: &str) -> Result<Qos, TransportError> {
        match name {
            "sensor_data" | "best_effort" => Ok(Qos::SENSOR_DATA),
            "reliable" | "default" | "system_default" => Ok(Qos::RELIABLE),
            "latched" | "transient_local" => Ok(Qos::LATCHED),
            _ => Err(TransportError::QosName(name.to_string())),
        }
    }
}

/// Splits `pkg/msg/Type` into `(pkg, Type)`.
///
/// # Errors
/// [`TransportError::TypeName`].
pub fn split_type_name(full: &str) -> Result<(&str, &str), TransportError> {
    let mut it = full.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(p), Some("msg"), Some(t), None) if !p.is_empty() && !t.is_empty() => Ok((p, t)),
        _ => Err(TransportError::TypeName(full.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_names_and_type_names() {
        assert_eq!(Qos::by_name("sensor_data").unwrap(), Qos::SENSOR_DATA);
        assert_eq!(
            Qos::by_name("latched").unwrap().durability,
            Durability::TransientLocal
        );
        assert!(Qos::by_name("fast").is_err());
        assert_eq!(
            split_type_name("sensor_msgs/msg/Image").unwrap(),
            ("sensor_msgs", "Image")
        );
        assert!(split_type_name("sensor_msgs/Image").is_err());
        assert!(split_type_name("a/msg/b/c").is_err());
    }
}
