//! MCAP writing in rosbag2 form: profile `ros2`, schemas `pkg/msg/Type` with encoding `ros2msg`
//! and the full concatenated definition, messages `cdr`, channel metadata
//! `offered_qos_profiles`. A single `.mcap` file is a bag `ros2 bag info/play` accept.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use mcap::records::MessageHeader;
use mcap::{Compression, WriteOptions, Writer};

use super::{BagError, QosProfile};
use crate::msgs::RosMessage;

/// Chunk compression of a written MCAP file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum McapCompression {
    /// zstd, rosbag2's usual choice.
    #[default]
    Zstd,
    /// lz4.
    Lz4,
    /// No compression.
    None,
}

/// Writes a ROS 2 MCAP bag, atomically: messages go to a temporary file beside the target
/// (`.<name>.tmp-<pid>-<n>`), and [`McapWriter::finish`] writes the summary, syncs and renames
/// it onto the target. A writer dropped without `finish` (an error, a panic) removes its
/// temporary file and leaves the target as it was. Chunk, data-section and summary CRCs are
/// written.
pub struct McapWriter {
    path: PathBuf,
    tmp: PathBuf,
    inner: Option<Writer<BufWriter<File>>>,
    schemas: HashMap<&'static str, u16>,
    channels: HashMap<String, (u16, &'static str)>,
    sequence: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for McapWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McapWriter")
            .field("path", &self.path)
            .field("topics", &self.channels.len())
            .finish()
    }
}

impl McapWriter {
    /// Starts writing the bag that [`McapWriter::finish`] puts at `path`, zstd-compressed
    /// chunks.
    ///
    /// # Errors
    /// [`BagError::Io`] if the temporary file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, BagError> {
        Self::create_with(path, McapCompression::default())
    }

    /// Starts writing the bag that [`McapWriter::finish`] puts at `path`, with the given chunk
    /// compression.
    ///
    /// # Errors
    /// [`BagError::Io`] or [`BagError::Write`].
    pub fn create_with(
        path: impl AsRef<Path>,
        compression: McapCompression,
    ) -> Result<Self, BagError> {
        let path = path.as_ref().to_path_buf();
        let tmp = crate::fsio::temp_path(&path);
        let file = File::create(&tmp).map_err(|source| BagError::Io {
            path: tmp.clone(),
            op: "create",
            source,
        })?;
        let inner = WriteOptions::new()
            .profile("ros2")
            .library(concat!("nestdnn ", env!("CARGO_PKG_VERSION")))
            .calculate_chunk_crcs(true)
            .calculate_data_section_crc(true)
            .calculate_summary_section_crc(true)
            .compression(match compression {
                McapCompression::Zstd => Some(Compression::Zstd),
                McapCompression::Lz4 => Some(Compression::Lz4),
                McapCompression::None => None,
            })
            .create(BufWriter::new(file));
        let inner = match inner {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(BagError::Write {
                    path: path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self {
            path,
            tmp,
            inner: Some(inner),
            schemas: HashMap::new(),
            channels: HashMap::new(),
            sequence: 0,
            buf: Vec::new(),
        })
    }

    fn werr(&self, e: impl std::fmt::Display) -> BagError {
        BagError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Declares `topic` with type `M` and the QoS its publisher offers. Writing to a topic not
    /// declared declares it with [`QosProfile::DEFAULT`].
    ///
    /// # Errors
    /// [`BagError::Write`] if the topic exists with another type, or the file fails.
    pub fn add_topic<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: &[QosProfile],
    ) -> Result<(), BagError> {
        if let Some((_, t)) = self.channels.get(topic) {
            if *t == M::TYPE_NAME {
                return Ok(());
            }
            return Err(self.werr(format!(
                "topic {topic} already has type {t}, cannot add it as {}",
                M::TYPE_NAME
            )));
        }
        let Some(w) = self.inner.as_mut() else {
            return Err(self.werr("already finished"));
        };
        let schema = match self.schemas.get(M::TYPE_NAME) {
            Some(id) => *id,
            None => {
                let id = w
                    .add_schema(M::TYPE_NAME, "ros2msg", M::DEFINITION.as_bytes())
                    .map_err(|e| BagError::Write {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                self.schemas.insert(M::TYPE_NAME, id);
                id
            }
        };
        let mut meta = BTreeMap::new();
        meta.insert(
            "offered_qos_profiles".to_owned(),
            QosProfile::to_rosbag2_yaml(qos),
        );
        let id = w
            .add_channel(schema, topic, "cdr", &meta)
            .map_err(|e| BagError::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        self.channels.insert(topic.to_owned(), (id, M::TYPE_NAME));
        Ok(())
    }

    /// Writes `msg` on `topic` at bag time `time_ns` (log and publish time).
    ///
    /// # Errors
    /// [`BagError::Write`] on a type mismatch, an encode failure or a file error.
    pub fn write<M: RosMessage>(
        &mut self,
        topic: &str,
        time_ns: u64,
        msg: &M,
    ) -> Result<(), BagError> {
        if !self.channels.contains_key(topic) {
            self.add_topic::<M>(topic, &[QosProfile::DEFAULT])?;
        }
        let (id, ty) = self.channels[topic];
        if ty != M::TYPE_NAME {
            return Err(self.werr(format!("topic {topic} has type {ty}, not {}", M::TYPE_NAME)));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let res = msg
            .write_cdr(&mut buf)
            .map_err(|e| self.werr(e))
            .and_then(|()| self.write_raw(id, time_ns, &buf));
        self.buf = buf;
        res
    }

    fn write_raw(&mut self, channel_id: u16, time_ns: u64, data: &[u8]) -> Result<(), BagError> {
        self.sequence = self.sequence.wrapping_add(1);
        let header = MessageHeader {
            channel_id,
            sequence: self.sequence,
            log_time: time_ns,
            publish_time: time_ns,
        };
        let Some(w) = self.inner.as_mut() else {
            return Err(self.werr("already finished"));
        };
        w.write_to_known_channel(&header, data)
            .map_err(|e| BagError::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Writes the summary, syncs the file and renames it onto the target path; returns that
    /// path.
    ///
    /// # Errors
    /// [`BagError::Write`] if the file cannot be completed (the target is left as it was).
    pub fn finish(mut self) -> Result<PathBuf, BagError> {
        if let Some(mut w) = self.inner.take() {
            let done = w
                .finish()
                .map_err(|e| self.werr(e))
                .and_then(|_summary| {
                    w.into_inner()
                        .into_inner()
                        .map_err(|e| self.werr(e.error()))?
                        .sync_all()
                        .map_err(|e| self.werr(e))
                })
                .and_then(|()| {
                    std::fs::rename(&self.tmp, &self.path).map_err(|e| {
                        self.werr(format!(
                            "renaming the finished file {} onto it: {e}",
                            self.tmp.display()
                        ))
                    })
                });
            if done.is_err() {
                let _ = std::fs::remove_file(&self.tmp);
            }
            done?;
        }
        Ok(self.path.clone())
    }
}

impl Drop for McapWriter {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            // Not finished: the partial file is not a bag anyone asked for.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
