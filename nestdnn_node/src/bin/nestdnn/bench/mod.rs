//! `nestdnn bench multitenant [--quick] --report FILE`: NestDNN against the resource-agnostic
//! status quo on the committed models (issue 7); `nestdnn bench table --report FILE` prints
//! (or writes into `docs/benchmarks.md`) the results table generated from a report.
//!
//! The benchmark is tool code: it uses the core library (`nestdnn`) like any other client.
//! - [`workload`]: the workload, fixed before any result (apps, arrivals, budgets,
//!   background load, settings, systems and the comparison's definitions).
//! - [`data`]: the labelled frames of the bundled recording and the offline pass of every
//!   descendant over them.
//! - [`load`]: the background load process.
//! - [`tenant`]: what a system runs for one app, with real model loads (and the status
//!   quo's least-recently-used eviction under the memory budget).
//! - [`harness`]: real runs of every system, one after another, on the task runtime.
//! - [`curves`]: accuracy-vs-frame-rate curves and the gains.
//! - [`simulate`]: the same runs in virtual time ([`nestdnn::sim`]), to validate the
//!   simulation against the real runs.
//! - [`report`]: the JSON report and the results table.
//! - [`plots`]: the accuracy-vs-frame-rate and capacity-over-time plots (SVG and PNG).

pub mod curves;
pub mod data;
pub mod harness;
pub mod load;
pub mod plots;
pub mod report;
pub mod simulate;
pub mod tenant;
pub mod workload;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use data::{load_frames, offline_pass, Offline};
use harness::{run_real, sweep, App, RunOutcome, System, SystemRun};
use nestdnn::model::{models_dir, MultiCapacityModel};
use nestdnn::profile::{load_or_profile, ProfileCache, ProfileOptions};
use nestdnn::scheduler::{Ladder, Rung};
use report::summarize;
use serde_json::json;
use simulate::{calibration_lag, simulate_run, validation, SimInputs};
use workload::{APPS, FULL, QUICK};

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The recording, its sidecar or the frames are unusable.
    #[error("benchmark data: {what}")]
    Data {
        /// What is wrong.
        what: String,
    },
    /// A model could not be loaded, built or run.
    #[error(transparent)]
    Model(#[from] nestdnn::model::ModelError),
    /// The task runtime refused an operation.
    #[error(transparent)]
    Runtime(#[from] nestdnn::runtime::RuntimeError),
    /// The planner refused an input.
    #[error(transparent)]
    Scheduler(#[from] nestdnn::scheduler::SchedulerError),
    /// The resource monitor could not read the machine.
    #[error(transparent)]
    Monitor(#[from] nestdnn::monitor::MonitorError),
}

/// Arguments of `nestdnn bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Run the multi-tenant benchmark (`docs/benchmarks.md`).
    Multitenant(Multitenant),
    /// Print the results table of a report; with --update-readme, replace the table
    /// between the `bench:multitenant` markers of the named file (`docs/benchmarks.md`).
    Table(Table),
    /// The background load process of the benchmark (internal).
    #[command(hide = true)]
    Burn {
        /// Cores to burn.
        #[arg(long)]
        cores: f64,
        /// Stop after this many seconds at the latest.
        #[arg(long, default_value_t = 600.0)]
        max_s: f64,
    },
}

#[derive(Debug, clap::Args)]
struct Multitenant {
    /// The CI smoke setting (2 runs of 15 s, 3 systems) instead of the full one (6 runs of
    /// 40 s, 11 systems).
    #[arg(long)]
    quick: bool,
    /// Write the JSON report here; the plots go beside it (`<stem>-curves.svg`,
    /// `<stem>-capacity.svg`, and each as `.png`).
    #[arg(long)]
    report: PathBuf,
    /// Also print the results table.
    #[arg(long)]
    readme_table: bool,
    /// Only the first N runs of the setting.
    #[arg(long)]
    runs: Option<usize>,
    /// Models folder [default: the repository's models/].
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Recordings sidecar [default: <models>/../test/bags/recordings.json].
    #[arg(long)]
    recordings: Option<PathBuf>,
    /// Profile cache folder [default: as `nestdnn profile`].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct Table {
    /// The JSON report.
    #[arg(long)]
    report: PathBuf,
    /// Replace the text between `<!-- bench:multitenant:begin -->` and
    /// `<!-- bench:multitenant:end -->` in this file instead of printing.
    #[arg(long)]
    update_readme: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Multitenant(m) => multitenant(m),
        Cmd::Table(t) => table(t),
        Cmd::Burn { cores, max_s } => {
            if !(cores.is_finite() && cores >= 0.0 && max_s.is_finite() && max_s >= 0.0) {
                bail!("--cores and --max-s must be finite numbers >= 0");
            }
            load::burn(cores, Duration::from_secs_f64(max_s));
            Ok(())
        }
    }
}

const BEGIN: &str = "<!-- bench:multitenant:begin -->";
const END: &str = "<!-- bench:multitenant:end -->";

fn table(t: Table) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&t.report)
        .with_context(|| format!("reading {}", t.report.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", t.report.display()))?;
    let tab = report::readme_table(&v)
        .map_err(|e| anyhow::anyhow!("{}: not a multitenant report: {e}", t.report.display()))?;
    let Some(readme) = t.update_readme else {
        return crate::emit(&tab);
    };
    let doc = std::fs::read_to_string(&readme)
        .with_context(|| format!("reading {}", readme.display()))?;
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("{}: no {BEGIN} ... {END} markers", readme.display());
    };
    if e < b {
        bail!("{}: {END} comes before {BEGIN}", readme.display());
    }
    let src = t.report.display();
    let new = format!(
        "{}{BEGIN}\n<!-- generated by `nestdnn bench table --report {src} --update-readme {}`; do not edit -->\n{tab}{}",
        &doc[..b],
        readme.display(),
        &doc[e..]
    );
    nestdnn::fsio::write_atomic(&readme, new.as_bytes())
        .with_context(|| format!("writing {}", readme.display()))?;
    Ok(())
}

