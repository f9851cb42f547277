//! The committed test recordings (`test/bags/recording*`, written by PyPI `rosbags` from
//! `test/bags/make_recordings.py`) agree with their sidecar `test/bags/recordings.json`: every
//! camera's frames, sizes and ROI, a ground truth per frame with the frame's stamp and a label
//! of the model manifest, and every budget/priority event at its time with its values.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nestdnn::bag::{BagMessage, BagReader};
use serde_json::Value;

fn bags() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test/bags")
}

fn manifest_labels(task: &str) -> Option<Vec<String>> {
    let p = bags().join(format!("../../models/{task}/manifest.yaml"));
    let text = std::fs::read_to_string(p).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    Some(
        v.get("labels")?
            .as_sequence()?
            .iter()
            .map(|l| match l {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            })
            .collect(),
    )
}

#[test]
fn recordings_match_their_sidecar() {
    let side: Value =
        serde_json::from_str(&std::fs::read_to_string(bags().join("recordings.json")).unwrap())
            .unwrap();
    let list = side["bags"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let mut storages = Vec::new();
    for b in list {
        let bag = BagReader::open(bags().join(b["path"].as_str().unwrap())).unwrap();
        storages.push(bag.files()[0].1);
        assert_eq!(bag.message_count(), b["messages"].as_u64());
        let cams = b["cameras"].as_array().unwrap();
        let by_topic: HashMap<&str, &Value> = cams
            .iter()
            .map(|c| (c["topic"].as_str().unwrap(), c))
            .collect();
        let gt_of: HashMap<&str, &Value> = cams
            .iter()
            .map(|c| (c["ground_truth_topic"].as_str().unwrap(), c))
            .collect();
        let mut frames: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut truths: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut first_bg: HashMap<String, Vec<u8>> = HashMap::new();
        let mut it = bag.decoded().unwrap();
        let mut last_t = 0;
        for m in it.by_ref() {
            let m = m.unwrap();
            assert!(m.timestamp_ns >= last_t);
            last_t = m.timestamp_ns;
            let topic = m.topic.name.as_str();
            match &m.msg {
                BagMessage::Image(img) => {
                    let c = by_topic[topic];
                    assert_eq!(u64::from(img.width), c["width"].as_u64().unwrap());
                    assert_eq!(u64::from(img.height), c["height"].as_u64().unwrap());
                    assert_eq!(img.encoding, "rgb8");
                    assert_eq!(img.data.len(), (img.step * img.height) as usize);
                    // The ROI is a gray test image; outside it the photo does not change.
                    let roi: Vec<usize> = c["roi"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as usize)
                        .collect();
                    let px = |x: usize, y: usize| {
                        let o = y * img.step as usize + x * 3;
                        &img.data[o..o + 3]
                    };
                    for y in roi[1]..roi[1] + roi[3] {
                        for x in roi[0]..roi[0] + roi[2] {
                            let p = px(x, y);
                            assert!(p[0] == p[1] && p[1] == p[2], "{topic}: ROI not gray");
                        }
                    }
                    let mut outside = img.data.clone();
                    for y in roi[1]..roi[1] + roi[3] {
                        let o = y * img.step as usize + roi[0] * 3;
                        outside[o..o + roi[2] * 3].fill(0);
                    }
                    let bg = first_bg.entry(topic.to_owned()).or_insert(outside.clone());
                    assert!(*bg == outside, "{topic}: background changed");
                    frames
                        .entry(topic.to_owned())
                        .or_default()
                        .push(img.header.stamp.as_nanos());
                }
                BagMessage::CompressedImage(ci) => {
                    let c = by_topic[topic];
                    let dec =
                        image::load_from_memory_with_format(&ci.data, image::ImageFormat::Jpeg)
                            .unwrap();
                    assert_eq!(u64::from(dec.width()), c["width"].as_u64().unwrap());
                    assert_eq!(u64::from(dec.height()), c["height"].as_u64().unwrap());
                    assert!(ci.format.contains("jpeg"));
                    frames
                        .entry(topic.to_owned())
                        .or_default()
                        .push(ci.header.stamp.as_nanos());
                }
                BagMessage::Classification(cl) => {
                    let c = gt_of[topic];
                    assert_eq!(cl.results.len(), 1);
                    if let Some(labels) = manifest_labels(c["task"].as_str().unwrap()) {
                        assert!(labels.contains(&cl.results[0].class_id), "{cl:?}");
                    }
                    assert!(c["class_counts"]
                        .as_object()
                        .unwrap()
                        .contains_key(&cl.results[0].class_id));
                    truths
                        .entry(c["topic"].as_str().unwrap().to_owned())
                        .or_default()
                        .push(cl.header.stamp.as_nanos());
                }
                BagMessage::ResourceBudget(r) => events.push((
                    m.timestamp_ns,
                    topic.to_owned(),
                    serde_json::json!({"cpu_cores_available": r.cpu_cores_available,
                                       "memory_available_bytes": r.memory_available_bytes}),
                )),
                BagMessage::TaskPriority(p) => events.push((
                    m.timestamp_ns,
                    topic.to_owned(),
                    serde_json::json!({"task": p.task, "priority": p.priority,
                                       "enabled": p.enabled}),
                )),
            }
        }
        // Every frame has its ground truth with the same stamp, at 30 Hz.
        for c in cams {
            let topic = c["topic"].as_str().unwrap();
            let f = &frames[topic];
            assert_eq!(f.len() as u64, c["frames"].as_u64().unwrap(), "{topic}");
            assert_eq!(f, &truths[topic], "{topic}");
            assert_eq!(f[0], c["first_stamp_ns"].as_i64().unwrap());
            assert!(f.windows(2).all(|w| (w[1] - w[0] - 33_333_333).abs() <= 1));
        }
        // Events at their times with their values.
        let want = b["events"].as_array().unwrap();
        assert_eq!(events.len(), want.len());
        for ((t, topic, got), w) in events.iter().zip(want) {
            assert_eq!(*t, w["time_ns"].as_u64().unwrap());
            assert_eq!(topic, w["topic"].as_str().unwrap());
            for (k, v) in got.as_object().unwrap() {
                let want = &w["fields"][k];
                match (v.as_f64(), want.as_f64()) {
                    // float32 on the wire vs the double in the sidecar
                    (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6, "{topic} {k}: {a} {b}"),
                    _ => assert_eq!(v, want, "{topic} {k}"),
                }
            }
        }
        let skipped: u64 = it.stats().skipped_unknown.values().sum();
        assert_eq!(
            it.stats().skipped_unknown.keys().collect::<Vec<_>>(),
            ["/rosout"]
        );
        assert_eq!(skipped, b["duration_s"].as_f64().unwrap() as u64);
    }
    assert_eq!(
        storages,
        [
            nestdnn::bag::StorageKind::Mcap,
            nestdnn::bag::StorageKind::Sqlite3,
            nestdnn::bag::StorageKind::Mcap
        ]
    );
}

/// Read speed of the main recording (run with `--ignored --nocapture`; not asserted).
#[test]
#[ignore]
fn read_throughput() {
    for name in ["recording", "recording_db3", "recording_heavy"] {
        let bag = BagReader::open(bags().join(name)).unwrap();
        let t = std::time::Instant::now();
        let mut bytes = 0usize;
        let mut n = 0;
        for m in bag.messages().unwrap() {
            bytes += m.unwrap().data.len();
            n += 1;
        }
        let raw = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let decoded = bag.decoded().unwrap().filter(|m| m.is_ok()).count();
        let dec = t.elapsed().as_secs_f64();
        println!(
            "{name}: {n} messages, {:.1} MB of CDR: raw read {:.0} ms ({:.0} MB/s), \
             decoded ({decoded}) {:.0} ms",
            bytes as f64 / 1e6,
            raw * 1e3,
            bytes as f64 / 1e6 / raw,
            dec * 1e3
        );
    }
}
