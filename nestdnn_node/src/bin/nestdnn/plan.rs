//! `nestdnn plan --params FILE [--cores X] [--memory-mb M] [--objective ...] [--json]`: the
//! plan the node would make for every enabled configured task, as if all cameras delivered.
//! With `--run SECONDS` it then executes the plan on the real models (their fixture images
//! played as cameras) and reports each task's delivered frame rate against the prediction.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nestdnn::model::{ModelSlot, MultiCapacityModel};
use nestdnn::profile::{load_or_profile, ProfileCache, ProfileOptions};
use nestdnn::runtime::{drive, DrivenRate, Runtime, RuntimeOptions, TaskSetup};
use nestdnn::scheduler::{
    plan_all, Budget, Ladder, Objective, Plan, Settings, SolverChoice, TaskSpec, TaskStatus,
};

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
    /// Then run the plan for this many seconds on the real models (fixture images as cameras)
    /// and report delivered against expected frame rates.
    #[arg(long, value_name = "SECONDS")]
    run: Option<f64>,
    /// Camera rate for --run [default: twice the highest target_fps].
    #[arg(long)]
    camera_hz: Option<f64>,
    /// Before measuring (--run), calibrate the latencies from the CPU time frames take in the
    /// runtime this many times (run 1 s, `Ladder::calibrated`, re-plan).
    #[arg(long, default_value_t = 0)]
    calibrate: usize,
}

fn non_negative(name: &str, v: f64) -> anyhow::Result<f64> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{name} must be a finite number >= 0 (0 pauses every task), got {v}");
    }
    Ok(v)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = crate::node_config(&args.params, &args.node, &args.overrides)?;
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
    let mut models = Vec::with_capacity(cfg.tasks.len());
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
        let (ladder, _accuracy_source) = Ladder::for_model(&model, &profile)?;
        specs.push(TaskSpec {
            name: t.name.clone(),
            priority: t.priority,
            target_fps: t.target_fps,
            enabled: t.enabled,
            ladder: Arc::new(ladder),
        });
        models.push(Arc::new(model));
    }
    let plan = plan_all(cfg.scheduler.clone(), specs.clone(), budget)?;
    let Some(secs) = args.run else {
        return if args.json {
            crate::emit(&(serde_json::to_string_pretty(&plan.to_json())? + "\n"))
        } else {
            crate::emit(&plan.to_table())
        };
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        bail!("--run must be in (0, 3600] seconds, got {secs}");
    }
    let (plan, rates) = run_plan(&cfg.scheduler, specs, budget, plan, &models, secs, &args)?;
    if args.json {
        let mut v = plan.to_json();
        v["run"] = serde_json::to_value(&rates)?;
        return crate::emit(&(serde_json::to_string_pretty(&v)? + "\n"));
    }
    let mut text = plan.to_table();
    text.push_str(&format!("run: {secs} s\n"));
    let rows: Vec<Vec<String>> = plan
        .tasks
        .iter()
        .zip(&rates)
        .map(|(t, r)| {
            vec![
                t.task.clone(),
                t.descendant.clone(),
                format!("{:.1}", t.expected_fps),
                format!("{:.1}", r.delivered_fps),
                if t.expected_fps > 0.0 {
                    format!("{:+.1}%", (r.delivered_fps / t.expected_fps - 1.0) * 100.0)
                } else {
                    "-".to_string()
                },
                format!("{:.3}", r.cpu_cores),
                format!("{:.3}", t.share),
            ]
        })
        .collect();
    text.push_str(&crate::table(
        &[
            "task",
            "descendant",
            "expected_fps",
            "delivered_fps",
            "deviation",
            "cpu_cores",
            "share",
        ],
        &rows,
    ));
    crate::emit(&text)
}

/// Runs `plan` on resident slots of `models`; optionally calibrates and re-plans first.
fn run_plan(
    settings: &Settings,
    mut specs: Vec<TaskSpec>,
    budget: Budget,
    mut plan: Plan,
    models: &[Arc<MultiCapacityModel>],
    secs: f64,
    args: &Args,
) -> anyhow::Result<(Plan, Vec<DrivenRate>)> {
    let mut setups = Vec::with_capacity(models.len());
    let mut frames = Vec::with_capacity(models.len());
    for (m, s) in models.iter().zip(&specs) {
        let fx = m.load_fixtures()?;
        frames.push(
            (0..fx.len())
                .filter_map(|i| fx.input(i).map(<[f32]>::to_vec))
                .collect::<Vec<_>>(),
        );
        let initial = plan
            .task(&s.name)
            .filter(|t| t.status == TaskStatus::Running)
            .map_or(0, |t| t.descendant_index);
        setups.push(TaskSetup {
            name: s.name.clone(),
            model: Arc::new(ModelSlot::new(m.clone(), settings.switch_policy, initial)?),
            target_fps: s.target_fps,
        });
    }
    let hz = args
        .camera_hz
        .unwrap_or_else(|| 2.0 * specs.iter().map(|s| s.target_fps).fold(1.0, f64::max));
    if !(hz.is_finite() && hz > 0.0) {
        bail!("--camera-hz must be a finite number > 0, got {hz}");
    }
    let rt = Runtime::start(setups, RuntimeOptions::default(), |_| {})?;
    for round in 0..=args.calibrate {
        rt.apply(&plan)?;
        drive(&rt, &frames, hz, Duration::from_secs(1));
        if round == args.calibrate {
            break;
        }
        for (i, s) in specs.iter_mut().enumerate() {
            s.ladder = Arc::new(s.ladder.calibrated(&rt.cpu_per_frame(i)));
        }
        plan = plan_all(settings.clone(), specs.clone(), budget)?;
    }
    let rates = drive(&rt, &frames, hz, Duration::from_secs_f64(secs));
    rt.shutdown(false);
    Ok((plan, rates))
}
