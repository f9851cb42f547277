//! `nestdnn export-descendant MODEL_DIR --out DIR` (hidden): every descendant as a standalone
//! ONNX file, exactly as the runtime hands it to tract (sliced, BN folded, batch dim as in the
//! master), plus `vanilla.onnx` (BN folded); used by `scripts/ort_compare.py`.

use std::path::PathBuf;

use anyhow::Context;
use nestdnn::model::MultiCapacityModel;
use prost::Message;

/// Arguments of `nestdnn export-descendant`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (holding manifest.yaml).
    model_dir: PathBuf,
    /// Output folder (created); files are named `<descendant>.onnx`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = MultiCapacityModel::load(&args.model_dir)
        .with_context(|| format!("loading model {}", args.model_dir.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut files = Vec::new();
    for i in 0..model.num_descendants() {
        let name = &model.manifest().descendants[i].name;
        files.push((
            format!("{name}.onnx"),
            model.descendant_proto(i)?.encode_to_vec(),
        ));
    }
    files.push((
        "vanilla.onnx".into(),
        model.vanilla_proto()?.encode_to_vec(),
    ));
    let mut text = String::new();
    for (name, bytes) in files {
        let path = args.out.join(&name);
        nestdnn::fsio::write_atomic(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        text += &format!("{}\n", path.display());
    }
    crate::emit(&text)
}
