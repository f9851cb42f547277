//! rosbag2 `metadata.yaml` (versions 4 to 9).

use std::path::Path;

use serde_yaml::Value;

use super::{BagError, TopicInfo};

/// What the reader needs from `metadata.yaml`.
pub(super) struct Metadata {
    pub files: Vec<String>,
    pub topics: Vec<TopicInfo>,
    pub compression_mode: String,
    pub compression_format: String,
}

pub(super) fn read(path: &Path) -> Result<Metadata, BagError> {
    let bad = |reason: String| BagError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| BagError::Io {
        path: path.to_path_buf(),
        op: "read metadata",
        source,
    })?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let info = doc
        .get("rosbag2_bagfile_information")
        .ok_or_else(|| bad("no `rosbag2_bagfile_information` key".into()))?;
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let files: Vec<String> = match info.get("relative_file_paths") {
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("relative_file_paths holds a non-string".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("no `relative_file_paths` list".into())),
    };
    for f in &files {
        let p = Path::new(f);
        if p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(bad(format!("file path {f} leaves the bag folder")));
        }
    }
    let mut topics = Vec::new();
    if let Some(Value::Sequence(list)) = info.get("topics_with_message_count") {
        for entry in list {
            let Some(tm) = entry.get("topic_metadata") else {
                return Err(bad(
                    "a topics_with_message_count entry has no topic_metadata".into(),
                ));
            };
            let name = str_of(tm.get("name"));
            if name.is_empty() {
                return Err(bad("a topic without name".into()));
            }
            // Version <= 8: a YAML text; version 9: a YAML list.
            let qos = match tm.get("offered_qos_profiles") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Sequence(_)) => serde_yaml::to_string(v).unwrap_or_default(),
                _ => String::new(),
            };
            topics.push(TopicInfo {
                name,
                type_name: str_of(tm.get("type")),
                serialization_format: str_of(tm.get("serialization_format")),
                offered_qos_profiles: qos,
                message_count: entry.get("message_count").and_then(Value::as_u64),
            });
        }
    }
    Ok(Metadata {
        files,
        topics,
        compression_mode: str_of(info.get("compression_mode")),
        compression_format: str_of(info.get("compression_format")),
    })
}
