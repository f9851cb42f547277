//! Bag replay (issue 6 acceptance): the committed recordings (MCAP and .db3, written by PyPI
//! `rosbags`) and a bag written by this project's `McapWriter` replay through the node core;
//! per task the accuracy is within 1.5 points of the manifest accuracy of the descendants that
//! served the frames; the plan changes at every recorded budget/priority event, at its bag
//! time, in the expected direction; the same bag gives the same plans twice; bad input (a
//! truncated MCAP, a corrupt chunk, a .db3 missing tables, unknown-type topics, a message that
//! fails CDR decoding, an empty bag) is reported naming the file and the point of failure.
//!
//! Latencies come from the committed profiles in `test/bags/profiles/` (deterministic pacing),
//! so the plans checked here are the same on every machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use nestdnn::bag::{BagReader, McapWriter, QosProfile};
use nestdnn::config::{NodeConfig, NodeName};
use nestdnn::msgs::{InferenceResult, Plan as PlanMsg, RosMessage};
use nestdnn::replay::{replay, PlanRecord, ProfileSource, ReplayOptions, Report, Status};
use serde_json::Value;

/// Held by every test of this file: the real-time replays profile and pace on the wall clock,
/// and any other replay running beside them (the heavy recording's six tasks, two of up to
/// 74.7 MMAC, most of all) would take the CPU from under them (seen in CI: the real-time task
/// fell 3.2 binomial standard deviations short). The deterministic replays are quick, so
/// running them one at a time costs a few seconds.
static CPU_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`CPU_HEAVY`] (a test that panicked while holding it does not block the others).
fn alone() -> std::sync::MutexGuard<'static, ()> {
    CPU_HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sidecar() -> Value {
    let text = std::fs::read_to_string(root().join("test/bags/recordings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn bag_entry(name: &str) -> Value {
    sidecar()["bags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["path"] == name)
        .unwrap()
        .clone()
}

fn config(overrides: &[(&str, &str)]) -> NodeConfig {
    config_from("params/replay.yaml", overrides)
}

fn config_from(params: &str, overrides: &[(&str, &str)]) -> NodeConfig {
    let o = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), serde_yaml::from_str(v).unwrap()));
    NodeConfig::load(&root().join(params), &NodeName::parse("/nestdnn_node"), o).unwrap()
}

fn opts(out: Option<PathBuf>) -> ReplayOptions {
    ReplayOptions {
        profiles: ProfileSource::Files(root().join("test/bags/profiles")),
        out,
        ..ReplayOptions::default()
    }
}

fn run(bag: &Path, cfg: &NodeConfig, out: Option<PathBuf>) -> Report {
    let mut ticks = 0usize;
    let r = replay(bag, cfg, &opts(out), &mut |_| ticks += 1).unwrap();
    if r.status != Status::Unusable {
        assert!(
            ticks as f64 >= r.duration_s.floor(),
            "a progress snapshot per bag second"
        );
    }
    r
}

/// Per task: accuracy within `tolerance` (1.5 points: the acceptance criterion) of the
/// frame-weighted manifest accuracy of the descendants that served the frames, and every frame
/// accounted for. `tolerance` None: three binomial standard deviations of the task's frame
/// count instead (see the .db3 test).
fn check_accuracy(r: &Report, bag: &Value, tolerance: Option<f64>) {
    for cam in bag["cameras"].as_array().unwrap() {
        let name = cam["task"].as_str().unwrap();
        let t = &r.tasks[name];
        assert_eq!(t.frames, cam["frames"].as_u64().unwrap(), "{name}: frames");
        assert_eq!(
            t.processed + t.dropped + t.ignored_disabled + t.bad_frames,
            t.frames,
            "{name}: every frame is processed, dropped or ignored"
        );
        assert!(t.processed >= t.frames / 2, "{name}: {t:?}");
        assert_eq!(
            t.ground_truth, t.processed,
            "{name}: ground truth for every frame"
        );
        let (acc, exp) = (t.accuracy.unwrap(), t.expected_accuracy.unwrap());
        eprintln!(
            "{}: {name}: accuracy {:.4} over {} frames, manifest expectation {:.4} ({:+.2} pt), served by {:?}",
            r.bag,
            acc,
            t.ground_truth,
            exp,
            (acc - exp) * 100.0,
            t.descendants
        );
        let n = t.ground_truth as f64;
        let tol = tolerance.unwrap_or(3.0 * (exp * (1.0 - exp) / n).sqrt());
        assert!(
            (acc - exp).abs() <= tol,
            "{name}: accuracy {acc:.4} vs expected {exp:.4} (tolerance {tol:.4}, {n} frames)"
        );
        assert_eq!(
            t.descendants.values().sum::<u64>(),
            t.processed,
            "{name}: descendants used"
        );
    }
}

