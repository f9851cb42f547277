//! Node configuration from a ROS 2 parameters file, validated before anything runs.
//!
//! ```no_run
//! use nestdnn::config::{NodeConfig, NodeName};
//! # fn main() -> Result<(), nestdnn::config::ConfigError> {
//! let overrides = vec![("scheduler.alpha".to_string(), serde_yaml::Value::from(0.2))];
//! let cfg = NodeConfig::load("params/nestdnn.yaml".as_ref(), &NodeName::default(), overrides)?;
//! for t in &cfg.tasks {
//!     println!("{} <- {} ({:?}) at {} fps", t.name, t.image_topic, t.transport, t.target_fps);
//! }
//! # Ok(()) }
//! ```
//!
//! Every parameter, its type, default and range: `docs/parameters.md`.
//! Sections apply to the node when their key is its base name (any namespace), its fully
//! qualified name (`/ns/nestdnn_node`), or a wildcard (`/**`, `/ns/*`); later sections in the
//! file override earlier ones and `-p` overrides come last. Keys this node does not know are
//! an error in a section naming the node and ignored (with a warning) in wildcard sections,
//! which other nodes share.

mod params;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_yaml::Value;

pub use params::{describe, section_matches, Match, NodeName, Origin, Params};
use params::{range, type_err};

use crate::interface::Qos;
use crate::model::{InputSpec, SwitchPolicy};
use crate::preprocess::{PreprocessError, Preprocessor};
use crate::scheduler::{
    Budget, Ladder, Objective, SchedulerError, Settings, SolverChoice, TaskSpec,
};

/// Errors of reading and validating the node configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The params file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The params file is not YAML.
    #[error("{file}: not valid YAML: {source}")]
    Yaml {
        /// The file (or `-p override`).
        file: String,
        /// The parse error with line and column.
        #[source]
        source: serde_yaml::Error,
    },
    /// The YAML does not have the params-file shape.
    #[error("{file}: {what}")]
    Structure {
        /// The file.
        file: String,
        /// What is wrong.
        what: String,
    },
    /// No section of the file applies to this node.
    #[error("{file}: no section applies to node {node}; sections found: {found:?} (use `{node}:`, its base name, or `/**:`)")]
    NoSection {
        /// The file.
        file: String,
        /// The node's fully qualified name.
        node: String,
        /// The section keys in the file.
        found: Vec<String>,
    },
    /// A required parameter is missing.
    #[error("parameter {key} is required: {hint}")]
    Missing {
        /// The parameter.
        key: String,
        /// What to set.
        hint: String,
    },
    /// A parameter has the wrong type.
    #[error("parameter {key} must be {expected}, found {found}")]
    Type {
        /// The parameter.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A parameter's value is out of range or not one of the allowed words.
    #[error("parameter {key} = {value} is not allowed: must be {allowed}")]
    Range {
        /// The parameter.
        key: String,
        /// The value found.
        value: String,
        /// The allowed range or words.
        allowed: String,
    },
    /// A parameter this node does not know (a typo, or a task not listed in `tasks`).
    #[error("unknown parameter {key}{hint}")]
    UnknownKey {
        /// The parameter.
        key: String,
        /// A suggestion (may be empty).
        hint: String,
    },
    /// A task's model folder does not exist.
    #[error("parameter {key} = {value:?}: no model folder found; tried {tried:?} (relative paths resolve against the params file's folder, then its parent: the package share folder or the repository root)")]
    ModelDirNotFound {
        /// The parameter (`<task>.model_dir` or `models_dir`).
        key: String,
        /// The value.
        value: String,
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// A `-p key:=value` override is malformed.
    #[error("override {arg}: {what}")]
    BadOverride {
        /// The argument.
        arg: String,
        /// What is wrong.
        what: String,
    },
}

impl ConfigError {
    fn from_scheduler(e: SchedulerError) -> Self {
        match e {
            SchedulerError::InvalidSetting {
                field,
                value,
                allowed,
            } => ConfigError::Range {
                key: if field.starts_with("default_budget") {
                    field.to_string()
                } else {
                    format!("scheduler.{field}")
                },
                value,
                allowed: allowed.to_string(),
            },
            other => ConfigError::Range {
                key: "scheduler".to_string(),
                value: String::new(),
                allowed: other.to_string(),
            },
        }
    }
}

/// How a task receives images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `sensor_msgs/Image` on `image_topic`.
    Raw,
    /// `sensor_msgs/CompressedImage` on `image_topic` + `/compressed` (image_transport naming).
    Compressed,
}

