//! One frame through the node core, from the transport's callback to the published result:
//! `on_image` / `on_compressed` keep the newest frame per task (on the transport's thread) ->
//! the task's decode thread pre-processes it ([`crate::preprocess`]) and pushes it into the
//! task's latest-frame mailbox ([`crate::runtime::Runtime::push`]) -> the task's worker runs
//! [`TaskModel`], the descendant the plan chose ([`crate::model::ModelSlot::run`]) -> on the
//! worker thread, `deliver`: top-1 -> `Classification` + `InferenceResult` -> the topics'
//! publishers ([`TopicOutputs`] on a ROS transport).
//!
//! The result messages are built by [`result_messages`], which bag replay and the benchmark
//! use too, so every way of running the core publishes the same thing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::{App, Inner, Outputs, TaskMeta};
use super::throttle::Throttle;
use crate::config::NodeConfig;
use crate::interface::{TaskOutput, DIAGNOSTICS, PLAN};
use crate::model::{ModelError, ModelSlot};
use crate::msgs::{
    Classification, CompressedImage, DiagnosticArray, Header, Image, InferenceResult, LabelInfo,
    ObjectHypothesis, Plan,
};
use crate::runtime::{Completed, InferenceModel, PushOutcome, Runtime, Served};
use crate::transport::{OnMessage, Publish, RosNode, TransportError};

/// A received frame.
pub(super) enum Payload {
    Raw(Image),
    Compressed(CompressedImage),
}

/// A frame turned into the model's input, with what its result needs.
pub struct Prepared {
    tensor: Vec<f32>,
    header: Header,
    seq: u64,
    arrived: Instant,
    preprocess: Duration,
}

/// The result of one frame: its metadata and the logits.
pub struct Classified {
    meta: Prepared,
    logits: Vec<f32>,
}

/// A task's model as the runtime drives it: the [`ModelSlot`] (descendant switching) on
/// pre-processed tensors, carrying the frame's metadata through to the result.
pub struct TaskModel {
    pub(super) slot: ModelSlot,
}

impl InferenceModel for TaskModel {
    type Input = Prepared;
    type Output = Classified;
    type Error = ModelError;
    type State = <ModelSlot as InferenceModel>::State;

    fn new_state(&self) -> Result<Self::State, ModelError> {
        self.slot.new_state()
    }

    fn run(
        &self,
        state: &mut Self::State,
        mut input: Prepared,
    ) -> Result<Served<Classified>, ModelError> {
        let tensor = std::mem::take(&mut input.tensor);
        let (descendant, logits) = self.slot.run(state, &tensor)?;
        Ok(Served {
            descendant,
            output: Classified {
                meta: input,
                logits,
            },
        })
    }

    fn request_descendant(&self, index: usize) -> Result<(), ModelError> {
        self.slot.request(index)
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        InferenceModel::wait_ready(&self.slot, timeout)
    }

    fn num_descendants(&self) -> usize {
        self.slot.num_descendants()
    }
}

impl App {
    /// A raw image for task `task`.
    pub fn on_image(&self, task: usize, msg: Image) {
        self.inner.submit(task, Payload::Raw(msg));
    }

    /// A compressed image for task `task`.
    pub fn on_compressed(&self, task: usize, msg: CompressedImage) {
        self.inner.submit(task, Payload::Compressed(msg));
    }