type Assign = Vec<(String, usize, f64)>;

fn assign(p: &PlanRecord) -> Assign {
    p.tasks
        .iter()
        .map(|t| (t.status.clone(), t.descendant_index, t.share))
        .collect()
}

fn plan_at<'a>(r: &'a Report, t: f64, trigger: &str) -> &'a PlanRecord {
    r.plans
        .iter()
        .find(|p| (p.time - t).abs() < 1e-6 && p.trigger == trigger)
        .unwrap_or_else(|| {
            panic!(
                "no plan with trigger {trigger} at {t} s; plans: {:?}",
                r.plans
                    .iter()
                    .map(|p| (p.time, &p.trigger))
                    .collect::<Vec<_>>()
            )
        })
}

/// The plan in force just before `t` (the initial plan for an event at the very start).
fn plan_before(r: &Report, t: f64) -> &PlanRecord {
    r.plans
        .iter()
        .rev()
        .find(|p| p.time < t - 1e-9)
        .unwrap_or(&r.plans[0])
}

/// The plan changes at each recorded budget/priority event, in the expected direction.
fn check_events(r: &Report, bag: &Value) {
    let mut budget: Option<f64> = None;
    let mut priority: std::collections::HashMap<String, f64> = r.plans[0]
        .tasks
        .iter()
        .map(|t| (t.task.clone(), t.priority))
        .collect();
    for e in bag["events"].as_array().unwrap() {
        let te = e["time_s"].as_f64().unwrap();
        let f = &e["fields"];
        let before = plan_before(r, te);
        let any_running = before.tasks.iter().any(|t| t.status == "running");
        if e["type"] == "nestdnn_msgs/msg/ResourceBudget" {
            let cores = f["cpu_cores_available"].as_f64().unwrap();
            let at = plan_at(r, te, "budget");
            assert!((at.budget_cores - cores).abs() < 1e-6);
            let prev = budget.replace(cores);
            let (Some(prev), true) = (prev, any_running) else {
                continue; // the initial budget, before any camera
            };
            assert_ne!(
                assign(before),
                assign(at),
                "budget at {te} s changes the plan"
            );
            let mut changed = false;
            for (b, a) in before.tasks.iter().zip(&at.tasks) {
                if b.status != "running" {
                    continue;
                }
                let (db, da) = (b.descendant_index as i64, a.descendant_index as i64);
                if cores < prev {
                    assert!(
                        a.status != "running" || da <= db,
                        "{te} s: less budget, {} grew {db} -> {da}",
                        a.task
                    );
                    changed |= a.status != "running" || da < db;
                } else {
                    assert!(
                        a.status == "running" && da >= db,
                        "{te} s: more budget, {} shrank {db} -> {da} ({})",
                        a.task,
                        a.status
                    );
                    changed |= da > db;
                }
            }
            assert!(changed, "{te} s: budget {prev} -> {cores}: no task moved");
        } else {
            let task = f["task"].as_str().unwrap();
            let enabled = f["enabled"].as_bool().unwrap();
            let p = f["priority"].as_f64().unwrap();
            let old = priority.insert(task.to_string(), p).unwrap();
            if !enabled {
                let at = plan_at(r, te, &format!("task_stopped:{task}:disabled"));
                assert_eq!(at.task(task).unwrap().status, "disabled");
                assert_ne!(assign(before), assign(at));
            } else if before.task(task).unwrap().status == "disabled" {
                let at = plan_at(r, te, &format!("priority_changed:{task}"));
                assert_eq!(at.task(task).unwrap().status, "idle");
                // Its next frame starts it again.
                let started = r
                    .plans
                    .iter()
                    .find(|q| q.time >= te && q.trigger == format!("task_started:{task}"))
                    .unwrap();
                assert!(started.time - te < 0.1);
                assert_eq!(started.task(task).unwrap().status, "running");
            } else {
                assert!(p > old, "the recordings raise priorities");
                let at = plan_at(r, te, &format!("priority_changed:{task}"));
                let (b, a) = (before.task(task).unwrap(), at.task(task).unwrap());
                assert_eq!(a.status, "running");
                assert!(
                    a.descendant_index > b.descendant_index || a.share > b.share + 1e-9,
                    "{te} s: priority {old} -> {p} of {task}: {} @ {} -> {} @ {}",
                    b.descendant,
                    b.share,
                    a.descendant,
                    a.share
                );
            }
        }
    }
}

