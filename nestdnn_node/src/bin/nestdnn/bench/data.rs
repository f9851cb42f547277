//! The benchmark's inputs: the labelled held-out frames of the bundled recording, pre-processed
//! once per app, and an offline pass of every descendant over them (the correctness matrix and
//! the CPU time one frame takes in a hot loop).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use nestdnn::bag::{BagMessage, BagReader};
use nestdnn::model::{DescendantPlan, ModelSlot, MultiCapacityModel};
use nestdnn::node::frames::top1;
use nestdnn::preprocess::{Preprocessor, RawImage, Roi};
use nestdnn::runtime::thread_cpu_time;

use super::BenchError;

/// One app's frames: model inputs and ground-truth class indices, in recording order.
#[derive(Debug, Clone)]
pub struct AppFrames {
    /// App (task) name.
    pub app: String,
    /// Pre-processed inputs (`C*H*W` each).
    pub inputs: Arc<Vec<Vec<f32>>>,
    /// Ground-truth class index of each input (manifest label order).
    pub labels: Arc<Vec<usize>>,
}

impl AppFrames {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// True without frames.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

#[derive(serde::Deserialize)]
struct Sidecar {
    bags: Vec<SidecarBag>,
}

#[derive(serde::Deserialize)]
struct SidecarBag {
    path: String,
    cameras: Vec<SidecarCamera>,
}

#[derive(serde::Deserialize)]
struct SidecarCamera {
    task: String,
    topic: String,
    ground_truth_topic: String,
    roi: Vec<u32>,
}

/// Reads the labelled frames of `apps` from the bag `bag_name` described in the sidecar
/// `recordings_json` (`test/bags/recordings.json`): every image (raw or compressed) of the
/// app's camera topic with
/// a ground truth of the same stamp on its ground-truth topic, cropped to the camera's ROI and
/// pre-processed for the app's model.
///
/// # Errors
/// [`BenchError::Data`] when the sidecar, the bag or a frame is unusable, or an app has no
/// camera or no labelled frame.
pub fn load_frames(
    recordings_json: &Path,
    bag_name: &str,
    models: &[Arc<MultiCapacityModel>],
) -> Result<Vec<AppFrames>, BenchError> {
    let data = |what: String| BenchError::Data { what };
    let text = std::fs::read_to_string(recordings_json)
        .map_err(|e| data(format!("{}: {e}", recordings_json.display())))?;
    let sidecar: Sidecar = serde_json::from_str(&text)
        .map_err(|e| data(format!("{}: {e}", recordings_json.display())))?;
    let bag = sidecar
        .bags
        .iter()
        .find(|b| b.path == bag_name)
        .ok_or_else(|| {
            data(format!(
                "{}: no bag {bag_name:?}",
                recordings_json.display()
            ))
        })?;
    let dir = recordings_json.parent().unwrap_or(Path::new("."));
    let reader =
        BagReader::open(dir.join(&bag.path)).map_err(|e| data(format!("bag {}: {e}", bag.path)))?;

    struct Cam {
        app: usize,
        pre: Preprocessor,
        images: HashMap<i64, Vec<f32>>,
        truths: Vec<(i64, usize)>,
    }
    let mut cams: Vec<Cam> = Vec::new();
    let mut by_topic: HashMap<String, (usize, bool)> = HashMap::new();
    for (i, m) in models.iter().enumerate() {
        let task = &m.manifest().task;
        let c = bag
            .cameras
            .iter()
            .find(|c| &c.task == task)
            .ok_or_else(|| data(format!("bag {}: no camera for app {task}", bag.path)))?;
        let roi = match c.roi.as_slice() {
            [x, y, w, h] => Some(Roi {
                x: *x,
                y: *y,
                width: *w,
                height: *h,
            }),
            [] => None,
            other => return Err(data(format!("camera {task}: bad roi {other:?}"))),
        };
        let pre = Preprocessor::new(&m.manifest().input, roi)
            .map_err(|e| data(format!("app {task}: {e}")))?;
        by_topic.insert(c.topic.clone(), (cams.len(), false));
        by_topic.insert(c.ground_truth_topic.clone(), (cams.len(), true));
        cams.push(Cam {
            app: i,
            pre,
            images: HashMap::new(),
            truths: Vec::new(),
        });
    }
    let msgs = reader
        .decoded()
        .map_err(|e| data(format!("bag {}: {e}", bag.path)))?;
    for m in msgs {
        let m = m.map_err(|e| data(format!("bag {}: {e}", bag.path)))?;
        let Some(&(ci, truth)) = by_topic.get(&m.topic.name) else {
            continue;
        };
        let cam = &mut cams[ci];
        match (&m.msg, truth) {
            (BagMessage::Image(img), false) => {
                let raw = RawImage {
                    width: img.width,
                    height: img.height,
                    encoding: &img.encoding,
                    is_bigendian: img.is_bigendian != 0,
                    step: img.step,
                    data: &img.data,
                };
                let x = cam
                    .pre
                    .raw_to_vec(&raw)
                    .map_err(|e| data(format!("{}: {e}", m.topic.name)))?;
                cam.images.insert(img.header.stamp.as_nanos(), x);
            }
            (BagMessage::CompressedImage(ci), false) => {
                let img = nestdnn::preprocess::CompressedImage {
                    format: &ci.format,
                    data: &ci.data,
                };
                let x = cam
                    .pre
                    .compressed_to_vec(&img)
                    .map_err(|e| data(format!("{}: {e}", m.topic.name)))?;
                cam.images.insert(ci.header.stamp.as_nanos(), x);
            }
            (BagMessage::Classification(cl), true) => {
                let labels = &models[cam.app].manifest().labels;
                let Some(id) = cl.results.first().map(|r| r.class_id.as_str()) else {
                    return Err(data(format!("{}: empty ground truth", m.topic.name)));
                };
                let k = labels.iter().position(|l| l == id).ok_or_else(|| {
                    data(format!(
                        "{}: class {id:?} not in the manifest",
                        m.topic.name
                    ))
                })?;
                cam.truths.push((cl.header.stamp.as_nanos(), k));
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(cams.len());
    for mut cam in cams {
        let task = models[cam.app].manifest().task.clone();
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        for (stamp, k) in cam.truths {
            if let Some(x) = cam.images.remove(&stamp) {
                inputs.push(x);
                labels.push(k);
            }
        }
        if inputs.is_empty() {
            return Err(data(format!(
                "bag {}: no labelled frame for {task}",
                bag.path
            )));
        }
        out.push(AppFrames {
            app: task,
            inputs: Arc::new(inputs),
            labels: Arc::new(labels),
        });
    }
    Ok(out)
}

/// Every descendant of one app, and its vanilla model, over every frame: which predictions
/// are right, and the median thread CPU time of one frame in a hot loop.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offline {
    /// App name.
    pub app: String,
    /// `correct[d][f]`: descendant d classifies frame f right.
    #[serde(skip)]
    pub correct: Vec<Vec<bool>>,
    /// Top-1 of each descendant over the frames.
    pub accuracy: Vec<f64>,
    /// Median thread CPU seconds per frame of each descendant (hot loop).
    pub cpu_s: Vec<f64>,
    /// Bytes each descendant's plan holds, as [`nestdnn::model::DescendantPlan::plan_bytes`]
    /// reports in this process (measured when the counting allocator is installed).
    pub plan_bytes: Vec<u64>,
    /// The status quo's models (index = status-quo level; 0 = the vanilla model), the same
    /// figures.
    pub status_quo: Vec<OfflineModel>,
    /// Per descendant, thread CPU seconds of NestDNN's load when the app starts on it (the
    /// model folder read and hash-checked, a slot made under
    /// [`super::workload::SWITCH_POLICY`], the descendant's plan built: what the tenant's
    /// first frame pays), median of three; 0 where no CPU clock is available.
    pub load_cpu_s: Vec<f64>,
}

/// One model over every frame.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OfflineModel {
    /// `correct[f]`: the model classifies frame f right.
    #[serde(skip)]
    pub correct: Vec<bool>,
    /// Top-1 over the frames.
    pub accuracy: f64,
    /// Median thread CPU seconds per frame (hot loop).
    pub cpu_s: f64,
    /// Bytes the plan holds.
    pub plan_bytes: u64,
    /// Thread CPU seconds of one load of a status-quo model (its ONNX file read,
    /// hash-checked, parsed and optimized: what the status quo pays on every load), measured
    /// on a second build; 0 for descendants (not measured).
    pub load_cpu_s: f64,
}

impl OfflineModel {
    /// Frames classified right.
    pub fn right(&self) -> u64 {
        self.correct.iter().filter(|&&b| b).count() as u64
    }
}

/// One plan over every frame (real tract inference, this thread).
pub(crate) fn pass(plan: &DescendantPlan, frames: &AppFrames) -> Result<OfflineModel, BenchError> {
    let mut st = plan.spawn()?;
    // Warm up on a few frames.
    for x in frames.inputs.iter().take(10) {
        st.run(x)?;
    }
    let mut ok = Vec::with_capacity(frames.len());
    let mut times = Vec::with_capacity(frames.len());
    for (x, &k) in frames.inputs.iter().zip(frames.labels.iter()) {
        let c0 = thread_cpu_time();
        let y = st.run(x)?;
        if let (Some(a), Some(b)) = (c0, thread_cpu_time()) {
            times.push(b.saturating_sub(a).as_secs_f64());
        }
        // The class the node would publish (its top-1).
        ok.push(top1(&y).map(|(c, _)| c) == Some(k));
    }
    times.sort_by(f64::total_cmp);
    let n = ok.len().max(1);
    Ok(OfflineModel {
        accuracy: ok.iter().filter(|&&b| b).count() as f64 / n as f64,
        cpu_s: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        plan_bytes: plan.plan_bytes(),
        load_cpu_s: 0.0,
        correct: ok,
    })
}

/// The median thread CPU seconds of `runs` calls of `f` (what `f` returns is dropped outside
/// the timing); `None` without a CPU clock.
///
/// # Errors
/// The first error of `f`.
pub(crate) fn median_thread_cpu_s<T, E>(
    runs: usize,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<Option<f64>, E> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let c0 = thread_cpu_time();
        let v = f()?;
        let c1 = thread_cpu_time();
        drop(v);
        if let (Some(a), Some(b)) = (c0, c1) {
            t.push(b.saturating_sub(a).as_secs_f64());
        }
    }
    t.sort_by(f64::total_cmp);
    Ok(t.get(t.len() / 2).copied())
}

/// Thread CPU seconds of NestDNN's load of `model` starting on descendant `d`, as
/// [`super::tenant::Tenant`] pays it on an app's first frame (median of three; 0 without a
/// CPU clock).
fn nested_load_cpu_s(model: &MultiCapacityModel, d: usize) -> Result<f64, BenchError> {
    let load = median_thread_cpu_s(3, || {
        let m = MultiCapacityModel::load(model.dir())?;
        ModelSlot::new(Arc::new(m), super::workload::SWITCH_POLICY, d)
    })?;
    Ok(load.unwrap_or(0.0))
}

/// Runs every descendant of `model`, and its status-quo models (the vanilla model, then its
/// standalone smaller ones), over `frames` (real tract inference, one thread).
///
/// # Errors
/// [`BenchError::Model`] when a plan cannot be built or run.
pub fn offline_pass(model: &MultiCapacityModel, frames: &AppFrames) -> Result<Offline, BenchError> {
    let mut out = Offline {
        app: frames.app.clone(),
        correct: Vec::new(),
        accuracy: Vec::new(),
        cpu_s: Vec::new(),
        plan_bytes: Vec::new(),
        status_quo: Vec::new(),
        load_cpu_s: Vec::new(),
    };
    for d in 0..model.num_descendants() {
        let m = pass(&model.build_plan(d)?, frames)?;
        out.plan_bytes.push(m.plan_bytes);
        out.accuracy.push(m.accuracy);
        out.cpu_s.push(m.cpu_s);
        out.correct.push(m.correct);
        out.load_cpu_s.push(nested_load_cpu_s(model, d)?);
    }
    for level in 0..model.num_status_quo() {
        let mut m = pass(&model.build_status_quo_plan(level)?, frames)?;
        // A load as the status quo pays it (the file in the page cache after the first).
        let c0 = thread_cpu_time();
        drop(model.build_status_quo_plan(level)?);
        if let (Some(a), Some(b)) = (c0, thread_cpu_time()) {
            m.load_cpu_s = b.saturating_sub(a).as_secs_f64();
        }
        out.status_quo.push(m);
    }
    Ok(out)
}
