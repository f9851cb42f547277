//! The node adapter, written once over [`RosNode`]: subscribes each task's camera and the
//! control topics to [`App`], and has the node core publish on the topics of
//! [`crate::interface`] ([`TopicOutputs`]). The DDS and r2r transports both run through here.

use std::sync::Arc;
use std::time::Duration;

use super::app::{App, AppError, AppOptions, TaskSetup};
use super::frames::TopicOutputs;
use super::Shutdown;
use crate::config::{NodeConfig, Transport};
use crate::interface::{BUDGET, CLOCK, PRIORITY};
use crate::msgs::{Clock, ResourceBudget, TaskPriority};
use crate::rosargs::NameContext;
use crate::transport::{RosNode, Stream, TransportError};

/// The name to subscribe for a task's camera: the configured topic for a raw task; for a
/// compressed task `image_transport`'s subtopic of the (resolved and remapped) base topic,
/// which the subscription remaps once more, as `image_transport` does
/// ([`NameContext::image_transport_topic`]).
pub fn camera_topic(names: &NameContext, t: &TaskSetup) -> Result<String, TransportError> {
    Ok(match t.transport {
        Transport::Raw => t.topic.clone(),
        Transport::Compressed => format!("{}/compressed", names.topic(&t.image_topic)?),
    })
}

/// Subscribes the node core to its inputs: every task's camera (raw or compressed), the
/// budget and priority topics, and `/clock` with `use_sim_time`.
fn subscribe<N: RosNode>(node: &mut N, app: &Arc<App>) -> Result<(), TransportError> {
    if app.uses_sim_time() {
        let on = app.callback("clock", |a, m: Clock| a.on_clock(&m));
        node.subscribe(CLOCK.name, CLOCK.qos, Stream::Control, on, None)?;
    }
    for (i, t) in app.tasks().into_iter().enumerate() {
        let topic = camera_topic(node.names(), &t)?;
        let lost = {
            let a = app.clone();
            Some(Box::new(move |n| a.on_frames_lost(i, n)) as Box<dyn FnMut(u64) + Send>)
        };
        let full = match t.transport {
            Transport::Raw => {
                node.subscribe(&topic, t.qos, Stream::Camera, app.image_callback(i), lost)?
            }
            Transport::Compressed => node.subscribe(
                &topic,
                t.qos,
                Stream::Camera,
                app.compressed_callback(i),
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
    let on = app.callback("budget", |a, m: ResourceBudget| a.on_budget(&m));
    node.subscribe(BUDGET.name, BUDGET.qos, Stream::Control, on, None)?;
    let on = app.callback("priority", |a, m: TaskPriority| a.on_priority(&m));
    node.subscribe(PRIORITY.name, PRIORITY.qos, Stream::Control, on, None)?;
    Ok(())
}

/// Runs the perception node on `node` until `shutdown`: creates the publishers, starts the
/// node core, subscribes it, serves, then finishes the frames in hand (their results are
/// published), flushes the publishers and closes the node.
///
/// # Errors
/// [`AppError`] when the core cannot start (a task's model, profile or input) or a topic
/// cannot be created.
pub fn serve<N: RosNode>(
    mut node: N,
    cfg: &NodeConfig,
    opts: AppOptions,
    shutdown: &Shutdown,
) -> Result<(), AppError> {
    let outputs = Arc::new(TopicOutputs::create(&mut node, cfg)?);
    let app = Arc::new(App::start(cfg, opts, outputs)?);
    subscribe(&mut node, &app)?;
    node.start()?;
    log::info!(
        "{} serving {} task(s) over {}",
        node.names().fully_qualified_node(),
        cfg.tasks.len(),
        node.middleware()
    );
    while !shutdown.wait_timeout(Duration::from_secs(3600)) {}
    app.shutdown();
    node.close(Duration::from_secs(1));
    Ok(())
}
