//! `nestdnn inspect MODEL_DIR [--json]`: the capacity ladder of a model.

use std::path::PathBuf;

use anyhow::Context;
use nestdnn::model::MultiCapacityModel;
use serde::Serialize;

/// Arguments of `nestdnn inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (holding manifest.yaml).
    model_dir: PathBuf,
    /// Print JSON: {"task", "descendants": [{"name", "macs", "params", "accuracy", ...}], "vanilla"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Rung {
    name: String,
    macs: u64,
    params: u64,
    accuracy: f64,
    cross_domain_accuracy: Option<f64>,
    /// Output channels per sliced Conv, in graph order.
    channels: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct Report {
    task: String,
    dataset: String,
    architecture: String,
    input: [usize; 3],
    classes: usize,
    /// Sliced Conv layers (weight initializer names), in graph order.
    layers: Vec<String>,
    descendants: Vec<Rung>,
    vanilla: Rung,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = MultiCapacityModel::load(&args.model_dir)
        .with_context(|| format!("loading model {}", args.model_dir.display()))?;
    let m = model.manifest();
    let descendants = m
        .descendants
        .iter()
        .map(|d| Rung {
            name: d.name.clone(),
            macs: d.macs,
            params: d.params,
            accuracy: d.accuracy,
            cross_domain_accuracy: d.cross_domain_accuracy,
            channels: m
                .layers
                .iter()
                .map(|l| d.channels.get(&l.name).copied().unwrap_or(0))
                .collect(),
        })
        .collect();
    let vanilla = Rung {
        name: "vanilla".into(),
        macs: m.vanilla.macs,
        params: m.vanilla.params,
        accuracy: m.vanilla.accuracy,
        cross_domain_accuracy: m.vanilla.cross_domain_accuracy,
        channels: m.layers.iter().map(|l| l.out_channels).collect(),
    };
    let report = Report {
        task: m.task.clone(),
        dataset: m.dataset.clone(),
        architecture: m.architecture.clone(),
        input: [m.input.channels, m.input.height, m.input.width],
        classes: m.output.classes,
        layers: m.layers.iter().map(|l| l.name.clone()).collect(),
        descendants,
        vanilla,
    };
    if args.json {
        return crate::emit(&(serde_json::to_string_pretty(&report)? + "\n"));
    }
    let mut text = format!(
        "{}: {} on {}, input {}x{}x{}, {} classes, {} sliced layers\n",
        report.task,
        report.architecture,
        report.dataset,
        report.input[0],
        report.input[1],
        report.input[2],
        report.classes,
        report.layers.len()
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{a:.4}"));
    let rows: Vec<Vec<String>> = report
        .descendants
        .iter()
        .chain(std::iter::once(&report.vanilla))
        .map(|r| {
            vec![
                r.name.clone(),
                r.macs.to_string(),
                r.params.to_string(),
                format!("{:.4}", r.accuracy),
                opt(r.cross_domain_accuracy),
                r.channels
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    text += &crate::table(
        &[
            "name",
            "macs",
            "params",
            "accuracy",
            "cross_domain",
            "channels",
        ],
        &rows,
    );
    crate::emit(&text)
}
