//! The message structs. Field order is wire order; the `.msg` text of each type sits next to it.
//! Our own types (`nestdnn_msgs`) are defined in `msgs/msg/*.msg` at the repository root, where
//! every field's unit is documented; a test checks that the texts here match those files.

use serde::{Deserialize, Serialize};

use super::schema::{Schema, SchemaError};
use super::{MsgError, RosMessage};

macro_rules! dep {
    ($name:literal, $text:expr) => {
        concat!(
            "================================================================================\n",
            "MSG: ",
            $name,
            "\n",
            $text
        )
    };
}

macro_rules! ros_message {
    ($t:ty, $name:literal, $def:expr $(, |$s:ident| $hint:expr)?) => {
        impl RosMessage for $t {
            const TYPE_NAME: &'static str = $name;
            const DEFINITION: &'static str = $def;
            fn schema() -> Result<&'static Schema, MsgError> {
                static SCHEMA: std::sync::OnceLock<Result<Schema, SchemaError>> =
                    std::sync::OnceLock::new();
                SCHEMA
                    .get_or_init(|| Schema::parse($name, $def))
                    .as_ref()
                    .map_err(|e| MsgError::Definition(e.clone()))
            }
            $(fn size_hint(&self) -> usize {
                let $s = self;
                $hint
            })?
        }
    };
}

// ------------------------------------------------------------------ own texts of each type
macro_rules! time_msg {
    () => {
        "int32 sec\nuint32 nanosec\n"
    };
}
macro_rules! header_msg {
    () => {
        "builtin_interfaces/Time stamp\nstring frame_id\n"
    };
}
macro_rules! header_deps {
    () => {
        concat!(
            dep!("std_msgs/Header", header_msg!()),
            dep!("builtin_interfaces/Time", time_msg!())
        )
    };
}
macro_rules! image_msg {
    () => {
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n\
         uint8 is_bigendian\nuint32 step\nuint8[] data\n"
    };
}
macro_rules! compressed_image_msg {
    () => {
        "std_msgs/Header header\nstring format\nuint8[] data\n"
    };
}
macro_rules! object_hypothesis_msg {
    () => {
        "string class_id\nfloat64 score\n"
    };
}
macro_rules! classification_msg {
    () => {
        "std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n"
    };
}
macro_rules! vision_class_msg {
    () => {
        "uint16 class_id\nstring class_name\n"
    };
}
macro_rules! label_info_msg {
    () => {
        "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n"
    };
}
macro_rules! key_value_msg {
    () => {
        "string key\nstring value\n"
    };
}
macro_rules! diagnostic_status_msg {
    () => {
        "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\n\
         string message\nstring hardware_id\ndiagnostic_msgs/KeyValue[] values\n"
    };
}
macro_rules! diagnostic_array_msg {
    () => {
        "std_msgs/Header header\ndiagnostic_msgs/DiagnosticStatus[] status\n"
    };
}
macro_rules! resource_budget_msg {
    () => {
        "std_msgs/Header header\nfloat32 cpu_cores_available\nfloat32 cpu_load\n\
         uint64 memory_available_bytes\nfloat32 battery_percentage\nuint8 power_supply_status\n"
    };
}
macro_rules! task_priority_msg {
    () => {
        "std_msgs/Header header\nstring task\nfloat32 priority\nbool enabled\n"
    };
}
macro_rules! inference_result_msg {
    () => {
        "std_msgs/Header header\nstring task\nstring descendant\nuint16 descendant_index\n\
         uint16 class_id\nstring class_name\nfloat32 score\nfloat32 latency_queue_ms\n\
         float32 latency_preprocess_ms\nfloat32 latency_inference_ms\nfloat32 latency_total_ms\n\
         uint64 frame_seq\nuint64 frames_dropped\n"
    };
}
macro_rules! task_plan_msg {
    () => {
        "string task\nbool enabled\nbool paused\nstring descendant\nuint16 descendant_index\n\
         uint16 descendant_count\nfloat32 share_cores\nfloat32 expected_accuracy\n\
         float32 expected_fps\nfloat32 target_fps\nfloat32 priority\nfloat32 latency_ms\n\
         float32 cost_cores\nuint64 memory_bytes\n"
    };
}
macro_rules! plan_msg {
    () => {
        "std_msgs/Header header\nuint64 plan_id\nstring trigger\nstring objective\n\
         float32 objective_value\nfloat32 cpu_cores_budget\nfloat32 cpu_cores_used\n\
         uint64 memory_budget_bytes\nuint64 memory_used_bytes\nfloat32 solve_time_ms\n\
         nestdnn_msgs/TaskPlan[] tasks\n"
    };
}

// ------------------------------------------------------------------ builtin_interfaces

