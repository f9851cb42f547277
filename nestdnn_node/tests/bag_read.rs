//! Reading bags written by an independent writer (PyPI `rosbags`, `test/bags/make_fixture_bags.py`):
//! MCAP and sqlite3 folders, single files, and a bag split over two files whose time ranges
//! interleave. Contents are compared exactly with `test/bags/fixtures/expected.json`. Damaged
//! variants are made here and must give clear errors naming the file and the point of failure.

use std::path::{Path, PathBuf};

use nestdnn::bag::{BagError, BagMessage, BagReader, DecodedMessage, QosProfile};
use nestdnn::msgs::{ResourceBudget, RosMessage};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test/bags/fixtures")
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn to_json(m: &DecodedMessage) -> Value {
    let stamp = |h: &nestdnn::msgs::Header| h.stamp.as_nanos();
    let mut v = match &m.msg {
        BagMessage::Image(i) => json!({"kind": "Image", "stamp_ns": stamp(&i.header),
            "frame_id": i.header.frame_id, "height": i.height, "width": i.width,
            "encoding": i.encoding, "step": i.step, "data": i.data}),
        BagMessage::CompressedImage(c) => json!({"kind": "CompressedImage",
            "stamp_ns": stamp(&c.header), "frame_id": c.header.frame_id, "format": c.format,
            "data": c.data}),
        BagMessage::Classification(c) => json!({"kind": "Classification",
            "stamp_ns": stamp(&c.header), "frame_id": c.header.frame_id,
            "results": c.results.iter().map(|r| json!([r.class_id, r.score])).collect::<Vec<_>>()}),
        BagMessage::ResourceBudget(b) => json!({"kind": "ResourceBudget",
            "stamp_ns": stamp(&b.header), "cpu_cores_available": b.cpu_cores_available,
            "cpu_load": b.cpu_load, "memory_available_bytes": b.memory_available_bytes,
            "battery_percentage": b.battery_percentage,
            "power_supply_status": b.power_supply_status}),
        BagMessage::TaskPriority(p) => json!({"kind": "TaskPriority",
            "stamp_ns": stamp(&p.header), "task": p.task, "priority": p.priority,
            "enabled": p.enabled}),
    };
    v["topic"] = json!(m.topic.name);
    v["type"] = json!(m.topic.type_name);
    v["timestamp_ns"] = json!(m.timestamp_ns);
    v
}

/// Reads `path` and checks every message, the order and the counts.
fn check_bag(path: &Path) {
    let bag = BagReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bag.message_count(), Some(12), "{}", path.display());
    let mut it = bag.decoded().unwrap();
    let got: Vec<Value> = it.by_ref().map(|m| to_json(&m.unwrap())).collect();
    let want: Vec<Value> = expected()
        .into_iter()
        .filter(|e| e["kind"] != "skipped")
        .collect();
    assert_eq!(got, want, "{}", path.display());
    let st = it.stats();
    assert_eq!((st.messages, st.decoded, st.decode_errors), (12, 10, 0));
    assert_eq!(st.skipped_unknown.get("/chatter"), Some(&2));

    // Raw stream: all 12 in timestamp order, QoS as recorded.
    let raw: Vec<_> = bag.messages().unwrap().map(Result::unwrap).collect();
    assert_eq!(raw.len(), 12);
    assert!(raw
        .windows(2)
        .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
    let topic = |name: &str| {
        bag.topics()
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(
        topic("/cam/image_raw").qos_profiles(),
        [QosProfile::SENSOR_DATA]
    );
    assert_eq!(
        topic("/nestdnn/resource_budget").qos_profiles(),
        [QosProfile::LATCHED]
    );
    assert_eq!(
        topic("/nestdnn/resource_budget").type_name,
        ResourceBudget::TYPE_NAME
    );
    assert_eq!(topic("/cam/image_raw").message_count, Some(3));
    assert_eq!(topic("/chatter").serialization_format, "cdr");
}

#[test]
fn reads_rosbags_mcap_folder_and_file() {
    check_bag(&fixtures().join("mcap"));
    check_bag(&fixtures().join("mcap/mcap.mcap"));
}

#[test]
fn reads_rosbags_sqlite3_folder_and_file() {
    check_bag(&fixtures().join("sqlite3"));
    check_bag(&fixtures().join("sqlite3/sqlite3.db3"));
}

#[test]
fn merges_split_files_by_timestamp() {
    let bag = BagReader::open(fixtures().join("split")).unwrap();
    assert_eq!(bag.files().len(), 2);
    check_bag(&fixtures().join("split"));
}

#[test]
fn a_folder_of_mixed_storage_files_without_metadata() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("split/split_0.mcap"),
        dir.path().join("a.mcap"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("split/split_1.mcap"),
        dir.path().join("b.mcap"),
    )
    .unwrap();
    check_bag(dir.path());
}