    /// A subscription callback: each decoded message to `on`, each undecodable sample to
    /// [`App::on_bad_sample`] under `what` (counted, logged throttled). Every subscription of
    /// the node adapter is made with it.
    pub fn callback<M: 'static>(
        self: &Arc<Self>,
        what: &'static str,
        on: impl Fn(&App, M) + Send + 'static,
    ) -> OnMessage<M> {
        let app = self.clone();
        Box::new(move |r| match r {
            Ok(m) => on(&app, m),
            Err(e) => app.on_bad_sample(what, &e),
        })
    }

    /// The subscription callback of task `task`'s raw camera ([`App::on_image`]).
    pub fn image_callback(self: &Arc<Self>, task: usize) -> OnMessage<Image> {
        self.callback("image", move |a, m| a.on_image(task, m))
    }

    /// As [`App::image_callback`] for a compressed camera ([`App::on_compressed`]).
    pub fn compressed_callback(self: &Arc<Self>, task: usize) -> OnMessage<CompressedImage> {
        self.callback("compressed image", move |a, m| a.on_compressed(task, m))
    }

    /// The transport noticed `n` frames of task `task` lost before delivery (sequence gaps of
    /// the camera's publisher): counted in `/diagnostics` (`frames_lost_transport`) and
    /// logged throttled; the node keeps serving.
    pub fn on_frames_lost(&self, task: usize, n: u64) {
        let Some(t) = self.inner.tasks.get(task) else {
            return;
        };
        t.counters.lost_in_transport.fetch_add(n, Ordering::Relaxed);
        self.inner.throttle.warn_for(&t.cfg.name, "lost_in_transport", || {
            format!(
                "task {}: {n} camera frame(s) lost before they reached the node (publisher sequence gap: network or a full reader cache)",
                t.cfg.name
            )
        });
    }

    /// A sample the transport could not decode (counted; logged throttled).
    pub fn on_bad_sample(&self, what: &str, err: &dyn std::fmt::Display) {
        self.inner
            .counters
            .undecodable
            .fetch_add(1, Ordering::Relaxed);
        let key = format!("undecodable {what}");
        self.inner
            .throttle
            .warn(&key, || format!("dropped an undecodable sample: {err}"));
    }
}

impl Inner {
    /// Runs `f` on the task runtime unless the node is shutting down.
    pub(super) fn with_runtime<R>(&self, f: impl FnOnce(&Runtime<TaskModel>) -> R) -> Option<R> {
        self.runtime.read().as_ref().map(f)
    }

    /// On the transport's thread: keep only the newest frame per task for its decode thread
    /// (no pre-processing here, so one slow camera cannot stall the DDS executor).
    pub(super) fn submit(&self, task: usize, payload: Payload) {
        let Some(t) = self.tasks.get(task) else {
            return;
        };
        if self.stop.is_requested() {
            return;
        }
        if !t.enabled.load(Ordering::Relaxed) {
            t.counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if t.pending
            .lock()
            .replace((payload, Instant::now()))
            .is_some()
        {
            t.counters
                .dropped_before_decode
                .fetch_add(1, Ordering::Relaxed);
        }
        t.wake.notify_one();
    }

    /// Task `task`'s decode thread: pre-processes the newest frame and hands it to the runtime.
    pub(super) fn decode_loop(&self, task: usize) {
        let Some(t) = self.tasks.get(task) else {
            return;
        };
        loop {
            let (payload, arrived) = {
                let mut slot = t.pending.lock();
                loop {
                    if self.stop.is_requested() {
                        return;
                    }
                    if let Some(p) = slot.take() {
                        break p;
                    }
                    t.wake.wait_for(&mut slot, Duration::from_millis(200));
                }
            };
            self.prepare_and_push(task, t, &payload, arrived);
        }
    }

    fn prepare_and_push(&self, task: usize, t: &TaskMeta, payload: &Payload, arrived: Instant) {
        let started = Instant::now();
        let (header, input) = match payload {
            Payload::Raw(m) => (&m.header, t.pre.raw_input(&m.into())),
            Payload::Compressed(m) => (&m.header, t.pre.compressed_input(&m.into())),
        };
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                t.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                // Per task and kind: a frequent kind must not hide another one.
                self.throttle.warn_for(&t.cfg.name, e.kind(), || {
                    format!("task {}: dropped a frame ({}): {e}", t.cfg.name, e.kind())
                });
                return;
            }
        };
        if input.roi_clipped {
            t.counters.roi_clipped.fetch_add(1, Ordering::Relaxed);
            self.throttle.warn_for(&t.cfg.name, "roi_clipped", || {
                format!(
                    "task {}: the region of interest {:?} reaches past the image and is clipped: the model sees less than configured (check `{}.roi` against the camera resolution)",
                    t.cfg.name,
                    t.pre.roi(),
                    t.cfg.name
                )
            });
        }
        let prepared = Prepared {
            tensor: input.tensor,
            header: header.clone(),
            seq: t.seq.fetch_add(1, Ordering::Relaxed) + 1,
            arrived,
            preprocess: started.elapsed(),
        };
        let outcome = self.with_runtime(|rt| rt.push(task, prepared));
        if outcome == Some(PushOutcome::Started) {
            let r = self
                .planner
                .lock()
                .task_started(&t.cfg.name, Instant::now());
            match r {
                Ok(Some(p)) => self.apply(&p, started.elapsed().as_secs_f64() * 1e3),
                Ok(None) => {}
                Err(e) => log::error!("task {}: {e}", t.cfg.name),
            }
        }
    }
}