/// `builtin_interfaces/msg/Time`: seconds and nanoseconds since the epoch of the clock in use.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time {
    /// Whole seconds.
    pub sec: i32,
    /// Nanoseconds within the second, 0..1e9.
    pub nanosec: u32,
}

impl Time {
    /// From nanoseconds (seconds saturate at the `i32` range).
    pub fn from_nanos(ns: i64) -> Self {
        let sec = ns.div_euclid(1_000_000_000);
        let nanosec = ns.rem_euclid(1_000_000_000) as u32;
        Self {
            sec: sec.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            nanosec,
        }
    }

    /// As nanoseconds.
    pub fn as_nanos(&self) -> i64 {
        i64::from(self.sec) * 1_000_000_000 + i64::from(self.nanosec)
    }

    /// As seconds.
    pub fn as_secs_f64(&self) -> f64 {
        f64::from(self.sec) + f64::from(self.nanosec) * 1e-9
    }
}
ros_message!(Time, "builtin_interfaces/msg/Time", time_msg!());

/// `builtin_interfaces/msg/Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Duration {
    /// Whole seconds.
    pub sec: i32,
    /// Nanoseconds, 0..1e9.
    pub nanosec: u32,
}
ros_message!(Duration, "builtin_interfaces/msg/Duration", time_msg!());

// ------------------------------------------------------------------ rosgraph_msgs

/// `rosgraph_msgs/msg/Clock`: the simulated time, published on `/clock` by a simulator or
/// `ros2 bag play --clock`; nodes with `use_sim_time` take their time from it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Clock {
    /// The current simulated time.
    pub clock: Time,
}
ros_message!(
    Clock,
    "rosgraph_msgs/msg/Clock",
    concat!(
        "builtin_interfaces/Time clock\n",
        dep!("builtin_interfaces/Time", time_msg!())
    )
);

// ------------------------------------------------------------------ std_msgs

/// `std_msgs/msg/Header`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// Acquisition time of the data.
    pub stamp: Time,
    /// Coordinate frame of the data.
    pub frame_id: String,
}
ros_message!(
    Header,
    "std_msgs/msg/Header",
    concat!(header_msg!(), dep!("builtin_interfaces/Time", time_msg!()))
);

// ------------------------------------------------------------------ sensor_msgs

/// `sensor_msgs/msg/Image`: an uncompressed image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Capture time and camera frame.
    pub header: Header,
    /// Rows, pixels.
    pub height: u32,
    /// Columns, pixels.
    pub width: u32,
    /// Pixel encoding (`rgb8`, `bgr8`, `mono8`, ... from `sensor_msgs/image_encodings`).
    pub encoding: String,
    /// 1 if multi-byte channels are big-endian.
    pub is_bigendian: u8,
    /// Row length, bytes.
    pub step: u32,
    /// Pixels, `step * height` bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_message!(
    Image,
    "sensor_msgs/msg/Image",
    concat!(image_msg!(), header_deps!()),
    |m| m.data.len() + m.encoding.len() + m.header.frame_id.len() + 64
);

/// `sensor_msgs/msg/CompressedImage`: a jpeg or png image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressedImage {
    /// Capture time and camera frame.
    pub header: Header,
    /// `jpeg`, `png`, or e.g. `rgb8; jpeg compressed bgr8`.
    pub format: String,
    /// The compressed file bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_message!(
    CompressedImage,
    "sensor_msgs/msg/CompressedImage",
    concat!(compressed_image_msg!(), header_deps!()),
    |m| m.data.len() + m.format.len() + m.header.frame_id.len() + 48
);

// ------------------------------------------------------------------ vision_msgs 4.x

/// `vision_msgs/msg/ObjectHypothesis`: one class and its score.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectHypothesis {
    /// Class name (this project: the label from the model manifest).
    pub class_id: String,
    /// Probability 0..1.
    pub score: f64,
}
ros_message!(
    ObjectHypothesis,
    "vision_msgs/msg/ObjectHypothesis",
    object_hypothesis_msg!()
);

/// `vision_msgs/msg/Classification`: class hypotheses for a whole image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Copied from the classified image.
    pub header: Header,
    /// Hypotheses, best first.
    pub results: Vec<ObjectHypothesis>,
}
ros_message!(
    Classification,
    "vision_msgs/msg/Classification",
    concat!(
        classification_msg!(),
        header_deps!(),
        dep!("vision_msgs/ObjectHypothesis", object_hypothesis_msg!())
    )
);

/// `vision_msgs/msg/VisionClass`: one class id and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionClass {
    /// Class index.
    pub class_id: u16,
    /// Class name.
    pub class_name: String,
}
ros_message!(
    VisionClass,
    "vision_msgs/msg/VisionClass",
    vision_class_msg!()
);

