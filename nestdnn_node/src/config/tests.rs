use super::*;
use crate::rosargs::RosArgs;

/// A temp "package": `<root>/params/x.yaml` and `<root>/models/<task>/`.
fn pkg(tasks: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("params")).unwrap();
    for t in tasks {
        std::fs::create_dir_all(root.path().join("models").join(t)).unwrap();
    }
    root
}

fn write(root: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = root.path().join("params").join("x.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn load(root: &tempfile::TempDir, text: &str) -> Result<NodeConfig, ConfigError> {
    let p = write(root, text);
    NodeConfig::load(&p, &NodeName::default(), Vec::new())
}

const BASIC: &str = r#"
nestdnn_node:
  ros__parameters:
    tasks: [cam_a, cam_b]
    cam_a:
      image_topic: /front/image_raw
      transport: compressed
      target_fps: 30
      priority: 2.5
      roi: [10, 20, 100, 50]
    cam_b.enabled: false
    cam_b.qos: reliable
    scheduler:
      objective: min_max_cost
      alpha: 0.5
      min_dwell_s: 1
    default_budget: {cpu_cores: 1.5, memory_mb: 100}
"#;

#[test]
fn parses_nested_and_dotted_names_with_defaults() {
    let root = pkg(&["cam_a", "cam_b"]);
    let c = load(&root, BASIC).unwrap();
    assert_eq!(c.tasks.len(), 2);
    let a = &c.tasks[0];
    assert_eq!(a.name, "cam_a");
    assert_eq!(a.image_topic, "/front/image_raw");
    assert_eq!(a.transport, Transport::Compressed);
    assert_eq!(a.subscribed_topic(), "/front/image_raw/compressed");
    assert_eq!(a.target_fps, 30.0);
    assert_eq!(a.priority, 2.5);
    assert_eq!(
        a.roi,
        Some(Roi {
            x: 10,
            y: 20,
            width: 100,
            height: 50
        })
    );
    assert_eq!(a.qos, QosPreset::SensorData);
    assert!(a.enabled);
    assert!(a.model_dir.ends_with("models/cam_a"), "{:?}", a.model_dir);
    let b = &c.tasks[1];
    assert!(!b.enabled);
    assert_eq!(b.qos, QosPreset::Reliable);
    assert_eq!(b.image_topic, "cam_b/image_raw");
    assert_eq!(b.target_fps, 10.0);
    assert_eq!(b.roi, None);
    assert_eq!(c.scheduler.objective, Objective::MinMaxCost);
    assert_eq!(c.scheduler.alpha, 0.5);
    assert_eq!(c.scheduler.min_dwell, Duration::from_secs(1));
    assert_eq!(c.scheduler.default_budget.cpu_cores, 1.5);
    assert_eq!(c.scheduler.default_budget.memory_bytes, 100 << 20);
    assert_eq!(c.scheduler.switch_policy, SwitchPolicy::OnDemand);
}

#[test]
fn wildcard_and_namespaced_sections_merge_in_file_order() {
    let root = pkg(&["a"]);
    let text = r#"
/**:
  ros__parameters:
    use_sim_time: true
    scheduler.alpha: 0.3
    monitor_period_s: 0.5      # another node's key: ignored here
/robot1/nestdnn_node:
  ros__parameters:
    tasks: [a]
    scheduler.alpha: 0.7
    scheduler.switch_policy: one_copy
/robot2/nestdnn_node:
  ros__parameters:
    tasks: [zzz]
"#;
    let p = write(&root, text);
    let c = NodeConfig::load(&p, &NodeName::new("/robot1", "nestdnn_node"), Vec::new()).unwrap();
    assert!(c.use_sim_time);
    assert_eq!(c.scheduler.alpha, 0.7);
    assert_eq!(c.scheduler.switch_policy, SwitchPolicy::OneCopy);
    assert_eq!(c.tasks[0].name, "a");
    // A node in another namespace gets only the wildcard section: no tasks.
    let e =
        NodeConfig::load(&p, &NodeName::new("/robot3", "nestdnn_node"), Vec::new()).unwrap_err();
    assert!(
        matches!(e, ConfigError::Missing { ref key, .. } if key == "tasks"),
        "{e}"
    );
}

#[test]
fn section_matching_rules() {
    let n = NodeName::new("/robot1", "nestdnn_node");
    assert_eq!(section_matches("nestdnn_node", &n), Some(Match::Specific));
    assert_eq!(
        section_matches("/robot1/nestdnn_node", &n),
        Some(Match::Specific)
    );
    assert_eq!(section_matches("/**", &n), Some(Match::Wildcard));
    assert_eq!(
        section_matches("/**/nestdnn_node", &n),
        Some(Match::Wildcard)
    );
    assert_eq!(section_matches("/robot1/*", &n), Some(Match::Wildcard));
    assert_eq!(section_matches("/*", &n), None);
    assert_eq!(section_matches("/nestdnn_node", &n), None);
    assert_eq!(section_matches("other", &n), None);
    assert_eq!(NodeName::parse("/a/b/node").fully_qualified(), "/a/b/node");
    assert_eq!(NodeName::parse("node").fully_qualified(), "/node");
}