/// Reads the output bag back with the project's reader: one result per processed frame, one
/// plan per plan, in ROS 2 form.
fn check_output(out: &Path, r: &Report) {
    let bag = BagReader::open(out).unwrap();
    let mut results = std::collections::BTreeMap::<String, u64>::new();
    let mut plans = 0usize;
    for m in bag.messages().unwrap() {
        let m = m.unwrap();
        match m.topic.type_name.as_str() {
            "nestdnn_msgs/msg/InferenceResult" => {
                let x = InferenceResult::from_cdr(&m.data).unwrap();
                assert_eq!(m.topic.name, format!("/nestdnn/{}/result", x.task));
                *results.entry(x.task).or_default() += 1;
            }
            "nestdnn_msgs/msg/Plan" => {
                let p = PlanMsg::from_cdr(&m.data).unwrap();
                assert_eq!(p.trigger, r.plans[plans].trigger);
                plans += 1;
            }
            "vision_msgs/msg/Classification" => {}
            other => panic!("unexpected type {other}"),
        }
    }
    assert_eq!(plans, r.plans.len());
    for (name, t) in &r.tasks {
        assert_eq!(
            results.get(name).copied().unwrap_or(0),
            t.processed,
            "{name}"
        );
    }
    // And with the two Python readers (rosbags, mcap-ros2), using the definitions stored in
    // the file, when the project venv exists (scripts/py-env.sh; CI always has it).
    let py = root().join(".venv/bin/python");
    if !py.exists() {
        eprintln!("Python readers skipped: no .venv (run scripts/py-env.sh)");
        return;
    }
    let o = Command::new(&py)
        .arg(root().join("test/bags/read_with_python.py"))
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for reader in ["rosbags", "mcap_ros2"] {
        let msgs = v[reader].as_array().unwrap();
        let n_plans = msgs
            .iter()
            .filter(|m| m["topic"] == "/nestdnn/plan")
            .count();
        assert_eq!(n_plans, r.plans.len(), "{reader}");
        for (name, t) in &r.tasks {
            let topic = format!("/nestdnn/{name}/result");
            let mine: Vec<&Value> = msgs.iter().filter(|m| m["topic"] == topic).collect();
            assert_eq!(mine.len() as u64, t.processed, "{reader} {name}");
            if let Some(m) = mine.first() {
                assert_eq!(m["data"]["task"], name.as_str(), "{reader}");
            }
        }
    }
}