/// Subscription QoS preset for a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QosPreset {
    /// Best effort, keep last `qos_depth`, volatile (REP-2003 sensor data).
    SensorData,
    /// Reliable, keep last `qos_depth`, volatile.
    Reliable,
}

/// A region of interest in camera pixels: crop before resizing to the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Roi {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width (> 0).
    pub width: u32,
    /// Height (> 0).
    pub height: u32,
}

/// One task's configuration (`<task>.*` parameters).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskConfig {
    /// Task name (an entry of `tasks`).
    pub name: String,
    /// The model folder (holding `manifest.yaml`), resolved and existing.
    pub model_dir: PathBuf,
    /// Image topic (raw; compressed subscribes to `<image_topic>/compressed`).
    pub image_topic: String,
    /// Raw or compressed images.
    pub transport: Transport,
    /// Desired frames per second.
    pub target_fps: f64,
    /// Initial priority (cost weight).
    pub priority: f64,
    /// Subscription QoS preset.
    pub qos: QosPreset,
    /// Subscription history depth.
    pub qos_depth: usize,
    /// Region of interest, `None` for the whole image.
    pub roi: Option<Roi>,
    /// False: the task is configured but not run until a priority update enables it.
    pub enabled: bool,
}

impl TaskConfig {
    /// The subscription's QoS: the preset with the configured history depth.
    pub fn qos(&self) -> Qos {
        let base = match self.qos {
            QosPreset::SensorData => Qos::SENSOR_DATA,
            QosPreset::Reliable => Qos::RELIABLE,
        };
        Qos {
            depth: self.qos_depth.clamp(1, 1000) as u32,
            ..base
        }
    }

    /// The task's pre-processor for a model with input `input` (its ROI applied).
    ///
    /// # Errors
    /// [`PreprocessError`] when images cannot make that input.
    pub fn preprocessor(&self, input: &InputSpec) -> Result<Preprocessor, PreprocessError> {
        let roi = self.roi.map(|r| crate::preprocess::Roi {
            x: r.x,
            y: r.y,
            width: r.width,
            height: r.height,
        });
        Preprocessor::new(input, roi)
    }

    /// The task as the planner sees it, with `ladder`.
    pub fn spec(&self, ladder: Ladder) -> TaskSpec {
        TaskSpec {
            name: self.name.clone(),
            priority: self.priority,
            target_fps: self.target_fps,
            enabled: self.enabled,
            ladder: std::sync::Arc::new(ladder),
        }
    }

    /// The topic actually subscribed: `image_topic`, or `image_topic/compressed`.
    pub fn subscribed_topic(&self) -> String {
        match self.transport {
            Transport::Raw => self.image_topic.clone(),
            Transport::Compressed => {
                format!("{}/compressed", self.image_topic.trim_end_matches('/'))
            }
        }
    }
}

/// The validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Tasks in `tasks` order.
    pub tasks: Vec<TaskConfig>,
    /// Scheduler settings and the default budget.
    pub scheduler: Settings,
    /// `use_sim_time` (passed by `ros2 launch`).
    pub use_sim_time: bool,
    /// `scheduler.calibration_period_s`: how often the node re-calibrates the planner's
    /// latencies from the CPU time frames really take (`None`: never; parameter 0).
    pub calibration_period: Option<Duration>,
    /// The params file, if any.
    pub source: Option<PathBuf>,
}

/// Default of `scheduler.calibration_period_s` (seconds).
pub const DEFAULT_CALIBRATION_PERIOD_S: f64 = 10.0;

