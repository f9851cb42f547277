//! `nestdnn replay BAG --params FILE [--out OUT.mcap] [--report REPORT.json] [--realtime]`:
//! a recorded bag through the node core without ROS (library: `nestdnn::replay`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use nestdnn::replay::{self, Pacing, ProfileSource, Progress, ReplayOptions, Status};

/// Arguments of `nestdnn replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bag: a rosbag2 folder (metadata.yaml + .mcap/.db3 files) or one .mcap/.db3 file.
    bag: PathBuf,
    /// The node's ROS 2 parameters file (tasks, topics, ROIs, scheduler).
    #[arg(long)]
    params: PathBuf,
    /// Node whose section applies (`/ns/name` or a base name).
    #[arg(long, default_value = "/nestdnn_node")]
    node: String,
    /// Parameter override `KEY:=VALUE` (value parsed as YAML, as `--ros-args -p` does).
    #[arg(short = 'p', long = "param", value_name = "KEY:=VALUE")]
    overrides: Vec<String>,
    /// Write the node's outputs (results, classifications, plans) to this MCAP file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write a plot of the budget and each task's planned descendant here (SVG), and the same
    /// plot as PNG beside it (same stem, `.png`).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run on the wall clock through the real node core (real drops and frame rates) instead
    /// of the deterministic simulator.
    #[arg(long)]
    realtime: bool,
    /// Take descendant latencies from this folder of profiles (`<model task>.json`, as
    /// `nestdnn profile MODEL --json` writes) instead of this machine's profile cache:
    /// the same plans on every machine (deterministic pacing only).
    #[arg(long, conflicts_with = "realtime")]
    profiles: Option<PathBuf>,
    /// Profile cache folder [default: $NESTDNN_CACHE_DIR, $XDG_CACHE_HOME/nestdnn or
    /// ~/.cache/nestdnn]; models without a cached profile are profiled first.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print a live table (per task: descendant, share, fps, accuracy so far, drops) every
    /// this many bag seconds; 0: no table, only the summary.
    #[arg(long, default_value_t = 1.0)]
    every: f64,
    /// Deterministic pacing: sleep this many wall seconds per bag second between tables, to
    /// make the table watchable (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    watch: f64,
    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = crate::node_config(&args.params, &args.node, &args.overrides)?;
    if !(args.every.is_finite() && args.every >= 0.0) {
        bail!(
            "--every must be a number of seconds >= 0, got {}",
            args.every
        );
    }
    if !(args.watch.is_finite() && (0.0..=10.0).contains(&args.watch)) {
        bail!(
            "--watch must be in [0, 10] wall seconds per bag second, got {}",
            args.watch
        );
    }
    // Before any work: no output may be, or lie inside, an input; each must be writable.
    let mut inputs: Vec<&std::path::Path> = vec![&args.bag, &args.params];
    if let Some(p) = &args.profiles {
        inputs.push(p);
    }
    for t in &cfg.tasks {
        inputs.push(&t.model_dir);
    }
    let plot_files = args.plot.as_deref().map(crate::plot::plot_paths);
    let mut outputs: Vec<(&str, &std::path::Path)> = Vec::new();
    for (what, p) in [("--out", &args.out), ("--report", &args.report)] {
        if let Some(p) = p {
            outputs.push((what, p));
        }
    }
    if let Some((svg, png)) = &plot_files {
        outputs.push(("--plot", svg));
        outputs.push(("--plot", png));
    }
    nestdnn::fsio::check_outputs(&inputs, &outputs)?;
    let opts = ReplayOptions {
        pacing: if args.realtime {
            Pacing::Realtime
        } else {
            Pacing::Deterministic
        },
        profiles: match &args.profiles {
            Some(dir) => ProfileSource::Files(dir.clone()),
            None => ProfileSource::Cache(args.cache_dir.clone()),
        },
        out: args.out.clone(),
        progress_period_s: if args.every > 0.0 { args.every } else { 1.0 },
    };
    let live = !args.quiet && args.every > 0.0;
    let tty = std::io::stdout().is_terminal();
    let mut last_lines = 0usize;
    let mut last_t = 0.0f64;
    let watch = if args.realtime { 0.0 } else { args.watch };
    let mut show = |p: &Progress| {
        if !live {
            return;
        }
        if watch > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(
                (p.time - last_t).max(0.0) * watch,
            ));
        }
        last_t = p.time;
        let text = p.table();
        let mut out = String::new();
        if tty && last_lines > 0 {
            // Redraw in place.
            out.push_str(&format!("\x1b[{last_lines}A\x1b[J"));
        }
        out.push_str(&text);
        last_lines = text.lines().count();
        let _ = crate::emit(&out);
    };
    eprintln!(
        "replaying {} ({} pacing, {} tasks)",
        args.bag.display(),
        if args.realtime {
            "realtime"
        } else {
            "deterministic"
        },
        cfg.tasks.len()
    );
    let report = replay::replay(&args.bag, &cfg, &opts, &mut show)
        .with_context(|| format!("replaying {}", args.bag.display()))?;
    // The summary first: whatever happens to the files, the user sees the results.
    crate::emit(&summary(&report))?;
    let mut failed: Vec<String> = report.output_errors.clone();
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        if let Err(e) = nestdnn::fsio::write_atomic(path, text.as_bytes()) {
            failed.push(format!("--report: {e}"));
        }
    }
    if let Some(path) = &args.plot {
        let counts: Vec<usize> = cfg
            .tasks
            .iter()
            .map(|t| {
                nestdnn::model::MultiCapacityModel::load(&t.model_dir)
                    .map(|m| m.num_descendants())
                    .unwrap_or(1)
            })
            .collect();
        let fig = crate::plot::ReplayPlot {
            report: &report,
            descendants: &counts,
        };
        if let Err(e) = crate::plot::write(&fig, path) {
            failed.push(format!("--plot: {e:#}"));
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !failed.is_empty() {
        bail!(
            "the replay completed but outputs were not written: {}",
            failed.join("; ")
        );
    }
    match report.status {
        Status::Ok => Ok(()),
        Status::Incomplete => bail!(
            "the bag is damaged; replayed what could be read{}: {}",
            args.report
                .as_ref()
                .map(|p| format!(" (report: {})", p.display()))
                .unwrap_or_default(),
            report.errors.join("; ")
        ),
        Status::Unusable => bail!(
            "the bag is unusable{}: {}",
            args.report
                .as_ref()
                .map(|p| format!(" (report written: {})", p.display()))
                .unwrap_or_default(),
            report.errors.join("; ")
        ),
    }
}

/// The final summary: per task frames, processed, drops, accuracy against expectation, the
/// descendants used; then the plans with their triggers.
pub(crate) fn summary(r: &nestdnn::replay::Report) -> String {
    let mut rows = Vec::new();
    let mut tasks: Vec<_> = r.tasks.iter().collect();
    tasks.sort_by_key(|(_, t)| t.index);
    for (name, t) in tasks {
        let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0));
        let used: Vec<String> = t
            .descendants
            .iter()
            .map(|(d, n)| format!("{d}:{n}"))
            .collect();
        rows.push(vec![
            name.clone(),
            t.frames.to_string(),
            t.processed.to_string(),
            t.dropped.to_string(),
            t.ignored_disabled.to_string(),
            format!("{:.1}", t.fps),
            pct(t.accuracy),
            pct(t.expected_accuracy),
            t.switches.len().saturating_sub(1).to_string(),
            used.join(" "),
        ]);
    }
    let mut s = format!(
        "\nsummary: {} ({}), {:.1} bag s in {:.2} wall s ({:.1}x), status {:?}, {} plans\n",
        r.bag,
        r.pacing,
        r.duration_s,
        r.wall_s,
        if r.wall_s > 0.0 {
            r.duration_s / r.wall_s
        } else {
            0.0
        },
        r.status,
        r.plans.len()
    )
    .to_lowercase();
    s.push_str(&crate::table(
        &[
            "task",
            "frames",
            "processed",
            "dropped",
            "ignored",
            "fps",
            "accuracy",
            "expected",
            "switches",
            "descendants (frames)",
        ],
        &rows,
    ));
    let mut last = String::new();
    let mut lines = Vec::new();
    for p in &r.plans {
        let line: Vec<String> = p
            .tasks
            .iter()
            .map(|t| {
                if t.status == "running" {
                    format!("{}={}", t.task, t.descendant)
                } else {
                    format!("{}={}", t.task, t.status)
                }
            })
            .collect();
        let line = line.join(" ");
        if line != last {
            lines.push(format!(
                "  {:6.2}s  {:<28} budget {:.3}  {}",
                p.time, p.trigger, p.budget_cores, line
            ));
            last = line;
        }
    }
    s.push_str("plan changes (time, trigger, budget, assignments):\n");
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}
