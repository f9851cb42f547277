//! `--realtime` pacing: the bag is played on the wall clock at bag pace into the real node core
//! ([`App`]: decode threads, task workers, CPU-share arbiter, planner on `Instant::now()`), and
//! an [`Outputs`] implementation records what the node publishes. Drops, frame rates and
//! inference times are therefore those of this CPU, and differ from run to run.
//!
//! Differences from deterministic pacing, by construction: plan times are wall-clock offsets
//! from the start converted to bag seconds; a plan's per-task status comes from the published
//! `nestdnn_msgs/Plan` (which does not tell an idle task from a paused one: both are reported
//! as `paused`); every frame the node did not classify while enabled is counted in
//! `dropped_replaced` (the runtime keeps a paused task's newest frame and replaces it, so
//! paused frames are replaced frames too). Latencies for planning come from this machine's
//! profile cache ([`super::ProfileSource::Cache`]); profile files cannot drive the live node.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    empty_report, record_bag_error, resolve, Output, PlanRecord, PlanTask, ProfileSource, Progress,
    ReplayError, ReplayOptions, Report, Status, Tally, TaskProgress, TaskReport, BUDGET_TOPIC,
    MAX_LISTED, PRIORITY_TOPIC,
};
use crate::bag::{BagMessage, BagReader};
use crate::config::{NodeConfig, Transport};
use crate::model::MultiCapacityModel;
use crate::msgs::{
    Classification, DiagnosticArray, InferenceResult, LabelInfo, ObjectHypothesis, Plan as PlanMsg,
    Time,
};
use crate::node::app::{App, AppOptions, Outputs};
use crate::profile::ProfileCache;

/// What the node published, with wall-clock offsets from the start of playback.
#[derive(Default)]
struct Recorded {
    results: Vec<(f64, usize, InferenceResult, Classification)>,
    plans: Vec<(f64, PlanMsg)>,
    /// Warnings the node logged, with the bag second.
    warnings: Vec<(f64, String)>,
}

struct Recorder {
    start: Mutex<Option<Instant>>,
    rec: Mutex<Recorded>,
}

impl Recorder {
    fn offset(&self) -> f64 {
        self.start.lock().map_or(0.0, |s| s.elapsed().as_secs_f64())
    }
}

impl Outputs for Recorder {
    fn classification(&self, _task: usize, _msg: Classification) {
        // The result published right after it carries the same class, score and header.
    }

    fn result(&self, task: usize, msg: InferenceResult) {
        let t = self.offset();
        let c = Classification {
            header: msg.header.clone(),
            results: vec![ObjectHypothesis {
                class_id: msg.class_name.clone(),
                score: f64::from(msg.score),
            }],
        };
        self.rec.lock().results.push((t, task, msg, c));
    }

    fn plan(&self, msg: PlanMsg) {
        let t = self.offset();
        self.rec.lock().plans.push((t, msg));
    }

    fn diagnostics(&self, _msg: DiagnosticArray) {}

    fn label_info(&self, _task: usize, _msg: LabelInfo) {}

    fn warning(&self, text: &str) {
        let t = self.offset();
        let mut rec = self.rec.lock();
        if rec.warnings.len() < MAX_NODE_WARNINGS {
            rec.warnings.push((t, text.to_string()));
        }
    }
}

/// Node warnings kept in the report (the node throttles them per kind already).
const MAX_NODE_WARNINGS: usize = 50;