#[test]
fn mcap_recording_accuracy_events_determinism_and_output() {
    let _alone = alone();
    let bag = root().join("test/bags/recording");
    let entry = bag_entry("recording");
    let cfg = config(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.mcap");
    let a = run(&bag, &cfg, Some(out.clone()));
    assert_eq!(a.status, Status::Ok, "{:?}", a.errors);
    assert!(a.errors.is_empty());
    eprintln!(
        "replayed {:.1} bag s in {:.2} wall s",
        a.duration_s, a.wall_s
    );
    // Unknown-type topics are skipped and counted, not fatal.
    let other = &entry["other_topics"][0]["topic"];
    assert!(a.read.skipped_unknown[other.as_str().unwrap()] > 0);
    check_accuracy(&a, &entry, Some(0.015));
    check_events(&a, &entry);
    check_output(&out, &a);
    // The same bag twice: the same plans and the same per-task results.
    let b = run(&bag, &cfg, None);
    assert_eq!(a.plans, b.plans);
    assert_eq!(a.tasks, b.tasks);
    // The JSON keys other tools read.
    let v = serde_json::to_value(&a).unwrap();
    for (_, t) in v["tasks"].as_object().unwrap() {
        for k in ["frames", "processed", "dropped", "accuracy", "switches"] {
            assert!(!t[k].is_null(), "{k}");
        }
    }
    assert!(v["plans"][0]["time"].is_number() && v["plans"][0]["trigger"].is_string());
}

/// The demo's recording: four light tasks and the two heavy apps. Accuracy within three
/// binomial standard deviations of the serving descendants' (600 frames cannot resolve 1.5
/// points on the heavy apps, whose descendants sit at 53-86 %), plans that move with every
/// event, and a live table that shows the demand against the budget.
#[test]
fn heavy_recording_plans_follow_the_demand_against_the_budget() {
    let _alone = alone();
    let bag = root().join("test/bags/recording_heavy");
    let entry = bag_entry("recording_heavy");
    let cfg = config_from("params/replay_heavy.yaml", &[]);
    let mut snaps = Vec::new();
    let r = replay(&bag, &cfg, &opts(None), &mut |p| snaps.push(p.clone())).unwrap();
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    check_accuracy(&r, &entry, None);
    check_events(&r, &entry);
    // The heavy apps step down when the budget falls to a third of the demand (4 s).
    for task in ["objects_vgg", "items_far_vgg"] {
        let (b, a) = (plan_before(&r, 4.0), plan_at(&r, 4.0, "budget"));
        let (b, a) = (b.task(task).unwrap(), a.task(task).unwrap());
        assert!(
            a.descendant_index < b.descendant_index,
            "{task}: {b:?} -> {a:?}"
        );
    }
    // The live table: the running tasks' demand against the budget.
    let at = |t: f64| snaps.iter().find(|p| p.time >= t).unwrap();
    let ratio = |t: f64| at(t).demand_cores().unwrap() / at(t).budget_cores;
    assert!(ratio(2.0) < 1.0, "{:?}", at(2.0));
    assert!((2.5..3.5).contains(&ratio(6.0)), "{:?}", at(6.0));
    assert!(ratio(19.0) > 3.5, "{:?}", at(19.0));
    let table = at(6.0).table();
    assert!(
        table.contains("x the budget") && table.contains("need"),
        "{table}"
    );
    for t in &at(6.0).tasks {
        assert!(t.need_cores.unwrap() > 0.0, "{t:?}");
    }
}

#[test]
fn db3_recording_and_the_same_bag_written_by_mcap_writer() {
    let _alone = alone();
    let bag = root().join("test/bags/recording_db3");
    let entry = bag_entry("recording_db3");
    // This recording carries digits_vgg as jpeg.
    let cfg = config(&[("digits_vgg.transport", "compressed")]);
    let a = run(&bag, &cfg, None);
    assert_eq!(a.status, Status::Ok, "{:?}", a.errors);
    // 120 frames per task cannot resolve 1.5 points (one frame is 0.83 points; the binomial
    // standard deviation at 92 % is 2.4 points): the 1.5-point criterion is checked on the
    // 600-frame MCAP recording; here three standard deviations.
    check_accuracy(&a, &entry, None);
    check_events(&a, &entry);
    // Unconfigured-topic cameras of the other tasks are absent: they stay idle.
    assert_eq!(a.tasks["fashion_vgg"].frames, 0);
    assert!(a.tasks["fashion_vgg"].accuracy.is_none());

    // Re-write the whole bag with this project's writer (MCAP) and replay that: identical.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("rewritten.mcap");
    rewrite(&bag, &copy);
    let b = run(&copy, &cfg, None);
    assert_eq!(b.status, Status::Ok, "{:?}", b.errors);
    assert_eq!(a.plans, b.plans);
    assert_eq!(a.tasks, b.tasks);
}

/// Copies every message of `from` into a new MCAP file with [`McapWriter`], typed (decoded and
/// re-encoded), with the recorded QoS; other types are dropped.
fn rewrite(from: &Path, to: &Path) {
    use nestdnn::bag::BagMessage;
    let bag = BagReader::open(from).unwrap();
    let mut w = McapWriter::create(to).unwrap();
    for t in bag.topics() {
        let qos = t.qos_profiles();
        let qos = if qos.is_empty() {
            vec![QosProfile::DEFAULT]
        } else {
            qos
        };
        match t.type_name.as_str() {
            "sensor_msgs/msg/Image" => w.add_topic::<nestdnn::msgs::Image>(&t.name, &qos),
            "sensor_msgs/msg/CompressedImage" => {
                w.add_topic::<nestdnn::msgs::CompressedImage>(&t.name, &qos)
            }
            "vision_msgs/msg/Classification" => {
                w.add_topic::<nestdnn::msgs::Classification>(&t.name, &qos)
            }
            "nestdnn_msgs/msg/ResourceBudget" => {
                w.add_topic::<nestdnn::msgs::ResourceBudget>(&t.name, &qos)
            }
            "nestdnn_msgs/msg/TaskPriority" => {
                w.add_topic::<nestdnn::msgs::TaskPriority>(&t.name, &qos)
            }
            _ => Ok(()),
        }
        .unwrap();
    }
    for m in bag.decoded().unwrap() {
        let m = m.unwrap();
        let (topic, ts) = (m.topic.name.as_str(), m.timestamp_ns);
        match &m.msg {
            BagMessage::Image(x) => w.write(topic, ts, x),
            BagMessage::CompressedImage(x) => w.write(topic, ts, x),
            BagMessage::Classification(x) => w.write(topic, ts, x),
            BagMessage::ResourceBudget(x) => w.write(topic, ts, x),
            BagMessage::TaskPriority(x) => w.write(topic, ts, x),
        }
        .unwrap();
    }
    w.finish().unwrap();
}

/// The small rosbags-written fixtures (MCAP and .db3 from the same messages): tiny frames,
/// undecodable jpeg bytes, an unknown-type topic, a budget and a priority event.
#[test]
fn rosbags_fixtures_in_both_storages_replay_alike() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("fixtures.yaml");
    std::fs::write(
        &params,
        format!(
            "nestdnn_node:\n  ros__parameters:\n    tasks: [fashion_vgg, digits_vgg]\n    models_dir: {}\n    scheduler: {{share_step: 0.005}}\n    fashion_vgg: {{image_topic: /cam/image_raw, target_fps: 30.0}}\n    digits_vgg: {{image_topic: /cam2/image_raw, transport: compressed, target_fps: 30.0}}\n",
            root().join("models").display()
        ),
    )
    .unwrap();
    let cfg = NodeConfig::load(&params, &NodeName::parse("/nestdnn_node"), Vec::new()).unwrap();
    let fx = root().join("test/bags/fixtures");
    let a = run(&fx.join("mcap"), &cfg, None);
    let b = run(&fx.join("sqlite3"), &cfg, None);
    for r in [&a, &b] {
        assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
        assert_eq!(r.read.skipped_unknown["/chatter"], 2);
        let f = &r.tasks["fashion_vgg"];
        assert_eq!((f.frames, f.processed, f.ground_truth), (3, 3, 3));
        assert!(f.accuracy.is_some());
        let d = &r.tasks["digits_vgg"];
        assert_eq!((d.frames, d.bad_frames, d.processed), (2, 2, 0));
        assert!(d.accuracy.is_none());
        assert!(r.warnings.iter().any(|w| w.contains("digits_vgg")));
        assert!(r.plans.iter().any(|p| p.trigger == "budget"));
        assert!(r
            .plans
            .iter()
            .any(|p| p.trigger == "priority_changed:fashion_vgg"));
    }
    assert_eq!(a.plans, b.plans);
    assert_eq!(a.tasks, b.tasks);
}

