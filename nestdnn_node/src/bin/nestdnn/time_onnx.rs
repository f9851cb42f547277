//! `nestdnn time-onnx FILE --shape 1,C,H,W` (hidden): times any ONNX file in tract exactly as
//! the runtime times a descendant (batch-1 concrete input, `into_optimized`, one reused state,
//! single thread); for comparing graph variants and engines on identical files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tract_onnx::prelude::*;

/// Arguments of `nestdnn time-onnx`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX file (one f32 input).
    file: PathBuf,
    /// Input shape, comma-separated, e.g. 1,1,28,28.
    #[arg(long, value_delimiter = ',', required = true)]
    shape: Vec<usize>,
    /// Minimum timed run time, milliseconds.
    #[arg(long, default_value_t = 500)]
    min_time_ms: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let plan = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(&args.file)
        .and_then(|m| m.with_input_fact(0, f32::fact(&args.shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| format!("building {}", args.file.display()))?;
    let n: usize = args.shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let mut state = plan.spawn().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut run = || -> anyhow::Result<()> {
        let t = Tensor::from_shape(&args.shape, &x).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        state
            .run(tvec!(t.into_tvalue()))
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(())
    };
    for _ in 0..20 {
        run()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 50 || start.elapsed() < Duration::from_millis(args.min_time_ms) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let p90 = times[((times.len() as f64 * 0.9).ceil() as usize).clamp(1, times.len()) - 1];
    let json = serde_json::json!({"median_ms": times[times.len() / 2], "p90_ms": p90, "runs": times.len()});
    crate::emit(&format!("{json}\n"))
}
