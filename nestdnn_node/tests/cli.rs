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

/// `nestdnn calibrate` on a copy of a bundled model: measures every descendant on the bag's
/// labelled frames, writes `accuracy.yaml` only with `--write`, and the planner's ladder then
/// carries those accuracies; a calibration made for another manifest is refused with the fix.
#[test]
fn calibrate_writes_camera_accuracies_that_the_ladder_prefers() {
    use nestdnn::model::{CameraAccuracy, MultiCapacityModel, ACCURACY_FILE};
    use nestdnn::profile::ModelProfile;
    use nestdnn::scheduler::Ladder;

    let root = models_dir().parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("fashion_vgg");
    std::fs::create_dir(&model_dir).unwrap();
    for e in std::fs::read_dir(models_dir().join("fashion_vgg")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, model_dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let _ = std::fs::remove_file(model_dir.join(ACCURACY_FILE));
    let recordings = root.join("test/bags/recordings.json");
    let args = |write: bool| {
        let mut a = vec![
            "calibrate".to_string(),
            model_dir.to_str().unwrap().to_string(),
            "--recordings".into(),
            recordings.to_str().unwrap().to_string(),
            "--bag".into(),
            "recording".into(),
            "--json".into(),
        ];
        if write {
            a.push("--write".into());
        }
        a
    };
    let run = |a: Vec<String>| nestdnn(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, out, err) = run(args(false));
    assert!(ok, "{err}");
    assert!(
        !model_dir.join(ACCURACY_FILE).exists(),
        "written without --write"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let c = &v[0];
    assert_eq!(c["task"], "fashion_vgg");
    let frames = c["frames"].as_u64().unwrap();
    assert_eq!(frames, 600);
    for d in c["descendants"].as_array().unwrap() {
        let (acc, right) = (
            d["accuracy"].as_f64().unwrap(),
            d["correct"].as_u64().unwrap(),
        );
        assert!((acc - right as f64 / frames as f64).abs() < 1e-12, "{d}");
        // A real model on real frames: far above chance (10 classes), below perfect.
        assert!((0.5..1.0).contains(&acc), "{d}");
    }

    let (ok, _, err) = run(args(true));
    assert!(ok, "{err}");
    let model = MultiCapacityModel::load(&model_dir).unwrap();
    let cal = CameraAccuracy::load(&model)
        .unwrap()
        .expect("accuracy.yaml written");
    let profile: ModelProfile = serde_json::from_str(
        &std::fs::read_to_string(root.join("test/bags/profiles/fashion_vgg.json")).unwrap(),
    )
    .unwrap();
    let (ladder, source) = Ladder::for_model(&model, &profile).unwrap();
    assert!(source.starts_with("camera (bag recording"), "{source}");
    let planned: Vec<f64> = ladder.rungs().iter().map(|r| r.accuracy).collect();
    assert_eq!(planned, cal.accuracies());

    // Stale: measured for another manifest.
    let text = std::fs::read_to_string(model_dir.join(ACCURACY_FILE)).unwrap();
    let stale = text.replace(&cal.manifest_sha256, &"0".repeat(64));
    std::fs::write(model_dir.join(ACCURACY_FILE), stale).unwrap();
    let e = Ladder::for_model(&model, &profile).unwrap_err().to_string();
    assert!(e.contains("nestdnn calibrate"), "{e}");
    // Malformed.
    std::fs::write(model_dir.join(ACCURACY_FILE), "frames: [").unwrap();
    let e = Ladder::for_model(&model, &profile).unwrap_err().to_string();
    assert!(e.contains("not a camera-accuracy file"), "{e}");
    // Without a file: the manifest's accuracies.
    std::fs::remove_file(model_dir.join(ACCURACY_FILE)).unwrap();
    let (ladder, source) = Ladder::for_model(&model, &profile).unwrap();
    assert_eq!(source, "manifest");
    let manifest: Vec<f64> = model
        .manifest()
        .descendants
        .iter()
        .map(|d| d.accuracy)
        .collect();
    let planned: Vec<f64> = ladder.rungs().iter().map(|r| r.accuracy).collect();
    assert_eq!(planned, manifest);
}
