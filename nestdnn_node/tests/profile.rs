//! Profiler and its on-disk cache, on the synthetic model.

mod common;

use std::time::Duration;

use common::{write_model, Synth};
use nestdnn::model::MultiCapacityModel;
use nestdnn::profile::{
    load_or_profile, profile_model, Calibration, MemorySource, ProfileCache, ProfileOptions,
    ProfileOrigin,
};

#[global_allocator]
static ALLOC: nestdnn::profile::alloc::CountingAlloc = nestdnn::profile::alloc::CountingAlloc;

fn quick() -> ProfileOptions {
    ProfileOptions {
        warmup: 2,
        min_runs: 10,
        max_runs: 100,
        min_time: Duration::from_millis(5),
        builds: 2,
        vanilla: true,
    }
}

#[test]
fn profiles_every_descendant() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &Synth::default());
    let m = MultiCapacityModel::load(dir.path()).unwrap();
    let p = profile_model(&m, &quick()).unwrap();
    assert_eq!(p.descendants.len(), 3);
    assert_eq!(p.memory_source, MemorySource::CountingAllocator);
    assert_eq!(p.model_sha256, m.manifest_sha256());
    for (d, spec) in p.descendants.iter().zip(&m.manifest().descendants) {
        assert_eq!(d.name, spec.name);
        assert!(d.latency_ms_median > 0.0 && d.latency_ms_p90 >= d.latency_ms_median);
        assert!(d.runs >= 10 && d.runs <= 100);
        assert!(d.build_ms > 0.0 && d.plan_bytes > 0 && d.peak_build_bytes >= d.plan_bytes);
    }
    assert!(p.descendants[2].weight_bytes > p.descendants[0].weight_bytes);
    assert_eq!(p.vanilla.as_ref().unwrap().name, "vanilla");
    assert_eq!(
        p.resident_bytes(),
        p.descendants.iter().map(|d| d.plan_bytes).sum::<u64>()
    );
    let bad = ProfileOptions {
        min_runs: 0,
        ..quick()
    };
    assert!(profile_model(&m, &bad).is_err());
}

#[test]
fn cache_is_keyed_by_model_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ProfileCache::new(cache_dir.path());
    write_model(dir.path(), &Synth::default());
    let m = MultiCapacityModel::load(dir.path()).unwrap();
    let (p1, o1) = load_or_profile(&m, &quick(), Some(&cache), false).unwrap();
    let path = cache.path_for(&m);
    assert_eq!(o1, ProfileOrigin::Measured(Some(path.clone())));
    assert!(path.is_file());
    let (p2, o2) = load_or_profile(&m, &quick(), Some(&cache), false).unwrap();
    assert_eq!(o2, ProfileOrigin::Cached(path.clone()));
    assert_eq!(p1, p2);
    let (p3, o3) = load_or_profile(&m, &quick(), Some(&cache), true).unwrap();
    assert!(matches!(o3, ProfileOrigin::Measured(_)));
    assert_ne!(p3.created_unix_s + p3.descendants[0].runs as u64, 0);

    // A corrupt cache file is ignored and replaced.
    std::fs::write(&path, "{ not json").unwrap();
    let (_, o4) = load_or_profile(&m, &quick(), Some(&cache), false).unwrap();
    assert!(matches!(o4, ProfileOrigin::Measured(_)));

    // Another model (different weights, so another manifest hash) gets another file.
    let dir2 = tempfile::tempdir().unwrap();
    write_model(
        dir2.path(),
        &Synth {
            seed: 9,
            ..Synth::default()
        },
    );
    let m2 = MultiCapacityModel::load(dir2.path()).unwrap();
    assert_ne!(cache.path_for(&m2), path);
    assert!(cache.load(&m2).is_none());
}

#[test]
fn calibration_is_kept_per_model_and_machine() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ProfileCache::new(cache_dir.path().join("sub"));
    write_model(dir.path(), &Synth::default());
    let m = MultiCapacityModel::load(dir.path()).unwrap();
    assert!(cache.load_calibration(&m).is_none());
    // Not finite / not positive entries are dropped; the vector is sized to the ladder.
    let c = Calibration::new(&m, &[Some(2e-4), Some(f64::NAN), Some(-1.0), Some(5e-4)]);
    assert_eq!(c.cpu_s_per_frame, vec![Some(2e-4), None, None]);
    assert_eq!(c.descendants, ["d0", "d1", "d2"]);
    let path = cache.store_calibration(&m, &c).unwrap();
    assert_eq!(path, cache.calibration_path_for(&m));
    assert_ne!(path, cache.path_for(&m), "next to the profile, not over it");
    assert_eq!(cache.load_calibration(&m), Some(c.clone()));
    // Only the file itself is left (temporary file renamed over it).
    let names: Vec<String> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Another model version (other weights: other manifest hash) does not see it.
    let dir2 = tempfile::tempdir().unwrap();
    write_model(
        dir2.path(),
        &Synth {
            seed: 9,
            ..Synth::default()
        },
    );
    let m2 = MultiCapacityModel::load(dir2.path()).unwrap();
    assert_ne!(cache.calibration_path_for(&m2), path);
    assert!(cache.load_calibration(&m2).is_none());
    // Copied onto m2's key, it is still refused (its content names m's manifest).
    std::fs::copy(&path, cache.calibration_path_for(&m2)).unwrap();
    assert!(cache.load_calibration(&m2).is_none());
    // Measured on another machine or by another crate version: refused.
    for (cpu, version) in [("Other CPU (x86_64)", None), ("", Some("0.0.0-other"))] {
        let mut foreign = c.clone();
        if !cpu.is_empty() {
            foreign.cpu_model = cpu.into();
        }
        if let Some(v) = version {
            foreign.crate_version = v.into();
        }
        std::fs::write(&path, serde_json::to_string(&foreign).unwrap()).unwrap();
        assert!(cache.load_calibration(&m).is_none(), "{cpu} {version:?}");
    }
    // A corrupt file is ignored.
    std::fs::write(&path, "{ torn").unwrap();
    assert!(cache.load_calibration(&m).is_none());
}