// ------------------------------------------------------------------ damaged input

fn tmp_copy(from: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join(name);
    std::fs::copy(from, &to).unwrap();
    (dir, to)
}

/// Reads everything, returning the Ok count and the errors.
fn drain(bag: &BagReader) -> (usize, Vec<BagError>) {
    let mut ok = 0;
    let mut errs = Vec::new();
    for item in bag.decoded().unwrap() {
        match item {
            Ok(_) => ok += 1,
            Err(e) => errs.push(e),
        }
    }
    (ok, errs)
}

#[test]
fn truncated_mcap_reports_file_and_offset_and_keeps_what_it_read() {
    let src = fixtures().join("mcap/mcap.mcap");
    let bytes = std::fs::read(&src).unwrap();
    let (dir, path) = tmp_copy(&src, "cut.mcap");
    // Every cut gives an error naming the file (at open or while reading), never a panic.
    let mut saw_truncated = false;
    for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match BagReader::open(&path) {
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("cut.mcap"), "{s}");
            }
            Ok(bag) => {
                let (_, errs) = drain(&bag);
                assert!(!errs.is_empty(), "cut at {cut}: no error reported");
                for e in &errs {
                    let s = e.to_string();
                    assert!(s.contains("cut.mcap"), "{s}");
                    if let BagError::Truncated { offset, len, .. } = e {
                        assert_eq!(*len, cut as u64);
                        assert!(*offset <= *len);
                        saw_truncated = true;
                    }
                }
            }
        }
    }
    assert!(saw_truncated);
    // Cut just before the summary: all 12 messages are read, then the truncation is reported.
    let summary_start = find_data_end(&bytes);
    std::fs::write(&path, &bytes[..summary_start]).unwrap();
    let bag = BagReader::open(&path).unwrap();
    assert_eq!(bag.message_count(), None, "no summary, count unknown");
    let (ok, errs) = drain(&bag);
    assert_eq!(ok, 10);
    assert!(
        matches!(errs.as_slice(), [BagError::Truncated { .. }]),
        "{errs:?}"
    );
    drop(dir);
}

/// Offset of the DataEnd record (opcode 0x0F, length 4), where the summary would follow.
fn find_data_end(bytes: &[u8]) -> usize {
    let pat = [0x0Fu8, 4, 0, 0, 0, 0, 0, 0, 0];
    bytes
        .windows(pat.len())
        .rposition(|w| w == pat)
        .expect("DataEnd record")
}