fn copy_to(dir: &Path, from: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).unwrap();
    to
}

fn db3_copy(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let p = copy_to(
        dir,
        &root().join("test/bags/recording_db3/recording_db3.db3"),
        name,
    );
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(sql).unwrap();
    drop(c);
    p
}

#[test]
fn damaged_and_empty_bags_are_reported_with_file_and_place() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("digits_vgg.transport", "compressed")]);
    let mcap = std::fs::read(root().join("test/bags/recording/recording.mcap")).unwrap();

    // Truncated MCAP: replayed up to the cut, then reported.
    let cut = dir.path().join("cut.mcap");
    std::fs::write(&cut, &mcap[..mcap.len() * 2 / 5]).unwrap();
    let r = run(&cut, &cfg, None);
    assert_eq!(r.status, Status::Incomplete);
    let e = r.errors.join("\n");
    assert!(
        e.contains("cut.mcap") && e.contains("truncated MCAP"),
        "{e}"
    );
    let f = &r.tasks["fashion_vgg"];
    assert!(f.processed > 100 && f.frames < 600, "{f:?}");
    assert!(f.accuracy.is_some());

    // A corrupt chunk in the middle (its zstd frame damaged; rosbags writes no chunk CRC):
    // skipped, the rest replayed.
    let summary = mcap::Summary::read(&mcap).unwrap().unwrap();
    let chunks = &summary.chunk_indexes;
    let mid = &chunks[chunks.len() / 2];
    let mut bad = mcap.clone();
    let at = mid.compressed_data_offset().unwrap() as usize;
    for b in &mut bad[at..at + 16] {
        *b ^= 0x5a;
    }
    let corrupt = dir.path().join("corrupt.mcap");
    std::fs::write(&corrupt, &bad).unwrap();
    let r = run(&corrupt, &cfg, None);
    assert_eq!(r.status, Status::Incomplete);
    let e = r.errors.join("\n");
    assert!(
        e.contains("corrupt.mcap")
            && e.contains(&format!(
                "corrupt MCAP chunk at byte {}",
                mid.chunk_start_offset
            )),
        "{e}"
    );
    let f = &r.tasks["fashion_vgg"];
    assert!(f.frames > 500 && f.frames < 600, "{f:?}");
    let last = r.plans.last().unwrap();
    assert!(
        last.time > 17.9,
        "replay went on after the chunk: {}",
        last.time
    );

    // A .db3 without its messages table: unusable, nothing replayed.
    let nomsg = db3_copy(dir.path(), "nomsg.db3", "DROP TABLE messages;");
    let r = run(&nomsg, &cfg, None);
    assert_eq!(r.status, Status::Unusable);
    let e = r.errors.join("\n");
    assert!(e.contains("nomsg.db3") && e.contains("`messages`"), "{e}");
    assert!(r.tasks.values().all(|t| t.frames == 0));

    // Messages that fail CDR decoding: skipped and counted, the bag is otherwise fine.
    let garbled = db3_copy(
        dir.path(),
        "garbled.db3",
        "UPDATE messages SET data = X'00010000DEADBEEF' WHERE id IN (SELECT m.id FROM messages m JOIN topics t ON m.topic_id = t.id WHERE t.name = '/camera/digits_vgg/image_raw/compressed' ORDER BY m.timestamp LIMIT 3);",
    );
    let r = run(&garbled, &cfg, None);
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    assert_eq!(r.read.decode_errors, 3);
    assert_eq!(r.tasks["digits_vgg"].frames, 117);
    let w = r.warnings.join("\n");
    assert!(
        w.contains("garbled.db3") && w.contains("/camera/digits_vgg/image_raw/compressed"),
        "{w}"
    );

    // An empty bag.
    let empty = db3_copy(dir.path(), "empty.db3", "DELETE FROM messages;");
    let r = run(&empty, &cfg, None);
    assert_eq!(r.status, Status::Unusable);
    let e = r.errors.join("\n");
    assert!(e.contains("empty.db3") && e.contains("empty bag"), "{e}");
}