/// `vision_msgs/msg/LabelInfo`: the class names of a classifier (published latched).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelInfo {
    /// Publication time.
    pub header: Header,
    /// Every class.
    pub class_map: Vec<VisionClass>,
    /// Score threshold under which results are not reported, 0..1.
    pub threshold: f32,
}
ros_message!(
    LabelInfo,
    "vision_msgs/msg/LabelInfo",
    concat!(
        label_info_msg!(),
        header_deps!(),
        dep!("vision_msgs/VisionClass", vision_class_msg!())
    )
);

// ------------------------------------------------------------------ diagnostic_msgs

/// `diagnostic_msgs/msg/KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Name of the value.
    pub key: String,
    /// The value, as text.
    pub value: String,
}
ros_message!(KeyValue, "diagnostic_msgs/msg/KeyValue", key_value_msg!());

/// `diagnostic_msgs/msg/DiagnosticStatus`: the state of one component.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// [`DiagnosticStatus::OK`], `WARN`, `ERROR` or `STALE`.
    pub level: u8,
    /// Component name, `"<node>: <task>"` here.
    pub name: String,
    /// Human-readable summary.
    pub message: String,
    /// Hardware identifier.
    pub hardware_id: String,
    /// Measurements.
    pub values: Vec<KeyValue>,
}

impl DiagnosticStatus {
    /// Level: working.
    pub const OK: u8 = 0;
    /// Level: degraded.
    pub const WARN: u8 = 1;
    /// Level: failing.
    pub const ERROR: u8 = 2;
    /// Level: no recent data.
    pub const STALE: u8 = 3;
}
ros_message!(
    DiagnosticStatus,
    "diagnostic_msgs/msg/DiagnosticStatus",
    concat!(
        diagnostic_status_msg!(),
        dep!("diagnostic_msgs/KeyValue", key_value_msg!())
    )
);

/// `diagnostic_msgs/msg/DiagnosticArray`: what `/diagnostics` carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticArray {
    /// Publication time.
    pub header: Header,
    /// One status per component.
    pub status: Vec<DiagnosticStatus>,
}
ros_message!(
    DiagnosticArray,
    "diagnostic_msgs/msg/DiagnosticArray",
    concat!(
        diagnostic_array_msg!(),
        header_deps!(),
        dep!("diagnostic_msgs/DiagnosticStatus", diagnostic_status_msg!()),
        dep!("diagnostic_msgs/KeyValue", key_value_msg!())
    )
);

// ------------------------------------------------------------------ nestdnn_msgs (inputs)

/// `nestdnn_msgs/msg/ResourceBudget`: what the perception stack may use (latched: reliable,
/// transient local, depth 1). Fixed by issue 5; see `msgs/msg/ResourceBudget.msg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceBudget {
    /// Time of the measurement.
    pub header: Header,
    /// CPU time per second this node may spend on inference, in cores.
    pub cpu_cores_available: f32,
    /// Whole-machine load 0..1, NaN if unknown.
    pub cpu_load: f32,
    /// Memory this node may use for models and activations, bytes.
    pub memory_available_bytes: u64,
    /// Battery 0..1, NaN if unknown.
    pub battery_percentage: f32,
    /// `sensor_msgs/BatteryState` `POWER_SUPPLY_STATUS_*` value.
    pub power_supply_status: u8,
}

impl ResourceBudget {
    /// `POWER_SUPPLY_STATUS_UNKNOWN` of `sensor_msgs/BatteryState`.
    pub const POWER_SUPPLY_STATUS_UNKNOWN: u8 = 0;
    /// `POWER_SUPPLY_STATUS_CHARGING`.
    pub const POWER_SUPPLY_STATUS_CHARGING: u8 = 1;
    /// `POWER_SUPPLY_STATUS_DISCHARGING`.
    pub const POWER_SUPPLY_STATUS_DISCHARGING: u8 = 2;
    /// `POWER_SUPPLY_STATUS_NOT_CHARGING`.
    pub const POWER_SUPPLY_STATUS_NOT_CHARGING: u8 = 3;
    /// `POWER_SUPPLY_STATUS_FULL`.
    pub const POWER_SUPPLY_STATUS_FULL: u8 = 4;
}
ros_message!(
    ResourceBudget,
    "nestdnn_msgs/msg/ResourceBudget",
    concat!(resource_budget_msg!(), header_deps!())
);

