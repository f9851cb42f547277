//! The report of `nestdnn bench multitenant`: runs pooled per system, the curves and gains,
//! the JSON document and the results table of `docs/benchmarks.md` (generated from the JSON);
//! the plots are in [`super::plots`].

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use super::curves::{gains, Gains, Point};
use super::data::Offline;
use super::harness::{RunOutcome, System, SystemRun};
use super::tenant::Loads;
use super::workload::{self, Setting, APPS, STATUS_QUO_LEVEL};

/// The paper's figures this benchmark is held to.
pub const TARGET_FPS_GAIN: f64 = 2.0;
/// Accuracy gain target, points.
pub const TARGET_ACCURACY_GAIN_PT: f64 = 4.2;
/// CPU per frame ratio target.
pub const TARGET_CPU_RATIO: f64 = 1.7;

/// One system pooled over the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemSummary {
    /// The system.
    pub system: System,
    /// Its label.
    pub label: String,
    /// `status_quo`, `min_total_cost`, `min_max_cost`.
    pub family: String,
    /// Knob value.
    pub knob: f64,
    /// Runs pooled.
    pub runs: usize,
    /// Processed frames / run seconds, all apps, over all runs.
    pub fps: f64,
    /// Half-width of the 95 % interval of the frame rate over the runs (Student's t; NaN for
    /// one run).
    pub fps_ci95: f64,
    /// Top-1, the mean over the apps of each app's correct / processed frames (pooled over
    /// the runs): the headline accuracy, which weighs a hard app like an easy one.
    pub accuracy: f64,
    /// Half-width of the 95 % interval of the per-app mean top-1 over the runs.
    pub accuracy_ci95: f64,
    /// Correct / processed frames of all apps together.
    pub pooled_accuracy: f64,
    /// The served models' accuracy, per-app mean: each processed frame scored with the
    /// top-1 of the model that served it over all of its app's benchmark frames (the offline
    /// pass), so which frames happened to be processed adds no noise.
    pub model_accuracy: f64,
    /// Half-width of the 95 % interval of `model_accuracy` over the runs.
    pub model_accuracy_ci95: f64,
    /// (Inference + estimated build) CPU-seconds per processed frame: an energy proxy.
    pub cpu_per_frame_s: f64,
    /// Processed / offered frames.
    pub processed_fraction: f64,
    /// Mean over runs of the median latency, ms.
    pub latency_p50_ms: f64,
    /// Mean over runs of the 99th percentile latency, ms.
    pub latency_p99_ms: f64,
    /// Descendant switches per run (mean).
    pub switches_per_run: f64,
    /// Largest memory peak of the running apps over the runs, bytes.
    pub memory_peak_bytes: u64,
    /// Seconds over the memory budget, summed over runs.
    pub memory_over_budget_s: f64,
}

/// Pools every system's runs.
pub fn summarize(runs: &[RunOutcome]) -> Vec<SystemSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .systems
        .iter()
        .enumerate()
        .map(|(k, s0)| {
            let all: Vec<&SystemRun> = runs.iter().filter_map(|r| r.systems.get(k)).collect();
            let n = all.len().max(1) as f64;
            let processed: u64 = all.iter().map(|r| r.processed).sum();
            let offered: u64 = all.iter().map(|r| r.offered).sum();
            let correct: u64 = all.iter().map(|r| r.correct).sum();
            let secs: f64 = all.iter().map(|r| r.run_s).sum();
            let cpu: f64 = all.iter().map(|r| r.cpu_s + r.build_cpu_s).sum();
            let mean = |f: fn(&SystemRun) -> f64| {
                let v: Vec<f64> = all.iter().map(|r| f(r)).filter(|x| x.is_finite()).collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let apps = s0.apps.len();
            let per_app = |runs: &[&SystemRun], axis: AccuracyAxis| {
                let accs: Vec<f64> = (0..apps)
                    .filter_map(|a| {
                        let p: u64 = runs
                            .iter()
                            .filter_map(|r| r.apps.get(a))
                            .map(|x| x.processed)
                            .sum();
                        let c: f64 = runs
                            .iter()
                            .filter_map(|r| r.apps.get(a))
                            .map(|x| match axis {
                                AccuracyAxis::Measured => x.correct as f64,
                                AccuracyAxis::Model => x.model_correct,
                            })
                            .sum();
                        (p > 0).then(|| c / p as f64)
                    })
                    .collect();
                if accs.is_empty() {
                    f64::NAN
                } else {
                    accs.iter().sum::<f64>() / accs.len() as f64
                }
            };
            let run_fps: Vec<f64> = all
                .iter()
                .map(|r| ratio(r.processed as f64, r.run_s))
                .collect();
            let run_acc: Vec<f64> = all
                .iter()
                .map(|r| per_app(&[*r], AccuracyAxis::Measured))
                .collect();
            let run_model_acc: Vec<f64> = all
                .iter()
                .map(|r| per_app(&[*r], AccuracyAxis::Model))
                .collect();
            SystemSummary {
                system: s0.system,
                label: s0.system.label(),
                family: s0.system.family().to_string(),
                knob: s0.system.knob(),
                runs: all.len(),
                fps: ratio(processed as f64, secs),
                fps_ci95: ci95(&run_fps),
                accuracy: per_app(&all, AccuracyAxis::Measured),
                accuracy_ci95: ci95(&run_acc),
                pooled_accuracy: ratio(correct as f64, processed as f64),
                model_accuracy: per_app(&all, AccuracyAxis::Model),
                model_accuracy_ci95: ci95(&run_model_acc),
                cpu_per_frame_s: ratio(cpu, processed as f64),
                processed_fraction: ratio(processed as f64, offered as f64),
                latency_p50_ms: mean(|r| r.latency_p50_ms),
                latency_p99_ms: mean(|r| r.latency_p99_ms),
                switches_per_run: all.iter().map(|r| r.switches as f64).sum::<f64>() / n,
                memory_peak_bytes: all.iter().map(|r| r.memory_peak_bytes).max().unwrap_or(0),
                memory_over_budget_s: all.iter().map(|r| r.memory_over_budget_s).sum(),
            }
        })
        .collect()
}

