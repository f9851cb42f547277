//! ROS 2 message types with CDR (de)serialisation: one set of serde types for the pure-Rust DDS
//! transport, r2r raw publish/subscribe and rosbag2 files.
//!
//! Every struct lists its fields in exact `.msg` order (CDR has no field names). Byte arrays use
//! `serde_bytes`, so `uint8[]` is one length plus one copy, not a per-element loop.
//!
//! ```
//! use nestdnn::msgs::{Header, Image, RosMessage, Time};
//! let img = Image {
//!     header: Header { stamp: Time { sec: 1, nanosec: 2 }, frame_id: "cam".into() },
//!     height: 1, width: 2, encoding: "mono8".into(), is_bigendian: 0, step: 2,
//!     data: vec![7, 9],
//! };
//! let cdr = img.to_cdr().unwrap();
//! assert_eq!(&cdr[..4], &[0, 1, 0, 0]); // CDR little-endian encapsulation
//! assert_eq!(Image::from_cdr(&cdr).unwrap(), img);
//! ```
//!
//! Decoding first checks the bytes against the message's schema ([`schema`]), so a bad buffer
//! becomes a [`MsgError`] naming the field and byte offset, and a bogus length is refused before
//! any allocation.

pub mod schema;
mod types;

use std::io::Write;

use byteorder::{BigEndian, LittleEndian};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

pub use schema::{CdrFault, Problem, Schema, SchemaError};
pub use types::*;

/// CDR little-endian encapsulation header (what ROS 2 RMWs write).
pub const CDR_LE_HEADER: [u8; 4] = [0x00, 0x01, 0x00, 0x00];
/// CDR big-endian encapsulation header (accepted on decode).
pub const CDR_BE_HEADER: [u8; 4] = [0x00, 0x00, 0x00, 0x00];