#[test]
fn overrides_come_last_and_parse_like_ros() {
    let root = pkg(&["cam_a", "cam_b"]);
    let p = write(&root, BASIC);
    let mut params = Params::from_file(&p, &NodeName::default()).unwrap();
    params.set_from_str("cam_a.target_fps", "12.5").unwrap();
    params.set_from_str("cam_b.enabled", "true").unwrap();
    params
        .set_from_str("scheduler.objective", "static")
        .unwrap();
    params.set_from_str("cam_a.image_topic", "/cam/x").unwrap();
    params
        .set(
            "scheduler",
            serde_yaml::from_str("{alpha: 2.0, share_step: 0.05}").unwrap(),
        )
        .unwrap();
    let c = NodeConfig::from_params(&params).unwrap();
    assert_eq!(c.tasks[0].target_fps, 12.5);
    assert!(c.tasks[1].enabled);
    assert_eq!(c.tasks[0].image_topic, "/cam/x");
    assert_eq!(c.scheduler.objective, Objective::Static);
    assert_eq!(c.scheduler.alpha, 2.0);
    assert_eq!(c.scheduler.share_step, 0.05);
    // Overrides can replace the task list.
    params.set_from_str("tasks", "[cam_b]").unwrap();
    // ... but cam_a.* keys are now unknown.
    let e = NodeConfig::from_params(&params).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e}");
    assert!(e.to_string().contains("not in `tasks`"), "{e}");
    assert!(matches!(
        params.set("bad key", Value::Null),
        Err(ConfigError::BadOverride { .. })
    ));
    assert!(matches!(
        params.set("a..b", Value::Null),
        Err(ConfigError::BadOverride { .. })
    ));
}

fn err(text_params: &str, tasks: &[&str]) -> ConfigError {
    let root = pkg(tasks);
    let text = format!("nestdnn_node:\n  ros__parameters:\n{text_params}");
    load(&root, &text).unwrap_err()
}

#[test]
fn typed_errors_name_key_value_and_range() {
    let e = err("    tasks: [a]\n    a.target_fps: 0\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Range { key, value, allowed } if key == "a.target_fps" && value == "0" && allowed.contains("(0, 1000]")),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.target_fps: .nan\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "a.target_fps"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.priority: -1.0\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "a.priority"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.priority: high\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Type { key, .. } if key == "a.priority"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.transport: h264\n", &["a"]);
    assert!(e.to_string().contains("one of raw, compressed"), "{e}");
    let e = err("    tasks: [a]\n    scheduler.objective: fastest\n", &["a"]);
    assert!(e.to_string().contains("min_total_cost"), "{e}");
    let e = err(
        "    tasks: [a]\n    scheduler.hysteresis_margin: 1.0\n",
        &["a"],
    );
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "scheduler.hysteresis_margin"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    scheduler.share_step: 0.001\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "scheduler.share_step"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    default_budget.cpu_cores: 0\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "default_budget.cpu_cores"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.enabled: 1\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Type { key, .. } if key == "a.enabled"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.qos_depth: 2.5\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Type { key, .. } if key == "a.qos_depth"),
        "{e}"
    );
}

#[test]
fn task_list_and_unknown_keys() {
    let e = err("    tasks: []\n", &[]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "tasks"),
        "{e}"
    );
    let e = err("    tasks: [a, a]\n", &["a"]);
    assert!(e.to_string().contains("listed twice"), "{e}");
    let e = err("    tasks: [scheduler]\n", &[]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "tasks"),
        "{e}"
    );
    let e = err("    tasks: [1a]\n", &[]);
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "tasks"),
        "{e}"
    );
    let e = err("    tasks: a\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::Type { key, .. } if key == "tasks"),
        "{e}"
    );
    let e = err("    tasks: [a]\n    a.target_fsp: 3.0\n", &["a"]);
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, hint } if key == "a.target_fsp" && hint.contains("a.target_fps")),
        "{e}"
    );
    let e = err("    tasks: [a]\n    b.target_fps: 3.0\n", &["a"]);
    assert!(e.to_string().contains("\"b\" is not in `tasks`"), "{e}");
    // qos_overrides are the rcl's business: accepted.
    let root = pkg(&["a"]);
    let ok = load(
        &root,
        "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    qos_overrides./parameter_events.publisher.depth: 1000\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn roi_forms() {
    let root = pkg(&["a"]);
    let ok = |v: &str| {
        load(
            &root,
            &format!("nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    a.roi: {v}\n"),
        )
    };
    assert_eq!(ok("[]").unwrap().tasks[0].roi, None);
    assert_eq!(
        ok("[0, 0, 5, 6]").unwrap().tasks[0].roi,
        Some(Roi {
            x: 0,
            y: 0,
            width: 5,
            height: 6
        })
    );
    assert!(matches!(ok("[0, 0, 0, 6]"), Err(ConfigError::Range { .. })));
    assert!(matches!(
        ok("[-1, 0, 5, 6]"),
        Err(ConfigError::Range { .. })
    ));
    assert!(matches!(ok("[1, 2, 3]"), Err(ConfigError::Type { .. })));
    assert!(matches!(
        ok("[1.5, 2, 3, 4]"),
        Err(ConfigError::Type { .. })
    ));
    assert!(matches!(ok("full"), Err(ConfigError::Type { .. })));
}

