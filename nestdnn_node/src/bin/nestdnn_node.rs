//! `nestdnn_node`: the NestDNN perception node on ROS 2: over DDS with the pure-Rust stack
//! (feature `dds`, default, no ROS needed) or over rcl with r2r (feature `r2r`, needs a sourced
//! ROS 2; takes precedence when both are enabled).
//!
//! ```text
//! nestdnn_node --ros-args --params-file params/nestdnn.yaml [-r __ns:=/robot] [-p key:=value]
//! ```
//! Topics (relative names resolve in the node's namespace; `docs/ros2.md`):
//! in: each task's `image_topic` (`sensor_msgs/Image`, or `CompressedImage` on
//! `<image_topic>/compressed`), `nestdnn/resource_budget`, `nestdnn/task_priority`;
//! out: `nestdnn/<task>/classification`, `nestdnn/<task>/result`, `nestdnn/<task>/label_info`
//! (latched), `nestdnn/plan` (latched), `/diagnostics`; with `use_sim_time`, `/clock` in.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use nestdnn::config::{self, NodeConfig};
use nestdnn::node::app::AppOptions;
use nestdnn::node::{init_logging, Shutdown};
use nestdnn::rosargs::{NameContext, Params, RosArgs};

const NODE: &str = "nestdnn_node";

/// Reads the configuration: the first params file is the node's file; later files (launch
/// adds one for `use_sim_time`) and `-p` overrides are applied on top, in order.
fn load_config(args: &RosArgs, names: &NameContext) -> anyhow::Result<NodeConfig> {
    let Some((first, rest)) = args.params_files.split_first() else {
        bail!("no parameters file: pass --ros-args --params-file FILE (see params/nestdnn.yaml)");
    };
    let extra_args = RosArgs {
        params_files: rest.to_vec(),
        params: args.params.clone(),
        ..RosArgs::default()
    };
    let extra = Params::load(&extra_args, names)?;
    let overrides: Vec<(String, serde_yaml::Value)> = extra
        .names()
        .filter_map(|n| extra.get(n).map(|v| (n.to_string(), v.clone())))
        .collect();
    let node = config::NodeName::new(&names.namespace, &names.node);
    NodeConfig::load(first, &node, overrides)
        .with_context(|| format!("configuration {}", first.display()))
}

fn run(shutdown: Shutdown) -> anyhow::Result<()> {
    let args = RosArgs::parse(std::env::args().skip(1), NODE)?;
    init_logging(args.log_level);
    if let Some(a) = args.user_args.first() {
        if a == "-h" || a == "--help" {
            println!("usage: nestdnn_node --ros-args --params-file FILE [-r __ns:=/NS] [-p key:=value] [-r from:=to]");
            return Ok(());
        }
        bail!("unknown argument {a:?} (try --help)");
    }
    let names = args.name_context(NODE)?;
    let cfg = load_config(&args, &names)?;
    if cfg.use_sim_time {
        log::info!(
            "use_sim_time: stamps of plans, diagnostics and class names follow /clock; \
             frame rates, shares and timeouts stay on the machine's clock"
        );
    }
    let opts = AppOptions {
        node_name: names.fully_qualified_node(),
        ..AppOptions::default()
    };
    #[cfg(feature = "r2r")]
    return on_r2r::serve(shutdown, names, &cfg, opts);
    #[cfg(all(feature = "dds", not(feature = "r2r")))]
    return on_dds::serve(shutdown, names, &cfg, opts);
    #[cfg(not(any(feature = "dds", feature = "r2r")))]
    {
        let _ = (shutdown, names, cfg, opts);
        bail!("built without a ROS transport: enable the `dds` or `r2r` cargo feature")
    }
}

/// The name to subscribe for a task's camera: the configured topic for a raw task; for a
/// compressed task `image_transport`'s subtopic of the (resolved and remapped) base topic,
/// which the subscription remaps once more, as `image_transport` does
/// ([`NameContext::image_transport_topic`]).
#[cfg(any(feature = "dds", feature = "r2r"))]
fn camera_topic(names: &NameContext, t: &nestdnn::node::app::TaskSetup) -> anyhow::Result<String> {
    Ok(match t.transport {
        nestdnn::config::Transport::Raw => t.topic.clone(),
        nestdnn::config::Transport::Compressed => {
            format!("{}/compressed", names.topic(&t.image_topic)?)
        }
    })
}

/// Topic names of the node's outputs for task `task` (relative: they resolve in the node's
/// namespace).
#[cfg(any(feature = "dds", feature = "r2r"))]
fn task_topics(task: &str) -> [String; 3] {
    [
        format!("nestdnn/{task}/classification"),
        format!("nestdnn/{task}/result"),
        format!("nestdnn/{task}/label_info"),
    ]
}

