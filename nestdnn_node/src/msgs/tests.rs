use byteorder::BigEndian;
use proptest::prelude::*;

use super::*;

fn header(sec: i32, frame: &str) -> Header {
    Header {
        stamp: Time {
            sec,
            nanosec: 123_456_789,
        },
        frame_id: frame.into(),
    }
}

fn image() -> Image {
    Image {
        header: header(17, "cam0"),
        height: 2,
        width: 3,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 9,
        data: (0..18).collect(),
    }
}

fn plan() -> Plan {
    Plan {
        header: header(5, ""),
        plan_id: 3,
        trigger: "budget".into(),
        objective: "max_min_accuracy".into(),
        objective_value: 0.9,
        cpu_cores_budget: 1.5,
        cpu_cores_used: 1.25,
        memory_budget_bytes: 1 << 30,
        memory_used_bytes: 12_345,
        solve_time_ms: 0.3,
        tasks: vec![
            TaskPlan {
                task: "fashion_vgg".into(),
                enabled: true,
                paused: false,
                descendant: "d2".into(),
                descendant_index: 2,
                descendant_count: 4,
                share_cores: 0.75,
                expected_accuracy: 0.91,
                expected_fps: 30.0,
                target_fps: 30.0,
                priority: 2.0,
                latency_ms: 20.0,
                cost_cores: 0.6,
                memory_bytes: 1000,
            },
            TaskPlan {
                task: "digits".into(),
                paused: true,
                ..Default::default()
            },
        ],
    }
}

/// Round trip, and the definition text describes exactly the bytes serde wrote.
fn check<M: RosMessage + PartialEq + std::fmt::Debug>(m: &M) {
    let cdr = m.to_cdr().unwrap();
    assert_eq!(&cdr[..4], &CDR_LE_HEADER);
    let used = M::schema().unwrap().check_cdr(&cdr[4..], true, 4).unwrap();
    assert_eq!(
        used,
        cdr.len() - 4,
        "{}: definition does not cover the bytes",
        M::TYPE_NAME
    );
    assert_eq!(&M::from_cdr(&cdr).unwrap(), m);
    let mut buf = vec![1, 2, 3];
    m.write_cdr(&mut buf).unwrap();
    assert_eq!(buf, cdr);
    // Big-endian encapsulation decodes to the same value.
    let mut be = CDR_BE_HEADER.to_vec();
    be.extend(cdr_encoding::to_vec::<M, BigEndian>(m).unwrap());
    assert_eq!(&M::from_cdr(&be).unwrap(), m);
}

#[test]
fn every_type_round_trips_and_matches_its_definition() {
    check(&Time {
        sec: -3,
        nanosec: 9,
    });
    check(&Duration { sec: 3, nanosec: 9 });
    check(&header(1, "x"));
    check(&image());
    check(&CompressedImage {
        header: header(2, "c"),
        format: "jpeg".into(),
        data: vec![0xff, 0xd8, 1, 2, 3],
    });
    check(&ObjectHypothesis {
        class_id: "Trouser".into(),
        score: 0.5,
    });
    check(&Classification {
        header: header(3, "cam"),
        results: vec![
            ObjectHypothesis {
                class_id: "7".into(),
                score: 0.75,
            },
            ObjectHypothesis {
                class_id: "1".into(),
                score: 0.25,
            },
        ],
    });
    check(&VisionClass {
        class_id: 4,
        class_name: "Coat".into(),
    });
    check(&LabelInfo {
        header: header(0, ""),
        class_map: vec![VisionClass {
            class_id: 0,
            class_name: "T-shirt/top".into(),
        }],
        threshold: 0.0,
    });
    check(&KeyValue {
        key: "k".into(),
        value: "v".into(),
    });
    let status = DiagnosticStatus {
        level: DiagnosticStatus::WARN,
        name: "nestdnn: fashion".into(),
        message: "drops".into(),
        hardware_id: String::new(),
        values: vec![KeyValue {
            key: "fps".into(),
            value: "29.8".into(),
        }],
    };
    check(&status);
    check(&DiagnosticArray {
        header: header(9, ""),
        status: vec![status.clone(), status],
    });
    check(&ResourceBudget {
        header: header(4, ""),
        cpu_cores_available: 1.5,
        cpu_load: 0.25,
        memory_available_bytes: 3 << 30,
        battery_percentage: 0.5,
        power_supply_status: ResourceBudget::POWER_SUPPLY_STATUS_DISCHARGING,
    });
    check(&TaskPriority {
        header: header(4, ""),
        task: "digits_vgg".into(),
        priority: 2.5,
        enabled: false,
    });
    check(&InferenceResult {
        header: header(4, "cam"),
        task: "t".into(),
        descendant: "d0".into(),
        descendant_index: 0,
        class_id: 3,
        class_name: "3".into(),
        score: 0.99,
        latency_queue_ms: 1.0,
        latency_preprocess_ms: 0.5,
        latency_inference_ms: 7.0,
        latency_total_ms: 8.6,
        frame_seq: 42,
        frames_dropped: 1,
    });
    check(&TaskPlan::default());
    check(&plan());
    check(&Clock {
        clock: Time {
            sec: 12,
            nanosec: 345,
        },
    });
    assert_eq!(all_definitions().len(), 18);
}

