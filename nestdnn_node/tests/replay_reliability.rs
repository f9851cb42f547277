//! Issue 12, bag replay: outputs never overwrite an input (refused before any work, the input
//! left byte-identical); outputs are written atomically and a failed one still leaves the
//! summary; silent wrong results become counted warnings or errors (ground truth with labels
//! the model lacks or stamps that match no frame, a camera topic recorded with another type,
//! a clipped ROI, an MCAP file without CRCs); a dead resource monitor (`budget_stale`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nestdnn::bag::{BagMessage, BagReader, McapWriter, QosProfile};
use nestdnn::config::{NodeConfig, NodeName};
use nestdnn::msgs::{Classification, CompressedImage, Image, ResourceBudget, TaskPriority};
use nestdnn::replay::{replay, ProfileSource, ReplayOptions, Report, Status};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn recording() -> PathBuf {
    root().join("test/bags/recording")
}

fn db3() -> PathBuf {
    root().join("test/bags/recording_db3/recording_db3.db3")
}

/// `nestdnn replay BAG` with the bundled parameters and committed profiles, plus `extra`.
fn cli(bag: &Path, extra: &[&std::ffi::OsStr]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nestdnn"));
    c.arg("replay")
        .arg(bag)
        .arg("--params")
        .arg(root().join("params/replay.yaml"))
        .args(["--every", "0"])
        .arg("--profiles")
        .arg(root().join("test/bags/profiles"));
    for a in extra {
        c.arg(a);
    }
    c.output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn config(overrides: &[(&str, &str)]) -> NodeConfig {
    let o = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), serde_yaml::from_str(v).unwrap()));
    NodeConfig::load(
        &root().join("params/replay.yaml"),
        &NodeName::parse("/nestdnn_node"),
        o,
    )
    .unwrap()
}

fn run(bag: &Path, cfg: &NodeConfig) -> Report {
    let opts = ReplayOptions {
        profiles: ProfileSource::Files(root().join("test/bags/profiles")),
        ..ReplayOptions::default()
    };
    replay(bag, cfg, &opts, &mut |_| {}).unwrap()
}

#[test]
fn outputs_that_are_or_lie_inside_an_input_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the .db3 (the test must not risk the committed file).
    let bag = dir.path().join("in.db3");
    std::fs::copy(db3(), &bag).unwrap();
    let before = std::fs::read(&bag).unwrap();
    let params = root().join("params/replay.yaml");
    let params_before = std::fs::read(&params).unwrap();
    for flag in ["--out", "--report", "--plot"] {
        let o = cli(&bag, &[os(flag), bag.as_os_str()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flag}: {err}");
        assert!(
            err.contains(flag) && err.contains("would overwrite the input"),
            "{flag}: {err}"
        );
        assert!(!err.contains("replaying"), "refused before any work: {err}");
        assert_eq!(
            std::fs::read(&bag).unwrap(),
            before,
            "{flag}: input changed"
        );
    }
    // The parameters file, and a file inside the bag folder or a model folder.
    let o = cli(&bag, &[os("--report"), params.as_os_str()]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&params).unwrap(), params_before);
    let inside = recording().join("x.mcap");
    let o = cli(&recording(), &[os("--out"), inside.as_os_str()]);
    assert!(!o.status.success());
    assert!(!inside.exists());
    let in_model = root().join("models/fashion_vgg/report.json");
    let o = cli(&bag, &[os("--report"), in_model.as_os_str()]);
    assert!(!o.status.success());
    assert!(!in_model.exists());
    // Two outputs on one path.
    let r = dir.path().join("r.json");
    let o = cli(
        &bag,
        &[os("--report"), r.as_os_str(), os("--plot"), r.as_os_str()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("both name"), "{err}");
    // An output folder that cannot be made.
    let blocked = dir.path().join("file-not-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let o = cli(&bag, &[os("--report"), blocked.join("r.json").as_os_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("cannot write there"),
        "{err}"
    );
}