/// How far the running apps' demand exceeds the device's budget in one run: at every
/// monitor sample, the CPU the running apps would need at the camera rate on their largest
/// descendants (`largest_cpu_s[app]`: CPU seconds per frame, measured by the benchmark)
/// divided by the device's cores. Returns `{min, max, mean, time_fraction_at_least_2x,
/// time_fraction_2x_to_4x}`.
pub fn demand_over_budget(run: &RunOutcome, largest_cpu_s: &[f64]) -> Value {
    let ratios: Vec<f64> = run
        .budget
        .iter()
        .filter(|b| b.device_cores > 0.0)
        .map(|b| {
            let demand: f64 = run
                .schedule
                .running_at(b.t_s)
                .iter()
                .zip(largest_cpu_s)
                .filter(|(&r, _)| r)
                .map(|(_, &c)| c * workload::CAMERA_HZ)
                .sum();
            demand / b.device_cores
        })
        .filter(|x| x.is_finite())
        .collect();
    if ratios.is_empty() {
        return Value::Null;
    }
    let n = ratios.len() as f64;
    json!({
        "min": ratios.iter().copied().fold(f64::INFINITY, f64::min),
        "max": ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "mean": ratios.iter().sum::<f64>() / n,
        "time_fraction_at_least_2x": ratios.iter().filter(|&&x| x >= 2.0).count() as f64 / n,
        "time_fraction_2x_to_4x": ratios.iter().filter(|&&x| (2.0..=4.0).contains(&x)).count()
            as f64
            / n,
    })
}

/// `overhead`: the per-frame CPU spent outside inference (the benchmark process's CPU during
/// each system's run less inference and plan builds, per processed frame; median over the
/// system-runs, per family) against the largest heavy descendant's hot-loop CPU per frame
/// (`offline[app].cpu_s`, heavy apps per [`workload::HEAVY`]), with the target fraction.
pub fn overhead(offline: &[Offline], runs: &[RunOutcome]) -> Value {
    let median = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let of = |nestdnn: bool| {
        median(
            runs.iter()
                .flat_map(|r| &r.systems)
                .filter(|s| matches!(s.system, System::StatusQuo { .. }) != nestdnn)
                .map(|s| s.outside_inference_ms_per_frame())
                .collect(),
        )
    };
    let all = median(
        runs.iter()
            .flat_map(|r| &r.systems)
            .map(|s| s.outside_inference_ms_per_frame())
            .collect(),
    );
    let heavy_ms = offline
        .iter()
        .enumerate()
        .filter(|(i, _)| workload::HEAVY.get(*i).copied().unwrap_or(false))
        .filter_map(|(_, o)| o.cpu_s.last().map(|c| c * 1e3))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let fraction = all.zip(heavy_ms).map(|(a, h)| a / h);
    json!({
        "outside_inference_ms_per_frame": finite(all),
        "outside_inference_ms_per_frame_by_family": {
            "status_quo": finite(of(false)),
            "nestdnn": finite(of(true)),
        },
        "largest_heavy_descendant_ms": finite(heavy_ms),
        "fraction": finite(fraction),
        "target_fraction": TARGET_OVERHEAD_FRACTION,
        "met": fraction.map(|f| f <= TARGET_OVERHEAD_FRACTION),
    })
}

/// Issue 11: the per-frame work outside inference at most this fraction of the largest heavy
/// descendant's time.
pub const TARGET_OVERHEAD_FRACTION: f64 = 0.10;

