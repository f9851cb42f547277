//! Parameter files: fuzz bytes as a ROS 2 params YAML file, read the way `nestdnn_node` does
//! (`config::Params::from_ros_args` with its typed getters, `NodeConfig::from_params` on the
//! result, and `NodeConfig::load` with the values applied as overrides). The file sits in `<scratch>/params/` next
//! to a link to the repository's `models/`, so the seeds' relative model paths resolve and
//! validation gets past them. Oracle: no panic.

use nestdnn::config::{NodeConfig, NodeName, Params};
use nestdnn::rosargs::RosArgs;

fn main() {
    let file = nestdnn_fuzz::scratch("params/params.yaml");
    let root = file
        .parent()
        .and_then(|p| p.parent())
        .expect("scratch root");
    std::fs::create_dir_all(file.parent().unwrap()).expect("scratch params folder");
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let _ = std::os::unix::fs::symlink(models, root.join("models"));
    let node = NodeName::new("/", "nestdnn_node");
    afl::fuzz_nohook!(|data: &[u8]| {
        std::fs::write(&file, data).expect("write scratch file");
        let args = RosArgs {
            params_files: vec![file.clone()],
            ..RosArgs::default()
        };
        let overrides: Vec<(String, serde_yaml::Value)> = match Params::from_ros_args(&args, &node)
        {
            Ok(p) => {
                let _ = p.f64("scheduler.alpha", 0.0, 0.0, 100.0, false);
                let _ = p.int("memory_budget_bytes", 0, 0, i64::MAX);
                let _ = p.bool("use_sim_time", false);
                let _ = p.string("transport", "");
                let _ = p.strings("tasks", &[]);
                let _ = NodeConfig::from_params(&p);
                p.iter()
                    .map(|(n, v, _)| (n.to_string(), v.clone()))
                    .collect()
            }
            Err(e) => {
                let _ = e.to_string();
                Vec::new()
            }
        };
        match NodeConfig::load(&file, &node, Vec::new()) {
            Ok(cfg) => {
                for t in &cfg.tasks {
                    let _ = cfg.task_config(&t.name).map(|t| t.subscribed_topic());
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = NodeConfig::load(&file, &node, overrides);
    });
}
