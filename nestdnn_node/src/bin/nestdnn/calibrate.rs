//! `nestdnn calibrate MODEL_DIR... --bag NAME [--recordings JSON] [--write]`: every
//! descendant's top-1 on the labelled camera frames of a recording (docs/calibration.md),
//! written as the model's `accuracy.yaml`, which the planner then prefers over the manifest's
//! validation accuracies.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use nestdnn::fsio::{check_outputs, write_atomic};
use nestdnn::model::{ci95_half_width, CameraAccuracy, MultiCapacityModel, ACCURACY_FILE};

use crate::bench::data::{load_frames, pass};

/// Arguments of `nestdnn calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folders (each holding manifest.yaml); each needs a camera in the bag.
    #[arg(required = true)]
    model_dirs: Vec<PathBuf>,
    /// The recording's sidecar (cameras, topics, ROIs, ground-truth topics), as written by
    /// test/bags/make_recordings.py.
    #[arg(long, default_value = "test/bags/recordings.json")]
    recordings: PathBuf,
    /// The bag, by its `path` in the sidecar (e.g. `calibration_heavy`). Use frames the
    /// model was not trained on, and not the frames you benchmark on.
    #[arg(long)]
    bag: String,
    /// Write MODEL_DIR/accuracy.yaml (atomically; replaces an earlier calibration).
    #[arg(long)]
    write: bool,
    /// Print the calibrations as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `nestdnn calibrate`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let models = a
        .model_dirs
        .iter()
        .map(|d| {
            MultiCapacityModel::load(d)
                .map(Arc::new)
                .with_context(|| format!("loading {}", d.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.write {
        // Nothing written may be or lie inside an input (the sidecar, the bag).
        let bag = a
            .recordings
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&a.bag);
        let outputs: Vec<_> = models
            .iter()
            .map(|m| ("accuracy file", m.dir().join(ACCURACY_FILE)))
            .collect();
        let outputs: Vec<_> = outputs.iter().map(|(k, p)| (*k, p.as_path())).collect();
        check_outputs(&[a.recordings.as_path(), bag.as_path()], &outputs)?;
    }
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&a.recordings)
            .with_context(|| format!("reading {}", a.recordings.display()))?,
    )
    .with_context(|| format!("{}: not JSON", a.recordings.display()))?;
    let generator = sidecar
        .get("generator")
        .and_then(|g| g.as_str())
        .unwrap_or("unknown generator");
    let frames = load_frames(&a.recordings, &a.bag, &models)?;
    let mut out = Vec::new();
    for (model, fr) in models.iter().zip(&frames) {
        eprintln!(
            "calibrate: {}: {} descendants and the vanilla model over {} labelled frames",
            fr.app,
            model.num_descendants(),
            fr.len()
        );
        let correct = (0..model.num_descendants())
            .map(|d| Ok(pass(&model.build_plan(d)?, fr)?.right()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let vanilla = pass(&model.build_vanilla_plan()?, fr)?.right();
        let source = format!("bag {} ({generator}), {} frames", a.bag, fr.len());
        let cal = CameraAccuracy::new(model, source, fr.len() as u64, &correct, Some(vanilla))?;
        if !a.json {
            print_table(model, &cal);
        }
        if a.write {
            let path = model.dir().join(ACCURACY_FILE);
            write_atomic(&path, cal.to_yaml()?.as_bytes())?;
            eprintln!("calibrate: wrote {}", path.display());
        }
        out.push(cal);
    }
    if out.is_empty() {
        bail!("no model calibrated");
    }
    if a.json {
        crate::emit(&(serde_json::to_string_pretty(&out)? + "\n"))?;
    }
    Ok(())
}

fn print_table(model: &MultiCapacityModel, cal: &CameraAccuracy) {
    let n = cal.frames;
    println!(
        "{}: {} frames; top-1 % (manifest: validation images; camera: these frames, +- 95 %)",
        cal.task, n
    );
    println!(
        "{:<10} {:>10} {:>9} {:>16} {:>8}",
        "model", "MMAC", "manifest", "camera", "diff pt"
    );
    let row = |name: &str, macs: u64, manifest: f64, camera: f64| {
        println!(
            "{:<10} {:>10.1} {:>9.2} {:>9.2} +- {:>4.2} {:>+8.2}",
            name,
            macs as f64 / 1e6,
            manifest * 100.0,
            camera * 100.0,
            ci95_half_width(camera, n) * 100.0,
            (camera - manifest) * 100.0
        );
    };
    for (d, c) in model.manifest().descendants.iter().zip(&cal.descendants) {
        row(&d.name, d.macs, d.accuracy, c.accuracy);
    }
    if let Some(v) = &cal.vanilla {
        let m = &model.manifest().vanilla;
        row("vanilla", m.macs, m.accuracy, v.accuracy);
    }
}