#[test]
fn known_bytes_of_a_clock() {
    // rosgraph_msgs/Clock: one builtin_interfaces/Time (int32 sec, uint32 nanosec).
    let c = Clock {
        clock: Time {
            sec: -2,
            nanosec: 500_000_000,
        },
    };
    let bytes: Vec<u8> = [
        &[0u8, 1, 0, 0][..],
        &(-2i32).to_le_bytes(),
        &500_000_000u32.to_le_bytes(),
    ]
    .concat();
    assert_eq!(c.to_cdr().unwrap(), bytes);
    assert_eq!(Clock::from_cdr(&bytes).unwrap(), c);
    assert!(Clock::from_cdr(&bytes[..7]).is_err());
    assert_eq!(Clock::TYPE_NAME, "rosgraph_msgs/msg/Clock");
    assert!(Clock::schema()
        .unwrap()
        .types
        .contains_key("builtin_interfaces/msg/Time"));
}

#[test]
fn known_bytes_of_an_image() {
    // Hand-assembled CDR: header(stamp 1.2, "ab"), 1x2 mono8, step 2, data [5, 6].
    let bytes: Vec<u8> = [
        &[0u8, 1, 0, 0][..],
        &1i32.to_le_bytes(),
        &2u32.to_le_bytes(),
        &3u32.to_le_bytes(),
        b"ab\0",
        &[0], // pad to 4
        &1u32.to_le_bytes(),
        &2u32.to_le_bytes(),
        &6u32.to_le_bytes(),
        b"mono8\0",
        &[0], // is_bigendian
        &[0], // pad to 4
        &2u32.to_le_bytes(),
        &2u32.to_le_bytes(),
        &[5, 6],
    ]
    .concat();
    let img = Image {
        header: Header {
            stamp: Time { sec: 1, nanosec: 2 },
            frame_id: "ab".into(),
        },
        height: 1,
        width: 2,
        encoding: "mono8".into(),
        is_bigendian: 0,
        step: 2,
        data: vec![5, 6],
    };
    assert_eq!(img.to_cdr().unwrap(), bytes);
    assert_eq!(Image::from_cdr(&bytes).unwrap(), img);
}

