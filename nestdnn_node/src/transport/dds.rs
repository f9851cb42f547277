//! ROS 2 over DDS with ros2-client / RustDDS (no ROS installation needed).
//!
//! One [`DdsNode`] is one ROS node: a DDS participant on the domain of `ROS_DOMAIN_ID`, a
//! ros2-client node named and namespaced from the command line, and a small executor thread
//! that spins the node, drains subscriptions into callbacks, and publishes queued messages.
//! The tuning described in `docs/ros2.md` (section 8) is applied here:
//!
//! - the domain id is passed explicitly (ros2-client ignores `ROS_DOMAIN_ID`);
//! - subscriptions may cap the RustDDS sample cache ([`SubscribeOptions::cache_limit`]): the
//!   topic is created through the participant with `ResourceLimits` before the reader, since
//!   the default keeps 64 samples per topic (64 camera frames);
//! - publishing never blocks the caller: [`DdsPublisher::publish`] queues (bounded) and the
//!   executor awaits `async_publish`; a full queue drops and counts.
//!
//! Topic names given to this module are fully resolved ROS names (`/a/b`); the DDS topic is
//! `rt/a/b` and the DDS type `pkg::msg::dds_::Type_`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ros2_client::dds::rustdds::{
    self, policy, DomainParticipantBuilder, QosPolicies, QosPolicyBuilder, TopicKind,
};
use ros2_client::{
    Context, MessageTypeName, Name, Node, NodeName, NodeOptions, Publisher, QosProfile,
};
use smol::channel::{Receiver, Sender, TrySendError};

use super::{split_type_name, TransportError};
use crate::interface::{Durability, Qos, Reliability};
use crate::msgs::RosMessage;
use crate::rosargs::{split_topic, NameContext};

fn create_err(what: impl Into<String>, e: impl std::fmt::Display) -> TransportError {
    TransportError::Create {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// ros2-client QoS for a [`Qos`]. Reliable writers wait at most 20 ms for window space
/// (they run on the executor; a stalled reader must not stall everything).
pub fn to_profile(q: Qos) -> QosProfile {
    use ros2_client::qos::{Durability as D, History, Reliability as R, WhenFull};
    let base = QosProfile::subscription_default().history(History::KeepLast {
        depth: q.depth.max(1) as usize,
    });
    let base = match q.reliability {
        Reliability::BestEffort => base.reliability(R::BestEffort),
        Reliability::Reliable => base.reliability(R::Reliable {
            when_full: WhenFull::Wait(Duration::from_millis(20)),
        }),
    };
    base.durability(match q.durability {
        Durability::Volatile => D::Volatile,
        Durability::TransientLocal => D::TransientLocal,
    })
}

/// Options of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// QoS (cameras: [`Qos::SENSOR_DATA`]; a reliable reader never matches a best-effort
    /// camera, and DDS says nothing about it).
    pub qos: Qos,
    /// Cap on the RustDDS sample cache of this topic, in samples (`None`: RustDDS's 64).
    /// Use a small number for image topics.
    pub cache_limit: Option<u32>,
}

impl SubscribeOptions {
    /// Camera defaults: the given QoS and a cache of `max(depth, 4)` samples.
    pub fn camera(qos: Qos) -> SubscribeOptions {
        SubscribeOptions {
            qos,
            cache_limit: Some(qos.depth.max(4)),
        }
    }

    /// Small-message defaults: the given QoS, the default cache.
    pub fn small(qos: Qos) -> SubscribeOptions {
        SubscribeOptions {
            qos,
            cache_limit: None,
        }
    }
}

/// Per-publisher sequence numbers of one subscription: how many samples each new one skips.
#[derive(Debug, Default)]
pub struct SequenceGaps {
    last: std::collections::HashMap<ros2_client::Gid, i64>,
}

impl SequenceGaps {
    /// Samples skipped before sample `seq` of publisher `gid` (0 for its first sample, an
    /// old or repeated one).
    pub fn next(&mut self, gid: ros2_client::Gid, seq: i64) -> u64 {
        match self.last.insert(gid, seq) {
            Some(prev) if seq > prev => (seq - prev - 1) as u64,
            Some(prev) => {
                // Reordered or repeated: keep the highest seen.
                self.last.insert(gid, prev);
                0
            }
            None => 0,
        }
    }
}

/// Counters of one publisher.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Messages handed to DDS.
    pub sent: AtomicU64,
    /// Messages dropped because the queue was full.
    pub dropped_full: AtomicU64,
    /// Messages DDS refused (timeouts of reliable writers, encoding errors).
    pub failed: AtomicU64,
}

