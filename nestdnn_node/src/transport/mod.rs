//! ROS transports: the thin adapters between ROS 2 middleware and the ROS-free core.
//!
//! - `dds` (feature `dds`, default): ROS 2 over DDS with the pure-Rust ros2-client / RustDDS
//!   stack; no ROS installation needed.
//! - `r2r` (feature `r2r`): ROS 2 over rcl via r2r, raw publish/subscribe with this crate's
//!   CDR types (needs a sourced ROS 2 to link).
//!
//! Both implement [`RosNode`], the small surface the node adapter ([`crate::node::ros`]) and
//! the resource monitor are written against once: publishers ([`Publish`]) and subscriptions
//! (callbacks) on topic names resolved in the node's [`crate::rosargs::NameContext`], with the
//! QoS profiles of [`crate::interface`] and the [`crate::msgs::RosMessage`] types.

#[cfg(feature = "dds")]
pub mod dds;
#[cfg(feature = "r2r")]
pub mod r2r;

use std::time::Duration;

use crate::interface::Qos;
use crate::msgs::{MsgError, RosMessage};
use crate::rosargs::{NameContext, RosArgsError};

/// Errors of the transport boundary.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The middleware refused to create a participant, node, topic, reader or writer.
    #[error("cannot create {what}: {detail}")]
    Create {
        /// What was being created (with its topic name).
        what: String,
        /// The middleware's message.
        detail: String,
    },
    /// A topic or node name is invalid.
    #[error(transparent)]
    Name(#[from] RosArgsError),
    /// A type name is not `pkg/msg/Type`.
    #[error("type name {0:?} is not pkg/msg/Type")]
    TypeName(String),
    /// A received sample could not be decoded.
    #[error("{topic}: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// What was wrong with the bytes.
        source: MsgError,
    },
    /// The middleware reported a read error.
    #[error("{topic}: read failed: {detail}")]
    Read {
        /// The topic.
        topic: String,
        /// The middleware's message.
        detail: String,
    },
}

/// Publishes messages of one type on one topic; never blocks the caller (a message that
/// cannot be queued or sent is counted by the transport and dropped).
pub trait Publish<M>: Send + Sync {
    /// Publishes `msg`.
    fn publish(&self, msg: M);
}

/// What a subscription callback receives: a decoded message, or why a sample was unusable.
pub type OnMessage<M> = Box<dyn FnMut(Result<M, TransportError>) + Send>;

/// Called with the number of samples lost before reaching the subscription (publisher
/// sequence gaps), where the middleware can tell.
pub type OnLost = Box<dyn FnMut(u64) + Send>;

/// The kind of a subscription, for the middleware's buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Camera images: a small sample cache (a few frames, not 64 large images) and, where
    /// the middleware can tell, lost samples reported.
    Camera,
    /// Small control messages (budgets, priorities, clock).
    Control,
}

/// One ROS 2 node on some middleware: what the node adapter and the resource monitor need.
/// [`dds::DdsNode`] (pure-Rust DDS) and `r2r::R2rNode` (rcl) implement it.
pub trait RosNode {
    /// The naming context (node name, namespace, remaps).
    fn names(&self) -> &NameContext;

    /// The middleware's name for logs (`DDS`, `rcl`).
    fn middleware(&self) -> &'static str;

    /// Creates a publisher on `topic` (resolved and remapped in this node's context).
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when the middleware refuses.
    fn publisher<M>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError>
    where
        M: RosMessage + std::fmt::Debug + Send + Sync + 'static;

    /// Subscribes to `topic`; `on_message` runs on the middleware's thread for every sample
    /// and must be quick. `on_lost`, if given, hears of samples lost before the callback.
    /// Returns the fully-resolved name.
    ///
    /// # Errors
    /// [`TransportError`] for an invalid name or when the middleware refuses.
    fn subscribe<M>(
        &mut self,
        topic: &str,
        qos: Qos,
        stream: Stream,
        on_message: OnMessage<M>,
        on_lost: Option<OnLost>,
    ) -> Result<String, TransportError>
    where
        M: RosMessage + Send + Sync + 'static;

    /// Starts delivering messages (after every subscription is registered).
    ///
    /// # Errors
    /// [`TransportError::Create`] when the middleware's thread cannot start.
    fn start(&mut self) -> Result<(), TransportError>;

    /// Sends what is queued (waiting up to `grace`), then closes the node.
    fn close(self, grace: Duration);
}

/// The middleware this build uses: r2r when the `r2r` feature is on, else pure-Rust DDS.
#[cfg(feature = "r2r")]
pub type DefaultNode = r2r::R2rNode;
/// The middleware this build uses: r2r when the `r2r` feature is on, else pure-Rust DDS.
#[cfg(all(feature = "dds", not(feature = "r2r")))]
pub type DefaultNode = dds::DdsNode;

/// Opens the node `names` on this build's middleware (the DDS domain from `ROS_DOMAIN_ID`).
///
/// # Errors
/// [`TransportError`] when the middleware refuses, or for a bad `ROS_DOMAIN_ID`.
#[cfg(any(feature = "dds", feature = "r2r"))]
pub fn open(names: NameContext) -> Result<DefaultNode, TransportError> {
    #[cfg(feature = "r2r")]
    return r2r::R2rNode::new(names);
    #[cfg(all(feature = "dds", not(feature = "r2r")))]
    {
        let settings = dds::DdsSettings {
            domain_id: crate::rosargs::domain_id_from_env()?,
            ..dds::DdsSettings::default()
        };
        dds::DdsNode::new(names, settings)
    }
}

/// Splits `pkg/msg/Type` into `(pkg, Type)`.
///
/// # Errors
/// [`TransportError::TypeName`].
pub fn split_type_name(full: &str) -> Result<(&str, &str), TransportError> {
    let mut it = full.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(p), Some("msg"), Some(t), None) if !p.is_empty() && !t.is_empty() => Ok((p, t)),
        _ => Err(TransportError::TypeName(full.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_names_and_type_names() {
        assert_eq!(
            split_type_name("sensor_msgs/msg/Image").unwrap(),
            ("sensor_msgs", "Image")
        );
        assert!(split_type_name("sensor_msgs/Image").is_err());
        assert!(split_type_name("a/msg/b/c").is_err());
    }
}
