//! The QoS profiles rosbag2 records per topic (`offered_qos_profiles`), in the YAML forms that
//! rosbag2 writes: numeric enums (Humble, metadata version <= 8) or names (Jazzy, version 9).

use serde_yaml::Value;

/// Reliability policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reliability {
    /// Left to the middleware.
    SystemDefault,
    /// Retransmit until received.
    Reliable,
    /// Send once.
    BestEffort,
    /// Not recorded or not recognised.
    Unknown,
}

/// Durability policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Left to the middleware.
    SystemDefault,
    /// Late joiners get the last samples ("latched").
    TransientLocal,
    /// Only samples published after joining.
    Volatile,
    /// Not recorded or not recognised.
    Unknown,
}

/// History policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    /// Left to the middleware.
    SystemDefault,
    /// Keep the last N samples.
    KeepLast(u32),
    /// Keep every sample.
    KeepAll,
    /// Not recorded or not recognised.
    Unknown,
}

/// The parts of a ROS 2 QoS profile that decide whether publishers and subscribers match.
/// Deadline, lifespan and liveliness are written as defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QosProfile {
    /// Reliability.
    pub reliability: Reliability,
    /// Durability.
    pub durability: Durability,
    /// History and depth.
    pub history: History,
}

impl QosProfile {
    /// REP-2003 sensor data: best effort, volatile, keep last 5.
    pub const SENSOR_DATA: Self = Self {
        reliability: Reliability::BestEffort,
        durability: Durability::Volatile,
        history: History::KeepLast(5),
    };
    /// Latched state (plans, budgets, label info): reliable, transient local, keep last 1.
    pub const LATCHED: Self = Self {
        reliability: Reliability::Reliable,
        durability: Durability::TransientLocal,
        history: History::KeepLast(1),
    };
    /// The ROS 2 default: reliable, volatile, keep last 10.
    pub const DEFAULT: Self = Self {
        reliability: Reliability::Reliable,
        durability: Durability::Volatile,
        history: History::KeepLast(10),
    };

    /// The YAML list rosbag2 (Humble, metadata version 8) stores for these profiles: numeric
    /// policies, default deadline/lifespan/liveliness. Empty for no profiles.
    pub fn to_rosbag2_yaml(profiles: &[Self]) -> String {
        let mut out = String::new();
        for p in profiles {
            let (history, depth) = match p.history {
                History::SystemDefault => (0, 0),
                History::KeepLast(n) => (1, n),
                History::KeepAll => (2, 0),
                History::Unknown => (3, 0),
            };
            let reliability = match p.reliability {
                Reliability::SystemDefault => 0,
                Reliability::Reliable => 1,
                Reliability::BestEffort => 2,
                Reliability::Unknown => 3,
            };
            let durability = match p.durability {
                Durability::SystemDefault => 0,
                Durability::TransientLocal => 1,
                Durability::Volatile => 2,
                Durability::Unknown => 3,
            };
            out.push_str(&format!(
                "- history: {history}\n  depth: {depth}\n  reliability: {reliability}\n  \
                 durability: {durability}\n  deadline:\n    sec: 0\n    nsec: 0\n  lifespan:\n    \
                 sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n    \
                 nsec: 0\n  avoid_ros_namespace_conventions: false\n"
            ));
        }
        out.trim_end().to_owned()
    }

    /// Parses an `offered_qos_profiles` text (numeric or named policies). An empty text gives
    /// no profiles.
    ///
    /// # Errors
    /// A message saying what is wrong, for text that is not a YAML list of mappings.
    pub fn parse_rosbag2_yaml(text: &str) -> Result<Vec<Self>, String> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        Self::from_yaml_value(&v)
    }

    pub(crate) fn from_yaml_value(v: &Value) -> Result<Vec<Self>, String> {
        let Value::Sequence(items) = v else {
            return Err("offered_qos_profiles is not a list".into());
        };
        let policy = |m: &Value, key: &str, names: &[&str]| -> usize {
            match m.get(key) {
                Some(Value::Number(n)) => n.as_u64().map_or(usize::MAX, |n| n as usize),
                Some(Value::String(s)) => names
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(s))
                    .unwrap_or(usize::MAX),
                _ => usize::MAX,
            }
        };
        let mut out = Vec::new();
        for m in items {
            if !m.is_mapping() {
                return Err("an offered_qos_profiles entry is not a mapping".into());
            }
            let depth = m
                .get("depth")
                .and_then(Value::as_u64)
                .and_then(|d| u32::try_from(d).ok())
                .unwrap_or(0);
            let history = match policy(m, "history", &["system_default", "keep_last", "keep_all"]) {
                0 => History::SystemDefault,
                1 => History::KeepLast(depth),
                2 => History::KeepAll,
                _ => History::Unknown,
            };
            let reliability = match policy(
                m,
                "reliability",
                &["system_default", "reliable", "best_effort"],
            ) {
                0 => Reliability::SystemDefault,
                1 => Reliability::Reliable,
                2 => Reliability::BestEffort,
                _ => Reliability::Unknown,
            };
            let durability = match policy(
                m,
                "durability",
                &["system_default", "transient_local", "volatile"],
            ) {
                0 => Durability::SystemDefault,
                1 => Durability::TransientLocal,
                2 => Durability::Volatile,
                _ => Durability::Unknown,
            };
            out.push(Self {
                reliability,
                durability,
                history,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trip_and_named_form() {
        let ps = [QosProfile::SENSOR_DATA, QosProfile::LATCHED];
        let text = QosProfile::to_rosbag2_yaml(&ps);
        assert_eq!(QosProfile::parse_rosbag2_yaml(&text).unwrap(), ps);
        let jazzy = "- history: keep_last\n  depth: 1\n  reliability: reliable\n  \
                     durability: transient_local\n";
        assert_eq!(
            QosProfile::parse_rosbag2_yaml(jazzy).unwrap(),
            [QosProfile::LATCHED]
        );
        assert!(QosProfile::parse_rosbag2_yaml("").unwrap().is_empty());
        assert!(QosProfile::parse_rosbag2_yaml("a: b").is_err());
        assert!(QosProfile::parse_rosbag2_yaml("- 3").is_err());
    }
}