fn multitenant(m: Multitenant) -> anyhow::Result<()> {
    let wall = Instant::now();
    let setting = if m.quick { QUICK } else { FULL };
    let n_runs = m
        .runs
        .unwrap_or(setting.seeds.len())
        .min(setting.seeds.len());
    if n_runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mdir = m.models_dir.clone().unwrap_or_else(models_dir);
    let recordings = m
        .recordings
        .clone()
        .unwrap_or_else(|| mdir.join("..").join("test/bags/recordings.json"));
    let cache = m
        .cache_dir
        .clone()
        .or_else(ProfileCache::default_dir)
        .map(ProfileCache::new);
    let mut models = Vec::new();
    for a in APPS {
        let dir = mdir.join(a);
        models.push(Arc::new(
            MultiCapacityModel::load(&dir).with_context(|| format!("loading {}", dir.display()))?,
        ));
    }
    eprintln!(
        "bench: reading the labelled frames of {}",
        recordings.display()
    );
    let frames = load_frames(&recordings, workload::BAG, &models)?;
    let mut apps = Vec::new();
    let mut offline = Vec::new();
    let mut offline_runs = Vec::new();
    for (model, fr) in models.iter().zip(frames) {
        let (profile, origin) =
            load_or_profile(model, &ProfileOptions::default(), cache.as_ref(), false)
                .with_context(|| format!("profiling {}", fr.app))?;
        log::info!("{}: profile {origin:?}", fr.app);
        eprintln!(
            "bench: {}: every descendant over {} held-out frames",
            fr.app,
            fr.len()
        );
        let off = offline_pass(model, &fr)?;
        // Latency: the hot-loop CPU time measured here; memory: the plans as this process
        // accounts for them (the counting allocator), which is also what the benchmark
        // reports, so the planner and the memory figures agree.
        let (profiled, accuracy_source) = Ladder::for_model(model, &profile)?;
        log::info!("{}: accuracies from the {accuracy_source}", fr.app);
        let profiled = profiled.calibrated(&off.cpu_s.iter().map(|&c| Some(c)).collect::<Vec<_>>());
        // Switch cost: a one-copy build re-reads the master file; measure it here.
        let build_s = switch_build_s(model)?;
        let rungs = profiled
            .rungs()
            .iter()
            .zip(&off.plan_bytes)
            .zip(&build_s)
            .map(|((r, &b), &build)| Rung {
                plan_bytes: b,
                build_s: build.unwrap_or(r.build_s),
                ..r.clone()
            })
            .collect();
        let ladder = Ladder::new(&fr.app, rungs, Some(model.master_bytes()))?;
        offline.push(json!({
            "app": off.app,
            "frames": fr.len(),
            "accuracy": off.accuracy,
            "manifest_accuracy": model.manifest().descendants.iter().map(|d| d.accuracy).collect::<Vec<_>>(),
            "planner_accuracy": ladder.rungs().iter().map(|r| r.accuracy).collect::<Vec<_>>(),
            "accuracy_source": accuracy_source,
            "cpu_ms_per_frame_hot": off.cpu_s.iter().map(|c| c * 1e3).collect::<Vec<_>>(),
            "plan_bytes": off.plan_bytes,
            "switch_build_ms": build_s.iter().map(|b| b.map(|s| s * 1e3)).collect::<Vec<_>>(),
            "load_ms": off.load_cpu_s.iter().map(|s| s * 1e3).collect::<Vec<_>>(),
            "master_bytes": model.master_bytes(),
            "status_quo": off.status_quo,
        }));
        let status_quo_cpu_s = off.status_quo.iter().map(|m| m.cpu_s).collect();
        let descendant_accuracy = off.accuracy.clone();
        let status_quo_accuracy = off.status_quo.iter().map(|m| m.accuracy).collect();
        offline_runs.push(off);
        apps.push(App {
            model: model.clone(),
            frames: fr,
            ladder,
            status_quo_cpu_s,
            descendant_accuracy,
            status_quo_accuracy,
        });
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut spawn_load = |cores: f64| {
        Command::new(&exe)
            .args(["bench", "burn", "--cores", &cores.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let systems = sweep(&setting);
    let mut runs = Vec::new();
    for i in 0..n_runs {
        let Some(sched) = workload::schedule(&setting, i) else {
            break;
        };
        eprintln!(
            "bench: run {}/{n_runs} (seed {}, {:.3} cores, {} MiB, {} s, {} systems one after another)",
            i + 1,
            sched.seed,
            sched.compute_cores,
            sched.memory_bytes >> 20,
            sched.run_s,
            systems.len()
        );
        let out = run_real(&apps, &sched, &systems, &mut spawn_load)?;
        for s in &out.systems {
            eprintln!(
                "  {:<24} {:6.1} fps  top-1 {:6.2} %  cpu {:.3} ms/frame",
                s.system.label(),
                s.fps(),
                s.accuracy() * 100.0,
                (s.cpu_s + s.build_cpu_s) / s.processed.max(1) as f64 * 1e3
            );
        }
        runs.push(out);
    }
    // The same runs in virtual time, to measure the simulation's error.
    eprintln!("bench: simulating the same runs");
    let mut pairs = Vec::new();
    let mut lag = Vec::new();
    let start_ladders: Vec<Ladder> = apps.iter().map(|a| a.ladder.clone()).collect();
    for out in &runs {
        // Frames cost their inference alone (the simulator charges the loads itself); the
        // planners learn the runtime's measure, which holds the loads, as in the real run.
        let latency =
            observed_latencies(&apps, &offline_runs, out, |s| &s.inference_cpu_per_frame_s);
        let learned = observed_latencies(&apps, &offline_runs, out, |s| &s.cpu_per_frame_s);
        let sq_latency = status_quo_latencies(&offline_runs, out);
        let ladders: Vec<Ladder> = apps
            .iter()
            .zip(&learned)
            .map(|(a, l)| {
                a.ladder
                    .calibrated(&l.iter().map(|&x| Some(x)).collect::<Vec<_>>())
            })
            .collect();
        let inputs = SimInputs {
            budget: &out.budget,
            latency_s: &latency,
            status_quo_latency_s: &sq_latency,
            start_ladders: &start_ladders,
            ladders: &ladders,
            offline: &offline_runs,
        };
        for s in &out.systems {
            let r = simulate_run(s.system, &out.schedule, &inputs)?;
            if matches!(s.system, System::Nestdnn { .. }) {
                // The same run with the frames' in-run costs known from the start.
                let known = SimInputs {
                    start_ladders: &ladders,
                    ..inputs
                };
                lag.push((r, simulate_run(s.system, &out.schedule, &known)?));
            }
            pairs.push((
                out.schedule.index,
                s.system.label(),
                s.fps(),
                r.fps(),
                s.accuracy(),
                r.accuracy(),
            ));
        }
    }
    let sim = validation(pairs);
    eprintln!(
        "bench: sim vs real: fps mean |error| {:.1} % (max {:.1} %), accuracy mean |error| {:.2} pt (max {:.2} pt)",
        sim.fps_mean_abs_rel_error * 100.0,
        sim.fps_max_abs_rel_error * 100.0,
        sim.accuracy_mean_abs_error_pt,
        sim.accuracy_max_abs_error_pt
    );
    let lag = calibration_lag(&lag);
    eprintln!(
        "bench: sim: NestDNN with in-run costs known from the start: {:+.1} % fps, {:+.2} pt",
        lag.fps_gain_mean * 100.0,
        lag.accuracy_change_pt_mean
    );
    let summaries = summarize(&runs);
    let extra = json!({
        "sim_validation": sim,
        "sim_calibration_lag": lag,
        "machine": {
            "cpu_model": nestdnn::profile::cpu_model(),
            "online_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "offline": offline,
        "ladder_span": report::ladder_span(&offline_runs, &runs),
        "overhead": report::overhead(&offline_runs, &runs),
        "wall_s": wall.elapsed().as_secs_f64(),
    });
    let mut rep = report::build(&setting, &runs, extra);
    // Demand at the largest descendants over the budget, per run.
    let largest: Vec<f64> = offline_runs
        .iter()
        .map(|o| o.cpu_s.last().copied().unwrap_or(f64::NAN))
        .collect();
    if let Some(rs) = rep
        .get_mut("runs")
        .and_then(serde_json::Value::as_array_mut)
    {
        for (r, out) in rs.iter_mut().zip(&runs) {
            r["demand_over_budget"] = report::demand_over_budget(out, &largest);
        }
    }
    // Capacity over time: the first run, the best objective at the default alpha.
    let best = rep
        .get("best_objective")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("min_total_cost")
        .to_string();
    let nd_label = systems
        .iter()
        .find(|s| s.family() == best && (s.knob() - 0.1).abs() < 1e-9)
        .map_or_else(|| format!("{best} a=0.1"), System::label);
    let stem = m
        .report
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("multitenant")
        .to_string();
    let dir = m.report.parent().unwrap_or(Path::new(".")).to_path_buf();
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut written = Vec::new();
    let (svg, png) = crate::plot::write(
        &plots::CurvesPlot {
            summaries: &summaries,
        },
        &dir.join(format!("{stem}-curves.svg")),
    )?;
    written.extend([svg, png]);
    if let Some(r0) = runs.first() {
        let (svg, png) = crate::plot::write(
            &plots::CapacityPlot {
                run: r0,
                nestdnn_label: &nd_label,
            },
            &dir.join(format!("{stem}-capacity.svg")),
        )?;
        written.extend([svg, png]);
        if let Some(sys) = r0.systems.iter().find(|s| s.system.label() == nd_label) {
            rep["timeline_run"] = json!({
                "run": 0,
                "system": nd_label,
                "timeline": sys.timeline,
            });
        }
    }
    rep["plots"] = json!(written
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>());
    rep["wall_s"] = json!(wall.elapsed().as_secs_f64());
    nestdnn::fsio::write_atomic(
        &m.report,
        (serde_json::to_string_pretty(&rep)? + "\n").as_bytes(),
    )
    .with_context(|| format!("writing {}", m.report.display()))?;
    eprintln!(
        "bench: wrote {}, {} in {:.0} s",
        m.report.display(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        wall.elapsed().as_secs_f64()
    );
    if m.readme_table {
        let t = report::readme_table(&rep).map_err(|e| anyhow::anyhow!(e))?;
        crate::emit(&t)?;
    }
    Ok(())
}

/// Per app and descendant, the CPU seconds one frame took in run `out` by the measure `pick`
/// selects (mean over the NestDNN systems that served it); descendants no system served: the
/// offline hot-loop figure scaled by the app's median observed/offline ratio.
fn observed_latencies(
    apps: &[App],
    offline: &[Offline],
    out: &RunOutcome,
    pick: fn(&SystemRun) -> &Vec<Vec<Option<f64>>>,
) -> Vec<Vec<f64>> {
    apps.iter()
        .enumerate()
        .map(|(i, a)| {
            let n = a.ladder.len();
            let hot = offline.get(i).map(|o| o.cpu_s.clone()).unwrap_or_default();
            let mut obs: Vec<Option<f64>> = vec![None; n];
            for (d, o) in obs.iter_mut().enumerate() {
                let v: Vec<f64> = out
                    .systems
                    .iter()
                    .filter(|s| !matches!(s.system, System::StatusQuo { .. }))
                    .filter_map(|s| pick(s).get(i)?.get(d).copied().flatten())
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .collect();
                if !v.is_empty() {
                    *o = Some(v.iter().sum::<f64>() / v.len() as f64);
                }
            }
            let mut ratios: Vec<f64> = obs
                .iter()
                .zip(&hot)
                .filter_map(|(o, h)| o.map(|o| o / h))
                .filter(|r| r.is_finite())
                .collect();
            ratios.sort_by(f64::total_cmp);
            let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(1.0);
            (0..n)
                .map(|d| {
                    obs[d].unwrap_or_else(|| {
                        hot.get(d).copied().unwrap_or(a.ladder.rungs()[d].latency_s) * ratio
                    })
                })
                .collect()
        })
        .collect()
}

/// Per app and status-quo model, the CPU seconds of one frame's inference in run `out`
/// (mean over the status-quo systems that ran it; loads left out: the simulator charges
/// them); the offline hot-loop figure where none did.
fn status_quo_latencies(offline: &[Offline], out: &RunOutcome) -> Vec<Vec<f64>> {
    offline
        .iter()
        .enumerate()
        .map(|(i, o)| {
            o.status_quo
                .iter()
                .enumerate()
                .map(|(level, m)| {
                    let v: Vec<f64> = out
                        .systems
                        .iter()
                        .filter(|s| match s.system {
                            // The sweep level that runs this model of the app (an app with
                            // fewer models runs its smallest at the higher levels).
                            System::StatusQuo { level: l } => {
                                tenant::clamp_level(l, o.status_quo.len()) == level
                            }
                            System::Nestdnn { .. } => false,
                        })
                        .filter_map(|s| {
                            s.inference_cpu_per_frame_s
                                .get(i)?
                                .first()
                                .copied()
                                .flatten()
                        })
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .collect();
                    if v.is_empty() {
                        m.cpu_s
                    } else {
                        v.iter().sum::<f64>() / v.len() as f64
                    }
                })
                .collect()
        })
        .collect()
}

/// Thread CPU seconds of one switch to each descendant under [`workload::SWITCH_POLICY`]
/// (median of three builds; `None` where no CPU clock is available): with one copy the
/// model is loaded without its master weights, so each build re-reads, hash-checks and
/// decodes the master file before slicing, as the benchmark's slots do.
fn switch_build_s(model: &MultiCapacityModel) -> Result<Vec<Option<f64>>, BenchError> {
    use nestdnn::model::SwitchPolicy;
    let lean;
    let m = if workload::SWITCH_POLICY == SwitchPolicy::OneCopy {
        lean = MultiCapacityModel::load(model.dir())?.without_master();
        &lean
    } else {
        model
    };
    (0..m.num_descendants())
        .map(|d| Ok(data::median_thread_cpu_s(3, || m.build_plan(d))?))
        .collect()
}
