//! The MCAP writer: what it writes reads back here, and with two independent readers (PyPI
//! `rosbags` with an empty type store, and `mcap-ros2-support`) that decode with the message
//! definitions stored in the file (`test/bags/read_with_python.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use nestdnn::bag::{BagReader, McapCompression, McapWriter, QosProfile};
use nestdnn::msgs::*;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hdr(t: i64, frame: &str) -> Header {
    Header {
        stamp: Time::from_nanos(t),
        frame_id: frame.into(),
    }
}

const T0: i64 = 1_700_000_100_000_000_000;

/// Writes one message of every type; returns (topic, type, time, serde_json of the value).
fn write_all(path: &Path, compression: McapCompression) -> Vec<(String, String, u64, Value)> {
    let mut w = McapWriter::create_with(path, compression).unwrap();
    w.add_topic::<Plan>("/nestdnn/plan", &[QosProfile::LATCHED])
        .unwrap();
    w.add_topic::<Image>("/cam/image_raw", &[QosProfile::SENSOR_DATA])
        .unwrap();
    let mut out = Vec::new();
    macro_rules! put {
        ($topic:expr, $t:expr, $m:expr) => {{
            let m = $m;
            let t = ($t) as u64;
            w.write($topic, t, &m).unwrap();
            out.push((
                $topic.to_string(),
                type_name_of(&m).to_string(),
                t,
                serde_json::to_value(&m).unwrap(),
            ));
        }};
    }
    for i in 0..3i64 {
        let t = T0 + i * 33_333_333;
        put!(
            "/cam/image_raw",
            t,
            Image {
                header: hdr(t, "cam"),
                height: 2,
                width: 2,
                encoding: "mono8".into(),
                is_bigendian: 0,
                step: 2,
                data: vec![i as u8, 1, 2, 255],
            }
        );
        put!(
            "/cam/image_raw/result",
            t + 5_000_000,
            Classification {
                header: hdr(t, "cam"),
                results: vec![ObjectHypothesis {
                    class_id: "Sandal".into(),
                    score: 0.5,
                }],
            }
        );
        put!(
            "/nestdnn/result",
            t + 5_000_000,
            InferenceResult {
                header: hdr(t, "cam"),
                task: "fashion_vgg".into(),
                descendant: "d3".into(),
                descendant_index: 3,
                class_id: 5,
                class_name: "Sandal".into(),
                score: 0.5,
                latency_queue_ms: 0.25,
                latency_preprocess_ms: 0.5,
                latency_inference_ms: 4.0,
                latency_total_ms: 4.75,
                frame_seq: i as u64 + 1,
                frames_dropped: 0,
            }
        );
    }
    put!(
        "/cam2/image_raw/compressed",
        T0 + 1,
        CompressedImage {
            header: hdr(T0, "cam2"),
            format: "jpeg".into(),
            data: vec![0xff, 0xd8, 0xff, 0xd9],
        }
    );
    put!(
        "/nestdnn/labels",
        T0 + 2,
        LabelInfo {
            header: hdr(T0, ""),
            class_map: vec![VisionClass {
                class_id: 7,
                class_name: "Sneaker".into(),
            }],
            threshold: 0.0,
        }
    );
    put!(
        "/diagnostics",
        T0 + 3,
        DiagnosticArray {
            header: hdr(T0, ""),
            status: vec![DiagnosticStatus {
                level: DiagnosticStatus::OK,
                name: "nestdnn: fashion_vgg".into(),
                message: "ok".into(),
                hardware_id: String::new(),
                values: vec![KeyValue {
                    key: "fps".into(),
                    value: "30.0".into(),
                }],
            }],
        }
    );
    put!(
        "/nestdnn/resource_budget",
        T0 + 4,
        ResourceBudget {
            header: hdr(T0, ""),
            cpu_cores_available: 0.75,
            cpu_load: 0.5,
            memory_available_bytes: 1 << 29,
            battery_percentage: 1.0,
            power_supply_status: ResourceBudget::POWER_SUPPLY_STATUS_FULL,
        }
    );
    put!(
        "/nestdnn/task_priority",
        T0 + 5,
        TaskPriority {
            header: hdr(T0, ""),
            task: "digits_vgg".into(),
            priority: 0.5,
            enabled: true,
        }
    );
    put!(
        "/nestdnn/plan",
        T0 + 6,
        Plan {
            header: hdr(T0, ""),
            plan_id: 1,
            trigger: "startup".into(),
            objective: "max_min_accuracy".into(),
            objective_value: 0.75,
            cpu_cores_budget: 2.0,
            cpu_cores_used: 1.5,
            memory_budget_bytes: 1 << 30,
            memory_used_bytes: 1 << 20,
            solve_time_ms: 0.125,
            tasks: vec![TaskPlan {
                task: "fashion_vgg".into(),
                enabled: true,
                paused: false,
                descendant: "d3".into(),
                descendant_index: 3,
                descendant_count: 4,
                share_cores: 1.5,
                expected_accuracy: 0.875,
                expected_fps: 30.0,
                target_fps: 30.0,
                priority: 1.0,
                latency_ms: 12.5,
                cost_cores: 0.375,
                memory_bytes: 1 << 20,
            }],
        }
    );
    w.finish().unwrap();
    out.sort_by_key(|(_, _, t, _)| *t);
    out
}

