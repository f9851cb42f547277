//! `nestdnn plan` end to end: the shipped params file, real model folders (the committed
//! models, or the tiny ones in /tmp/nestdnn-tiny-models), profiles written to a temporary
//! cache with known latencies (so plans are predictable and nothing is measured), JSON keys,
//! objectives, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use nestdnn::model::{models_dir, MultiCapacityModel};
use nestdnn::profile::{cpu_model, DescendantProfile, MemorySource, ModelProfile, ProfileCache};
use serde_json::Value;

const TASKS: [&str; 4] = [
    "fashion_vgg",
    "fashion_resnet",
    "digits_vgg",
    "digits_resnet",
];

/// A folder holding all four task models.
fn models_root() -> PathBuf {
    let has_all = |d: &Path| {
        TASKS
            .iter()
            .all(|t| d.join(t).join("manifest.yaml").is_file())
    };
    let repo = models_dir();
    if has_all(&repo) {
        return repo;
    }
    let tiny = PathBuf::from("/tmp/nestdnn-tiny-models");
    if tiny.join("READY").is_file() && has_all(&tiny) {
        return tiny;
    }
    panic!(
        "no models: {} lacks the four task models and /tmp/nestdnn-tiny-models/READY is absent; \
         commit models or generate the tiny ones (models/regenerate)",
        repo.display()
    );
}

/// Descendant d of every model: latency (d + 1) ms, build 2 ms, plan 1 MB x (d + 1).
fn write_profiles(root: &Path, cache: &ProfileCache) {
    for t in TASKS {
        let m = MultiCapacityModel::load(&root.join(t)).unwrap();
        let descendants = m
            .manifest()
            .descendants
            .iter()
            .enumerate()
            .map(|(i, d)| DescendantProfile {
                name: d.name.clone(),
                latency_ms_median: (i + 1) as f64,
                latency_ms_p90: (i + 1) as f64 * 1.2,
                build_ms: 2.0,
                plan_bytes: (i as u64 + 1) << 20,
                peak_build_bytes: (i as u64 + 1) << 21,
                weight_bytes: (i as u64 + 1) << 20,
                runs: 100,
            })
            .collect();
        let p = ModelProfile {
            task: m.manifest().task.clone(),
            model_sha256: m.manifest_sha256().to_string(),
            cpu_model: cpu_model(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            memory_source: MemorySource::CountingAllocator,
            master_bytes: 8 << 20,
            created_unix_s: 0,
            descendants,
            vanilla: None,
        };
        cache.store(&m, &p).unwrap();
    }
}

fn params_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../params/nestdnn.yaml")
}

fn plan(cache: &Path, root: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nestdnn"))
        .arg("plan")
        .arg("--params")
        .arg(params_file())
        .arg("--cache-dir")
        .arg(cache)
        .arg("-p")
        .arg(format!("models_dir:={}", root.display()))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(cache: &Path, root: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = plan(cache, root, &args);
    assert!(ok, "nestdnn plan failed: {err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn plan_cli_prints_the_plan_for_all_configured_tasks() {
    let root = models_root();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ProfileCache::new(tmp.path());
    write_profiles(&root, &cache);

    // Ample budget: every task on its most accurate descendant at its target (15 fps).
    let v = json(tmp.path(), &root, &["--cores", "4", "--memory-mb", "1024"]);
    assert_eq!(v["objective"], "min_total_cost");
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4);
    let mut cores = 0.0;
    for (t, name) in tasks.iter().zip(TASKS) {
        assert_eq!(t["task"], name);
        for k in [
            "descendant",
            "share",
            "expected_accuracy",
            "expected_fps",
            "cost",
        ] {
            assert!(!t[k].is_null(), "{name}: {k} missing in {t}");
        }
        assert_eq!(t["expected_fps"], 15.0);
        cores += t["share"].as_f64().unwrap();
    }
    assert!(cores <= 4.0 + 1e-9);

    // 0.04 cores: one 0.01-core unit per task, 10 fps at best (1 ms): every task below 15 fps.
    let v = json(
        tmp.path(),
        &root,
        &["--cores", "0.04", "--memory-mb", "1024"],
    );
    let shares: f64 = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["share"].as_f64().unwrap())
        .sum();
    assert!(shares <= 0.04 + 1e-9, "{shares}");
    assert_eq!(v["degraded"], true);

    // Static: largest descendants, equal shares of the given cores.
    let v = json(
        tmp.path(),
        &root,
        &["--cores", "2", "--objective", "static"],
    );
    assert_eq!(v["objective"], "static");
    for t in v["tasks"].as_array().unwrap() {
        assert!((t["share"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        let m = MultiCapacityModel::load(&root.join(t["task"].as_str().unwrap())).unwrap();
        assert_eq!(
            t["descendant"],
            m.manifest().descendants.last().unwrap().name.as_str()
        );
    }

    // Min-max, and a table on stdout.
    let v = json(
        tmp.path(),
        &root,
        &["--cores", "0.2", "--objective", "min_max_cost"],
    );
    assert_eq!(v["objective"], "min_max_cost");
    let (ok, out, _) = plan(tmp.path(), &root, &["--cores", "0.2"]);
    assert!(
        ok && out.contains("fashion_vgg") && out.contains("total cost"),
        "{out}"
    );

    // Zero cores: a plan with every task paused (documented safe behaviour).
    let v = json(tmp.path(), &root, &["--cores", "0"]);
    assert!(v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "paused"));

    // A disabled task and a priority override.
    let v = json(
        tmp.path(),
        &root,
        &[
            "--cores",
            "0.1",
            "-p",
            "digits_vgg.enabled:=false",
            "-p",
            "fashion_vgg.priority:=20.0",
        ],
    );
    let t = v["tasks"].as_array().unwrap();
    assert_eq!(t[2]["status"], "disabled");
    assert_eq!(t[0]["priority"], 20.0);
}

#[test]
fn plan_cli_rejects_bad_input_clearly() {
    let root = models_root();
    let tmp = tempfile::tempdir().unwrap();
    let cache = ProfileCache::new(tmp.path());
    write_profiles(&root, &cache);
    let cases: &[(&[&str], &str)] = &[
        (&["--cores", "nan"], "--cores must be a finite number >= 0"),
        (&["--cores", "-1"], "--cores must be a finite number >= 0"),
        (
            &["--memory-mb", "-5"],
            "--memory-mb must be a finite number >= 0",
        ),
        (&["--cores", "inf"], "--cores must be a finite number >= 0"),
        (&["-p", "fashion_vgg.priority:=0"], "fashion_vgg.priority"),
        (
            &["-p", "fashion_vgg.priority:=-2.0"],
            "fashion_vgg.priority",
        ),
        (
            &["-p", "camera9.priority:=1.0"],
            "\"camera9\" is not in `tasks`",
        ),
        (&["-p", "tasks:=[fashion_vgg, nope]"], "nope"),
        (
            &["-p", "fashion_vgg.target_fps:=0"],
            "fashion_vgg.target_fps",
        ),
        (&["-p", "scheduler.alpha"], "KEY:=VALUE"),
        (&["--objective", "fastest"], "fastest"),
    ];
    for (args, want) in cases {
        let (ok, _, err) = plan(tmp.path(), &root, args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Missing profiles: say how to make them.
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = plan(empty.path(), &root, &[]);
    assert!(!ok);
    assert!(err.contains("nestdnn profile"), "{err}");
}