/// A message that cannot be encoded or decoded.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum MsgError {
    /// Fewer than the 4 bytes of the encapsulation header.
    #[error("{type_name}: {len} bytes is shorter than the 4-byte CDR encapsulation header")]
    TooShort {
        /// ROS type name.
        type_name: &'static str,
        /// Buffer length.
        len: usize,
    },
    /// An encapsulation other than plain CDR (XCDR2, parameter lists, ...).
    #[error(
        "{type_name}: encapsulation {b0:02x} {b1:02x} is not plain CDR \
         (expected 00 01 little-endian or 00 00 big-endian)"
    )]
    Encapsulation {
        /// ROS type name.
        type_name: &'static str,
        /// First header byte.
        b0: u8,
        /// Second header byte.
        b1: u8,
    },
    /// The bytes do not match the message layout.
    #[error("{type_name}: {fault}")]
    Malformed {
        /// ROS type name.
        type_name: &'static str,
        /// Field, offset and problem.
        fault: CdrFault,
    },
    /// serde refused a buffer the schema check accepted (should not happen; reported, not hidden).
    #[error("{type_name}: CDR decode failed: {reason}")]
    Decode {
        /// ROS type name.
        type_name: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// Encoding failed (a value CDR cannot represent, such as a sequence over 2^32 elements).
    #[error("{type_name}: CDR encode failed: {reason}")]
    Encode {
        /// ROS type name.
        type_name: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// The built-in definition text does not parse (a bug in this crate, caught by its tests).
    #[error("{type_name}: built-in message definition is invalid: {0}", type_name = .0.type_name)]
    Definition(SchemaError),
}

/// A ROS 2 message type known to this crate. Messages are plain data: `Send + Sync + 'static`,
/// so transports can move and share them across threads.
pub trait RosMessage: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Full ROS type name, e.g. `sensor_msgs/msg/Image`.
    const TYPE_NAME: &'static str;
    /// Full `ros2msg` definition as rosbag2 stores it in MCAP schemas: this type's fields, then
    /// each type it uses after a line of 80 `=` and a `MSG: pkg/Type` line.
    const DEFINITION: &'static str;

    /// The parsed [`Self::DEFINITION`] (parsed once).
    ///
    /// # Errors
    /// [`MsgError::Definition`] if the built-in text does not parse.
    fn schema() -> Result<&'static Schema, MsgError>;

    /// Encoded size estimate, used to size the output buffer.
    fn size_hint(&self) -> usize {
        256
    }

    /// Serialises to CDR with the little-endian encapsulation header `00 01 00 00`.
    ///
    /// # Errors
    /// [`MsgError::Encode`] if the value cannot be represented in CDR.
    fn to_cdr(&self) -> Result<Vec<u8>, MsgError> {
        let mut out = Vec::with_capacity(self.size_hint() + 4);
        out.extend_from_slice(&CDR_LE_HEADER);
        cdr_encoding::to_writer::<_, LittleEndian, _>(&mut out, self).map_err(|e| {
            MsgError::Encode {
                type_name: Self::TYPE_NAME,
                reason: e.to_string(),
            }
        })?;
        Ok(out)
    }

    /// Serialises to CDR into `out` (cleared first), reusing its allocation.
    ///
    /// # Errors
    /// [`MsgError::Encode`] if the value cannot be represented in CDR.
    fn write_cdr(&self, out: &mut Vec<u8>) -> Result<(), MsgError> {
        out.clear();
        out.write_all(&CDR_LE_HEADER)
            .map_err(|e| MsgError::Encode {
                type_name: Self::TYPE_NAME,
                reason: e.to_string(),
            })?;
        cdr_encoding::to_writer::<_, LittleEndian, _>(&mut *out, self).map_err(|e| {
            MsgError::Encode {
                type_name: Self::TYPE_NAME,
                reason: e.to_string(),
            }
        })
    }

    /// Deserialises CDR with its 4-byte encapsulation header (little- or big-endian). Bytes
    /// after the message (alignment padding some writers add) are ignored.
    ///
    /// # Errors
    /// [`MsgError::TooShort`], [`MsgError::Encapsulation`], or [`MsgError::Malformed`] naming
    /// the field and byte offset of the first problem (buffer too short, a length larger than
    /// the rest of the buffer, a string without NUL or not UTF-8, a bool that is not 0/1).
    fn from_cdr(bytes: &[u8]) -> Result<Self, MsgError> {
        let le = check_encapsulation(Self::TYPE_NAME, bytes)?;
        let payload = &bytes[4..];
        Self::schema()?
            .check_cdr(payload, le, 4)
            .map_err(|fault| MsgError::Malformed {
                type_name: Self::TYPE_NAME,
                fault,
            })?;
        let decoded = if le {
            cdr_encoding::from_bytes::<Self, LittleEndian>(payload)
        } else {
            cdr_encoding::from_bytes::<Self, BigEndian>(payload)
        };
        decoded.map(|(v, _)| v).map_err(|e| MsgError::Decode {
            type_name: Self::TYPE_NAME,
            reason: e.to_string(),
        })
    }
}

/// Checks the 4-byte encapsulation header; returns `true` for little-endian.
///
/// # Errors
/// [`MsgError::TooShort`] or [`MsgError::Encapsulation`].
pub fn check_encapsulation(type_name: &'static str, bytes: &[u8]) -> Result<bool, MsgError> {
    match bytes {
        [0x00, 0x01, _, _, ..] => Ok(true),
        [0x00, 0x00, _, _, ..] => Ok(false),
        [b0, b1, _, _, ..] => Err(MsgError::Encapsulation {
            type_name,
            b0: *b0,
            b1: *b1,
        }),
        _ => Err(MsgError::TooShort {
            type_name,
            len: bytes.len(),
        }),
    }
}

/// Names and definitions of every message type in this module, for tools that register them
/// (MCAP schemas, a type store): `(TYPE_NAME, DEFINITION)`.
pub fn all_definitions() -> Vec<(&'static str, &'static str)> {
    macro_rules! defs {
        ($($t:ty),* $(,)?) => { vec![$((<$t>::TYPE_NAME, <$t>::DEFINITION)),*] };
    }
    defs!(
        Time,
        Duration,
        Clock,
        Header,
        Image,
        CompressedImage,
        ObjectHypothesis,
        Classification,
        VisionClass,
        LabelInfo,
        KeyValue,
        DiagnosticStatus,
        DiagnosticArray,
        ResourceBudget,
        TaskPriority,
        InferenceResult,
        TaskPlan,
        Plan,
    )
}

#[cfg(test)]
mod tests;