/// Global parameter names (besides `<task>.*`).
pub const GLOBAL_KEYS: &[&str] = &[
    "tasks",
    "models_dir",
    "use_sim_time",
    "default_budget.cpu_cores",
    "default_budget.memory_mb",
    "scheduler.objective",
    "scheduler.solver",
    "scheduler.alpha",
    "scheduler.share_step",
    "scheduler.share_headroom",
    "scheduler.hysteresis_margin",
    "scheduler.min_dwell_s",
    "scheduler.switch_policy",
    "scheduler.idle_timeout_s",
    "scheduler.replan_on_profile_change",
    "scheduler.calibration_period_s",
    "scheduler.budget_timeout_s",
    "scheduler.stale_budget_cores",
];

/// Per-task parameter names (`<task>.<name>`).
pub const TASK_KEYS: &[&str] = &[
    "model_dir",
    "image_topic",
    "transport",
    "target_fps",
    "priority",
    "qos",
    "qos_depth",
    "roi",
    "enabled",
];

/// Top-level names a task may not use.
const RESERVED: &[&str] = &[
    "tasks",
    "models_dir",
    "use_sim_time",
    "default_budget",
    "scheduler",
    "qos_overrides",
];

fn valid_task_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest(key: &str, known: &[String]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// Resolves a relative path: against `base` when given, else the params file's folder and
/// then its parent (the package share folder when installed as
/// `share/nestdnn_node/params/*.yaml`, the repository root for `params/*.yaml`), else the
/// current directory. Returns the first existing candidate, or every candidate tried.
fn resolve_dir(p: &Path, file: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    if p.is_absolute() {
        return if p.is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(vec![p.to_path_buf()])
        };
    }
    let mut tried = Vec::new();
    match file.and_then(Path::parent) {
        Some(dir) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            tried.push(dir.join(p));
            if let Some(parent) = dir
                .canonicalize()
                .ok()
                .and_then(|d| d.parent().map(Path::to_path_buf))
            {
                tried.push(parent.join(p));
            }
        }
        None => tried.push(p.to_path_buf()),
    }
    tried.iter().find(|c| c.is_dir()).cloned().ok_or(tried)
}

impl NodeConfig {
    /// Reads `path`, applies `overrides` (`-p key:=value`, values parsed as YAML) and validates.
    ///
    /// # Errors
    /// Any [`ConfigError`], naming the parameter, the value and what is allowed.
    pub fn load<I>(path: &Path, node: &NodeName, overrides: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, Value)>,
    {
        let mut p = Params::from_file(path, node)?;
        p.apply_overrides(overrides)?;
        Self::from_params(&p)
    }

    /// Validates a parameter set (relative paths resolve against [`Params::file`]).
    ///
    /// # Errors
    /// [`ConfigError::Missing`] (no `tasks`), [`ConfigError::Type`], [`ConfigError::Range`],
    /// [`ConfigError::UnknownKey`], [`ConfigError::ModelDirNotFound`].
    pub fn from_params(p: &Params) -> Result<Self, ConfigError> {
        let r = p;
        let tasks: Vec<String> = match p.get("tasks") {
            None => {
                return Err(ConfigError::Missing {
                    key: "tasks".to_string(),
                    hint: "list the task names, e.g. `tasks: [fashion_vgg, digits_vgg]`, then set `<task>.*` for each".to_string(),
                })
            }
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_err("tasks", "a list of task names (strings)", other)),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(type_err("tasks", "a list of task names (strings)", v)),
        };
        if tasks.is_empty() {
            return Err(range("tasks", "[]", "a non-empty list of task names"));
        }
        for (i, t) in tasks.iter().enumerate() {
            if !valid_task_name(t) || RESERVED.contains(&t.as_str()) {
                return Err(range(
                    "tasks",
                    format!("{t:?}"),
                    "names starting with a letter, then letters, digits or `_`, other than tasks, models_dir, use_sim_time, default_budget, scheduler, qos_overrides",
                ));
            }
            if tasks[..i].contains(t) {
                return Err(range(
                    "tasks",
                    format!("{t:?}"),
                    "unique names (it is listed twice)",
                ));
            }
        }

