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
    empty_report, record_bag_error, Output, PlanRecord, PlanTask, ProfileSource, Progress,
    ReplayError, ReplayOptions, Report, Status, Tally, TaskProgress, MAX_LISTED,
};
use crate::bag::{BagMessage, BagReader};
use crate::config::{NodeConfig, Transport};
use crate::interface::{BUDGET, PRIORITY};
use crate::model::MultiCapacityModel;
use crate::msgs::{
    Classification, DiagnosticArray, InferenceResult, LabelInfo, Plan as PlanMsg, Time,
};
use crate::node::app::{App, AppOptions, Outputs};
use crate::node::frames::classification_of;
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
        let c = classification_of(&msg);
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
    let models = Models::load(cfg, cache_dir.as_deref(), &mut report)?;
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
    let mut out = Output::for_options(opts, &cfg.tasks)?;
    let period = opts.progress_period();
    let (image_routes, truth_routes) = super::routes(&cfg.tasks);
    let mut s = Session {
        cfg,
        app: &app,
        recorder: &recorder,
        tallies: models.tallies(cfg),
        models: &models,
        image_routes,
        truth_routes,
        period,
        start: Instant::now(),
        t0_ns: None,
        last_t: 0.0,
        next_tick: period,
        seen_results: 0,
        listed: 0,
    };
    *recorder.start.lock() = Some(s.start);
    s.play(bag, &mut report, progress);
    if s.listed > MAX_LISTED {
        report.warnings.push(format!(
            "... and {} more undecodable messages",
            s.listed - MAX_LISTED
        ));
    }
    // Let the frames in hand finish (shutdown also runs the waiting ones).
    app.shutdown();
    s.absorb();
    progress(&snapshot(&app, &recorder, &s.tallies, s.last_t, period));
    s.finish_tasks(&mut report);
    let rec = recorder.rec.lock();
    report.plans = rec.plans.iter().map(|(t, p)| plan_record(p, *t)).collect();
    report.warnings.extend(
        rec.warnings
            .iter()
            .map(|(t, w)| format!("node at {t:.3} s: {w}")),
    );
    if let Some(out) = &mut out {
        write_output(out, &rec, cfg, s.t0_ns.unwrap_or(0));
    }
    drop(rec);
    if let Some(out) = out {
        out.finish(&mut report);
    }
    report.start_time_ns = s.t0_ns.unwrap_or(0);
    report.duration_s = s.last_t;
    report.wall_s = wall.elapsed().as_secs_f64();
    Ok(report)
}

/// What the report needs about each task's model (the node loads its own copy).
struct Models {
    accuracies: Vec<Vec<f64>>,
    names: Vec<Vec<String>>,
    labels: Vec<Vec<String>>,
}

impl Models {
    fn load(
        cfg: &NodeConfig,
        cache_dir: Option<&Path>,
        report: &mut Report,
    ) -> Result<Self, ReplayError> {
        let mut m = Models {
            accuracies: Vec::new(),
            names: Vec::new(),
            labels: Vec::new(),
        };
        let origin = format!(
            "cache {}",
            cache_dir.map_or_else(
                || "(none: measured now)".into(),
                |p| p.display().to_string()
            )
        );
        for t in &cfg.tasks {
            let model =
                MultiCapacityModel::load(&t.model_dir).map_err(|source| ReplayError::Model {
                    task: t.name.clone(),
                    source,
                })?;
            let d = &model.manifest().descendants;
            m.accuracies.push(d.iter().map(|x| x.accuracy).collect());
            m.names.push(d.iter().map(|x| x.name.clone()).collect());
            m.labels.push(model.manifest().labels.clone());
            report.profiles.insert(t.name.clone(), origin.clone());
        }
        Ok(m)
    }

    /// An empty tally per task.
    fn tallies(&self, cfg: &NodeConfig) -> Vec<Tally> {
        cfg.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| Tally::for_task(i, t))
            .collect()
    }
}

/// One realtime replay in progress: the node core, what it published so far, and the clock.
struct Session<'a> {
    cfg: &'a NodeConfig,
    app: &'a App,
    recorder: &'a Recorder,
    models: &'a Models,
    tallies: Vec<Tally>,
    image_routes: super::Routes,
    truth_routes: super::Routes,
    period: f64,
    start: Instant,
    t0_ns: Option<u64>,
    last_t: f64,
    next_tick: f64,
    seen_results: usize,
    listed: usize,
}

