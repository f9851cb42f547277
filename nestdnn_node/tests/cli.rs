//! `nestdnn inspect/profile --json` on every model, and error exits.

use std::process::Command;

use nestdnn::model::{find_models, models_dir};
use serde_json::Value;

fn nestdnn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nestdnn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_and_profile_json_on_every_model() {
    let dirs = find_models(&models_dir()).unwrap();
    assert!(
        !dirs.is_empty(),
        "no models under {}",
        models_dir().display()
    );
    for dir in dirs {
        let d = dir.to_str().unwrap();
        let (ok, out, err) = nestdnn(&["inspect", d, "--json"]);
        assert!(ok, "inspect {d}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let rungs = v["descendants"].as_array().unwrap();
        assert!(!rungs.is_empty());
        let mut last_macs = 0;
        for r in rungs {
            for key in ["name", "macs", "params", "accuracy"] {
                assert!(!r[key].is_null(), "{d}: inspect lacks {key}");
            }
            let macs = r["macs"].as_u64().unwrap();
            assert!(macs >= last_macs, "{d}: descendants not smallest first");
            last_macs = macs;
        }
        assert_eq!(v["vanilla"]["name"], "vanilla");

        let (ok, out, err) = nestdnn(&[
            "profile",
            d,
            "--json",
            "--no-cache",
            "--min-time-ms",
            "20",
            "--min-runs",
            "5",
        ]);
        assert!(ok, "profile {d}: {err}");
        let p: Value = serde_json::from_str(&out).unwrap();
        let ds = p["descendants"].as_array().unwrap();
        assert_eq!(ds.len(), rungs.len());
        for (x, r) in ds.iter().zip(rungs) {
            assert_eq!(x["name"], r["name"]);
            let med = x["latency_ms_median"].as_f64().unwrap();
            let p90 = x["latency_ms_p90"].as_f64().unwrap();
            assert!(med > 0.0 && p90 >= med, "{d}: {x}");
            assert!(x["build_ms"].as_f64().unwrap() > 0.0);
            assert!(x["plan_bytes"].as_u64().unwrap() > 0);
            assert!(x["runs"].as_u64().unwrap() >= 5);
        }
        assert_eq!(p["memory_source"], "counting_allocator");

        let (ok, out, _) = nestdnn(&["inspect", d]);
        assert!(
            ok && out.lines().nth(1).unwrap().starts_with("name "),
            "{out}"
        );
    }
}

#[test]
fn errors_exit_non_zero_with_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _, err) = nestdnn(&["inspect", d]);
    assert!(!ok);
    assert!(
        err.starts_with("error: loading model")
            && err.contains("caused by:")
            && err.contains("manifest.yaml"),
        "{err}"
    );
    std::fs::write(dir.path().join("manifest.yaml"), "format_version: 2\n").unwrap();
    let (ok, _, err) = nestdnn(&["profile", d, "--no-cache"]);
    assert!(!ok && err.contains("manifest"), "{err}");
    let (ok, _, _) = nestdnn(&["inspect"]);
    assert!(!ok);
}