/// The runtime's sink for the node's tasks: [`deliver`] on the worker thread.
pub(super) fn result_sink(
    tasks: Arc<Vec<TaskMeta>>,
    outputs: Arc<dyn Outputs>,
    throttle: Arc<Throttle>,
) -> impl Fn(Completed<Classified, ModelError>) + Send + Sync + 'static {
    move |done| deliver(&tasks, &*outputs, &throttle, done)
}

/// Turns a finished frame into the published messages (on the task's worker thread).
fn deliver(
    tasks: &[TaskMeta],
    outputs: &dyn Outputs,
    throttle: &Throttle,
    done: Completed<Classified, ModelError>,
) {
    let Some(t) = tasks.get(done.task) else {
        return;
    };
    let c = match done.output {
        Ok(c) => c,
        Err(e) => {
            throttle.warn(&format!("infer {}", t.cfg.name), || {
                format!("task {}: inference failed: {e}", t.cfg.name)
            });
            return;
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let r = FrameResult {
        header: c.meta.header,
        task: &t.cfg.name,
        labels: &t.labels,
        descendants: &t.descendants,
        descendant: done.descendant.unwrap_or(0),
        logits: &c.logits,
        latency_ms: Latencies {
            queue: ms(done.queued),
            preprocess: ms(c.meta.preprocess),
            inference: ms(done.inference),
            total: ms(c.meta.arrived.elapsed()),
        },
        frame_seq: c.meta.seq,
        frames_dropped: t.counters.bad_frames.load(Ordering::Relaxed),
    };
    let Some((classification, result)) = result_messages(r) else {
        throttle.warn(&format!("logits {}", t.cfg.name), || {
            format!("task {}: the model returned no finite logits", t.cfg.name)
        });
        return;
    };
    outputs.classification(done.task, classification);
    outputs.result(done.task, result);
    t.window.lock().processed += 1;
}

/// Per-frame latencies of a result, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latencies {
    /// Waiting in the mailbox and for the CPU share.
    pub queue: f64,
    /// Pre-processing (decode, ROI, resize, normalise).
    pub preprocess: f64,
    /// The descendant's inference.
    pub inference: f64,
    /// Arrival to result.
    pub total: f64,
}

/// What one classified frame's result messages are made of.
#[derive(Debug, Clone)]
pub struct FrameResult<'a> {
    /// The camera image's header (copied into both messages).
    pub header: Header,
    /// The task's name.
    pub task: &'a str,
    /// Class names by index (a missing name is published as the index).
    pub labels: &'a [String],
    /// Descendant names by index.
    pub descendants: &'a [String],
    /// The index of the descendant that ran.
    pub descendant: usize,
    /// The model's output.
    pub logits: &'a [f32],
    /// Latencies.
    pub latency_ms: Latencies,
    /// The frame's sequence number in its task.
    pub frame_seq: u64,
    /// The task's frames dropped so far as unusable.
    pub frames_dropped: u64,
}

/// The top-1 class of `logits` and its softmax probability (`None` without a finite logit).
pub fn top1(logits: &[f32]) -> Option<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let (i, v) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    Some((i, (v - max).exp() / sum))
}

/// The `vision_msgs/Classification` that goes with a result (same header, class and score).
pub fn classification_of(r: &InferenceResult) -> Classification {
    Classification {
        header: r.header.clone(),
        results: vec![ObjectHypothesis {
            class_id: r.class_name.clone(),
            score: f64::from(r.score),
        }],
    }
}

/// A frame's result messages: top-1 of the logits as `vision_msgs/Classification` and
/// `nestdnn_msgs/InferenceResult` (`None` when the model returned no finite logit). The node,
/// bag replay and the benchmark all build their results here.
pub fn result_messages(r: FrameResult<'_>) -> Option<(Classification, InferenceResult)> {
    let (class, score) = top1(r.logits)?;
    let class_name = r
        .labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| class.to_string());
    let result = InferenceResult {
        header: r.header,
        task: r.task.to_string(),
        descendant: r.descendants.get(r.descendant).cloned().unwrap_or_default(),
        descendant_index: r.descendant.min(u16::MAX as usize) as u16,
        class_id: class.min(u16::MAX as usize) as u16,
        class_name,
        score,
        latency_queue_ms: r.latency_ms.queue as f32,
        latency_preprocess_ms: r.latency_ms.preprocess as f32,
        latency_inference_ms: r.latency_ms.inference as f32,
        latency_total_ms: r.latency_ms.total as f32,
        frame_seq: r.frame_seq,
        frames_dropped: r.frames_dropped,
    };
    Some((classification_of(&result), result))
}

