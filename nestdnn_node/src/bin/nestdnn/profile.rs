//! `nestdnn profile MODEL_DIR [--json] [--reprofile]`: latency, build time and memory of
//! every descendant on this machine, cached.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use nestdnn::model::MultiCapacityModel;
use nestdnn::profile::{load_or_profile, ProfileCache, ProfileOptions, ProfileOrigin};

/// Arguments of `nestdnn profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (holding manifest.yaml).
    model_dir: PathBuf,
    /// Print the profile as JSON ({"descendants": [{"name", "latency_ms_median", ...}], ...}).
    #[arg(long)]
    json: bool,
    /// Measure again even if a cached profile exists (and replace it).
    #[arg(long)]
    reprofile: bool,
    /// Cache folder [default: $NESTDNN_CACHE_DIR, $XDG_CACHE_HOME/nestdnn or ~/.cache/nestdnn].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Neither read nor write the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Minimum timed run time per descendant, milliseconds.
    #[arg(long, default_value_t = 300)]
    min_time_ms: u64,
    /// Minimum timed runs per descendant.
    #[arg(long, default_value_t = 50)]
    min_runs: usize,
    /// Instead: time every operator of this descendant (`vanilla` for the vanilla model) and
    /// print where its latency goes (not cached).
    #[arg(long, value_name = "DESCENDANT")]
    ops: Option<String>,
}

fn op_breakdown(model: &MultiCapacityModel, name: &str, runs: usize) -> anyhow::Result<()> {
    let plan = if name == "vanilla" {
        model.build_vanilla_plan()?
    } else {
        let i = model
            .manifest()
            .descendants
            .iter()
            .position(|d| d.name == name)
            .with_context(|| format!("no descendant named {name:?}"))?;
        model.build_plan(i)?
    };
    let input = vec![0.5f32; plan.input_len()];
    let mut state = plan.spawn()?;
    for _ in 0..20 {
        state.run(&input)?;
    }
    let ops = state.op_times(&input, runs.max(100))?;
    let total: f64 = ops.iter().map(|o| o.micros).sum();
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            vec![
                o.node.clone(),
                o.op.clone(),
                format!("{:.2}", o.micros),
                format!("{:.1}", 100.0 * o.micros / total),
            ]
        })
        .collect();
    let mut text = format!(
        "{} {name}: {} operators, sum of medians {total:.1} us\n",
        model.manifest().task,
        ops.len()
    );
    text += &crate::table(&["node", "op", "us", "%"], &rows);
    crate::emit(&text)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = MultiCapacityModel::load(&args.model_dir)
        .with_context(|| format!("loading model {}", args.model_dir.display()))?;
    if let Some(name) = &args.ops {
        return op_breakdown(&model, name, args.min_runs);
    }
    let cache = if args.no_cache {
        None
    } else {
        let dir = args.cache_dir.clone().or_else(ProfileCache::default_dir);
        if dir.is_none() {
            log::warn!(
                "no cache folder (set NESTDNN_CACHE_DIR or HOME); profiling without a cache"
            );
        }
        dir.map(ProfileCache::new)
    };
    let opts = ProfileOptions {
        min_time: Duration::from_millis(args.min_time_ms),
        min_runs: args.min_runs,
        max_runs: args.min_runs.max(5000),
        ..ProfileOptions::default()
    };
    let (p, origin) = load_or_profile(&model, &opts, cache.as_ref(), args.reprofile)
        .with_context(|| format!("profiling {}", args.model_dir.display()))?;
    match &origin {
        ProfileOrigin::Cached(path) => {
            eprintln!(
                "cached profile {} (--reprofile to measure again)",
                path.display()
            )
        }
        ProfileOrigin::Measured(Some(path)) => eprintln!("measured; cached in {}", path.display()),
        ProfileOrigin::Measured(None) => eprintln!("measured (not cached)"),
    }
    if args.json {
        return crate::emit(&(serde_json::to_string_pretty(&p)? + "\n"));
    }
    let mut text = format!(
        "{} on {} (single thread, batch 1; memory: {:?})\n",
        p.task, p.cpu_model, p.memory_source
    );
    let kib = |b: u64| format!("{:.1}", b as f64 / 1024.0);
    let rows: Vec<Vec<String>> = p
        .descendants
        .iter()
        .chain(p.vanilla.iter())
        .map(|d| {
            vec![
                d.name.clone(),
                format!("{:.4}", d.latency_ms_median),
                format!("{:.4}", d.latency_ms_p90),
                format!("{:.2}", d.build_ms),
                kib(d.plan_bytes),
                kib(d.peak_build_bytes),
                d.runs.to_string(),
            ]
        })
        .collect();
    text += &crate::table(
        &[
            "name",
            "latency_ms_median",
            "latency_ms_p90",
            "build_ms",
            "plan_KiB",
            "peak_build_KiB",
            "runs",
        ],
        &rows,
    );
    text += &format!(
        "resident (all plans): {} KiB; on-demand: master {} KiB + active plan; one-copy: active plan\n",
        kib(p.resident_bytes()),
        kib(p.master_bytes)
    );
    crate::emit(&text)
}