/// Half-width of the 95 % confidence interval of the mean of `v` (Student's t; NaN values are
/// left out; NaN for fewer than two values).
pub fn ci95(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n < 2 {
        return f64::NAN;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // t(0.975, df) for df = 1..10, then the normal quantile's neighbourhood.
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    let t = T
        .get(n - 2)
        .copied()
        .unwrap_or(if n <= 31 { 2.1 } else { 1.96 });
    t * (var / n as f64).sqrt()
}

/// Which accuracy a comparison reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccuracyAxis {
    /// The processed frames' real predictions against the recorded labels, per-app mean
    /// ([`SystemSummary::accuracy`]): the headline.
    Measured,
    /// The served models' offline top-1, weighted by the frames each served, per-app mean
    /// ([`SystemSummary::model_accuracy`]): the same quantity without the noise of which
    /// frames were processed, reported beside the headline.
    Model,
}

/// The operating points of one family (status quo: knob = level) on accuracy `axis`.
pub fn points(summaries: &[SystemSummary], family: &str, axis: AccuracyAxis) -> Vec<Point> {
    summaries
        .iter()
        .filter(|s| s.family == family)
        .map(|s| Point {
            knob: s.knob,
            fps: s.fps,
            accuracy: match axis {
                AccuracyAxis::Measured => s.accuracy,
                AccuracyAxis::Model => s.model_accuracy,
            },
            cpu_per_frame_s: s.cpu_per_frame_s,
        })
        .collect()
}

/// The gains of each NestDNN objective on accuracy `axis`, and which one is best (larger
/// frame-rate gain at equal accuracy; ties and missing values: the larger accuracy gain).
pub fn compare(
    summaries: &[SystemSummary],
    axis: AccuracyAxis,
) -> (Vec<(String, Gains)>, Option<usize>) {
    let sq = points(summaries, "status_quo", axis);
    let out: Vec<(String, Gains)> = ["min_total_cost", "min_max_cost"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                gains(&sq, &points(summaries, f, axis), STATUS_QUO_LEVEL),
            )
        })
        .collect();
    let key = |g: &Gains| {
        (
            g.fps_gain_at_equal_accuracy.unwrap_or(f64::NEG_INFINITY),
            g.accuracy_gain_at_equal_fps_pt.unwrap_or(f64::NEG_INFINITY),
        )
    };
    let best = (0..out.len()).max_by(|&a, &b| {
        let (ka, kb) = (key(&out[a].1), key(&out[b].1));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    (out, best)
}

/// `ladder_span`: per app, what its ladder spans. `cpu_per_frame_ratio`: the largest
/// descendant's CPU per frame over the smallest's, measured by this benchmark (thread CPU
/// time of every benchmark frame through each descendant, median, before the runs);
/// `cpu_per_frame_ratio_runtime`: the same as the task runtime measured it during the runs
/// (the median over the NestDNN system-runs that served both; `null` if none did);
/// `accuracy_pt`: their top-1 difference over the benchmark's frames, points.
pub fn ladder_span(offline: &[Offline], runs: &[RunOutcome]) -> Value {
    let per_app: serde_json::Map<String, Value> = offline
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let last = o.cpu_s.len().saturating_sub(1);
            let mut measured: Vec<f64> = runs
                .iter()
                .flat_map(|r| &r.systems)
                .filter(|s| !matches!(s.system, System::StatusQuo { .. }))
                .filter_map(|s| {
                    let c = s.cpu_per_frame_s.get(i)?;
                    Some(c.get(last).copied().flatten()? / c.first().copied().flatten()?)
                })
                .filter(|x| x.is_finite())
                .collect();
            measured.sort_by(f64::total_cmp);
            let hot = o.cpu_s.get(last).zip(o.cpu_s.first()).map(|(a, b)| a / b);
            let acc = o
                .accuracy
                .get(last)
                .zip(o.accuracy.first())
                .map(|(a, b)| (a - b) * 100.0);
            (
                o.app.clone(),
                json!({
                    "cpu_per_frame_ratio": finite(hot),
                    "cpu_per_frame_ratio_runtime": finite(measured.get(measured.len() / 2).copied()),
                    "runtime_system_runs": measured.len(),
                    "accuracy_pt": finite(acc),
                    "descendants": o.cpu_s.len(),
                }),
            )
        })
        .collect();
    json!({
        "note": "largest against smallest descendant of each app: no policy over these ladders can trade more CPU for accuracy than this",
        "per_app": per_app,
    })
}