/// Every topic the node publishes, as a transport's publishers ([`crate::node::ros`] creates
/// them on the topics of [`crate::interface`]).
pub struct TopicOutputs {
    classification: Vec<Box<dyn Publish<Classification>>>,
    result: Vec<Box<dyn Publish<InferenceResult>>>,
    labels: Vec<Box<dyn Publish<LabelInfo>>>,
    plan: Box<dyn Publish<Plan>>,
    diagnostics: Box<dyn Publish<DiagnosticArray>>,
}

impl TopicOutputs {
    /// Creates the publishers of every topic the node publishes for `cfg`'s tasks on `node`.
    ///
    /// # Errors
    /// [`TransportError`] when a topic cannot be created.
    pub fn create<N: RosNode>(node: &mut N, cfg: &NodeConfig) -> Result<Self, TransportError> {
        let mut out = TopicOutputs {
            classification: Vec::new(),
            result: Vec::new(),
            labels: Vec::new(),
            plan: node.publisher(PLAN.name, PLAN.qos)?,
            diagnostics: node.publisher(DIAGNOSTICS.name, DIAGNOSTICS.qos)?,
        };
        for t in &cfg.tasks {
            let o = TaskOutput::Classification;
            out.classification
                .push(node.publisher(&o.name(&t.name), o.qos())?);
            let o = TaskOutput::Result;
            out.result.push(node.publisher(&o.name(&t.name), o.qos())?);
            let o = TaskOutput::LabelInfo;
            out.labels.push(node.publisher(&o.name(&t.name), o.qos())?);
        }
        Ok(out)
    }
}

impl Outputs for TopicOutputs {
    fn classification(&self, task: usize, msg: Classification) {
        if let Some(p) = self.classification.get(task) {
            p.publish(msg);
        }
    }
    fn result(&self, task: usize, msg: InferenceResult) {
        if let Some(p) = self.result.get(task) {
            p.publish(msg);
        }
    }
    fn plan(&self, msg: Plan) {
        self.plan.publish(msg);
    }
    fn diagnostics(&self, msg: DiagnosticArray) {
        self.diagnostics.publish(msg);
    }
    fn label_info(&self, task: usize, msg: LabelInfo) {
        if let Some(p) = self.labels.get(task) {
            p.publish(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_is_softmax_argmax() {
        let (i, p) = top1(&[0.0, 2.0, 1.0]).unwrap();
        assert_eq!(i, 1);
        let e = [0f32, 2.0, 1.0].map(f32::exp);
        assert!((p - e[1] / e.iter().sum::<f32>()).abs() < 1e-6);
        assert!(top1(&[f32::NAN, 1.0]).is_some());
        assert!(top1(&[]).is_none());
        assert!(top1(&[f32::NAN]).is_none());
    }

    #[test]
    fn result_messages_carry_class_descendant_and_latencies() {
        let labels = ["a".to_string(), "b".to_string()];
        let descendants = ["d0".to_string(), "d1".to_string()];
        let r = FrameResult {
            header: Header::default(),
            task: "t",
            labels: &labels[..1],
            descendants: &descendants,
            descendant: 1,
            logits: &[0.0, 3.0],
            latency_ms: Latencies {
                total: 4.0,
                ..Latencies::default()
            },
            frame_seq: 7,
            frames_dropped: 2,
        };
        let (c, res) = result_messages(r.clone()).unwrap();
        assert_eq!(res.class_id, 1);
        assert_eq!(
            res.class_name, "1",
            "a class without a name is published as its index"
        );
        assert_eq!(res.descendant, "d1");
        assert_eq!((res.frame_seq, res.frames_dropped), (7, 2));
        assert_eq!(res.latency_total_ms, 4.0);
        assert_eq!(c.results[0].class_id, "1");
        assert!(result_messages(FrameResult {
            logits: &[f32::NAN],
            ..r
        })
        .is_none());
    }
}