/// The command line: a damaged bag still writes the report and exits non-zero, naming the
/// file; a good one exits 0 with the summary.
#[test]
fn cli_writes_the_report_and_exits_non_zero_on_a_damaged_bag() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_nestdnn");
    let db3 = root().join("test/bags/recording_db3/recording_db3.db3");
    let bytes = std::fs::read(&db3).unwrap();
    let cut = dir.path().join("cut.db3");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let report = dir.path().join("r.json");
    let base = |bag: &Path| {
        let mut c = Command::new(exe);
        c.arg("replay")
            .arg(bag)
            .arg("--params")
            .arg(root().join("params/replay.yaml"))
            .args(["-p", "digits_vgg.transport:=compressed", "--every", "0"])
            .arg("--profiles")
            .arg(root().join("test/bags/profiles"))
            .arg("--report")
            .arg(&report);
        c
    };
    let o = base(&cut).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("cut.db3"), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_ne!(v["status"], "ok");
    assert!(v["errors"][0].as_str().unwrap().contains("cut.db3"));

    let o = base(&db3).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("summary:") && text.contains("digits_vgg"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["tasks"]["digits_vgg"]["frames"], 120);
}

/// `--realtime`: the same bag on the wall clock through the real node core (threads, CPU-share
/// arbiter, this machine's profile cache). Timing is real, so only what must hold on any
/// machine is checked: every frame accounted for, real results with sane accuracy, the
/// recorded events re-plan at about their bag time, the output bag written.
#[test]
fn realtime_replay_runs_the_node_core_at_bag_pace() {
    let _alone = alone();
    let bag = root().join("test/bags/recording_db3");
    // One copy of each model (the slots keep only the active plan; a switch re-reads the
    // master file), so the live node's switches run through that path too.
    let cfg = config(&[
        ("digits_vgg.transport", "compressed"),
        ("scheduler.switch_policy", "one_copy"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rt.mcap");
    // A private profile cache: profiled here (a few seconds), so a profile measured while the
    // other tests load the CPU never lands in the user's cache.
    let cache = dir.path().join("cache");
    let o = ReplayOptions {
        pacing: nestdnn::replay::Pacing::Realtime,
        profiles: ProfileSource::Cache(Some(cache)),
        out: Some(out.clone()),
        ..ReplayOptions::default()
    };
    let r = replay(&bag, &cfg, &o, &mut |_| {}).unwrap();
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    assert!(r.wall_s >= 3.9, "bag pace: {} s", r.wall_s);
    // The reference is this bag's own accuracy (every frame, deterministic pacing), not the
    // manifests': its 120 frames are a fixed set, harder than the test split for
    // fashion_resnet (88.3 % against an expected 92.6 %), and a 3-sigma band around the
    // manifest value failed once in CI (82.8 % on 87 frames against 92.0 %). Which frames the
    // wall clock drops and which descendant serves them still vary: 3 sigma plus 5 points,
    // which a broken pipeline (one class for every frame, wrong pre-processing) misses by far.
    let det = run(&bag, &cfg, None);
    assert_eq!(det.status, Status::Ok, "{:?}", det.errors);
    for name in ["fashion_resnet", "digits_vgg"] {
        let t = &r.tasks[name];
        assert_eq!(t.frames, 120, "{name}");
        assert!(t.processed >= 30, "{name}: {t:?}");
        assert_eq!(
            t.processed + t.dropped + t.ignored_disabled + t.bad_frames,
            120
        );
        let (acc, reference) = (t.accuracy.unwrap(), det.tasks[name].accuracy.unwrap());
        let tol = 3.0 * (reference * (1.0 - reference) / t.ground_truth as f64).sqrt() + 0.05;
        eprintln!(
            "realtime {name}: {} of 120 processed, {:.1} fps, accuracy {acc:.4} vs {reference:.4} \
             on the whole bag (manifests {:.4})",
            t.processed,
            t.fps,
            t.expected_accuracy.unwrap()
        );
        assert!(
            (acc - reference).abs() <= tol,
            "{name}: {acc} vs {reference} (tolerance {tol})"
        );
    }
    let near = |trigger: &str, at: f64| {
        r.plans
            .iter()
            .any(|p| p.trigger == trigger && (p.time - at).abs() < 0.5)
    };
    assert!(near("budget", 1.0), "{:?}", r.plans);
    assert!(near("priority_changed:digits_vgg", 3.5), "{:?}", r.plans);
    assert!(
        r.tasks
            .values()
            .any(|t| !t.switches.is_empty() && t.descendants.len() >= 2),
        "one-copy switches served frames: {:?}",
        r.tasks
    );
    check_output(&out, &r);
}

/// The live node re-calibrates its ladders from the CPU time frames really take
/// (`scheduler.calibration_period_s`): seeded with profiles whose latencies are 8x what the
/// committed profiles say (a profile measured on a much slower or busier machine), the node
/// must replace the ladders of the tasks that ran and re-plan (trigger `profile_changed`).
#[test]
fn realtime_node_recalibrates_wrong_profiles() {
    // Alone, like the other realtime replays: under a second replay's load a task can see too
    // few frames by the first calibration tick, and a later re-calibration that leaves the
    // plan unchanged makes no plan record (failed once in CI that way).
    let _alone = alone();
    let bag = root().join("test/bags/recording_db3");
    let cfg = config(&[
        ("digits_vgg.transport", "compressed"),
        // Not 1.0: the bag's budget arrives at 1.0 s, and a calibration plan made at the same
        // moment can be superseded by the budget's plan (the node applies only the newest;
        // that plan carries the new ladders, but under the trigger `budget`), which failed
        // in CI once. Ticks at 1.3, 2.6, 3.9 s meet no recorded event (1.0 and 3.5 s).
        ("scheduler.calibration_period_s", "1.3"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cache = nestdnn::profile::ProfileCache::new(dir.path().join("cache"));
    for t in &cfg.tasks {
        let model = nestdnn::model::MultiCapacityModel::load(&t.model_dir).unwrap();
        let file = root().join(format!("test/bags/profiles/{}.json", t.name));
        let mut p: nestdnn::profile::ModelProfile =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        p.cpu_model = nestdnn::profile::cpu_model();
        p.crate_version = env!("CARGO_PKG_VERSION").to_string();
        for d in &mut p.descendants {
            d.latency_ms_median *= 8.0;
            d.latency_ms_p90 *= 8.0;
        }
        cache.store(&model, &p).unwrap();
        assert!(
            cache.load(&model).is_some(),
            "{}: seeded profile not used",
            t.name
        );
    }
    let o = ReplayOptions {
        pacing: nestdnn::replay::Pacing::Realtime,
        profiles: ProfileSource::Cache(Some(cache.dir().to_path_buf())),
        ..ReplayOptions::default()
    };
    let r = replay(&bag, &cfg, &o, &mut |_| {}).unwrap();
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    for name in ["fashion_resnet", "digits_vgg"] {
        let at = r
            .plans
            .iter()
            .find(|p| p.trigger == format!("profile_changed:{name}"))
            .unwrap_or_else(|| panic!("{name}: no re-calibration: {:?}", r.plans));
        eprintln!("{name}: re-calibrated at {:.2} s", at.time);
        assert!(at.time > 1.2, "{name}: calibrated before the first period");
    }
    // Calibration plans are made on the control thread while budgets and priorities arrive on
    // others: the node applies and publishes plans in sequence order only (an older plan
    // applied after a newer one would leave the runtime on a stale budget).
    assert!(
        r.plans.windows(2).all(|w| w[0].seq < w[1].seq),
        "plans out of order: {:?}",
        r.plans
            .iter()
            .map(|p| (p.seq, &p.trigger))
            .collect::<Vec<_>>()
    );
}

/// Profile files (`--profiles`) must exist and belong to the models: a missing one or one
/// made for another version of a model is an error naming the task, the file and the fix.
#[test]
fn profile_files_must_match_the_models() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let bag = root().join("test/bags/recording_db3");
    let with = |profiles: &Path| ReplayOptions {
        profiles: ProfileSource::Files(profiles.to_path_buf()),
        ..ReplayOptions::default()
    };
    let e = replay(&bag, &cfg, &with(dir.path()), &mut |_| {}).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("fashion_vgg")
            && s.contains("fashion_vgg.json")
            && s.contains("nestdnn profile"),
        "{s}"
    );
    for t in [
        "fashion_vgg",
        "fashion_resnet",
        "digits_vgg",
        "digits_resnet",
    ] {
        let from = root().join(format!("test/bags/profiles/{t}.json"));
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
        if t == "digits_vgg" {
            v["model_sha256"] = Value::from("0".repeat(64));
        }
        std::fs::write(dir.path().join(format!("{t}.json")), v.to_string()).unwrap();
    }
    let e = replay(&bag, &cfg, &with(dir.path()), &mut |_| {}).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("digits_vgg.json") && s.contains("another version of the model"),
        "{s}"
    );
}