fn fault<M: RosMessage + std::fmt::Debug>(bytes: &[u8]) -> CdrFault {
    match M::from_cdr(bytes) {
        Err(MsgError::Malformed { fault, .. }) => fault,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn bad_buffers_give_typed_errors_with_field_and_offset() {
    let cdr = image().to_cdr().unwrap();
    assert!(matches!(
        Image::from_cdr(&cdr[..3]),
        Err(MsgError::TooShort { len: 3, .. })
    ));
    let mut xcdr2 = cdr.clone();
    xcdr2[1] = 0x07;
    let e = Image::from_cdr(&xcdr2).unwrap_err();
    assert!(matches!(e, MsgError::Encapsulation { b1: 0x07, .. }), "{e}");
    assert!(e.to_string().contains("sensor_msgs/msg/Image"));

    // Truncated inside the pixel data.
    let f = fault::<Image>(&cdr[..cdr.len() - 1]);
    assert_eq!(f.field, "data");
    assert!(
        matches!(f.problem, Problem::LengthTooLarge { count: 18, .. }),
        "{f}"
    );

    // Truncated in the middle of the header's frame_id.
    let f = fault::<Image>(&cdr[..14]);
    assert_eq!(f.field, "header.frame_id");
    assert_eq!(f.offset, 12);

    // An absurd sequence length: refused before any allocation.
    let data_len_at = cdr.len() - 18 - 4;
    let mut huge = cdr.clone();
    huge[data_len_at..data_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let f = fault::<Image>(&huge);
    assert_eq!((f.field.as_str(), f.offset), ("data", data_len_at));
    assert!(
        matches!(f.problem, Problem::LengthTooLarge { count, .. } if count == u64::from(u32::MAX))
    );

    // Sequence of structs with a bogus count.
    let cls = Classification {
        header: header(1, ""),
        results: vec![],
    };
    let mut c = cls.to_cdr().unwrap();
    let n = c.len();
    c[n - 4..].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let f = fault::<Classification>(&c);
    assert_eq!(f.field, "results");

    // String without NUL, string that is not UTF-8.
    let mut s = cdr.clone();
    s[20] = b'!'; // "cam0\0" is bytes 16..21: replace the NUL
    let f = fault::<Image>(&s);
    assert_eq!(f.field, "header.frame_id");
    assert!(matches!(f.problem, Problem::BadString(_)));
    let mut s = cdr.clone();
    s[16] = 0xff;
    assert!(matches!(fault::<Image>(&s).problem, Problem::BadString(_)));

    // A bool that is not 0/1.
    let mut p = TaskPriority {
        header: header(1, ""),
        task: "a".into(),
        priority: 1.0,
        enabled: true,
    }
    .to_cdr()
    .unwrap();
    let last = p.len() - 1;
    p[last] = 2;
    let f = fault::<TaskPriority>(&p);
    assert_eq!(
        (f.field.as_str(), f.problem.clone()),
        ("enabled", Problem::BadBool(2))
    );
    assert!(MsgError::Malformed {
        type_name: "x",
        fault: f
    }
    .to_string()
    .contains("field `enabled` at byte"));
}

#[test]
fn trailing_padding_is_accepted() {
    let mut cdr = TaskPriority::default().to_cdr().unwrap();
    cdr.extend([0, 0, 0]);
    assert_eq!(
        TaskPriority::from_cdr(&cdr).unwrap(),
        TaskPriority::default()
    );
}

#[test]
fn time_conversions() {
    let t = Time::from_nanos(-1);
    assert_eq!((t.sec, t.nanosec), (-1, 999_999_999));
    assert_eq!(t.as_nanos(), -1);
    assert_eq!(Time::from_nanos(1_500_000_000).as_secs_f64(), 1.5);
}

proptest! {
    #[test]
    fn image_round_trips(sec in any::<i32>(), frame in "[a-z_/]{0,12}", w in 0u32..5, h in 0u32..5,
                         enc in "[a-z0-9]{1,8}", seed in any::<u8>()) {
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let img = Image { header: Header { stamp: Time { sec, nanosec: 1 }, frame_id: frame },
            height: h, width: w, encoding: enc, is_bigendian: 0, step: w * 3, data };
        prop_assert_eq!(Image::from_cdr(&img.to_cdr().unwrap()).unwrap(), img);
    }

    /// Any truncation or corruption gives an error or a value, never a panic or a huge allocation.
    #[test]
    fn decode_never_panics(cut in 0usize..400, flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4)) {
        let mut cdr = plan().to_cdr().unwrap();
        for (at, v) in flips {
            let n = cdr.len();
            cdr[at % n] = v;
        }
        cdr.truncate(cut);
        let _ = Plan::from_cdr(&cdr);
        let _ = Image::from_cdr(&cdr);
        let _ = DiagnosticArray::from_cdr(&cdr);
    }
}