#[test]
fn outputs_are_written_whole_and_the_summary_always_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o/results.mcap");
    let report = dir.path().join("o/report.json");
    let plot = dir.path().join("o/plot.svg");
    let o = cli(
        &db3(),
        &[
            os("-p"),
            os("digits_vgg.transport:=compressed"),
            os("--out"),
            out.as_os_str(),
            os("--report"),
            report.as_os_str(),
            os("--plot"),
            plot.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary:"));
    let names: Vec<String> = std::fs::read_dir(dir.path().join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // results.mcap, report.json, plot.svg and its PNG twin plot.png.
    assert_eq!(names.len(), 4, "no temporary file left: {names:?}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    let png = image::open(plot.with_extension("png")).unwrap();
    assert!(png.width() > 0 && png.height() > 0);
    // Our MCAP carries CRCs: the reader gives no "no CRCs" warning for it.
    let r = BagReader::open(&out).unwrap();
    assert!(r.unchecked_files().is_empty());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["status"], "ok");
    assert!(v["output_errors"].as_array().unwrap().is_empty());
}

/// Copies the bundled MCAP recording through `edit` (which may change or drop messages) into
/// a new MCAP file written by this project (with CRCs).
fn rewrite(to: &Path, mut edit: impl FnMut(&str, &mut BagMessage) -> bool) {
    let reader = BagReader::open(recording()).unwrap();
    let mut w = McapWriter::create(to).unwrap();
    for m in reader.decoded().unwrap() {
        let mut m = m.unwrap();
        let topic = m.topic.name.clone();
        if !edit(&topic, &mut m.msg) {
            continue;
        }
        let t = m.timestamp_ns;
        let q = [QosProfile::DEFAULT];
        match &m.msg {
            BagMessage::Image(x) => {
                w.add_topic::<Image>(&topic, &q).unwrap();
                w.write(&topic, t, x).unwrap()
            }
            BagMessage::CompressedImage(x) => {
                w.add_topic::<CompressedImage>(&topic, &q).unwrap();
                w.write(&topic, t, x).unwrap()
            }
            BagMessage::Classification(x) => {
                w.add_topic::<Classification>(&topic, &q).unwrap();
                w.write(&topic, t, x).unwrap()
            }
            BagMessage::ResourceBudget(x) => {
                w.add_topic::<ResourceBudget>(&topic, &q).unwrap();
                w.write(&topic, t, x).unwrap()
            }
            BagMessage::TaskPriority(x) => {
                w.add_topic::<TaskPriority>(&topic, &q).unwrap();
                w.write(&topic, t, x).unwrap()
            }
        }
    }
    w.finish().unwrap();
}

#[test]
fn ground_truth_that_cannot_be_scored_is_an_error_or_a_counted_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    // Class ids written as indices instead of the manifest's names (fashion_vgg), one
    // misspelled name every 10th message (digits_vgg), stamps shifted by 1 ms (digits_resnet).
    let bag = dir.path().join("truth.mcap");
    let mut n = 0u64;
    rewrite(&bag, |topic, m| {
        if let BagMessage::Classification(c) = m {
            if topic.starts_with("/camera/fashion_vgg/") {
                c.results[0].class_id = "3".into();
            } else if topic.starts_with("/camera/digits_vgg/") {
                n += 1;
                if n % 10 == 0 {
                    c.results[0].class_id = format!("{}x", c.results[0].class_id);
                }
            } else if topic.starts_with("/camera/digits_resnet/") {
                c.header.stamp.nanosec += 1_000_000;
            }
        }
        true
    });
    let r = run(&bag, &cfg);
    assert_eq!(r.status, Status::Unusable, "{:?}", r.errors);
    let e = r.errors.join("\n");
    assert!(
        e.contains("task fashion_vgg")
            && e.contains("not labels of the model")
            && e.contains("\"3\""),
        "{e}"
    );
    assert!(
        e.contains("task digits_resnet") && e.contains("match no frame's header stamp"),
        "{e}"
    );
    let w = r.warnings.join("\n");
    assert!(
        w.contains("task digits_vgg") && w.contains("60 of 600"),
        "{w}"
    );
    let d = &r.tasks["digits_vgg"];
    assert_eq!(d.ground_truth_unknown_label, 60);
    assert!(d.accuracy.is_some());
    assert_eq!(r.tasks["fashion_vgg"].ground_truth_unknown_label, 600);
    assert_eq!(r.tasks["digits_resnet"].ground_truth_unmatched, 600);
    // Our file has CRCs; the bundled recording (PyPI rosbags writes none) is flagged.
    assert!(!w.contains("no CRCs"), "{w}");
    let r = run(&recording(), &cfg);
    assert_eq!(r.status, Status::Ok);
    let w = r.warnings.join("\n");
    assert!(w.contains("recording.mcap carries no CRCs"), "{w}");
}

#[test]
fn a_camera_topic_of_another_type_is_an_error_and_a_clipped_roi_is_counted() {
    // recording_db3 carries digits_vgg as JPEG on .../image_raw/compressed: subscribing to that
    // topic as raw is a type mismatch, not a task with 0 frames and exit 0.
    let cfg = config(&[(
        "digits_vgg.image_topic",
        "/camera/digits_vgg/image_raw/compressed",
    )]);
    let r = run(&db3(), &cfg);
    assert_eq!(r.status, Status::Unusable);
    let e = r.errors.join("\n");
    assert!(
        e.contains("task digits_vgg")
            && e.contains("sensor_msgs/msg/CompressedImage")
            && e.contains("sensor_msgs/msg/Image"),
        "{e}"
    );
    // ROIs moved so that they reach past the 160x120 frames: a raw task (MCAP recording) and
    // a JPEG one (.db3), each clipped in every frame; the others untouched.
    let cfg = config(&[
        ("fashion_vgg.roi", "[124, 32, 56, 56]"),
        ("digits_resnet.roi", "[90, 84, 56, 56]"),
    ]);
    let r = run(&recording(), &cfg);
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    assert_eq!(r.tasks["fashion_vgg"].roi_clipped, 600);
    assert_eq!(r.tasks["digits_resnet"].roi_clipped, 600, "JPEG frames too");
    assert_eq!(r.tasks["digits_vgg"].roi_clipped, 0);
    assert_eq!(r.tasks["fashion_resnet"].roi_clipped, 0);
    let w = r.warnings.join("\n");
    assert!(
        w.contains(
            "task fashion_vgg: the region of interest reached past the image in 600 of 600 frames"
        ),
        "{w}"
    );
}

#[test]
fn random_bytes_inside_an_mcap_with_crcs_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.mcap");
    rewrite(&good, |_, _| true);
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 8] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let bad = dir.path().join("bad.mcap");
    std::fs::write(&bad, &bytes).unwrap();
    let r = run(&bad, &config(&[]));
    let w = r.warnings.join("\n");
    assert!(
        w.contains("bad.mcap: data section CRC mismatch"),
        "damage detected on open: {w}"
    );
    // A chunk that was hit is dropped whole (its CRC), never read as garbage.
    if r.status != Status::Ok {
        assert!(r.errors.join("\n").contains("bad.mcap"), "{:?}", r.errors);
    }
    // The intact file passes.
    let r = run(&good, &config(&[]));
    assert_eq!(r.status, Status::Ok);
    assert!(!r.warnings.join("\n").contains("CRC"), "{:?}", r.warnings);
}