        // Unknown keys.
        let mut known: Vec<String> = GLOBAL_KEYS.iter().map(|s| s.to_string()).collect();
        for t in &tasks {
            known.extend(TASK_KEYS.iter().map(|k| format!("{t}.{k}")));
        }
        for (key, _, origin) in p.iter() {
            if known.iter().any(|k| k == key) || key.starts_with("qos_overrides.") {
                continue;
            }
            let hint = match key.split_once('.') {
                Some((t, k)) if TASK_KEYS.contains(&k) && !tasks.iter().any(|x| x == t) => {
                    format!(": {t:?} is not in `tasks` ({})", tasks.join(", "))
                }
                _ => suggest(key, &known),
            };
            match origin {
                Origin::Wildcard(section) => {
                    log::warn!(
                        "parameter {key} (from section {section:?}) is not used by this node{hint}"
                    );
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: key.to_string(),
                        hint,
                    })
                }
            }
        }

        let scheduler = Self::settings(r)?;
        let models_dir = r.string("models_dir", "models")?;
        let mut out = Vec::with_capacity(tasks.len());
        for t in &tasks {
            out.push(Self::task(r, t, &models_dir)?);
        }
        Ok(NodeConfig {
            tasks: out,
            scheduler,
            use_sim_time: r.bool("use_sim_time", false)?,
            calibration_period: r.period(
                "scheduler.calibration_period_s",
                Some(Duration::from_secs_f64(DEFAULT_CALIBRATION_PERIOD_S)),
            )?,
            source: p.file().map(Path::to_path_buf),
        })
    }

    fn settings(r: &Params) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        let objective = r.word(
            "scheduler.objective",
            d.objective,
            &[
                ("min_total_cost", Objective::MinTotalCost),
                ("min_max_cost", Objective::MinMaxCost),
                ("static", Objective::Static),
                ("smallest", Objective::Smallest),
            ],
        )?;
        let solver = r.word(
            "scheduler.solver",
            d.solver,
            &[
                ("auto", SolverChoice::Auto),
                ("exact", SolverChoice::Exact),
                ("greedy", SolverChoice::Greedy),
            ],
        )?;
        let switch_policy = r.word(
            "scheduler.switch_policy",
            d.switch_policy,
            &[
                ("resident", SwitchPolicy::Resident),
                ("on_demand", SwitchPolicy::OnDemand),
                ("one_copy", SwitchPolicy::OneCopy),
            ],
        )?;
        let memory_mb = r.f64(
            "default_budget.memory_mb",
            d.default_budget.memory_bytes as f64 / 1048576.0,
            0.0,
            1_048_576.0,
            true,
        )?;
        let s = Settings {
            objective,
            solver,
            alpha: r.f64("scheduler.alpha", d.alpha, 0.0, 100.0, false)?,
            share_step: r.f64("scheduler.share_step", d.share_step, 0.005, 0.5, false)?,
            share_headroom: r.f64(
                "scheduler.share_headroom",
                d.share_headroom,
                0.0,
                1.0,
                false,
            )?,
            hysteresis_margin: {
                let m = r.f64(
                    "scheduler.hysteresis_margin",
                    d.hysteresis_margin,
                    0.0,
                    1.0,
                    false,
                )?;
                if m >= 1.0 {
                    return Err(range("scheduler.hysteresis_margin", m, "in [0, 1)"));
                }
                m
            },
            min_dwell: Duration::from_secs_f64(r.f64(
                "scheduler.min_dwell_s",
                d.min_dwell.as_secs_f64(),
                0.0,
                3600.0,
                false,
            )?),
            switch_policy,
            idle_timeout: Duration::from_secs_f64(r.f64(
                "scheduler.idle_timeout_s",
                d.idle_timeout.as_secs_f64(),
                0.0,
                3600.0,
                true,
            )?),
            replan_on_profile_change: r.bool(
                "scheduler.replan_on_profile_change",
                d.replan_on_profile_change,
            )?,
            default_budget: Budget::new(
                r.f64(
                    "default_budget.cpu_cores",
                    d.default_budget.cpu_cores,
                    0.0,
                    1024.0,
                    true,
                )?,
                (memory_mb * 1048576.0).round() as u64,
            ),
            budget_timeout: r.period("scheduler.budget_timeout_s", d.budget_timeout)?,
            stale_budget_cores: r.f64(
                "scheduler.stale_budget_cores",
                d.stale_budget_cores,
                0.0,
                1024.0,
                false,
            )?,
        };
        s.validate().map_err(ConfigError::from_scheduler)?;
        Ok(s)
    }

    fn task(r: &Params, t: &str, models_dir: &str) -> Result<TaskConfig, ConfigError> {
        let k = |name: &str| format!("{t}.{name}");
        let file = r.file();
        let dir_value = r.string(&k("model_dir"), "")?;
        let model_dir = if dir_value.is_empty() {
            let base = resolve_dir(Path::new(models_dir), file).map_err(|tried| {
                ConfigError::ModelDirNotFound {
                    key: "models_dir".to_string(),
                    value: models_dir.to_string(),
                    tried,
                }
            })?;
            let d = base.join(t);
            if !d.is_dir() {
                return Err(ConfigError::ModelDirNotFound {
                    key: k("model_dir"),
                    value: format!("(default: <models_dir>/{t})"),
                    tried: vec![d],
                });
            }
            d
        } else {
            resolve_dir(Path::new(&dir_value), file).map_err(|tried| {
                ConfigError::ModelDirNotFound {
                    key: k("model_dir"),
                    value: dir_value.clone(),
                    tried,
                }
            })?
        };
        let image_topic = r.string(&k("image_topic"), &format!("{t}/image_raw"))?;
        if image_topic.is_empty()
            || image_topic.contains("//")
            || !image_topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '~')
        {
            return Err(range(
                &k("image_topic"),
                format!("{image_topic:?}"),
                "a ROS topic name (letters, digits, `_`, `/`, `~`; no empty segments)",
            ));
        }
        let roi = match r.get(&k("roi")) {
            None => None,
            Some(Value::Sequence(s)) if s.is_empty() => None,
            Some(Value::Sequence(s)) => {
                let nums: Option<Vec<i64>> = s.iter().map(Value::as_i64).collect();
                match nums.as_deref() {
                    Some(&[x, y, w, h]) => {
                        let fits = |v: i64| (0..=i64::from(u32::MAX)).contains(&v);
                        if !(fits(x) && fits(y) && w > 0 && h > 0 && fits(w) && fits(h)) {
                            return Err(range(
                                &k("roi"),
                                format!("[{x}, {y}, {w}, {h}]"),
                                "[x, y, width, height] with x, y >= 0 and width, height > 0 (pixels), or [] for the whole image",
                            ));
                        }
                        Some(Roi {
                            x: x as u32,
                            y: y as u32,
                            width: w as u32,
                            height: h as u32,
                        })
                    }
                    _ => {
                        return Err(ConfigError::Type {
                            key: k("roi"),
                            expected: "a list of 4 integers [x, y, width, height] or []",
                            found: describe(&Value::Sequence(s.clone())),
                        })
                    }
                }
            }
            Some(v) => {
                return Err(type_err(
                    &k("roi"),
                    "a list of 4 integers [x, y, width, height] or []",
                    v,
                ))
            }
        };
        Ok(TaskConfig {
            name: t.to_string(),
            model_dir,
            image_topic,
            transport: r.word(
                &k("transport"),
                Transport::Raw,
                &[
                    ("raw", Transport::Raw),
                    ("compressed", Transport::Compressed),
                ],
            )?,
            target_fps: r.f64(&k("target_fps"), 10.0, 0.0, 1000.0, true)?,
            priority: r.f64(&k("priority"), 1.0, 0.0, 1e6, true)?,
            qos: r.word(
                &k("qos"),
                QosPreset::SensorData,
                &[
                    ("sensor_data", QosPreset::SensorData),
                    ("reliable", QosPreset::Reliable),
                ],
            )?,
            qos_depth: r.int(&k("qos_depth"), 5, 1, 1000)? as usize,
            roi,
            enabled: r.bool(&k("enabled"), true)?,
        })
    }

    /// The configuration of task `name`.
    pub fn task_config(&self, name: &str) -> Option<&TaskConfig> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests;