#[test]
fn model_dirs_resolve_against_params_folder_then_its_parent() {
    let root = pkg(&["a"]);
    // Default: <models_dir>/<task> with models_dir = models, found in the parent of params/.
    let c = load(&root, "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n").unwrap();
    assert_eq!(
        c.tasks[0].model_dir.canonicalize().unwrap(),
        root.path().join("models/a").canonicalize().unwrap()
    );
    // A folder next to the params file wins.
    std::fs::create_dir_all(root.path().join("params/local/a")).unwrap();
    let c = load(
        &root,
        "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    a.model_dir: local/a\n",
    )
    .unwrap();
    assert!(
        c.tasks[0].model_dir.ends_with("params/local/a"),
        "{:?}",
        c.tasks[0].model_dir
    );
    // An absolute models_dir.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("a")).unwrap();
    let text = format!(
        "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    models_dir: {}\n",
        other.path().display()
    );
    assert_eq!(
        load(&root, &text).unwrap().tasks[0].model_dir,
        other.path().join("a")
    );
    // Missing: the error lists what was tried.
    let e = load(
        &root,
        "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    a.model_dir: nowhere/a\n",
    )
    .unwrap_err();
    match e {
        ConfigError::ModelDirNotFound { key, tried, .. } => {
            assert_eq!(key, "a.model_dir");
            assert_eq!(tried.len(), 2, "{tried:?}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn file_shape_errors() {
    let root = pkg(&["a"]);
    assert!(matches!(
        load(&root, "- a\n- b\n"),
        Err(ConfigError::Structure { .. })
    ));
    assert!(matches!(
        load(&root, "nestdnn_node: {tasks: [a]}\n"),
        Err(ConfigError::Structure { .. })
    ));
    assert!(matches!(
        load(&root, "nestdnn_node:\n  ros__parameters: 3\n"),
        Err(ConfigError::Structure { .. })
    ));
    assert!(matches!(
        load(
            &root,
            "nestdnn_node:\n  ros__parameters:\n    tasks: [{x: 1}]\n"
        ),
        Err(ConfigError::Structure { .. })
    ));
    assert!(matches!(
        load(&root, "other_node:\n  ros__parameters: {}\n"),
        Err(ConfigError::NoSection { .. })
    ));
    assert!(matches!(
        load(&root, "nestdnn_node: [\n"),
        Err(ConfigError::Yaml { .. })
    ));
    let missing = NodeConfig::load(
        Path::new("/nonexistent/x.yaml"),
        &NodeName::default(),
        Vec::new(),
    );
    assert!(matches!(missing, Err(ConfigError::Io { .. })));
}

#[test]
fn shipped_params_file_is_valid() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../params/nestdnn.yaml");
    let params = Params::from_file(&p, &NodeName::default()).unwrap();
    let names: Vec<String> = match params.get("tasks") {
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        other => panic!("tasks: {other:?}"),
    };
    assert_eq!(
        names,
        [
            "fashion_vgg",
            "fashion_resnet",
            "digits_vgg",
            "digits_resnet"
        ]
    );
    // Validate with the model folders pointed at a temp tree (models may not be committed).
    let root = pkg(&[
        "fashion_vgg",
        "fashion_resnet",
        "digits_vgg",
        "digits_resnet",
    ]);
    let mut params = params;
    params
        .set(
            "models_dir",
            Value::from(root.path().join("models").display().to_string()),
        )
        .unwrap();
    let c = NodeConfig::from_params(&params).unwrap();
    assert_eq!(c.tasks.len(), 4);
    assert!(c.tasks.iter().all(|t| t.enabled && t.target_fps > 0.0));
}

#[test]
fn calibration_period_default_zero_off_and_range() {
    let root = pkg(&["cam_a", "cam_b"]);
    let c = load(&root, BASIC).unwrap();
    assert_eq!(
        c.calibration_period,
        Some(Duration::from_secs_f64(DEFAULT_CALIBRATION_PERIOD_S))
    );
    let text = "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    scheduler.calibration_period_s: 0\n";
    let root = pkg(&["a"]);
    assert_eq!(load(&root, text).unwrap().calibration_period, None);
    let text = text.replace(": 0\n", ": 2.5\n");
    assert_eq!(
        load(&root, &text).unwrap().calibration_period,
        Some(Duration::from_millis(2500))
    );
    let e = err(
        "    tasks: [a]\n    scheduler.calibration_period_s: -1\n",
        &["a"],
    );
    assert!(
        matches!(&e, ConfigError::Range { key, .. } if key == "scheduler.calibration_period_s"),
        "{e}"
    );
}

#[test]
fn budget_timeout_default_zero_off_and_stale_budget_range() {
    let root = pkg(&["cam_a", "cam_b"]);
    let c = load(&root, BASIC).unwrap();
    assert_eq!(
        c.scheduler.budget_timeout,
        Some(crate::scheduler::DEFAULT_BUDGET_TIMEOUT)
    );
    assert_eq!(c.scheduler.stale_budget_cores, 0.5);
    let root = pkg(&["a"]);
    let text = "nestdnn_node:\n  ros__parameters:\n    tasks: [a]\n    scheduler:\n      budget_timeout_s: 0\n      stale_budget_cores: 0.1\n";
    let c = load(&root, text).unwrap();
    assert_eq!(c.scheduler.budget_timeout, None);
    assert_eq!(c.scheduler.stale_budget_cores, 0.1);
    let text = text.replace("budget_timeout_s: 0\n", "budget_timeout_s: 1.5\n");
    assert_eq!(
        load(&root, &text).unwrap().scheduler.budget_timeout,
        Some(Duration::from_millis(1500))
    );
    for bad in [
        "    tasks: [a]\n    scheduler.budget_timeout_s: -1\n",
        "    tasks: [a]\n    scheduler.stale_budget_cores: -0.5\n",
    ] {
        let e = err(bad, &["a"]);
        assert!(matches!(&e, ConfigError::Range { .. }), "{e}");
    }
}

#[test]
fn params_files_and_overrides() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.yaml");
    std::fs::write(
        &f,
        "/**:\n  ros__parameters:\n    use_sim_time: false\n    a: 1\n\
         other:\n  ros__parameters:\n    a: 99\n\
         resource_monitor:\n  ros__parameters:\n    a: 2\n    headroom:\n      cpu_cores: 0.5\n    consumers: [x, y]\n",
    )
    .unwrap();
    let args = RosArgs::parse(
        [
            "--ros-args",
            "--params-file",
            f.to_str().unwrap(),
            "-p",
            "a:=3.5",
            "-p",
            "other:b:=1",
        ],
        "resource_monitor",
    )
    .unwrap();
    let ctx = args.name_context("resource_monitor").unwrap();
    let node = NodeName::from(&ctx);
    let p = Params::from_ros_args(&args, &node).unwrap();
    assert_eq!(p.f64("a", 0.0, 0.0, 10.0, false).unwrap(), 3.5);
    assert!(!p.bool("use_sim_time", true).unwrap());
    assert_eq!(
        p.f64("headroom.cpu_cores", 0.0, 0.0, 10.0, false).unwrap(),
        0.5
    );
    assert_eq!(p.strings("consumers", &[]).unwrap(), ["x", "y"]);
    assert_eq!(p.get("b"), None);
    assert_eq!(p.int("missing", 7, 0, 9).unwrap(), 7);
    assert!(matches!(p.string("a", ""), Err(ConfigError::Type { .. })));
    assert!(matches!(
        p.f64("a", 0.0, 0.0, 1.0, false),
        Err(ConfigError::Range { .. })
    ));
    std::fs::write(&f, "resource_monitor:\n  a: 1\n").unwrap();
    assert!(matches!(
        Params::from_ros_args(&args, &node),
        Err(ConfigError::Structure { .. })
    ));
    // A file without a section for the node is skipped when another file has one.
    let g = d.path().join("q.yaml");
    std::fs::write(&g, "other:\n  ros__parameters:\n    a: 5\n").unwrap();
    let both = RosArgs::parse(
        ["--ros-args", "--params-file", g.to_str().unwrap()],
        "resource_monitor",
    )
    .unwrap();
    assert!(matches!(
        Params::from_ros_args(&both, &node),
        Err(ConfigError::NoSection { .. })
    ));
}