#[cfg(all(feature = "dds", not(feature = "r2r")))]
mod on_dds {
    use super::*;
    use nestdnn::config::Transport;
    use nestdnn::msgs::{
        Classification, Clock, CompressedImage, DiagnosticArray, Image, InferenceResult, LabelInfo,
        Plan, ResourceBudget, TaskPriority,
    };
    use nestdnn::node::app::{App, Outputs};
    use nestdnn::rosargs::domain_id_from_env;
    use nestdnn::transport::dds::{DdsNode, DdsPublisher, DdsSettings, SubscribeOptions};
    use nestdnn::transport::Qos;
    use std::sync::Arc;
    use std::time::Duration;

    struct DdsOutputs {
        classification: Vec<DdsPublisher<Classification>>,
        result: Vec<DdsPublisher<InferenceResult>>,
        labels: Vec<DdsPublisher<LabelInfo>>,
        plan: DdsPublisher<Plan>,
        diagnostics: DdsPublisher<DiagnosticArray>,
    }

    impl Outputs for DdsOutputs {
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

    pub fn serve(
        shutdown: Shutdown,
        names: NameContext,
        cfg: &NodeConfig,
        opts: AppOptions,
    ) -> anyhow::Result<()> {
        let settings = DdsSettings {
            domain_id: domain_id_from_env()?,
            ..DdsSettings::default()
        };
        let mut node = DdsNode::new(names.clone(), settings)?;
        let mut classification = Vec::new();
        let mut result = Vec::new();
        let mut labels = Vec::new();
        for t in &cfg.tasks {
            let [c, r, l] = task_topics(&t.name);
            classification.push(node.publisher(&c, Qos::RELIABLE)?);
            result.push(node.publisher(&r, Qos::RELIABLE)?);
            labels.push(node.publisher(&l, Qos::LATCHED)?);
        }
        let outputs = Arc::new(DdsOutputs {
            classification,
            result,
            labels,
            plan: node.publisher("nestdnn/plan", Qos::LATCHED)?,
            diagnostics: node.publisher("/diagnostics", Qos::RELIABLE)?,
        });
        let app = Arc::new(App::start(cfg, opts, outputs)?);
        if app.uses_sim_time() {
            let a = app.clone();
            node.subscribe::<Clock, _>("/clock", SubscribeOptions::small(Qos::CLOCK), move |r| {
                match r {
                    Ok(m) => a.on_clock(&m),
                    Err(e) => a.on_bad_sample("clock", &e),
                }
            })?;
        }
        for (i, t) in app.tasks().into_iter().enumerate() {
            let a = app.clone();
            let lost = {
                let a = app.clone();
                move |n| a.on_frames_lost(i, n)
            };
            let topic = camera_topic(node.names(), &t)?;
            let full = match t.transport {
                Transport::Raw => node.subscribe_counting_gaps::<Image, _, _>(
                    &topic,
                    SubscribeOptions::camera(t.qos),
                    move |r| match r {
                        Ok(m) => a.on_image(i, m),
                        Err(e) => a.on_bad_sample("image", &e),
                    },
                    lost,
                )?,
                Transport::Compressed => node.subscribe_counting_gaps::<CompressedImage, _, _>(
                    &topic,
                    SubscribeOptions::camera(t.qos),
                    move |r| match r {
                        Ok(m) => a.on_compressed(i, m),
                        Err(e) => a.on_bad_sample("compressed image", &e),
                    },
                    lost,
                )?,
            };
            log::info!(
                "task {}: {} ({:?}, {:?})",
                t.name,
                full,
                t.transport,
                t.qos.reliability
            );
        }
        let a = app.clone();
        node.subscribe::<ResourceBudget, _>(
            "nestdnn/resource_budget",
            SubscribeOptions::small(Qos::LATCHED),
            move |r| match r {
                Ok(m) => a.on_budget(&m),
                Err(e) => a.on_bad_sample("budget", &e),
            },
        )?;
        let a = app.clone();
        node.subscribe::<TaskPriority, _>(
            "nestdnn/task_priority",
            SubscribeOptions::small(Qos::RELIABLE),
            move |r| match r {
                Ok(m) => a.on_priority(&m),
                Err(e) => a.on_bad_sample("priority", &e),
            },
        )?;
        log::info!(
            "{} serving {} task(s) over DDS",
            names.fully_qualified_node(),
            cfg.tasks.len()
        );
        while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
        // Finish the frames in hand (results are queued), then flush the publishers and close
        // the participant.
        app.shutdown();
        node.shutdown(Duration::from_secs(1));
        Ok(())
    }
}

#[cfg(feature = "r2r")]
mod on_r2r {
    use super::*;
    use nestdnn::config::Transport;
    use nestdnn::msgs::{
        Classification, Clock, CompressedImage, DiagnosticArray, Image, InferenceResult, LabelInfo,
        Plan, ResourceBudget, TaskPriority,
    };
    use nestdnn::node::app::{App, Outputs};
    use nestdnn::transport::r2r::{R2rNode, R2rPublisher};
    use nestdnn::transport::Qos;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::Duration;

