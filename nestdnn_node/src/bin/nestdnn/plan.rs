//! `nestdnn plan --params FILE [--cores X] [--memory-mb M] [--objective ...] [--json]`: the
//! plan the node would make for every enabled configured task, as if all cameras delivered.

use std::path::PathBuf;

use anyhow::{bail, Context};
use nestdnn::config::{NodeConfig, NodeName, Params};
use nestdnn::model::MultiCapacityModel;
use nestdnn::profile::{load_or_profile, ProfileCache, ProfileOptions};
use nestdnn::scheduler::{plan_all, Budget, Ladder, Objective, SolverChoice, TaskSpec};

/// Arguments of `nestdnn plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's ROS 2 parameters file.
    #[arg(long)]
    params: PathBuf,
    /// Node whose section applies (`/ns/name` or a base name).
    #[arg(long, default_value = "/nestdnn_node")]
    node: String,
    /// CPU budget in cores (>= 0; 0 pauses every task) [default: default_budget.cpu_cores].
    #[arg(long, allow_negative_numbers = true)]
    cores: Option<f64>,
    /// Memory budget in MiB (>= 0) [default: default_budget.memory_mb].
    #[arg(long = "memory-mb", allow_negative_numbers = true)]
    memory_mb: Option<f64>,
    /// Objective [default: scheduler.objective].
    #[arg(long, value_parser = ["min_total_cost", "min_max_cost", "static", "smallest"])]
    objective: Option<String>,
    /// Solver [default: scheduler.solver].
    #[arg(long, value_parser = ["auto", "exact", "greedy"])]
    solver: Option<String>,
    /// Parameter override `KEY:=VALUE` (value parsed as YAML, as `--ros-args -p` does).
    #[arg(short = 'p', long = "param", value_name = "KEY:=VALUE")]
    overrides: Vec<String>,
    /// Profile cache folder [default: $NESTDNN_CACHE_DIR, $XDG_CACHE_HOME/nestdnn or
    /// ~/.cache/nestdnn].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Profile models that have no cached profile on this machine (else that is an error).
    #[arg(long)]
    profile_missing: bool,
    /// Print JSON: {"objective", "tasks": [{"task", "descendant", "share",
    /// "expected_accuracy", "expected_fps", "cost", ...}], ...}.
    #[arg(long)]
    json: bool,
}

fn non_negative(name: &str, v: f64) -> anyhow::Result<f64> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{name} must be a finite number >= 0 (0 pauses every task), got {v}");
    }
    Ok(v)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let node = NodeName::parse(&args.node);
    let mut params = Params::from_file(&args.params, &node)?;
    for o in &args.overrides {
        let Some((k, v)) = o.split_once(":=") else {
            bail!("-p {o:?}: expected KEY:=VALUE");
        };
        params.set_from_str(k, v)?;
    }
    let mut cfg = NodeConfig::from_params(&params)?;
    if let Some(o) = &args.objective {
        cfg.scheduler.objective = o.parse::<Objective>()?;
    }
    if let Some(s) = &args.solver {
        cfg.scheduler.solver = s.parse::<SolverChoice>()?;
    }
    let d = cfg.scheduler.default_budget;
    let cores = non_negative("--cores", args.cores.unwrap_or(d.cpu_cores))?;
    let memory_mb = non_negative(
        "--memory-mb",
        args.memory_mb.unwrap_or(d.memory_bytes as f64 / 1048576.0),
    )?;
    let budget = Budget::new(cores, (memory_mb * 1048576.0).round() as u64);

    let cache_dir = args.cache_dir.clone().or_else(ProfileCache::default_dir);
    let cache = cache_dir.map(ProfileCache::new);
    let mut specs = Vec::with_capacity(cfg.tasks.len());
    for t in &cfg.tasks {
        let model = MultiCapacityModel::load(&t.model_dir)
            .with_context(|| format!("task {}: loading model {}", t.name, t.model_dir.display()))?;
        let cached = cache.as_ref().and_then(|c| c.load(&model));
        let profile = match cached {
            Some(p) => p,
            None if args.profile_missing => {
                eprintln!("task {}: profiling {} ...", t.name, t.model_dir.display());
                load_or_profile(&model, &ProfileOptions::default(), cache.as_ref(), false)
                    .with_context(|| format!("task {}: profiling", t.name))?
                    .0
            }
            None => bail!(
                "task {}: no profile of {} on this machine{}; run `nestdnn profile {}` first, or pass --profile-missing",
                t.name,
                t.model_dir.display(),
                cache
                    .as_ref()
                    .map(|c| format!(" in {}", c.dir().display()))
                    .unwrap_or_default(),
                t.model_dir.display()
            ),
        };
        let ladder = Ladder::from_profile(model.manifest(), &profile)?;
        specs.push(TaskSpec {
            name: t.name.clone(),
            priority: t.priority,
            target_fps: t.target_fps,
            enabled: t.enabled,
            ladder: std::sync::Arc::new(ladder),
        });
    }
    let plan = plan_all(cfg.scheduler.clone(), specs, budget)?;
    if args.json {
        crate::emit(&(serde_json::to_string_pretty(&plan.to_json())? + "\n"))
    } else {
        crate::emit(&plan.to_table())
    }
}
