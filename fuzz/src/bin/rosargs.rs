//! The ROS 2 command line: fuzz bytes split at NUL into arguments, parsed as `nestdnn_node`
//! does (`RosArgs::parse`, the name context, topic resolution and remapping, `-p` overrides
//! as YAML, and the overrides applied to a parameter set and validated). Params files named
//! on the fuzzed command line are not opened. Oracle: no panic.

use nestdnn::config::{NodeConfig, NodeName, Params};
use nestdnn::rosargs::{self, RosArgs};

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        let argv: Vec<&str> = text.split('\0').collect();
        let _ = rosargs::parse_domain_id(argv.first().copied());
        let mut args = match RosArgs::parse(argv.iter().copied(), "nestdnn_node") {
            Ok(a) => a,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        args.params_files.clear();
        let ctx = match args.name_context("nestdnn_node") {
            Ok(c) => c,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        let _ = ctx.fully_qualified_node();
        for name in ["image_raw", "~/results", "/resource_budget", "~", "a/b"]
            .into_iter()
            .chain(argv.iter().copied().take(8))
        {
            if let Ok(t) = ctx.topic(name) {
                let _ = rosargs::split_topic(&t);
            }
        }
        let mut cp = Params::empty();
        for (k, v) in args.params_for(&ctx.node) {
            let _ = cp.set_from_str(k, v);
        }
        let _ = NodeConfig::from_params(&cp);
        if let Ok(p) = Params::from_ros_args(&args, &NodeName::from(&ctx)) {
            for n in p.iter().map(|(n, _, _)| n.to_string()).collect::<Vec<_>>() {
                let _ = p.f64(&n, 0.0, f64::MIN, f64::MAX, false);
                let _ = p.int(&n, 0, i64::MIN, i64::MAX);
                let _ = p.strings(&n, &[]);
            }
        }
    });
}