impl Session<'_> {
    /// Plays every message of `bag` at bag pace into the node (a bag that cannot be opened or
    /// checked makes the report unusable).
    fn play(&mut self, bag: &Path, report: &mut Report, progress: &mut dyn FnMut(&Progress)) {
        let reader = match BagReader::open(bag) {
            Ok(r) => r,
            Err(e) => {
                report.status = Status::Unusable;
                report.errors.push(e.to_string());
                return;
            }
        };
        report.files = reader
            .files()
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !super::check_bag(&reader, &self.cfg.tasks, report) {
            return;
        }
        let mut it = match reader.decoded() {
            Ok(it) => it,
            Err(e) => {
                report.status = Status::Unusable;
                report.errors.push(e.to_string());
                return;
            }
        };
        for item in it.by_ref() {
            match item {
                Ok(m) => self.message(m, report, progress),
                Err(e) => record_bag_error(report, &e, &mut self.listed),
            }
        }
        let s = it.stats().clone();
        report.read.messages = s.messages;
        report.read.decoded = s.decoded;
        report.read.decode_errors = s.decode_errors;
        report.read.skipped_unknown = s.skipped_unknown;
        report.read.storage_errors = s.storage_errors;
    }

    /// Waits for the message's bag time (progress ticks due before it first), then hands it
    /// to the node or the tallies.
    fn message(
        &mut self,
        m: crate::bag::DecodedMessage,
        report: &mut Report,
        progress: &mut dyn FnMut(&Progress),
    ) {
        let t0 = *self.t0_ns.get_or_insert(m.timestamp_ns);
        let t = (m.timestamp_ns.saturating_sub(t0) as f64 / 1e9).max(self.last_t);
        while self.next_tick <= t {
            sleep_until(self.start, self.next_tick);
            self.absorb();
            progress(&snapshot(
                self.app,
                self.recorder,
                &self.tallies,
                self.next_tick,
                self.period,
            ));
            for k in &mut self.tallies {
                k.window = 0;
            }
            self.next_tick += self.period;
        }
        sleep_until(self.start, t);
        self.last_t = t;
        let topic = m.topic.name.as_str();
        let unused = |report: &mut Report| {
            *report.read.unused.entry(topic.into()).or_default() += 1;
        };
        match m.msg {
            BagMessage::Image(img) => {
                let Some(route) = self.image_routes.get(topic) else {
                    return unused(report);
                };
                for &i in route {
                    if self.cfg.tasks[i].transport == Transport::Raw {
                        self.tallies[i].frame_arrived(t, img.header.stamp.as_nanos());
                        self.app.on_image(i, img.clone());
                    }
                }
            }
            BagMessage::CompressedImage(img) => {
                let Some(route) = self.image_routes.get(topic) else {
                    return unused(report);
                };
                for &i in route {
                    if self.cfg.tasks[i].transport == Transport::Compressed {
                        self.tallies[i].frame_arrived(t, img.header.stamp.as_nanos());
                        self.app.on_compressed(i, img.clone());
                    }
                }
            }
            BagMessage::Classification(c) => {
                let Some(route) = self.truth_routes.get(topic) else {
                    return unused(report);
                };
                let Some(first) = c.results.first() else {
                    report.warnings.push(format!(
                        "ground truth on {topic} at {t:.3} s has no hypothesis; ignored"
                    ));
                    return;
                };
                for &i in route {
                    self.tallies[i].on_truth_checked(
                        c.header.stamp.as_nanos(),
                        first.class_id.clone(),
                        &self.models.labels[i],
                        &self.models.accuracies[i],
                    );
                }
            }
            BagMessage::ResourceBudget(b) if topic == BUDGET.in_root() => self.app.on_budget(&b),
            BagMessage::TaskPriority(p) if topic == PRIORITY.in_root() => self.app.on_priority(&p),
            BagMessage::ResourceBudget(_) | BagMessage::TaskPriority(_) => unused(report),
        }
    }

    /// Moves the results recorded since the last call into the tallies.
    fn absorb(&mut self) {
        self.seen_results = absorb(
            self.recorder,
            &mut self.tallies,
            &self.models.accuracies,
            &self.models.names,
            self.seen_results,
        );
    }

    /// Completes every task's report from the node's counters and audits it.
    fn finish_tasks(&mut self, report: &mut Report) {
        let inputs = self.app.input_counters();
        report.rejected_events = inputs.budgets_rejected.load(Ordering::Relaxed)
            + inputs.priorities_rejected.load(Ordering::Relaxed);
        for (i, (t, k)) in self.cfg.tasks.iter().zip(&mut self.tallies).enumerate() {
            if let Some(c) = self.app.task_counters(i) {
                k.report.ignored_disabled = c.ignored.load(Ordering::Relaxed);
                k.report.bad_frames = c.bad_frames.load(Ordering::Relaxed);
                // Counted by the node as it pre-processes (frames of a disabled task are not).
                k.report.roi_clipped = c.roi_clipped.load(Ordering::Relaxed);
            }
            let r = &mut k.report;
            r.dropped_replaced = r
                .frames
                .saturating_sub(r.processed + r.ignored_disabled + r.bad_frames);
            let errors = k.audit(&t.name, &self.models.labels[i], &mut report.warnings);
            super::fail_with(report, errors);
            k.finish();
            report.tasks.insert(t.name.clone(), k.report.clone());
        }
    }
}

/// Writes the recorded results and plans to the output bag in time order (bag time = the
/// first message's time plus the wall-clock offset).
fn write_output(out: &mut Output, rec: &Recorded, cfg: &NodeConfig, base_ns: u64) {
    let ns = |t: f64| base_ns + (t.max(0.0) * 1e9).round() as u64;
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
                need_cores: None,
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
