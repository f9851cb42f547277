//! `resource_monitor`: publishes the resources the perception node may use (over DDS with the
//! default `dds` feature, over rcl with the `r2r` feature).
//!
//! Samples this machine (CPU from `/proc/stat`, memory from `/proc/meminfo`, cgroup v2 limits,
//! battery) or plays a scripted trace, and publishes `nestdnn_msgs/ResourceBudget` on
//! `nestdnn/resource_budget` (latched) every `period_s` and at once on a significant change.
//!
//! ```text
//! resource_monitor [--trace FILE] [--trace-loop] [--print] [--ros-args ...]
//! ```
//! Parameters (params file section `resource_monitor:` or `-p name:=value`):
//! `period_s` (1.0), `sample_period_s` (0.5), `headroom.cpu_cores` (0.25),
//! `headroom.memory_mb` (256), `change.cpu_cores` (0.25), `change.memory_fraction` (0.1),
//! `change.battery` (0.05), `consumers` (`[nestdnn_node]`), `cpus` ("": this process's own
//! CPU affinity), `trace` (""), `trace_loop` (false), `topic` (nestdnn/resource_budget).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nestdnn::config::{NodeName, Params};
use nestdnn::interface::BUDGET;
use nestdnn::monitor::{
    parse_cpu_list, Budget, ChangeRule, Headroom, Monitor, MonitorSettings, Trace,
};
use nestdnn::msgs::ResourceBudget;
use nestdnn::node::{header_now, init_logging, main_with, Shutdown};
use nestdnn::rosargs::{NameContext, RosArgs};

const NODE: &str = "resource_monitor";

struct Options {
    period: Duration,
    sample_period: Duration,
    rule: ChangeRule,
    settings: MonitorSettings,
    trace: Option<(PathBuf, bool)>,
    topic: String,
    print: bool,
}

fn options(args: &RosArgs, p: &Params) -> anyhow::Result<Options> {
    let mut trace_file = p.string("trace", "")?;
    let mut trace_loop = p.bool("trace_loop", false)?;
    let mut print = false;
    let mut it = args.user_args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--trace" => {
                trace_file = it.next().context("--trace needs a file")?.clone();
            }
            "--trace-loop" => trace_loop = true,
            "--print" => print = true,
            "-h" | "--help" => {
                println!(
                    "usage: resource_monitor [--trace FILE] [--trace-loop] [--print] [--ros-args ...]\n\
                     see docs/runtime.md, \"Resource monitor\", for parameters"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let mem_mb = p.f64("headroom.memory_mb", 256.0, 0.0, 1e9, false)?;
    let secs = |key: &str, default: f64| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(
            p.f64(key, default, 0.0, 86400.0, true)?,
        ))
    };
    Ok(Options {
        period: secs("period_s", 1.0)?,
        sample_period: secs("sample_period_s", 0.5)?,
        rule: ChangeRule {
            cpu_cores: p.f64("change.cpu_cores", 0.25, 0.0, 1024.0, false)? as f32,
            memory_fraction: p.f64("change.memory_fraction", 0.10, 0.0, 1.0, false)?,
            battery: p.f64("change.battery", 0.05, 0.0, 1.0, false)? as f32,
        },
        settings: MonitorSettings {
            headroom: Headroom {
                cpu_cores: p.f64("headroom.cpu_cores", 0.25, 0.0, 1024.0, false)?,
                memory_bytes: (mem_mb * 1048576.0) as u64,
            },
            consumers: p.strings("consumers", &["nestdnn_node"])?,
            cpus: cpus(p)?,
        },
        trace: (!trace_file.is_empty()).then(|| (PathBuf::from(trace_file), trace_loop)),
        topic: p.string("topic", BUDGET.name)?,
        print,
    })
}