pub(super) fn run(
    bag: &Path,
    cfg: &NodeConfig,
    opts: &ReplayOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, ReplayError> {
    let wall = Instant::now();
    let mut report = empty_report(bag, cfg, "realtime");
    let cache_dir = match &opts.profiles {
        ProfileSource::Cache(dir) => dir.clone().or_else(ProfileCache::default_dir),
        ProfileSource::Files(dir) => {
            return Err(ReplayError::ProfileFile {
                task: cfg.tasks.first().map(|t| t.name.clone()).unwrap_or_default(),
                path: dir.clone(),
                reason: "realtime replay runs the live node core, which plans with this machine's profile cache; profile files are for deterministic replay".into(),
            })
        }
    };
    // What the report needs about each model (the node loads its own copy).
    let mut accuracies = Vec::new();
    let mut names = Vec::new();
    let mut labels = Vec::new();
    let mut tallies: Vec<Tally> = Vec::new();
    for (i, t) in cfg.tasks.iter().enumerate() {
        let m = MultiCapacityModel::load(&t.model_dir).map_err(|source| ReplayError::Model {
            task: t.name.clone(),
            source,
        })?;
        let d = &m.manifest().descendants;
        accuracies.push(d.iter().map(|x| x.accuracy).collect::<Vec<f64>>());
        names.push(d.iter().map(|x| x.name.clone()).collect::<Vec<String>>());
        labels.push(m.manifest().labels.clone());
        report.profiles.insert(
            t.name.clone(),
            format!(
                "cache {}",
                cache_dir.as_ref().map_or_else(
                    || "(none: measured now)".into(),
                    |p| p.display().to_string()
                )
            ),
        );
        tallies.push(Tally {
            report: TaskReport {
                index: i,
                topic: resolve(&t.subscribed_topic()),
                model: t.model_dir.display().to_string(),
                ..TaskReport::default()
            },
            ..Tally::default()
        });
    }
    let recorder = Arc::new(Recorder {
        start: Mutex::new(None),
        rec: Mutex::new(Recorded::default()),
    });
    let app = App::start(
        cfg,
        AppOptions {
            profile_cache: cache_dir,
            ..AppOptions::default()
        },
        recorder.clone(),
    )
    .map_err(ReplayError::App)?;
    let mut out = match &opts.out {
        Some(p) => Some(Output::create(p, &cfg.tasks)?),
        None => None,
    };
    let (image_routes, truth_routes) = super::routes(&cfg.tasks);
    let period = if opts.progress_period_s.is_finite() && opts.progress_period_s > 0.0 {
        opts.progress_period_s
    } else {
        1.0
    };

    let reader = match BagReader::open(bag) {
        Ok(r) => Some(r),
        Err(e) => {
            report.status = Status::Unusable;
            report.errors.push(e.to_string());
            None
        }
    };
    let mut t0_ns = None;
    let mut last_t = 0.0f64;
    let mut next_tick = period;
    let mut seen_results = 0usize;
    let mut listed = 0usize;
    let start = Instant::now();
    *recorder.start.lock() = Some(start);
    if let Some(reader) = reader {
        report.files = reader
            .files()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        let checked = super::check_bag(&reader, &cfg.tasks, &mut report);
        match reader.decoded() {
            _ if !checked => {}
            Err(e) => {
                report.status = Status::Unusable;
                report.errors.push(e.to_string());
            }
            Ok(mut it) => {
                for item in it.by_ref() {
                    let m = match item {
                        Ok(m) => m,
                        Err(e) => {
                            record_bag_error(&mut report, &e, &mut listed);
                            continue;
                        }
                    };
                    let t0 = *t0_ns.get_or_insert(m.timestamp_ns);
                    let t = (m.timestamp_ns.saturating_sub(t0) as f64 / 1e9).max(last_t);
                    // Progress ticks due before this message, then wait for its time.
                    while next_tick <= t {
                        sleep_until(start, next_tick);
                        seen_results =
                            absorb(&recorder, &mut tallies, &accuracies, &names, seen_results);
                        progress(&snapshot(&app, &recorder, &tallies, next_tick, period));
                        for k in &mut tallies {
                            k.window = 0;
                        }
                        next_tick += period;
                    }
                    sleep_until(start, t);
                    last_t = t;
                    let topic = m.topic.name.as_str();
                    match m.msg {
                        BagMessage::Image(img) => {
                            let Some(route) = image_routes.get(topic) else {
                                *report.read.unused.entry(topic.into()).or_default() += 1;
                                continue;
                            };
                            for &i in route {
                                if cfg.tasks[i].transport == Transport::Raw {
                                    tallies[i].frame_arrived(t, img.header.stamp.as_nanos());
                                    app.on_image(i, img.clone());
                                }
                            }
                        }
                        BagMessage::CompressedImage(img) => {
                            let Some(route) = image_routes.get(topic) else {
                                *report.read.unused.entry(topic.into()).or_default() += 1;
                                continue;
                            };
                            for &i in route {
                                if cfg.tasks[i].transport == Transport::Compressed {
                                    tallies[i].frame_arrived(t, img.header.stamp.as_nanos());
                                    app.on_compressed(i, img.clone());
                                }
                            }
                        }
                        BagMessage::Classification(c) => {
                            let Some(route) = truth_routes.get(topic) else {
                                *report.read.unused.entry(topic.into()).or_default() += 1;
                                continue;
                            };
                            if let Some(first) = c.results.first() {
                                for &i in route {
                                    tallies[i].on_truth_checked(
                                        c.header.stamp.as_nanos(),
                                        first.class_id.clone(),
                                        &labels[i],
                                        &accuracies[i],
                                    );
                                }
                            } else {
                                report.warnings.push(format!(
                                    "ground truth on {topic} at {t:.3} s has no hypothesis; ignored"
                                ));
                            }
                        }
                        BagMessage::ResourceBudget(b) if topic == BUDGET_TOPIC => {
                            app.on_budget(&b);
                        }
                        BagMessage::TaskPriority(p) if topic == PRIORITY_TOPIC => {
                            app.on_priority(&p);
                        }
                        BagMessage::ResourceBudget(_) | BagMessage::TaskPriority(_) => {
                            *report.read.unused.entry(topic.into()).or_default() += 1;
                        }
                    }
                }
                let s = it.stats().clone();
                report.read.messages = s.messages;
                report.read.decoded = s.decoded;
                report.read.decode_errors = s.decode_errors;
                report.read.skipped_unknown = s.skipped_unknown;
                report.read.storage_errors = s.storage_errors;
            }
        }
    }
    if listed > MAX_LISTED {
        report.warnings.push(format!(
            "... and {} more undecodable messages",
            listed - MAX_LISTED
        ));
    }
    // Let the frames in hand finish (shutdown also runs the waiting ones).
    app.shutdown();
    absorb(&recorder, &mut tallies, &accuracies, &names, seen_results);
    progress(&snapshot(&app, &recorder, &tallies, last_t, period));
    let inputs = app.input_counters();
    report.rejected_events = inputs.budgets_rejected.load(Ordering::Relaxed)
        + inputs.priorities_rejected.load(Ordering::Relaxed);
    for (i, (t, k)) in cfg.tasks.iter().zip(&mut tallies).enumerate() {
        if let Some(c) = app.task_counters(i) {
            k.report.ignored_disabled = c.ignored.load(Ordering::Relaxed);
            k.report.bad_frames = c.bad_frames.load(Ordering::Relaxed);
            // Counted by the node as it pre-processes (frames of a disabled task are not).
            k.report.roi_clipped = c.roi_clipped.load(Ordering::Relaxed);
        }
        let r = &mut k.report;
        r.dropped_replaced = r
            .frames
            .saturating_sub(r.processed + r.ignored_disabled + r.bad_frames);
        let errors = k.audit(&t.name, &labels[i], &mut report.warnings);
        super::fail_with(&mut report, errors);
        k.finish();
        report.tasks.insert(t.name.clone(), k.report.clone());
    }
    let rec = recorder.rec.lock();
    report.plans = rec.plans.iter().map(|(t, p)| plan_record(p, *t)).collect();
    report.warnings.extend(
        rec.warnings
            .iter()
            .map(|(t, w)| format!("node at {t:.3} s: {w}")),
    );
    if let Some(out) = &mut out {
        let base = t0_ns.unwrap_or(0);
        let ns = |t: f64| base + (t.max(0.0) * 1e9).round() as u64;
        // Results and plans in time order.
        let mut items: Vec<(f64, Option<usize>)> = rec
            .results
            .iter()
            .enumerate()
            .map(|(k, r)| (r.0, Some(k)))
            .chain(rec.plans.iter().map(|p| (p.0, None)))
            .collect();
        items.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut plans = rec.plans.iter();
        for (t, which) in items {
            match which {
                Some(k) => {
                    let (_, task, r, c) = &rec.results[k];
                    out.result(&cfg.tasks[*task].name, ns(t), c, r);
                }
                None => {
                    if let Some((_, p)) = plans.next() {
                        let mut p = p.clone();
                        p.header.stamp = Time::from_nanos(ns(t) as i64);
                        out.plan(ns(t), &p);
                    }
                }
            }
        }
    }
    drop(rec);
    if let Some(out) = out {
        out.finish(&mut report);
    }
    report.start_time_ns = t0_ns.unwrap_or(0);
    report.duration_s = last_t;
    report.wall_s = wall.elapsed().as_secs_f64();
    Ok(report)
}

fn sleep_until(start: Instant, t: f64) {
    let due = start + Duration::from_secs_f64(t.max(0.0));
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Moves newly recorded results into the tallies; returns how many are absorbed.
fn absorb(
    recorder: &Recorder,
    tallies: &mut [Tally],
    accuracies: &[Vec<f64>],
    names: &[Vec<String>],
    from: usize,
) -> usize {
    let rec = recorder.rec.lock();
    for (t, task, r, _) in rec.results.iter().skip(from) {
        let Some(k) = tallies.get_mut(*task) else {
            continue;
        };
        let d = usize::from(r.descendant_index);
        let acc = accuracies.get(*task).map_or(&[][..], |v| &v[..]);
        k.on_prediction(r.header.stamp.as_nanos(), &r.class_name, d, acc);
        let start = t - f64::from(r.latency_inference_ms) / 1e3;
        let nm = names.get(*task).map_or(&[][..], |v| &v[..]);
        k.served(
            start.max(0.0),
            d,
            nm,
            f64::from(r.latency_inference_ms) / 1e3,
        );
    }
    rec.results.len()
}

fn snapshot(app: &App, recorder: &Recorder, tallies: &[Tally], t: f64, period: f64) -> Progress {
    let plan = app.plan();
    let _ = recorder;
    Progress {
        time: t,
        budget_cores: plan.budget.cpu_cores,
        plans: recorder.rec.lock().plans.len(),
        tasks: tallies
            .iter()
            .zip(&plan.tasks)
            .map(|(k, tp)| TaskProgress {
                task: tp.task.clone(),
                status: format!("{:?}", tp.status).to_lowercase(),
                descendant: Some(tp.descendant.clone()),
                share: tp.share,
                fps: k.window as f64 / period,
                accuracy: k.accuracy(),
                processed: k.report.processed,
                dropped: k.report.frames.saturating_sub(k.report.processed),
            })
            .collect(),
    }
}

fn plan_record(p: &PlanMsg, t: f64) -> PlanRecord {
    PlanRecord {
        time: t,
        seq: p.plan_id.saturating_sub(1),
        trigger: p.trigger.clone(),
        budget_cores: f64::from(p.cpu_cores_budget),
        cores_planned: f64::from(p.cpu_cores_used),
        total_cost: f64::from(p.objective_value),
        notes: Vec::new(),
        tasks: p
            .tasks
            .iter()
            .map(|tp| PlanTask {
                task: tp.task.clone(),
                status: if !tp.enabled {
                    "disabled"
                } else if tp.paused {
                    "paused"
                } else {
                    "running"
                }
                .to_string(),
                descendant: tp.descendant.clone(),
                descendant_index: usize::from(tp.descendant_index),
                share: f64::from(tp.share_cores),
                expected_fps: f64::from(tp.expected_fps),
                expected_accuracy: f64::from(tp.expected_accuracy),
                priority: f64::from(tp.priority),
            })
            .collect(),
    }
}