/// The acceptance command: `-p scheduler.budget_timeout_s:=1` on the bundled recording shows a
/// plan with trigger `budget_stale` (the recording carries budgets only when they change).
#[test]
fn budget_stale_in_replay() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let o = cli(
        &recording(),
        &[
            os("-p"),
            os("scheduler.budget_timeout_s:=1"),
            os("--report"),
            report.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let plans = v["plans"].as_array().unwrap();
    let stale: Vec<&Value> = plans
        .iter()
        .filter(|p| p["trigger"] == "budget_stale")
        .collect();
    assert!(!stale.is_empty(), "{plans:?}");
    for p in &stale {
        assert_eq!(p["budget_cores"], 0.5);
    }
    // Each stale plan follows a budget plan by the timeout, and a budget ends it.
    let times: Vec<(f64, &str)> = plans
        .iter()
        .map(|p| (p["time"].as_f64().unwrap(), p["trigger"].as_str().unwrap()))
        .collect();
    let first_stale = times.iter().position(|t| t.1 == "budget_stale").unwrap();
    let last_budget = times[..first_stale]
        .iter()
        .rev()
        .find(|t| t.1 == "budget")
        .unwrap();
    assert!(
        (times[first_stale].0 - last_budget.0 - 1.0).abs() < 1e-6,
        "{times:?}"
    );
    // Without the override (params/replay.yaml: 0 = never), no stale plan.
    let o = cli(&recording(), &[os("--report"), report.as_os_str()]);
    assert!(o.status.success());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["trigger"] != "budget_stale"));
}

/// `--realtime` runs the live node core: its stale-budget re-plan and the warning it logs
/// reach the report (the warnings list used to stay empty while the log warned).
#[test]
fn realtime_report_carries_the_node_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[
        ("digits_vgg.transport", "compressed"),
        ("scheduler.budget_timeout_s", "1.5"),
    ]);
    let o = ReplayOptions {
        pacing: nestdnn::replay::Pacing::Realtime,
        profiles: ProfileSource::Cache(Some(dir.path().join("cache"))),
        ..ReplayOptions::default()
    };
    let r = replay(&db3(), &cfg, &o, &mut |_| {}).unwrap();
    assert_eq!(r.status, Status::Ok, "{:?}", r.errors);
    // The .db3 carries two budgets, at 0 s and 1 s. With a 1.5 s timeout the first one's
    // deadline (1.5 s) is always reset by the second, so the one stale plan comes 1.5 s after
    // the second: at about 2.5 s. (A 1.0 s timeout made the first deadline coincide with the
    // second budget, a race a loaded machine could lose with a stale plan at 1.0 s.)
    let stale = r
        .plans
        .iter()
        .find(|p| p.trigger == "budget_stale")
        .unwrap_or_else(|| panic!("{:?}", r.plans));
    assert!((stale.time - 2.5).abs() < 0.6, "{}", stale.time);
    assert_eq!(stale.budget_cores, 0.5);
    let w = r.warnings.join("\n");
    assert!(
        w.contains("node at") && w.contains("no ResourceBudget for"),
        "{w}"
    );
}