/// `nestdnn_msgs/msg/TaskPriority`: an operator's priority change for one task. Fixed by
/// issue 5; see `msgs/msg/TaskPriority.msg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPriority {
    /// Time of the request.
    pub header: Header,
    /// Task name as configured.
    pub task: String,
    /// Relative weight, > 0.
    pub priority: f32,
    /// `false` stops the task (frames are ignored, resources freed).
    pub enabled: bool,
}
ros_message!(
    TaskPriority,
    "nestdnn_msgs/msg/TaskPriority",
    concat!(task_priority_msg!(), header_deps!())
);

// ------------------------------------------------------------------ nestdnn_msgs (outputs)

/// `nestdnn_msgs/msg/InferenceResult`: one classified frame, with the descendant that served it
/// and where the time went. See `msgs/msg/InferenceResult.msg` for the units.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceResult {
    /// Copied from the input image.
    pub header: Header,
    /// Task name as configured.
    pub task: String,
    /// Name of the descendant that served the frame (from the model manifest).
    pub descendant: String,
    /// Index of that descendant in the manifest's capacity ladder, 0 = smallest.
    pub descendant_index: u16,
    /// Top-1 class index in the manifest labels.
    pub class_id: u16,
    /// Top-1 class name (the manifest label).
    pub class_name: String,
    /// Top-1 probability, 0..1.
    pub score: f32,
    /// Frame arrival to inference start, milliseconds.
    pub latency_queue_ms: f32,
    /// Decode + resize + normalisation, milliseconds.
    pub latency_preprocess_ms: f32,
    /// Model execution, milliseconds.
    pub latency_inference_ms: f32,
    /// Frame arrival to result publication, milliseconds.
    pub latency_total_ms: f32,
    /// Number of this frame among the task's received frames, 1 = first.
    pub frame_seq: u64,
    /// Frames of this task dropped since start, count.
    pub frames_dropped: u64,
}
ros_message!(
    InferenceResult,
    "nestdnn_msgs/msg/InferenceResult",
    concat!(inference_result_msg!(), header_deps!())
);

/// `nestdnn_msgs/msg/TaskPlan`: what one task gets in a [`Plan`]. See `msgs/msg/TaskPlan.msg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPlan {
    /// Task name as configured.
    pub task: String,
    /// `false` when disabled by a `TaskPriority` message.
    pub enabled: bool,
    /// `true` when the task gets no compute (disabled, or the budget does not cover it).
    pub paused: bool,
    /// Descendant chosen (empty when paused).
    pub descendant: String,
    /// Its index in the capacity ladder, 0 = smallest.
    pub descendant_index: u16,
    /// Number of descendants in the model.
    pub descendant_count: u16,
    /// Compute share granted, CPU cores.
    pub share_cores: f32,
    /// Manifest accuracy of the descendant, fraction 0..1.
    pub expected_accuracy: f32,
    /// Frames per second this share sustains with this descendant, 1/s.
    pub expected_fps: f32,
    /// Frames per second the task asks for, 1/s.
    pub target_fps: f32,
    /// Priority weight used for this plan, > 0.
    pub priority: f32,
    /// Profiled latency of one frame on one core, milliseconds.
    pub latency_ms: f32,
    /// Cores needed to serve `target_fps` with this descendant, CPU cores.
    pub cost_cores: f32,
    /// Memory of this descendant (weights + activations), bytes.
    pub memory_bytes: u64,
}
ros_message!(TaskPlan, "nestdnn_msgs/msg/TaskPlan", task_plan_msg!());

/// `nestdnn_msgs/msg/Plan`: the scheduler's current plan (latched). See `msgs/msg/Plan.msg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Time the plan was made (bag time in replay), empty frame id.
    pub header: Header,
    /// Sequence number, 1 = first plan since start.
    pub plan_id: u64,
    /// What caused re-planning: one of [`crate::scheduler::Trigger::FORMS`] (`initial`,
    /// `budget`, `task_started:<task>`, ...).
    pub trigger: String,
    /// Scheduler objective name.
    pub objective: String,
    /// Objective value of this plan, unitless.
    pub objective_value: f32,
    /// Cores available when planned, CPU cores.
    pub cpu_cores_budget: f32,
    /// Sum of the tasks' shares, CPU cores.
    pub cpu_cores_used: f32,
    /// Memory available when planned, bytes.
    pub memory_budget_bytes: u64,
    /// Memory of the chosen descendants, bytes.
    pub memory_used_bytes: u64,
    /// Time the solver took, milliseconds.
    pub solve_time_ms: f32,
    /// One entry per configured task, in configuration order.
    pub tasks: Vec<TaskPlan>,
}
ros_message!(
    Plan,
    "nestdnn_msgs/msg/Plan",
    concat!(
        plan_msg!(),
        header_deps!(),
        dep!("nestdnn_msgs/TaskPlan", task_plan_msg!())
    )
);
