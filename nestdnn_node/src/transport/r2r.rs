//! ROS 2 over rcl with r2r (feature `r2r`; needs a sourced ROS 2 with `vision_msgs` and
//! `nestdnn_msgs` to build and run).
//!
//! Same shape as [`super::dds`]: raw CDR subscribe/publish with this crate's message types
//! ([`crate::msgs::RosMessage::from_cdr`] / [`crate::msgs::RosMessage::to_cdr`]), so r2r's
//! generated types are never needed, and decode errors are reported per sample. rcl spins on
//! a dedicated thread (`spin_once`), subscription streams are drained on a local executor on
//! the same thread.
//!
//! CI type-checks this without ROS: `cargo check -p nestdnn_node --features r2r,r2r/doc-only`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::task::LocalSpawnExt;
use futures::StreamExt;

use super::TransportError;
use crate::interface::{Durability, Qos, Reliability};
use crate::msgs::RosMessage;
use crate::rosargs::NameContext;

fn create_err(what: impl Into<String>, e: impl std::fmt::Display) -> TransportError {
    TransportError::Create {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// r2r QoS for a [`Qos`].
pub fn to_profile(q: Qos) -> r2r::QosProfile {
    let p = r2r::QosProfile::default().keep_last(q.depth.max(1) as usize);
    let p = match q.reliability {
        Reliability::BestEffort => p.best_effort(),
        Reliability::Reliable => p.reliable(),
    };
    match q.durability {
        Durability::Volatile => p.volatile(),
        Durability::TransientLocal => p.transient_local(),
    }
}

/// Counters of one publisher.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Messages handed to rcl.
    pub sent: AtomicU64,
    /// Messages that failed to encode or that rcl refused.
    pub failed: AtomicU64,
}

/// A publisher of one topic; encodes with this crate's CDR serde and calls `publish_raw`.
pub struct R2rPublisher<M> {
    inner: r2r::PublisherUntyped,
    topic: String,
    buf: Vec<u8>,
    counters: Arc<PublishCounters>,
    _m: std::marker::PhantomData<fn(M)>,
}

impl<M: RosMessage> R2rPublisher<M> {
    /// Encodes and publishes `msg`; returns `false` (and counts) on failure.
    pub fn publish(&mut self, msg: &M) -> bool {
        let ok = msg.write_cdr(&mut self.buf).is_ok() && self.inner.publish_raw(&self.buf).is_ok();
        let c = if ok {
            &self.counters.sent
        } else {
            &self.counters.failed
        };
        c.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// The fully-resolved topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This publisher's counters.
    pub fn counters(&self) -> &PublishCounters {
        &self.counters
    }
}

type Setup = Box<
    dyn FnOnce(&mut r2r::Node, &futures::executor::LocalSpawner) -> Result<(), TransportError>
        + Send,
>;

/// One ROS node on rcl. Subscriptions must be registered before [`R2rNode::start`]; publishers
/// can be created any time from the node handle returned by [`R2rNode::node`].
pub struct R2rNode {
    names: NameContext,
    node: Arc<std::sync::Mutex<r2r::Node>>,
    setups: Vec<Setup>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl R2rNode {
    /// Creates the rcl context and node (`names.node` in `names.namespace`).
    ///
    /// # Errors
    /// [`TransportError::Create`] when rcl refuses.
    pub fn new(names: NameContext) -> Result<R2rNode, TransportError> {
        let ctx = r2r::Context::create().map_err(|e| create_err("rcl context", e))?;
        let node = r2r::Node::create(ctx, &names.node, &names.namespace)
            .map_err(|e| create_err("rcl node", e))?;
        Ok(R2rNode {
            names,
            node: Arc::new(std::sync::Mutex::new(node)),
            setups: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// The naming context.
    pub fn names(&self) -> &NameContext {
        &self.names
    }

    /// Registers a raw subscription; `on_message` gets each decoded sample or its decode
    /// error, on the spin thread.
    ///
    /// # Errors
    /// [`TransportError::Name`] for an invalid name.
    pub fn subscribe<M, F>(
        &mut self,
        name: &str,
        qos: Qos,
        mut on_message: F,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + 'static,
        F: FnMut(Result<M, TransportError>) + Send + 'static,
    {
        let full = self.names.topic(name)?;
        let topic = full.clone();
        self.setups.push(Box::new(move |node, spawner| {
            let mut stream = node
                .subscribe_raw(&topic, M::TYPE_NAME, to_profile(qos))
                .map_err(|e| create_err(format!("subscription {topic}"), e))?;
            let t = topic.clone();
            spawner
                .spawn_local(async move {
                    while let Some(bytes) = stream.next().await {
                        on_message(
                            M::from_cdr(&bytes).map_err(|source| TransportError::Decode {
                                topic: t.clone(),
                                source,
                            }),
                        );
                    }
                })
                .map_err(|e| create_err(format!("subscription task {topic}"), e))
        }));
        Ok(full)
    }

    /// Creates a raw publisher.
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when rcl refuses.
    pub fn publisher<M: RosMessage>(
        &mut self,
        name: &str,
        qos: Qos,
    ) -> Result<R2rPublisher<M>, TransportError> {
        let full = self.names.topic(name)?;
        let mut node = self
            .node
            .lock()
            .map_err(|_| create_err("publisher", "node lock poisoned"))?;
        let inner = node
            .create_publisher_untyped(&full, M::TYPE_NAME, to_profile(qos))
            .map_err(|e| create_err(format!("publisher {full}"), e))?;
        Ok(R2rPublisher {
            inner,
            topic: full,
            buf: Vec::new(),
            counters: Arc::default(),
            _m: std::marker::PhantomData,
        })
    }

    /// Starts the spin thread (creates the registered subscriptions there).
    ///
    /// # Errors
    /// [`TransportError::Create`] when the thread cannot start.
    pub fn start(&mut self) -> Result<(), TransportError> {
        let setups = std::mem::take(&mut self.setups);
        let node = self.node.clone();
        let stop = self.stop.clone();
        let t = std::thread::Builder::new()
            .name("r2r-spin".into())
            .spawn(move || {
                let mut pool = futures::executor::LocalPool::new();
                let spawner = pool.spawner();
                if let Ok(mut n) = node.lock() {
                    for s in setups {
                        if let Err(e) = s(&mut n, &spawner) {
                            log::error!("{e}");
                        }
                    }
                }
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(mut n) = node.lock() {
                        n.spin_once(Duration::from_millis(20));
                    }
                    pool.run_until_stalled();
                }
            })
            .map_err(|e| create_err("spin thread", e))?;
        self.thread = Some(t);
        Ok(())
    }

    /// Stops spinning and drops the node.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<M: RosMessage + Send> super::Publish<M> for parking_lot::Mutex<R2rPublisher<M>> {
    fn publish(&self, msg: M) {
        self.lock().publish(&msg);
    }
}

impl super::RosNode for R2rNode {
    fn names(&self) -> &NameContext {
        R2rNode::names(self)
    }

    fn middleware(&self) -> &'static str {
        "rcl"
    }

    fn publisher<M>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn super::Publish<M>>, TransportError>
    where
        M: RosMessage + std::fmt::Debug + Send + Sync + 'static,
    {
        let p = R2rNode::publisher::<M>(self, topic, qos)?;
        Ok(Box::new(parking_lot::Mutex::new(p)))
    }

    /// rcl reports no sequence gaps here: `on_lost` is never called.
    fn subscribe<M>(
        &mut self,
        topic: &str,
        qos: Qos,
        _stream: super::Stream,
        on_message: super::OnMessage<M>,
        _on_lost: Option<super::OnLost>,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + Send + Sync + 'static,
    {
        R2rNode::subscribe(self, topic, qos, on_message)
    }

    fn start(&mut self) -> Result<(), TransportError> {
        R2rNode::start(self)
    }

    fn close(self, _grace: Duration) {
        self.shutdown();
    }
}