/// Flips 16 bytes at `at` and reads the file: the chunk at `chunk_offset` must be reported.
fn check_corrupt(bytes: &[u8], at: usize, chunk_offset: u64, name: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut bad = bytes.to_vec();
    for b in &mut bad[at..at + 16] {
        *b ^= 0x5A;
    }
    std::fs::write(&path, &bad).unwrap();
    let bag = BagReader::open(&path).unwrap();
    let (ok, errs) = drain(&bag);
    let corrupt: Vec<_> = errs
        .iter()
        .filter_map(|e| match e {
            BagError::CorruptChunk { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(corrupt, [chunk_offset], "{errs:?}");
    let s = errs[0].to_string();
    assert!(
        s.contains(name) && s.contains(&format!("corrupt MCAP chunk at byte {chunk_offset}")),
        "{s}"
    );
    ok
}

#[test]
fn corrupt_chunk_is_reported_with_its_offset_and_skipped() {
    // rosbags writes chunks without CRC (0): damage to the record structure is still caught.
    let bytes = std::fs::read(fixtures().join("mcap/mcap.mcap")).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let chunk = &summary.chunk_indexes[0];
    let records_at = chunk.compressed_data_offset().unwrap() as usize;
    let ok = check_corrupt(&bytes, records_at, chunk.chunk_start_offset, "flipped.mcap");
    // The damaged chunk's messages are dropped whole; the other chunks (if any) are read.
    assert!(ok < 10);

    // A zstd chunk with CRC (this crate's writer, like rosbag2's): any flipped byte is caught.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.mcap");
    let mut w = nestdnn::bag::McapWriter::create(&ours).unwrap();
    for i in 0..50u32 {
        let b = ResourceBudget {
            cpu_cores_available: i as f32,
            ..Default::default()
        };
        w.write("/b", u64::from(i), &b).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&ours).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let chunk = &summary.chunk_indexes[0];
    assert_eq!(chunk.compression, "zstd");
    let mid = chunk.compressed_data_offset().unwrap() as usize + chunk.compressed_size as usize / 2;
    let ok = check_corrupt(
        &bytes,
        mid - 8,
        chunk.chunk_start_offset,
        "ours_flipped.mcap",
    );
    assert_eq!(ok, 0, "nothing of a damaged chunk is used");
}

#[test]
fn db3_missing_tables() {
    for table in ["messages", "topics"] {
        let (_dir, path) = tmp_copy(&fixtures().join("sqlite3/sqlite3.db3"), "dropped.db3");
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&format!("DROP TABLE {table}")).unwrap();
        drop(c);
        let e = BagReader::open(&path).unwrap_err();
        assert!(
            matches!(e, BagError::MissingTable { table: t, .. } if t == table),
            "{e}"
        );
        assert!(e.to_string().contains("dropped.db3"));
        assert!(e.to_string().contains(&format!("no `{table}` table")));
    }
}

#[test]
fn not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db3");
    std::fs::write(&path, vec![0x42u8; 4096]).unwrap();
    let e = BagReader::open(&path).unwrap_err();
    assert!(matches!(e, BagError::Sqlite { .. }), "{e}");
    assert!(e.to_string().contains("garbage.db3"));
}

#[test]
fn message_failing_cdr_decode_names_topic_and_time_and_reading_goes_on() {
    let (_dir, path) = tmp_copy(&fixtures().join("sqlite3/sqlite3.db3"), "bad_msg.db3");
    let c = rusqlite::Connection::open(&path).unwrap();
    // TaskPriority whose `task` string claims 1 GB.
    let n = c
        .execute(
            "UPDATE messages SET data = X'0001000001000000020000000100000000000000FFFFFF3F' \
             WHERE topic_id = (SELECT id FROM topics WHERE name = '/nestdnn/task_priority')",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    let bag = BagReader::open(&path).unwrap();
    let mut it = bag.decoded().unwrap();
    let items: Vec<_> = it.by_ref().collect();
    assert_eq!(items.len(), 10, "9 good + 1 error");
    let errs: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errs.len(), 1);
    match errs[0] {
        BagError::Decode {
            topic,
            timestamp_ns,
            type_name,
            ..
        } => {
            assert_eq!(topic, "/nestdnn/task_priority");
            assert_eq!(*timestamp_ns, 1_700_000_000_040_000_000);
            assert_eq!(type_name, "nestdnn_msgs/msg/TaskPriority");
        }
        e => panic!("{e}"),
    }
    let s = errs[0].to_string();
    assert!(
        s.contains("bad_msg.db3") && s.contains("field `task` at byte 20"),
        "{s}"
    );
    assert!(!errs[0].is_storage_error());
    assert_eq!(it.stats().decode_errors, 1);
    assert_eq!(it.stats().decoded, 9);
}

#[test]
fn empty_bags() {
    let dir = tempfile::tempdir().unwrap();
    // A .db3 with the tables and no message.
    let (_d, db) = tmp_copy(&fixtures().join("sqlite3/sqlite3.db3"), "empty.db3");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("DELETE FROM messages").unwrap();
    drop(c);
    let e = BagReader::open(&db).unwrap_err();
    assert!(matches!(e, BagError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("empty.db3") && e.to_string().contains("empty bag"));

    // An MCAP with a topic and no message.
    let mc = dir.path().join("empty.mcap");
    let mut w = nestdnn::bag::McapWriter::create(&mc).unwrap();
    w.add_topic::<ResourceBudget>("/b", &[QosProfile::LATCHED])
        .unwrap();
    w.finish().unwrap();
    let e = BagReader::open(&mc).unwrap_err();
    assert!(matches!(e, BagError::Empty { .. }), "{e}");

    // A 0-byte .mcap, an empty folder.
    let zero = dir.path().join("zero.mcap");
    std::fs::write(&zero, b"").unwrap();
    let bag = BagReader::open(&zero);
    let errs = match bag {
        Ok(b) => drain(&b).1,
        Err(e) => vec![e],
    };
    assert!(!errs.is_empty());
    assert!(errs[0].to_string().contains("zero.mcap"), "{}", errs[0]);
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir(&empty_dir).unwrap();
    assert!(matches!(
        BagReader::open(&empty_dir),
        Err(BagError::NotABag { .. })
    ));
}

#[test]
fn missing_files() {
    let e = BagReader::open("/nonexistent/bag").unwrap_err();
    assert!(matches!(e, BagError::NotFound { .. }));
    assert!(e.to_string().contains("/nonexistent/bag"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("split/metadata.yaml"),
        dir.path().join("metadata.yaml"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("split/split_0.mcap"),
        dir.path().join("split_0.mcap"),
    )
    .unwrap();
    let e = BagReader::open(dir.path()).unwrap_err();
    match &e {
        BagError::MissingFile { file, .. } => assert!(file.ends_with("split_1.mcap")),
        e => panic!("{e}"),
    }
    // Unreadable metadata.
    std::fs::write(
        dir.path().join("metadata.yaml"),
        "rosbag2_bagfile_information: [",
    )
    .unwrap();
    let e = BagReader::open(dir.path()).unwrap_err();
    assert!(matches!(e, BagError::Metadata { .. }), "{e}");
    assert!(e.to_string().contains("metadata.yaml"));
}

#[test]
fn db3_message_with_unknown_topic_id_is_an_error_item() {
    let (_dir, path) = tmp_copy(&fixtures().join("sqlite3/sqlite3.db3"), "orphan.db3");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("UPDATE messages SET topic_id = 999 WHERE id = 1")
        .unwrap();
    drop(c);
    let bag = BagReader::open(&path).unwrap();
    let (ok, errs) = drain(&bag);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].to_string().contains("topic_id 999"), "{}", errs[0]);
    assert!(ok >= 9);
}

/// A byte flipped anywhere in an MCAP file (data, chunk index, summary, footer) gives errors or
/// messages, never a panic or a runaway allocation.
#[test]
fn any_flipped_byte_is_handled() {
    let bytes = std::fs::read(fixtures().join("mcap/mcap.mcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flip.mcap");
    let mut errors = 0;
    for at in (0..bytes.len()).step_by(53) {
        let mut bad = bytes.clone();
        bad[at] ^= 0xA5;
        std::fs::write(&path, &bad).unwrap();
        let errs = match BagReader::open(&path) {
            Ok(bag) => drain(&bag).1,
            Err(e) => vec![e],
        };
        for e in &errs {
            assert!(e.to_string().contains("flip.mcap"), "{e}");
        }
        errors += usize::from(!errs.is_empty());
    }
    assert!(errors > 0);
}