fn type_name_of<M: RosMessage>(_: &M) -> &'static str {
    M::TYPE_NAME
}

fn decode_json(type_name: &str, data: &[u8]) -> Value {
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if type_name == <$t>::TYPE_NAME {
                return serde_json::to_value(<$t>::from_cdr(data).unwrap()).unwrap();
            })*
        };
    }
    try_types!(
        Image,
        CompressedImage,
        Classification,
        LabelInfo,
        DiagnosticArray,
        ResourceBudget,
        TaskPriority,
        InferenceResult,
        Plan
    );
    panic!("unexpected type {type_name}");
}

#[test]
fn written_bag_reads_back_here() {
    for compression in [
        McapCompression::Zstd,
        McapCompression::Lz4,
        McapCompression::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.mcap");
        let want = write_all(&path, compression);
        let bag = BagReader::open(&path).unwrap();
        assert_eq!(bag.message_count(), Some(want.len() as u64));
        let got: Vec<_> = bag
            .messages()
            .unwrap()
            .map(|m| {
                let m = m.unwrap();
                (
                    m.topic.name.clone(),
                    m.topic.type_name.clone(),
                    m.timestamp_ns,
                    decode_json(&m.topic.type_name, &m.data),
                )
            })
            .collect();
        assert_eq!(got, want, "{compression:?}");
        let plan = bag
            .topics()
            .iter()
            .find(|t| t.name == "/nestdnn/plan")
            .unwrap();
        assert_eq!(plan.qos_profiles(), [QosProfile::LATCHED]);
        let img = bag
            .topics()
            .iter()
            .find(|t| t.name == "/cam/image_raw")
            .unwrap();
        assert_eq!(img.qos_profiles(), [QosProfile::SENSOR_DATA]);
    }
}

#[test]
fn writer_refuses_a_second_type_on_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = McapWriter::create(dir.path().join("x.mcap")).unwrap();
    w.write("/a", 1, &TaskPriority::default()).unwrap();
    let e = w.write("/a", 2, &ResourceBudget::default()).unwrap_err();
    assert!(e.to_string().contains("x.mcap"), "{e}");
    assert!(e.to_string().contains("/a"), "{e}");
}

/// The bag must be readable by standard tools: run both Python readers on it. They need the
/// project venv (scripts/py-env.sh); CI always has it.
#[test]
fn written_bag_reads_with_rosbags_and_mcap_ros2() {
    let py = root().join(".venv/bin/python");
    if !py.exists() {
        eprintln!("skipped: no .venv (run scripts/py-env.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mcap");
    let want = write_all(&path, McapCompression::Zstd);
    let out = Command::new(&py)
        .arg(root().join("test/bags/read_with_python.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for reader in ["rosbags", "mcap_ros2"] {
        let got: Vec<_> = v[reader]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["topic"].as_str().unwrap().to_owned(),
                    m["type"].as_str().unwrap().to_owned(),
                    m["log_time"].as_u64().unwrap(),
                    m["data"].clone(),
                )
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{reader}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{reader}");
        }
    }
    assert_eq!(
        v["qos"]["/nestdnn/plan"],
        serde_json::json!([{"reliability": "reliable", "durability": "transient_local",
                            "history": "keep_last", "depth": 1}])
    );
    assert_eq!(v["qos"]["/cam/image_raw"][0]["reliability"], "best_effort");
}
