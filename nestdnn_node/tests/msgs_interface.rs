//! The `nestdnn_msgs` interface package (`msgs/`) against the Rust types: field names, types and
//! order must be equal, checked with this crate's parser and with the real rosidl parsers
//! (Debian `python3-rosidl`, via `test/msgs/check_msgs.sh`, which installs it when missing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use nestdnn::msgs::schema::{parse_msg, Schema};
use nestdnn::msgs::{all_definitions, RosMessage};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn rust_definitions_equal_msg_files() {
    let dir = root().join("msgs/msg");
    let mut files = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "msg") {
            files.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    let mut ours = BTreeSet::new();
    for (type_name, def) in all_definitions() {
        let schema = Schema::parse(type_name, def).unwrap();
        let Some(name) = type_name.strip_prefix("nestdnn_msgs/msg/") else {
            continue;
        };
        ours.insert(name.to_owned());
        let text = std::fs::read_to_string(dir.join(format!("{name}.msg"))).unwrap();
        let file = parse_msg(type_name, &text).unwrap();
        assert_eq!(schema.root_def().unwrap(), &file, "{type_name}");
        // Every field of the .msg file documents its unit in a trailing comment.
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            assert!(
                line.contains("# "),
                "{name}.msg: field without comment: {line}"
            );
        }
    }
    assert_eq!(ours, files, "every .msg has a Rust type and back");
    let plan = nestdnn::msgs::Plan::schema().unwrap();
    for t in [
        "nestdnn_msgs/msg/Plan",
        "nestdnn_msgs/msg/TaskPlan",
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Time",
    ] {
        assert!(plan.types.contains_key(t), "{t}");
    }
}

#[test]
fn rosidl_parsers_accept_msg_files_and_rust_definitions() {
    let defs: serde_json::Map<String, serde_json::Value> = all_definitions()
        .into_iter()
        .map(|(n, d)| (n.to_owned(), serde_json::Value::String(d.to_owned())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("defs.json");
    std::fs::write(&json, serde_json::to_string_pretty(&defs).unwrap()).unwrap();
    let out = Command::new(root().join("test/msgs/check_msgs.sh"))
        .arg(&json)
        .output()
        .expect("run test/msgs/check_msgs.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rosidl check failed:\n{stdout}");
    assert!(stdout.contains("\n0 failed"));
    // All 18 Rust types and all 5 .msg files were looked at.
    assert_eq!(
        stdout.matches("sections parse with rosidl_adapter").count(),
        18
    );
    assert_eq!(stdout.matches("msg -> idl -> rosidl_parser").count(), 5);
}

/// `msgs/msg/Plan.msg` documents the trigger forms the node publishes: exactly
/// `Trigger::FORMS`, which are the `Display` forms of every `Trigger` variant.
#[test]
fn plan_msg_lists_every_trigger_form() {
    use nestdnn::scheduler::Trigger;
    let text = std::fs::read_to_string(root().join("msgs/msg/Plan.msg")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("string trigger "))
        .expect("Plan.msg has a trigger field");
    let (_, comment) = line.split_once('#').expect("trigger field has a comment");
    let (_, list) = comment
        .split_once("one of: ")
        .expect("the trigger comment lists the forms after `one of: `");
    let documented: Vec<&str> = list.split(", ").map(str::trim).collect();
    let mut sorted = documented.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        documented.len(),
        "duplicates in {documented:?}"
    );
    let mut forms: Vec<&str> = Trigger::FORMS.to_vec();
    forms.sort_unstable();
    assert_eq!(sorted, forms, "Plan.msg's trigger list vs Trigger::FORMS");
    // Every variant's published text has one of these forms, and every form is used.
    let examples = Trigger::examples("cam_a");
    let produced: Vec<String> = examples.iter().map(Trigger::form).collect();
    assert_eq!(produced, Trigger::FORMS, "Trigger::examples in FORMS order");
    for t in &examples {
        let published = t.to_string();
        assert_eq!(published, t.form().replace(Trigger::TASK, "cam_a"));
        assert!(!published.contains('<'), "{published}");
    }
}