/// A non-blocking publisher handle (cheap to clone). Dropping every handle of a topic lets the
/// executor finish sending what is queued, then closes the writer.
pub struct DdsPublisher<M> {
    tx: Sender<M>,
    topic: Arc<str>,
    counters: Arc<PublishCounters>,
}

impl<M> Clone for DdsPublisher<M> {
    fn clone(&self) -> Self {
        DdsPublisher {
            tx: self.tx.clone(),
            topic: self.topic.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<M> DdsPublisher<M> {
    /// Queues `msg` for sending; returns `false` (and counts) if the queue is full or the node
    /// is shutting down.
    pub fn publish(&self, msg: M) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The fully-resolved ROS topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This publisher's counters.
    pub fn counters(&self) -> &PublishCounters {
        &self.counters
    }
}

/// Settings of a [`DdsNode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdsSettings {
    /// DDS domain (from `ROS_DOMAIN_ID`).
    pub domain_id: u16,
    /// Requested UDP receive buffer per socket, bytes (the kernel caps it at
    /// `net.core.rmem_max`; large images need megabytes).
    pub socket_receive_buffer: usize,
    /// Depth of each publisher's queue, messages.
    pub publish_queue: usize,
}

impl Default for DdsSettings {
    fn default() -> Self {
        DdsSettings {
            domain_id: 0,
            socket_receive_buffer: 8 << 20,
            publish_queue: 64,
        }
    }
}

/// One ROS 2 node on DDS (see the module docs).
pub struct DdsNode {
    names: NameContext,
    settings: DdsSettings,
    executor: Arc<smol::Executor<'static>>,
    stop_tx: Sender<()>,
    thread: Option<JoinHandle<()>>,
    /// Publisher tasks still draining their queue.
    live_publishers: Arc<AtomicUsize>,
    /// Closes each publisher's queue (queued messages are still sent).
    closers: Vec<Box<dyn Fn() + Send>>,
    node: Option<Node>,
    context: Option<Context>,
}

impl DdsNode {
    /// Creates the participant and the node `names.node` in `names.namespace`, and starts
    /// the executor thread.
    ///
    /// # Errors
    /// [`TransportError::Create`] when the participant or node cannot be created (e.g. no
    /// usable network interface or UDP ports).
    pub fn new(names: NameContext, settings: DdsSettings) -> Result<DdsNode, TransportError> {
        let participant = DomainParticipantBuilder::new(settings.domain_id)
            .socket_receive_buffer_size(settings.socket_receive_buffer)
            .build()
            .map_err(|e| create_err("DDS participant", e))?;
        let context = Context::from_domain_participant(participant)
            .map_err(|e| create_err("ros2-client context", e))?;
        let node_name = NodeName::new(&names.namespace, &names.node).map_err(|e| {
            create_err(
                format!("node {}", names.fully_qualified_node()),
                format!("{e:?}"),
            )
        })?;
        let mut node = context
            .new_node(node_name, NodeOptions::new().enable_rosout(true))
            .map_err(|e| create_err("ros2-client node", format!("{e:?}")))?;
        let executor = Arc::new(smol::Executor::new());
        let spinner = node.spinner().map_err(|e| create_err("node spinner", e))?;
        executor
            .spawn(async move {
                if let Err(e) = spinner.spin().await {
                    log::warn!("DDS node spinner stopped: {e}");
                }
            })
            .detach();
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let ex = executor.clone();
        let thread = std::thread::Builder::new()
            .name("dds-executor".into())
            .spawn(move || {
                smol::block_on(ex.run(async move {
                    let _ = stop_rx.recv().await;
                }))
            })
            .map_err(|e| create_err("DDS executor thread", e))?;
        log::info!(
            "DDS node {} on domain {}",
            names.fully_qualified_node(),
            settings.domain_id
        );
        Ok(DdsNode {
            names,
            settings,
            executor,
            stop_tx,
            thread: Some(thread),
            live_publishers: Arc::new(AtomicUsize::new(0)),
            closers: Vec::new(),
            node: Some(node),
            context: Some(context),
        })
    }

    /// The naming context (node name, namespace, remaps).
    pub fn names(&self) -> &NameContext {
        &self.names
    }

    fn parts(&mut self) -> Result<(&mut Node, &Context), TransportError> {
        match (self.node.as_mut(), self.context.as_ref()) {
            (Some(n), Some(c)) => Ok((n, c)),
            _ => Err(create_err("entity", "node is shut down")),
        }
    }

    fn topic_of<M: RosMessage>(
        &mut self,
        name: &str,
        qos: Qos,
        cache_limit: Option<u32>,
    ) -> Result<(String, rustdds::Topic), TransportError> {
        let full = self.names.topic(name)?;
        let (pkg, ty) = split_type_name(M::TYPE_NAME)?;
        let type_name = MessageTypeName::new(pkg, ty);
        let profile = to_profile(qos);
        let (node, context) = self.parts()?;
        let topic = match cache_limit {
            Some(k) => {
                // RustDDS keeps ResourceLimits.max_samples per topic (default 64): set it on
                // the topic before any reader exists (limits only ever grow).
                let k = k.clamp(1, i32::MAX as u32) as i32;
                let limits = QosPolicyBuilder::new()
                    .resource_limits(policy::ResourceLimits {
                        max_samples: k,
                        max_instances: 1,
                        max_samples_per_instance: k,
                    })
                    .build();
                let dds_qos: QosPolicies = (&profile).into();
                context
                    .domain_participant()
                    .create_topic(
                        format!("rt{full}"),
                        type_name.dds_msg_type(),
                        &dds_qos.modify_by(&limits),
                        TopicKind::NoKey,
                    )
                    .map_err(|e| create_err(format!("topic {full}"), e))?
            }
            None => {
                let (ns, base) = split_topic(&full);
                let ros_name = Name::new(ns, base)
                    .map_err(|e| create_err(format!("topic {full}"), format!("{e:?}")))?;
                node.create_topic(&ros_name, type_name, &profile)
                    .map_err(|e| create_err(format!("topic {full}"), e))?
            }
        };
        Ok((full, topic))
    }

    /// Subscribes to `name` (resolved and remapped in this node's context). `on_message` runs
    /// on the executor thread for every sample, with the decoded message or the decode error;
    /// it must be quick (hand work to another thread).
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when the reader cannot be created.
    pub fn subscribe<M, F>(
        &mut self,
        name: &str,
        options: SubscribeOptions,
        on_message: F,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + Send + Sync + 'static,
        F: FnMut(Result<M, TransportError>) + Send + 'static,
    {
        self.subscribe_counting_gaps(name, options, on_message, |_| {})
    }

    /// Like [`DdsNode::subscribe`], and counts samples lost before the callback: per
    /// publisher, a sequence number that skips ahead means samples that never reached this
    /// reader (dropped by the network or overwritten in the reader's sample cache while the
    /// executor was busy). `on_gap(n)` runs with the number skipped, before the sample that
    /// revealed them. A publisher's first sample counts nothing (what it sent earlier was not
    /// for this subscription).
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when the reader cannot be created.
    pub fn subscribe_counting_gaps<M, F, G>(
        &mut self,
        name: &str,
        options: SubscribeOptions,
        mut on_message: F,
        mut on_gap: G,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + Send + Sync + 'static,
        F: FnMut(Result<M, TransportError>) + Send + 'static,
        G: FnMut(u64) + Send + 'static,
    {
        let (full, topic) = self.topic_of::<M>(name, options.qos, options.cache_limit)?;
        let (node, _) = self.parts()?;
        let sub = node
            .create_subscription::<M>(&topic, Some(to_profile(options.qos)))
            .map_err(|e| create_err(format!("subscription {full}"), e))?;
        let topic_name = full.clone();
        self.executor
            .spawn(async move {
                let stream = sub.async_stream();
                futures::pin_mut!(stream);
                let mut gaps = SequenceGaps::default();
                while let Some(r) = stream.next().await {
                    let r = match r {
                        Ok((m, info)) => {
                            let n = gaps.next(info.publisher_gid(), info.sequence_number());
                            if n > 0 {
                                on_gap(n);
                            }
                            Ok(m)
                        }
                        Err(e) => Err(TransportError::Read {
                            topic: topic_name.clone(),
                            detail: format!("{e:?}"),
                        }),
                    };
                    on_message(r);
                }
            })
            .detach();
        log::debug!("subscribed to {full} ({})", M::TYPE_NAME);
        Ok(full)
    }

    /// Creates a publisher on `name` (resolved and remapped in this node's context).
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when the writer cannot be created.
    pub fn publisher<M>(&mut self, name: &str, qos: Qos) -> Result<DdsPublisher<M>, TransportError>
    where
        M: RosMessage + std::fmt::Debug + Send + Sync + 'static,
    {
        let (full, topic) = self.topic_of::<M>(name, qos, None)?;
        let (node, _) = self.parts()?;
        let writer: Publisher<M> = node
            .create_publisher(&topic, Some(to_profile(qos)))
            .map_err(|e| create_err(format!("publisher {full}"), e))?;
        let (tx, rx): (Sender<M>, Receiver<M>) =
            smol::channel::bounded(self.settings.publish_queue.max(1));
        let counters = Arc::new(PublishCounters::default());
        let c = counters.clone();
        let live = self.live_publishers.clone();
        live.fetch_add(1, Ordering::SeqCst);
        let warned = Arc::new(AtomicBool::new(false));
        let topic_name = full.clone();
        self.executor
            .spawn(async move {
                while let Ok(msg) = rx.recv().await {
                    match writer.async_publish(msg).await {
                        Ok(()) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.failed.fetch_add(1, Ordering::Relaxed);
                            if !warned.swap(true, Ordering::Relaxed) {
                                log::warn!("publish on {topic_name} failed (counted; further failures not logged): {e:?}");
                            }
                        }
                    }
                }
                // Keep the writer alive briefly so reliable repairs of the last samples
                // can still be answered.
                smol::Timer::after(Duration::from_millis(50)).await;
                drop(writer);
                live.fetch_sub(1, Ordering::SeqCst);
            })
            .detach();
        let closer = tx.clone();
        self.closers.push(Box::new(move || {
            closer.close();
        }));
        log::debug!("publishing on {full} ({})", M::TYPE_NAME);
        Ok(DdsPublisher {
            tx,
            topic: full.into(),
            counters,
        })
    }

    /// Shuts the node down: closes every publisher queue and waits up to `grace` for what was
    /// queued to be sent (publishing afterwards fails and is counted), stops the executor
    /// (readers and the spinner), then closes the node and the participant (which tells peers
    /// we left).
    pub fn shutdown(mut self, grace: Duration) {
        self.shutdown_inner(grace);
    }

    fn shutdown_inner(&mut self, grace: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        for close in self.closers.drain(..) {
            close();
        }
        let deadline = Instant::now() + grace;
        while self.live_publishers.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.live_publishers.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("{left} publisher(s) still had queued messages at shutdown");
        }
        // Order matters: the node first (its drop tells the still-running spinner to stop),
        // then the executor with the reader and writer tasks, then the context, whose
        // participant tells peers we left.
        self.node.take();
        let _ = self.stop_tx.try_send(());
        if thread.join().is_err() {
            log::error!("DDS executor thread panicked");
        }
        self.executor = Arc::new(smol::Executor::new());
        self.context.take();
        log::info!("DDS node {} closed", self.names.fully_qualified_node());
    }
}

impl Drop for DdsNode {
    fn drop(&mut self) {
        self.shutdown_inner(Duration::from_millis(200));
    }
}

impl<M: Send> super::Publish<M> for DdsPublisher<M> {
    fn publish(&self, msg: M) {
        DdsPublisher::publish(self, msg);
    }
}

impl super::RosNode for DdsNode {
    fn names(&self) -> &NameContext {
        DdsNode::names(self)
    }

    fn middleware(&self) -> &'static str {
        "DDS"
    }

    fn publisher<M>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn super::Publish<M>>, TransportError>
    where
        M: RosMessage + std::fmt::Debug + Send + Sync + 'static,
    {
        Ok(Box::new(DdsNode::publisher::<M>(self, topic, qos)?))
    }

    fn subscribe<M>(
        &mut self,
        topic: &str,
        qos: Qos,
        stream: super::Stream,
        on_message: super::OnMessage<M>,
        on_lost: Option<super::OnLost>,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + Send + Sync + 'static,
    {
        let options = match stream {
            super::Stream::Camera => SubscribeOptions::camera(qos),
            super::Stream::Control => SubscribeOptions::small(qos),
        };
        let mut on_lost = on_lost;
        self.subscribe_counting_gaps(topic, options, on_message, move |n| {
            if let Some(f) = on_lost.as_mut() {
                f(n);
            }
        })
    }

    fn start(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn close(self, grace: Duration) {
        self.shutdown(grace);
    }
}

#[cfg(test)]
mod tests {
    use super::SequenceGaps;

    #[test]
    fn sequence_gaps_per_publisher() {
        let a = ros2_client::Gid::from([1u8; 16]);
        let b = ros2_client::Gid::from([2u8; 16]);
        let mut g = SequenceGaps::default();
        assert_eq!(g.next(a, 100), 0, "first sample of a publisher");
        assert_eq!(g.next(a, 101), 0);
        assert_eq!(g.next(a, 105), 3);
        assert_eq!(g.next(b, 7), 0);
        assert_eq!(g.next(a, 103), 0, "late sample");
        assert_eq!(g.next(a, 106), 0, "the highest seen is kept");
        assert_eq!(g.next(b, 9), 1);
    }
}
