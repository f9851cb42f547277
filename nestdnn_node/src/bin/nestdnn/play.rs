//! `nestdnn play BAG [--rate R] [--loop] [--topics T...]`: publishes a bag over DDS (the
//! pure-Rust stack, no ROS installation) like `ros2 bag play`, at bag pace, each topic with
//! the QoS it was recorded with (the first recorded profile; ROS defaults where none), so the
//! live node can be tested with the same recordings as `nestdnn replay`.
//!
//! Types published: those the project has message types for (`sensor_msgs/Image`,
//! `CompressedImage`, `vision_msgs/Classification`, `nestdnn_msgs/ResourceBudget`,
//! `TaskPriority`); topics of other types are skipped (listed at the start). Undecodable
//! messages are skipped and counted; a damaged storage file ends playback with an error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nestdnn::bag::qos::{Durability as BagDurability, History, Reliability as BagReliability};
use nestdnn::bag::{BagError, BagMessage, BagReader, QosProfile};
use nestdnn::interface::{Durability, Qos, Reliability};
use nestdnn::msgs::{Classification, CompressedImage, Image, ResourceBudget, TaskPriority};
use nestdnn::node::Shutdown;
use nestdnn::rosargs::{domain_id_from_env, NameContext};
use nestdnn::transport::dds::{DdsNode, DdsPublisher, DdsSettings};

/// Arguments of `nestdnn play`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bag: a rosbag2 folder or one .mcap/.db3 file.
    bag: PathBuf,
    /// Playback rate (2 = twice as fast).
    #[arg(long, short, default_value_t = 1.0)]
    rate: f64,
    /// Start over at the end, until interrupted.
    #[arg(long = "loop", short = 'l')]
    looping: bool,
    /// Only these topics (default: every topic of a known type).
    #[arg(long, num_args = 1..)]
    topics: Vec<String>,
    /// Seconds to wait after creating the publishers before the first message (lets
    /// subscribers discover them, like `ros2 bag play --delay`).
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Node name.
    #[arg(long, default_value = "nestdnn_play")]
    node: String,
}

/// A typed publisher for one recorded topic.
enum Pub {
    Image(DdsPublisher<Image>),
    Compressed(DdsPublisher<CompressedImage>),
    Classification(DdsPublisher<Classification>),
    Budget(DdsPublisher<ResourceBudget>),
    Priority(DdsPublisher<TaskPriority>),
}

/// The recorded QoS as the transport's profile (ROS defaults where not recorded).
fn qos_of(recorded: Option<&QosProfile>) -> Qos {
    let Some(q) = recorded else {
        return Qos::RELIABLE;
    };
    let mut out = Qos::RELIABLE;
    if q.reliability == BagReliability::BestEffort {
        out.reliability = Reliability::BestEffort;
    }
    if q.durability == BagDurability::TransientLocal {
        out.durability = Durability::TransientLocal;
    }
    out.depth = match q.history {
        History::KeepLast(n) if n > 0 => n.min(1000),
        History::KeepAll => 1000,
        _ => out.depth,
    };
    out
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1000.0) {
        bail!("--rate must be in (0, 1000], got {}", args.rate);
    }
    if !(args.delay.is_finite() && (0.0..=3600.0).contains(&args.delay)) {
        bail!("--delay must be in [0, 3600] seconds, got {}", args.delay);
    }
    let shutdown = Shutdown::install().context("installing signal handlers")?;
    let bag = BagReader::open(&args.bag)?;
    let names = NameContext::new(&args.node, "/")?;
    let mut node = DdsNode::new(
        names,
        DdsSettings {
            domain_id: domain_id_from_env()?,
            ..DdsSettings::default()
        },
    )?;
    let mut pubs: HashMap<String, Pub> = HashMap::new();
    for t in bag.topics() {
        if !args.topics.is_empty() && !args.topics.iter().any(|x| *x == t.name) {
            continue;
        }
        let profiles = t.qos_profiles();
        let qos = qos_of(profiles.first());
        let p = match t.type_name.as_str() {
            "sensor_msgs/msg/Image" => Pub::Image(node.publisher(&t.name, qos)?),
            "sensor_msgs/msg/CompressedImage" => Pub::Compressed(node.publisher(&t.name, qos)?),
            "vision_msgs/msg/Classification" => Pub::Classification(node.publisher(&t.name, qos)?),
            "nestdnn_msgs/msg/ResourceBudget" => Pub::Budget(node.publisher(&t.name, qos)?),
            "nestdnn_msgs/msg/TaskPriority" => Pub::Priority(node.publisher(&t.name, qos)?),
            other => {
                eprintln!("skipping {} ({other}: no message type for it)", t.name);
                continue;
            }
        };
        eprintln!(
            "publishing {} ({}, {:?}, {:?}, depth {})",
            t.name, t.type_name, qos.reliability, qos.durability, qos.depth
        );
        pubs.insert(t.name.clone(), p);
    }
    for want in &args.topics {
        if !pubs.contains_key(want) {
            eprintln!(
                "warning: --topics {want}: not in the bag or of a type that cannot be published"
            );
        }
    }
    if pubs.is_empty() {
        bail!("{}: nothing to publish", args.bag.display());
    }
    if shutdown.wait_timeout(Duration::from_secs_f64(args.delay)) {
        node.shutdown(Duration::from_millis(200));
        return Ok(());
    }
    let mut sent = 0u64;
    let mut skipped = 0u64;
    'outer: loop {
        let start = Instant::now();
        let mut t0: Option<u64> = None;
        for item in bag.decoded()? {
            let m = match item {
                Ok(m) => m,
                Err(e @ BagError::Decode { .. }) => {
                    skipped += 1;
                    log::warn!("skipped: {e}");
                    continue;
                }
                Err(e) => {
                    node.shutdown(Duration::from_secs(1));
                    return Err(anyhow::Error::new(e).context(format!(
                        "playing {} ({sent} messages published)",
                        args.bag.display()
                    )));
                }
            };
            let Some(p) = pubs.get(&m.topic.name) else {
                continue;
            };
            let t0 = *t0.get_or_insert(m.timestamp_ns);
            let due = start
                + Duration::from_secs_f64(
                    m.timestamp_ns.saturating_sub(t0) as f64 / 1e9 / args.rate,
                );
            let now = Instant::now();
            if due > now && shutdown.wait_timeout(due - now) {
                break 'outer;
            }
            if shutdown.is_requested() {
                break 'outer;
            }
            let ok = match (p, m.msg) {
                (Pub::Image(p), BagMessage::Image(x)) => p.publish(x),
                (Pub::Compressed(p), BagMessage::CompressedImage(x)) => p.publish(x),
                (Pub::Classification(p), BagMessage::Classification(x)) => p.publish(x),
                (Pub::Budget(p), BagMessage::ResourceBudget(x)) => p.publish(x),
                (Pub::Priority(p), BagMessage::TaskPriority(x)) => p.publish(x),
                _ => false,
            };
            sent += u64::from(ok);
        }
        if !args.looping || shutdown.is_requested() {
            break;
        }
    }
    eprintln!("published {sent} messages ({skipped} undecodable skipped)");
    node.shutdown(Duration::from_secs(2));
    Ok(())
}