    struct R2rOutputs {
        classification: Vec<Mutex<R2rPublisher<Classification>>>,
        result: Vec<Mutex<R2rPublisher<InferenceResult>>>,
        labels: Vec<Mutex<R2rPublisher<LabelInfo>>>,
        plan: Mutex<R2rPublisher<Plan>>,
        diagnostics: Mutex<R2rPublisher<DiagnosticArray>>,
    }

    impl Outputs for R2rOutputs {
        fn classification(&self, task: usize, msg: Classification) {
            if let Some(p) = self.classification.get(task) {
                p.lock().publish(&msg);
            }
        }
        fn result(&self, task: usize, msg: InferenceResult) {
            if let Some(p) = self.result.get(task) {
                p.lock().publish(&msg);
            }
        }
        fn plan(&self, msg: Plan) {
            self.plan.lock().publish(&msg);
        }
        fn diagnostics(&self, msg: DiagnosticArray) {
            self.diagnostics.lock().publish(&msg);
        }
        fn label_info(&self, task: usize, msg: LabelInfo) {
            if let Some(p) = self.labels.get(task) {
                p.lock().publish(&msg);
            }
        }
    }

    pub fn serve(
        shutdown: Shutdown,
        names: NameContext,
        cfg: &NodeConfig,
        opts: AppOptions,
    ) -> anyhow::Result<()> {
        let mut node = R2rNode::new(names.clone())?;
        let mut classification = Vec::new();
        let mut result = Vec::new();
        let mut labels = Vec::new();
        for t in &cfg.tasks {
            let [c, r, l] = task_topics(&t.name);
            classification.push(Mutex::new(node.publisher(&c, Qos::RELIABLE)?));
            result.push(Mutex::new(node.publisher(&r, Qos::RELIABLE)?));
            labels.push(Mutex::new(node.publisher(&l, Qos::LATCHED)?));
        }
        let outputs = Arc::new(R2rOutputs {
            classification,
            result,
            labels,
            plan: Mutex::new(node.publisher("nestdnn/plan", Qos::LATCHED)?),
            diagnostics: Mutex::new(node.publisher("/diagnostics", Qos::RELIABLE)?),
        });
        let app = Arc::new(App::start(cfg, opts, outputs)?);
        if app.uses_sim_time() {
            let a = app.clone();
            node.subscribe::<Clock, _>("/clock", Qos::CLOCK, move |r| match r {
                Ok(m) => a.on_clock(&m),
                Err(e) => a.on_bad_sample("clock", &e),
            })?;
        }
        for (i, t) in app.tasks().into_iter().enumerate() {
            let a = app.clone();
            let topic = camera_topic(node.names(), &t)?;
            match t.transport {
                Transport::Raw => node.subscribe::<Image, _>(&topic, t.qos, move |r| match r {
                    Ok(m) => a.on_image(i, m),
                    Err(e) => a.on_bad_sample("image", &e),
                })?,
                Transport::Compressed => {
                    node.subscribe::<CompressedImage, _>(&topic, t.qos, move |r| match r {
                        Ok(m) => a.on_compressed(i, m),
                        Err(e) => a.on_bad_sample("compressed image", &e),
                    })?
                }
            };
        }
        let a = app.clone();
        node.subscribe::<ResourceBudget, _>("nestdnn/resource_budget", Qos::LATCHED, move |r| {
            match r {
                Ok(m) => a.on_budget(&m),
                Err(e) => a.on_bad_sample("budget", &e),
            }
        })?;
        let a = app.clone();
        node.subscribe::<TaskPriority, _>(
            "nestdnn/task_priority",
            Qos::RELIABLE,
            move |r| match r {
                Ok(m) => a.on_priority(&m),
                Err(e) => a.on_bad_sample("priority", &e),
            },
        )?;
        node.start()?;
        log::info!(
            "{} serving {} task(s) over rcl",
            names.fully_qualified_node(),
            cfg.tasks.len()
        );
        while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
        app.shutdown();
        node.shutdown();
        Ok(())
    }
}

fn main() -> ExitCode {
    let shutdown = match Shutdown::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{NODE}: cannot install signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NODE}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