/// The best objective's name and gains (as [`compare`] returns them), in the report's field
/// names.
fn best_fields(
    objectives: &[(String, Gains)],
    best: Option<usize>,
) -> serde_json::Map<String, Value> {
    let g = best.and_then(|b| objectives.get(b));
    let fields = json!({
        "best_objective": g.map(|(n, _)| n.clone()),
        "fps_gain_at_equal_accuracy": finite(g.and_then(|(_, g)| g.fps_gain_at_equal_accuracy)),
        "accuracy_gain_at_equal_fps_pt": finite(g.and_then(|(_, g)| g.accuracy_gain_at_equal_fps_pt)),
        "cpu_per_frame_ratio": finite(g.and_then(|(_, g)| g.cpu_per_frame_ratio)),
    });
    match fields {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Every objective's gains, keyed by objective.
fn objectives_field(objectives: &[(String, Gains)]) -> Value {
    Value::Object(
        objectives
            .iter()
            .map(|(n, g)| (n.clone(), serde_json::to_value(g).unwrap_or(Value::Null)))
            .collect(),
    )
}

/// The headline figures on accuracy `axis`: the best objective's gains and every
/// objective's, in the top-level report's field names.
fn headline_block(summaries: &[SystemSummary], axis: AccuracyAxis) -> Value {
    let (objectives, best) = compare(summaries, axis);
    let mut m = best_fields(&objectives, best);
    m.insert("objectives".into(), objectives_field(&objectives));
    Value::Object(m)
}

fn finite(x: Option<f64>) -> Value {
    match x {
        Some(v) if v.is_finite() => json!(v),
        _ => Value::Null,
    }
}

/// Builds the JSON report. `extra` is merged into the top level (machine, timings, sim).
pub fn build(setting: &Setting, runs: &[RunOutcome], extra: Value) -> Value {
    let summaries = summarize(runs);
    let (objectives, best) = compare(&summaries, AccuracyAxis::Measured);
    let best_g = best.map(|b| &objectives[b]);
    let met = |v: Option<f64>, t: f64| v.map(|x| x >= t);
    let fg = best_g.and_then(|(_, g)| g.fps_gain_at_equal_accuracy);
    let ag = best_g.and_then(|(_, g)| g.accuracy_gain_at_equal_fps_pt);
    let cr = best_g.and_then(|(_, g)| g.cpu_per_frame_ratio);
    let schedules: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "schedule": r.schedule,
                "loadavg_start_end": [r.loadavg.0, r.loadavg.1],
                "budget": r.budget,
                "systems": r.systems.iter().map(|s| json!({
                    "label": s.system.label(),
                    "fps": s.fps(),
                    "accuracy": finite(Some(s.accuracy())),
                    "processed": s.processed,
                    "offered": s.offered,
                    "correct": s.correct,
                    "errors": s.errors,
                    "cpu_s": s.cpu_s,
                    "process_cpu_s": s.process_cpu_s,
                    "outside_inference_ms_per_frame": finite(Some(s.outside_inference_ms_per_frame())),
                    "build_cpu_s": s.build_cpu_s,
                    "loads": s.loads,
                    "switches": s.switches,
                    "plans": s.plans,
                    "memory_peak_bytes": s.memory_peak_bytes,
                    "memory_over_budget_s": s.memory_over_budget_s,
                    "latency_p50_ms": finite(Some(s.latency_p50_ms)),
                    "latency_p99_ms": finite(Some(s.latency_p99_ms)),
                    "apps": s.apps,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Model loads of each family over every run.
    let loads_of = |family: &str| {
        let mut l = Loads::default();
        let mut n = 0usize;
        for s in runs.iter().flat_map(|r| &r.systems) {
            if s.system.family() == family
                || (family == "nestdnn" && !matches!(s.system, System::StatusQuo { .. }))
            {
                n += 1;
                l += s.loads;
            }
        }
        json!({
            "system_runs": n,
            "loads": l.loads,
            "reloads": l.reloads,
            "evictions": l.evictions,
            "load_cpu_s": l.load_cpu_s,
            "reload_cpu_s": l.reload_cpu_s,
            "load_wall_s": l.load_wall_s,
        })
    };
    // The same comparison within each memory budget (the status quo ignores the memory
    // budget; NestDNN keeps to it).
    let mut budgets: Vec<u64> = runs.iter().map(|r| r.schedule.memory_bytes).collect();
    budgets.sort_unstable();
    budgets.dedup();
    let by_memory: Vec<Value> = budgets
        .iter()
        .map(|&m| {
            let sub: Vec<RunOutcome> = runs
                .iter()
                .filter(|r| r.schedule.memory_bytes == m)
                .cloned()
                .collect();
            let sums = summarize(&sub);
            let (objs, best) = compare(&sums, AccuracyAxis::Measured);
            let mut b = best_fields(&objs, best);
            b.insert("memory_mib".into(), json!(m as f64 / 1048576.0));
            b.insert("runs".into(), json!(sub.len()));
            b.insert(
                "model_accuracy_axis".into(),
                headline_block(&sums, AccuracyAxis::Model),
            );
            Value::Object(b)
        })
        .collect();
    let mut v = json!({
        "benchmark": "nestdnn bench multitenant",
        "model_accuracy_axis": headline_block(&summaries, AccuracyAxis::Model),
        "by_memory_budget": by_memory,
        "status_quo": loads_of("status_quo"),
        "nestdnn_loads": loads_of("nestdnn"),
        "setting": setting.name,
        "run_s": setting.run_s,
        "seeds": setting.seeds,
        "targets": {
            "fps_gain_at_equal_accuracy": TARGET_FPS_GAIN,
            "accuracy_gain_at_equal_fps_pt": TARGET_ACCURACY_GAIN_PT,
            "cpu_per_frame_ratio": TARGET_CPU_RATIO,
            "met": {
                "fps_gain_at_equal_accuracy": met(fg, TARGET_FPS_GAIN),
                "accuracy_gain_at_equal_fps_pt": met(ag, TARGET_ACCURACY_GAIN_PT),
                "cpu_per_frame_ratio": met(cr, TARGET_CPU_RATIO),
            },
        },
        "definitions": "curves: upper-right Pareto front of (frames/s, top-1) per system, linear between points; gains: NestDNN's curve against every status-quo level (one fixed model per app chosen up front: level 0 = its vanilla model; loaded when the app starts, evicted least recently used first over the memory budget and reloaded on the next frame; work-conserving shares); headline = largest over the levels (the paper's 'up to'); at_status_quo = against the vanilla model; cpu_per_frame_ratio = status quo / NestDNN CPU-seconds per processed frame (inference, model loads and on-demand builds) at the level and accuracy of the headline frame-rate gain (CPU time is an energy proxy, not joules); ladder_span.per_app: largest / smallest descendant's CPU per frame measured by the benchmark over its frames (and as the task runtime measured it where a run served both), and their top-1 difference on the benchmark's frames; status_quo.reloads / reload_cpu_s: loads after an eviction and their thread CPU",
        "objectives": objectives_field(&objectives),
        "systems": summaries,
        "workload": {
            "apps": APPS,
            "camera_hz": workload::CAMERA_HZ,
            "target_fps": workload::TARGET_FPS,
            "concurrent": [workload::MIN_CONCURRENT, workload::MAX_CONCURRENT],
            "mean_event_gap_s": workload::MEAN_EVENT_GAP_S,
            "compute_budgets_cores": workload::COMPUTE_BUDGETS_CORES,
            "memory_budgets_mib": workload::MEMORY_BUDGETS_MIB,
            "background_cores": workload::BACKGROUND_CORES,
            "background_quiet_s": [workload::BACKGROUND_QUIET_S.0, workload::BACKGROUND_QUIET_S.1],
            "background_loaded_s": [workload::BACKGROUND_LOADED_S.0, workload::BACKGROUND_LOADED_S.1],
            "monitor_period_s": workload::MONITOR_PERIOD_S,
            "share_step": workload::SHARE_STEP,
            "alphas": setting.alphas,
            "status_quo_levels": setting.status_quo_levels,
        },
        "runs": schedules,
    });
    if let Value::Object(m) = &mut v {
        m.extend(best_fields(&objectives, best));
        if let Value::Object(e) = extra {
            m.extend(e);
        }
    }
    v
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// The status-quo level in field `k` of a gains object: `vanilla`, `L<k>`, or `-` if absent.
fn level_name(g: &Value, k: &str) -> String {
    g.get(k).and_then(Value::as_u64).map_or("-".into(), |l| {
        if l == 0 {
            "vanilla".to_string()
        } else {
            format!("L{l}")
        }
    })
}

fn fmt_opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "n/a".to_string(), f)
}

/// The results table of `docs/benchmarks.md` (Markdown), generated from a report.
///
/// # Errors
/// A message naming the first field the report lacks.
pub fn readme_table(report: &Value) -> Result<String, String> {
    let systems = report
        .get("systems")
        .and_then(Value::as_array)
        .ok_or("no \"systems\" array")?;
    let mut t = String::new();
    let setting = report.get("setting").and_then(Value::as_str).unwrap_or("?");
    let runs = report
        .get("seeds")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let run_s = num(report, "run_s").unwrap_or(f64::NAN);
    let best = report
        .get("best_objective")
        .and_then(Value::as_str)
        .unwrap_or("n/a");
    let _ = writeln!(
        t,
        "Setting `{setting}`: {runs} runs of {run_s:.0} s. Best NestDNN objective: `{best}`.\n"
    );
    let _ = writeln!(
        t,
        "| comparison (vs status quo) | measured | target | met |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    let met = |k: &str| {
        report
            .pointer(&format!("/targets/met/{k}"))
            .and_then(Value::as_bool)
            .map_or("n/a", |b| if b { "yes" } else { "no" })
    };
    let rows = [
        (
            "frame-rate gain at equal accuracy",
            "fps_gain_at_equal_accuracy",
            TARGET_FPS_GAIN,
            "x",
        ),
        (
            "accuracy gain at equal frame rate",
            "accuracy_gain_at_equal_fps_pt",
            TARGET_ACCURACY_GAIN_PT,
            " pt",
        ),
        (
            "CPU per frame, status quo / NestDNN",
            "cpu_per_frame_ratio",
            TARGET_CPU_RATIO,
            "x",
        ),
    ];
    for (name, key, target, unit) in rows {
        let _ = writeln!(
            t,
            "| {name} | {} | {}{unit} | {} |",
            fmt_opt(num(report, key), |x| format!("{x:.2}{unit}")),
            if unit == " pt" {
                format!("+{target}")
            } else {
                format!("{target}")
            },
            met(key)
        );
    }
    if let Some(m) = report.get("model_accuracy_axis").filter(|m| !m.is_null()) {
        let lvl = |g: Option<&Value>, k: &str| g.map_or("-".into(), |g| level_name(g, k));
        let best_m = m.get("best_objective").and_then(Value::as_str);
        let g = best_m.and_then(|b| m.pointer(&format!("/objectives/{b}")));
        let sq = g.and_then(|g| g.get("at_status_quo"));
        let _ = writeln!(
            t,
            "\nOn the served models' accuracy (each processed frame scored with its model's top-1 over all of the app's benchmark frames; beside the headline, not instead of it): {} frame rate at equal accuracy ({}), {} pt at equal frame rate ({}), {} less CPU per frame (`{}`); against the vanilla models {} and {} pt.",
            fmt_opt(num(m, "fps_gain_at_equal_accuracy"), |x| format!("{x:.2}x")),
            lvl(g, "fps_gain_level"),
            fmt_opt(num(m, "accuracy_gain_at_equal_fps_pt"), |x| format!("{x:+.2}")),
            lvl(g, "accuracy_gain_level"),
            fmt_opt(num(m, "cpu_per_frame_ratio"), |x| format!("{x:.2}x")),
            best_m.unwrap_or("n/a"),
            fmt_opt(sq.and_then(|s| num(s, "fps_gain")), |x| format!("{x:.2}x")),
            fmt_opt(sq.and_then(|s| num(s, "accuracy_gain_pt")), |x| format!("{x:+.2}")),
        );
    }
    if let Some(objs) = report.get("objectives").and_then(Value::as_object) {
        let _ = writeln!(
            t,
            "\n| objective | fps gain (status-quo model) | accuracy gain pt (status-quo model) | CPU/frame ratio | vs status quo (vanilla): fps gain, accuracy gain pt |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|");
        for (name, g) in objs {
            let lvl = |k: &str| level_name(g, k);
            let sq = g.get("at_status_quo");
            let _ = writeln!(
                t,
                "| `{name}` | {} ({}) | {} ({}) | {} | {}, {} |",
                fmt_opt(num(g, "fps_gain_at_equal_accuracy"), |x| format!("{x:.2}x")),
                lvl("fps_gain_level"),
                fmt_opt(num(g, "accuracy_gain_at_equal_fps_pt"), |x| format!(
                    "{x:+.2}"
                )),
                lvl("accuracy_gain_level"),
                fmt_opt(num(g, "cpu_per_frame_ratio"), |x| format!("{x:.2}x")),
                fmt_opt(sq.and_then(|s| num(s, "fps_gain")), |x| format!("{x:.2}x")),
                fmt_opt(sq.and_then(|s| num(s, "accuracy_gain_pt")), |x| format!(
                    "{x:+.2}"
                )),
            );
        }
    }
    let _ = writeln!(
        t,
        "\n| system | frames/s (± 95 %) | top-1 %, per-app mean (± 95 %) | top-1 %, pooled | served models' top-1 %, per-app mean (± 95 %) | processed % | CPU ms/frame | p50 ms | p99 ms | switches/run | memory peak KiB | over memory budget s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in systems {
        let label = s.get("label").and_then(Value::as_str).unwrap_or("?");
        let f = |k: &str, scale: f64, prec: usize| {
            fmt_opt(num(s, k), |x| format!("{:.*}", prec, x * scale))
        };
        let pm = |k: &str, ci: &str, scale: f64, prec: usize| match num(s, ci) {
            Some(c) => format!("{} ± {:.*}", f(k, scale, prec), prec, c * scale),
            None => f(k, scale, prec),
        };
        let _ = writeln!(
            t,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pm("fps", "fps_ci95", 1.0, 1),
            pm("accuracy", "accuracy_ci95", 100.0, 2),
            f("pooled_accuracy", 100.0, 2),
            pm("model_accuracy", "model_accuracy_ci95", 100.0, 2),
            f("processed_fraction", 100.0, 1),
            f("cpu_per_frame_s", 1e3, 3),
            f("latency_p50_ms", 1.0, 1),
            f("latency_p99_ms", 1.0, 1),
            f("switches_per_run", 1.0, 1),
            f("memory_peak_bytes", 1.0 / 1024.0, 0),
            f("memory_over_budget_s", 1.0, 1),
        );
    }
    if let Some(groups) = report.get("by_memory_budget").and_then(Value::as_array) {
        let _ = writeln!(
            t,
            "\n| runs with memory budget | runs | best objective | fps gain | accuracy gain pt | CPU/frame ratio |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        for g in groups {
            let _ = writeln!(
                t,
                "| {} MiB | {} | `{}` | {} | {} | {} |",
                fmt_opt(num(g, "memory_mib"), |x| format!("{x:.0}")),
                g.get("runs").and_then(Value::as_u64).unwrap_or(0),
                g.get("best_objective")
                    .and_then(Value::as_str)
                    .unwrap_or("n/a"),
                fmt_opt(num(g, "fps_gain_at_equal_accuracy"), |x| format!("{x:.2}x")),
                fmt_opt(num(g, "accuracy_gain_at_equal_fps_pt"), |x| format!(
                    "{x:+.2}"
                )),
                fmt_opt(num(g, "cpu_per_frame_ratio"), |x| format!("{x:.2}x")),
            );
        }
    }
    if let Some(apps) = report
        .pointer("/ladder_span/per_app")
        .and_then(Value::as_object)
    {
        let spans: Vec<String> = apps
            .iter()
            .map(|(app, c)| {
                format!(
                    "`{app}` {} CPU per frame, {} pt",
                    fmt_opt(num(c, "cpu_per_frame_ratio"), |x| format!("{x:.2}x")),
                    fmt_opt(num(c, "accuracy_pt"), |x| format!("{x:+.2}")),
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "\nWhat the ladders span (largest against smallest descendant, measured over the benchmark's frames): {}.",
            spans.join("; ")
        );
    }
    if let Some(o) = report.get("overhead").filter(|o| !o.is_null()) {
        let _ = writeln!(
            t,
            "\nPer-frame CPU outside inference (process CPU less inference and builds, median over the system-runs): {} ms, {} of the largest heavy descendant's {} ms (target <= {:.0} %).",
            fmt_opt(num(o, "outside_inference_ms_per_frame"), |x| format!("{x:.3}")),
            fmt_opt(num(o, "fraction"), |x| format!("{:.1} %", x * 100.0)),
            fmt_opt(num(o, "largest_heavy_descendant_ms"), |x| format!("{x:.2}")),
            TARGET_OVERHEAD_FRACTION * 100.0,
        );
    }
    if let Some(rs) = report.get("runs").and_then(Value::as_array) {
        let per_run: Vec<String> = rs
            .iter()
            .filter_map(|r| r.get("demand_over_budget").filter(|d| !d.is_null()))
            .map(|d| {
                format!(
                    "{} max / {} mean ({} of the time >= 2x, {} at 2-4x)",
                    fmt_opt(num(d, "max"), |x| format!("{x:.1}x")),
                    fmt_opt(num(d, "mean"), |x| format!("{x:.1}x")),
                    fmt_opt(num(d, "time_fraction_at_least_2x"), |x| format!(
                        "{:.0} %",
                        x * 100.0
                    )),
                    fmt_opt(num(d, "time_fraction_2x_to_4x"), |x| format!(
                        "{:.0} %",
                        x * 100.0
                    )),
                )
            })
            .collect();
        if !per_run.is_empty() {
            let _ = writeln!(
                t,
                "\nDemand of the running apps at their largest descendants over the device budget, per run: {}.",
                per_run.join("; ")
            );
        }
    }
    if let Some(sq) = report.get("status_quo") {
        let _ = writeln!(
            t,
            "\nStatus quo model loads over all runs: {} loads ({} s CPU), of which {} reloads after {} evictions ({} s CPU).",
            sq.get("loads").and_then(Value::as_u64).unwrap_or(0),
            fmt_opt(num(sq, "load_cpu_s"), |x| format!("{x:.2}")),
            sq.get("reloads").and_then(Value::as_u64).unwrap_or(0),
            sq.get("evictions").and_then(Value::as_u64).unwrap_or(0),
            fmt_opt(num(sq, "reload_cpu_s"), |x| format!("{x:.2}")),
        );
    }
    if let Some(sim) = report.get("sim_validation") {
        if let Some(e) = num(sim, "fps_mean_abs_rel_error") {
            let _ = writeln!(
                t,
                "\nSimulation vs real runs (same schedules and budget traces): frame rate mean |error| {:.1} % (max {:.1} %), accuracy mean |error| {:.2} pt (max {:.2} pt), over {} system-runs.",
                e * 100.0,
                num(sim, "fps_max_abs_rel_error").unwrap_or(f64::NAN) * 100.0,
                num(sim, "accuracy_mean_abs_error_pt").unwrap_or(f64::NAN),
                num(sim, "accuracy_max_abs_error_pt").unwrap_or(f64::NAN),
                sim.get("pairs").and_then(Value::as_u64).unwrap_or(0)
            );
        }
    }
    if let Some(lag) = report.get("sim_calibration_lag") {
        if let Some(g) = num(lag, "fps_gain_mean") {
            let _ = writeln!(
                t,
                "\nCalibration lag (simulated): NestDNN's planners start from the profiled costs and learn the in-run costs every {} s; knowing them from the start would change its frame rate by {:+.1} % and its top-1 by {:+.2} pt (mean over {} system-runs).",
                fmt_opt(num(lag, "calibration_period_s"), |x| format!("{x:.0}")),
                g * 100.0,
                num(lag, "accuracy_change_pt_mean").unwrap_or(f64::NAN),
                lag.get("system_runs").and_then(Value::as_u64).unwrap_or(0)
            );
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci95_is_students_t_interval() {
        // n = 4, sd = 1.2910: t(0.975, 3) = 3.182 -> 3.182 * 1.2910 / 2.
        let h = ci95(&[1.0, 2.0, 3.0, 4.0]);
        assert!(
            (h - 3.182 * (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-9,
            "{h}"
        );
        assert!(ci95(&[1.0]).is_nan());
        assert!(ci95(&[2.0, f64::NAN]).is_nan());
        assert_eq!(ci95(&[3.0, 3.0, 3.0]), 0.0);
    }

    #[test]
    fn readme_table_reads_the_report_fields() {
        let r = json!({
            "setting": "quick", "seeds": [1, 2], "run_s": 20.0,
            "best_objective": "min_total_cost",
            "fps_gain_at_equal_accuracy": 2.5,
            "accuracy_gain_at_equal_fps_pt": 1.25,
            "cpu_per_frame_ratio": null,
            "targets": {"met": {"fps_gain_at_equal_accuracy": true, "accuracy_gain_at_equal_fps_pt": false}},
            "objectives": {"min_total_cost": {"fps_gain_at_equal_accuracy": 2.5, "fps_gain_level": 0}},
            "systems": [{"label": "status_quo vanilla", "fps": 12.34, "fps_ci95": 1.5, "accuracy": 0.9, "accuracy_ci95": 0.01, "pooled_accuracy": 0.91, "model_accuracy": 0.885, "model_accuracy_ci95": 0.005, "cpu_per_frame_s": 0.0005}],
            "model_accuracy_axis": {"best_objective": "min_max_cost", "fps_gain_at_equal_accuracy": 1.75, "accuracy_gain_at_equal_fps_pt": 2.5, "cpu_per_frame_ratio": 1.5,
                "objectives": {"min_max_cost": {"fps_gain_level": 0, "accuracy_gain_level": 2, "at_status_quo": {"fps_gain": 1.75, "accuracy_gain_pt": 0.5}}}},
            "ladder_span": {"per_app": {"big_app": {"cpu_per_frame_ratio": 6.5, "accuracy_pt": 12.0}}},
            "status_quo": {"loads": 9, "load_cpu_s": 0.5, "reloads": 4, "evictions": 4, "reload_cpu_s": 0.25},
            "runs": [{"demand_over_budget": {"max": 3.5, "mean": 2.25, "time_fraction_at_least_2x": 0.5, "time_fraction_2x_to_4x": 0.5}}],
            "overhead": {"outside_inference_ms_per_frame": 0.12, "fraction": 0.05, "largest_heavy_descendant_ms": 2.4},
            "sim_calibration_lag": {"system_runs": 8, "fps_gain_mean": 0.025, "accuracy_change_pt_mean": -0.125, "calibration_period_s": 5.0},
        });
        let t = readme_table(&r).unwrap();
        assert!(
            t.contains("every 5 s; knowing them from the start would change its frame rate by +2.5 % and its top-1 by -0.12 pt (mean over 8 system-runs)"),
            "{t}"
        );
        assert!(
            t.contains("| frame-rate gain at equal accuracy | 2.50x | 2x | yes |"),
            "{t}"
        );
        assert!(
            t.contains("| accuracy gain at equal frame rate | 1.25 pt | +4.2 pt | no |"),
            "{t}"
        );
        assert!(
            t.contains("| CPU per frame, status quo / NestDNN | n/a | 1.7x | n/a |"),
            "{t}"
        );
        assert!(t.contains("| `min_total_cost` | 2.50x (vanilla) |"), "{t}");
        assert!(
            t.contains("| status_quo vanilla | 12.3 ± 1.5 | 90.00 ± 1.00 | 91.00 | 88.50 ± 0.50 |"),
            "{t}"
        );
        assert!(
            t.contains("1.75x frame rate at equal accuracy (vanilla), +2.50 pt at equal frame rate (L2), 1.50x less CPU per frame (`min_max_cost`); against the vanilla models 1.75x and +0.50 pt."),
            "{t}"
        );
        assert!(
            t.contains("`big_app` 6.50x CPU per frame, +12.00 pt"),
            "{t}"
        );
        assert!(
            t.contains("9 loads (0.50 s CPU), of which 4 reloads after 4 evictions (0.25 s CPU)"),
            "{t}"
        );
        assert!(
            t.contains("per run: 3.5x max / 2.2x mean (50 % of the time >= 2x, 50 % at 2-4x)"),
            "{t}"
        );
        assert!(
            t.contains(
                "0.120 ms, 5.0 % of the largest heavy descendant's 2.40 ms (target <= 10 %)"
            ),
            "{t}"
        );
        assert!(readme_table(&json!({})).is_err());
    }
}
