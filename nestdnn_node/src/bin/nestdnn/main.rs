//! `nestdnn`: command-line tool of the NestDNN package.
//!
//! One subcommand per module file beside this one: add a variant to [`Command`] whose payload
//! is the module's `Args` (a `clap::Args`) and a match arm calling the module's
//! `run(args) -> anyhow::Result<()>`.

mod bench;
mod calibrate;
mod export;
mod inspect;
mod plan;
#[cfg(feature = "dds")]
mod play;
mod plot;
mod profile;
mod replay;
mod time_onnx;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measures plan memory for `nestdnn profile` (see `nestdnn::profile::alloc`).
#[global_allocator]
static ALLOC: nestdnn::profile::alloc::CountingAlloc = nestdnn::profile::alloc::CountingAlloc;

#[derive(Debug, Parser)]
#[command(
    name = "nestdnn",
    version,
    about = "NestDNN: resource-aware multi-tenant CNN inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a model's capacity ladder (validates the model folder).
    Inspect(inspect::Args),
    /// Measure every descendant on this machine (cached per model and CPU).
    Profile(profile::Args),
    /// Write every descendant as a standalone ONNX file (sliced, BN folded).
    #[command(hide = true)]
    ExportDescendant(export::Args),
    /// Time any ONNX file in tract the way descendants are timed.
    #[command(hide = true)]
    TimeOnnx(time_onnx::Args),
    /// Measure every descendant's top-1 on a labelled recording's camera frames (writes accuracy.yaml with --write).
    Calibrate(calibrate::Args),
    /// Show the plan the node would make for its configured tasks under a budget.
    Plan(plan::Args),
    /// Benchmarks: `multitenant` (NestDNN against the status quo), `table` (the results table of `docs/benchmarks.md`).
    Bench(bench::Args),
    /// Replay a rosbag2 bag through the node core (no ROS): accuracy, drops, plans.
    Replay(replay::Args),
    /// Publish a rosbag2 bag over DDS at bag pace, like `ros2 bag play`.
    #[cfg(feature = "dds")]
    Play(play::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Profile(a) => profile::run(a),
        Command::ExportDescendant(a) => export::run(a),
        Command::TimeOnnx(a) => time_onnx::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Replay(a) => replay::run(a),
        #[cfg(feature = "dds")]
        Command::Play(a) => play::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The node configuration from a params file, the section of `node` (`/ns/name` or a base
/// name) and `-p KEY:=VALUE` overrides, as the node itself would read it.
pub(crate) fn node_config(
    params: &std::path::Path,
    node: &str,
    overrides: &[String],
) -> anyhow::Result<nestdnn::config::NodeConfig> {
    let node = nestdnn::config::NodeName::parse(node);
    let mut p = nestdnn::config::Params::from_file(params, &node)?;
    for o in overrides {
        let Some((k, v)) = o.split_once(":=") else {
            anyhow::bail!("-p {o:?}: expected KEY:=VALUE");
        };
        p.set_from_str(k, v)?;
    }
    Ok(nestdnn::config::NodeConfig::from_params(&p)?)
}

/// Writes `text` to stdout; a closed pipe (`nestdnn ... | head`) is not an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Formats `rows` as a table with columns padded to their widest cell; the first column is
/// left-aligned, the others right-aligned.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        text.push_str(parts.join("  ").trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    text
}
