//! `nestdnn_node`: the NestDNN perception node on ROS 2: over DDS with the pure-Rust stack
//! (feature `dds`, default, no ROS needed) or over rcl with r2r (feature `r2r`, needs a sourced
//! ROS 2; takes precedence when both are enabled). The wiring is `nestdnn::node::ros::serve`,
//! the same for both.
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
use nestdnn::config::{NodeConfig, NodeName, Params};
use nestdnn::node::app::AppOptions;
use nestdnn::node::{init_logging, main_with, Shutdown};
use nestdnn::rosargs::{NameContext, RosArgs};

const NODE: &str = "nestdnn_node";

/// Reads the configuration: every params file in order (the node's sections; launch adds a
/// file for `use_sim_time`), then the `-p` overrides.
fn load_config(args: &RosArgs, names: &NameContext) -> anyhow::Result<NodeConfig> {
    let Some(first) = args.params_files.first() else {
        bail!("no parameters file: pass --ros-args --params-file FILE (see params/nestdnn.yaml)");
    };
    let params = Params::from_ros_args(args, &NodeName::from(names))
        .with_context(|| format!("configuration {}", first.display()))?;
    NodeConfig::from_params(&params).with_context(|| format!("configuration {}", first.display()))
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
    #[cfg(any(feature = "dds", feature = "r2r"))]
    {
        let node = nestdnn::transport::open(names)?;
        nestdnn::node::ros::serve(node, &cfg, opts, &shutdown)?;
        Ok(())
    }
    #[cfg(not(any(feature = "dds", feature = "r2r")))]
    {
        let _ = (shutdown, names, cfg, opts);
        bail!("built without a ROS transport: enable the `dds` or `r2r` cargo feature")
    }
}

fn main() -> ExitCode {
    main_with(NODE, run)
}