/// The `cpus` parameter: a CPU list (`"0-3,6"`, as `taskset -c` takes it; `-p cpus:=2` arrives
/// as an integer); empty or unset: `None` (the monitor's own affinity).
fn cpus(p: &Params) -> anyhow::Result<Option<Vec<u32>>> {
    let text = match p.get("cpus") {
        None => return Ok(None),
        Some(serde_yaml::Value::Number(n)) => n.to_string(),
        Some(_) => p.string("cpus", "")?,
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_cpu_list(&text)
        .map(Some)
        .with_context(|| format!("parameter cpus {text:?}: expected a CPU list such as \"0-3,6\""))
}

fn to_msg(b: &Budget) -> ResourceBudget {
    ResourceBudget {
        header: header_now(""),
        cpu_cores_available: b.cpu_cores_available,
        cpu_load: b.cpu_load,
        memory_available_bytes: b.memory_available_bytes,
        battery_percentage: b.battery_percentage,
        power_supply_status: b.power_supply_status,
    }
}

/// Where budgets come from: the live machine or a trace.
enum Source {
    Live(Box<Monitor>),
    Trace { trace: Trace, start: Instant },
}

impl Source {
    /// The current budget (`None` while the live monitor primes its counters).
    fn budget(&mut self) -> anyhow::Result<Option<Budget>> {
        match self {
            Source::Live(m) => Ok(m.read()?.map(|r| m.budget(&r))),
            Source::Trace { trace, start } => Ok(Some(trace.budget_at(start.elapsed()))),
        }
    }

    /// How long to sleep before the next look.
    fn next_wait(&self, sample: Duration) -> Duration {
        match self {
            Source::Live(_) => sample,
            Source::Trace { trace, start } => trace
                .next_change(start.elapsed())
                .map(|d| d.min(sample))
                .unwrap_or(sample),
        }
    }
}

fn run(shutdown: Shutdown) -> anyhow::Result<()> {
    let args = RosArgs::parse(std::env::args().skip(1), NODE)?;
    init_logging(args.log_level);
    let names = args.name_context(NODE)?;
    let params = Params::from_ros_args(&args, &NodeName::from(&names))?;
    let opts = options(&args, &params)?;
    let mut source = match &opts.trace {
        Some((file, looped)) => {
            let mut trace = Trace::load(file)?;
            if *looped {
                trace = trace.looped(opts.period);
            }
            log::info!(
                "playing trace {} ({} steps)",
                file.display(),
                trace.steps.len()
            );
            Source::Trace {
                trace,
                start: Instant::now(),
            }
        }
        None => {
            let m = Monitor::new(opts.settings.clone())?;
            match m.cgroup() {
                Some(cg) => log::info!("cgroup v2: {}", cg.dir.display()),
                None => log::info!("no cgroup v2 limits in force"),
            }
            match m.cpu_set() {
                Some(c) => log::info!(
                    "counting CPUs {c:?}: the CPUs perception may run on (the cpus parameter, or this process's affinity)"
                ),
                None => log::info!("counting every online CPU"),
            }
            Source::Live(Box::new(m))
        }
    };
    let mut publisher = BudgetPublisher::new(names, &opts.topic)?;
    let mut last: Option<(Budget, Instant)> = None;
    let mut failures = 0u64;
    while !shutdown.is_requested() {
        match source.budget() {
            Ok(Some(b)) => {
                let due = match &last {
                    None => true,
                    Some((prev, at)) => {
                        at.elapsed() >= opts.period || opts.rule.significant(prev, &b)
                    }
                };
                if due {
                    let msg = to_msg(&b);
                    if opts.print {
                        println!("{}", serde_json::to_string(&msg).unwrap_or_default());
                    }
                    log::debug!("budget {b:?}");
                    publisher.publish(&msg);
                    last = Some((b, Instant::now()));
                }
            }
            Ok(None) => {}
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    log::warn!("reading the machine failed ({failures} times so far): {e:#}");
                }
            }
        }
        shutdown.wait_timeout(source.next_wait(opts.sample_period));
    }
    publisher.close();
    Ok(())
}

/// The budget topic on the transport this binary was built with ([`nestdnn::transport::RosNode`]).
#[cfg(any(feature = "dds", feature = "r2r"))]
struct BudgetPublisher {
    node: nestdnn::transport::DefaultNode,
    publisher: Box<dyn nestdnn::transport::Publish<ResourceBudget>>,
}

#[cfg(any(feature = "dds", feature = "r2r"))]
impl BudgetPublisher {
    fn new(names: NameContext, topic: &str) -> anyhow::Result<Self> {
        use nestdnn::transport::RosNode;
        let mut node = nestdnn::transport::open(names)?;
        let publisher = RosNode::publisher::<ResourceBudget>(&mut node, topic, BUDGET.qos)?;
        node.start()?;
        log::info!(
            "publishing budgets on {} over {}",
            node.names().topic(topic)?,
            node.middleware()
        );
        Ok(BudgetPublisher { node, publisher })
    }

    fn publish(&mut self, msg: &ResourceBudget) {
        self.publisher.publish(msg.clone());
    }

    fn close(self) {
        use nestdnn::transport::RosNode;
        drop(self.publisher);
        self.node.close(Duration::from_millis(500));
    }
}

#[cfg(not(any(feature = "dds", feature = "r2r")))]
struct BudgetPublisher;

#[cfg(not(any(feature = "dds", feature = "r2r")))]
impl BudgetPublisher {
    fn new(_: NameContext, _: &str) -> anyhow::Result<Self> {
        bail!("built without a ROS transport: enable the `dds` or `r2r` cargo feature")
    }
    fn publish(&mut self, _: &ResourceBudget) {}
    fn close(self) {}
}

fn main() -> ExitCode {
    main_with(NODE, run)
}
