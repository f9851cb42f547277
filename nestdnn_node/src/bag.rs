//! rosbag2 reading (MCAP and sqlite3) and MCAP writing.
//!
//! A bag is a folder (`metadata.yaml` plus one or more storage files) or a single `.mcap` /
//! `.db3` file. [`BagReader::messages`] yields every message of every storage file in
//! timestamp order (a k-way merge over the files), as raw CDR with its topic's type and QoS;
//! [`BagReader::decoded`] decodes the types the node uses into [`BagMessage`] and skips (and
//! counts) the rest.
//!
//! ```no_run
//! use nestdnn::bag::{BagMessage, BagReader};
//! let bag = BagReader::open("test/bags/recording")?;
//! let mut it = bag.decoded()?;
//! for item in it.by_ref() {
//!     match item {
//!         Ok(m) => if let BagMessage::ResourceBudget(b) = &m.msg {
//!             println!("{} ns: {} cores", m.timestamp_ns, b.cpu_cores_available);
//!         },
//!         Err(e) => eprintln!("{e}"), // reading goes on, see "Errors" below
//!     }
//! }
//! println!("{:?}", it.stats());
//! # Ok::<(), nestdnn::bag::BagError>(())
//! ```
//!
//! # Errors while reading
//! Problems found when opening (missing file, unreadable metadata, a `.db3` without its tables,
//! a bag with no messages) fail [`BagReader::open`]. Problems found while iterating are yielded
//! as `Err` items and reading goes on with what can still be read:
//! - a message that fails CDR decoding ([`BagError::Decode`], with topic and timestamp) is
//!   skipped;
//! - a corrupt MCAP chunk ([`BagError::CorruptChunk`]) is skipped, the file's other chunks are
//!   read;
//! - a truncated or otherwise unreadable storage file ([`BagError::Truncated`],
//!   [`BagError::Mcap`], [`BagError::Sqlite`]) ends at the failure; the other files go on;
//! - a bag that turns out to hold no message at all ends with [`BagError::Empty`].
//!
//! Callers that must stop at the first problem just stop at the first `Err`.
//! [`BagError::is_storage_error`] tells a damaged file from a bad message.

mod mcap_read;
mod metadata;
pub mod qos;
mod sqlite_read;
mod writer;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use crate::msgs::{
    Classification, CompressedImage, Image, MsgError, ResourceBudget, RosMessage, TaskPriority,
};

pub use qos::QosProfile;
pub use writer::{McapCompression, McapWriter};

/// Anything that goes wrong reading or writing a bag. Every variant names the file.
#[derive(Debug, Error)]
pub enum BagError {
    /// The bag path does not exist.
    #[error("{path}: no such bag (file or folder)")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A storage file listed in `metadata.yaml` is missing.
    #[error("{bag}: storage file {file} listed in metadata.yaml is missing")]
    MissingFile {
        /// The bag folder.
        bag: PathBuf,
        /// The missing file.
        file: PathBuf,
    },
    /// A path that is neither a bag folder, a `.mcap` nor a `.db3` file.
    #[error("{path}: not a rosbag2 bag ({reason})")]
    NotABag {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An unreadable or inconsistent `metadata.yaml`.
    #[error("{path}: bad rosbag2 metadata: {reason}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A storage or compression this reader does not handle.
    #[error("{path}: unsupported: {what}")]
    Unsupported {
        /// The bag or file.
        path: PathBuf,
        /// What is not supported and what to do.
        what: String,
    },
    /// An I/O failure.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An MCAP file that ends early (the writer was killed, or the copy is incomplete).
    #[error("{path}: truncated MCAP: {reason} at byte {offset} of {len}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where reading stopped.
        offset: u64,
        /// The file length.
        len: u64,
        /// The reader's message.
        reason: String,
    },
    /// An MCAP chunk whose bytes are damaged (CRC mismatch, failed decompression, bad records).
    #[error("{path}: corrupt MCAP chunk at byte {offset}: {reason}")]
    CorruptChunk {
        /// The file.
        path: PathBuf,
        /// Offset of the chunk record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Any other MCAP format problem.
    #[error("{path}: bad MCAP at byte {offset}: {reason}")]
    Mcap {
        /// The file.
        path: PathBuf,
        /// Where it was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A `.db3` file without a table rosbag2 always writes.
    #[error("{path}: sqlite3 bag has no `{table}` table (not a rosbag2 .db3, or damaged)")]
    MissingTable {
        /// The file.
        path: PathBuf,
        /// The missing table.
        table: &'static str,
    },
    /// An sqlite error.
    #[error("{path}: sqlite3: {context}: {reason}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The sqlite message.
        reason: String,
    },
    /// A bag with no message.
    #[error("{path}: empty bag (no messages)")]
    Empty {
        /// The bag.
        path: PathBuf,
    },
    /// A message that fails CDR decoding.
    #[error("{path}: message on {topic} at {timestamp_ns} ns ({type_name}): {source}")]
    Decode {
        /// The storage file.
        path: PathBuf,
        /// Its topic.
        topic: String,
        /// Its type.
        type_name: String,
        /// Its bag timestamp.
        timestamp_ns: u64,
        /// What is wrong with its bytes (boxed: keeps `BagError` small).
        #[source]
        source: Box<MsgError>,
    },
    /// Writing failed.
    #[error("{path}: cannot write bag: {reason}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl BagError {
    /// `true` for damage to a storage file (truncation, corrupt chunk, sqlite or I/O errors),
    /// `false` for a single bad message or a problem found at open.
    pub fn is_storage_error(&self) -> bool {
        matches!(
            self,
            Self::Truncated { .. }
                | Self::CorruptChunk { .. }
                | Self::Mcap { .. }
                | Self::Sqlite { .. }
                | Self::Io { .. }
        )
    }
}

/// Storage format of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// MCAP (`.mcap`), ros2 profile.
    Mcap,
    /// sqlite3 (`.db3`).
    Sqlite3,
}

impl StorageKind {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "mcap" => Some(Self::Mcap),
            "db3" => Some(Self::Sqlite3),
            _ => None,
        }
    }
}

/// A topic as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name, e.g. `/camera/image_raw`.
    pub name: String,
    /// ROS type name, e.g. `sensor_msgs/msg/Image`.
    pub type_name: String,
    /// Serialisation format, `cdr` for ROS 2.
    pub serialization_format: String,
    /// The `offered_qos_profiles` YAML text as recorded (empty if none);
    /// [`QosProfile::parse_rosbag2_yaml`] reads it.
    pub offered_qos_profiles: String,
    /// Messages on this topic when known (metadata, MCAP statistics or `.db3` count).
    pub message_count: Option<u64>,
}

impl TopicInfo {
    /// The recorded QoS profiles (empty if none or unreadable).
    pub fn qos_profiles(&self) -> Vec<QosProfile> {
        QosProfile::parse_rosbag2_yaml(&self.offered_qos_profiles).unwrap_or_default()
    }
}

/// One recorded message, undecoded.
#[derive(Clone, Debug)]
pub struct RawMessage {
    /// Its topic.
    pub topic: Arc<TopicInfo>,
    /// Receive time recorded by the bag, nanoseconds since the epoch.
    pub timestamp_ns: u64,
    /// CDR bytes with encapsulation header.
    pub data: Vec<u8>,
    /// The storage file it came from.
    pub file: Arc<Path>,
}

/// The message types the node consumes from bags.
#[derive(Clone, Debug, PartialEq)]
pub enum BagMessage {
    /// A camera frame.
    Image(Image),
    /// A compressed camera frame.
    CompressedImage(CompressedImage),
    /// A classification (ground truth on `<image topic>/ground_truth`).
    Classification(Classification),
    /// A resource budget event.
    ResourceBudget(ResourceBudget),
    /// A task priority event.
    TaskPriority(TaskPriority),
}

impl BagMessage {
    /// `true` if `type_name` is one of the decoded types.
    pub fn is_known_type(type_name: &str) -> bool {
        [
            Image::TYPE_NAME,
            CompressedImage::TYPE_NAME,
            Classification::TYPE_NAME,
            ResourceBudget::TYPE_NAME,
            TaskPriority::TYPE_NAME,
        ]
        .contains(&type_name)
    }

    /// Decodes `data` as `type_name`; `None` for a type that is not decoded.
    pub fn decode(type_name: &str, data: &[u8]) -> Option<Result<Self, MsgError>> {
        Some(match type_name {
            Image::TYPE_NAME => Image::from_cdr(data).map(Self::Image),
            CompressedImage::TYPE_NAME => {
                CompressedImage::from_cdr(data).map(Self::CompressedImage)
            }
            Classification::TYPE_NAME => Classification::from_cdr(data).map(Self::Classification),
            ResourceBudget::TYPE_NAME => ResourceBudget::from_cdr(data).map(Self::ResourceBudget),
            TaskPriority::TYPE_NAME => TaskPriority::from_cdr(data).map(Self::TaskPriority),
            _ => return None,
        })
    }
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedMessage {
    /// Topic name.
    pub topic: Arc<TopicInfo>,
    /// Bag timestamp, nanoseconds.
    pub timestamp_ns: u64,
    /// The message.
    pub msg: BagMessage,
}

/// Counts kept by [`Decoded`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Messages read from storage.
    pub messages: u64,
    /// Messages decoded.
    pub decoded: u64,
    /// Messages skipped because their type is not decoded, per topic.
    pub skipped_unknown: BTreeMap<String, u64>,
    /// Messages that failed CDR decoding.
    pub decode_errors: u64,
    /// Storage errors (truncation, corrupt chunks, sqlite/I/O errors).
    pub storage_errors: u64,
}

/// What opening one storage file tells.
struct Probe {
    topics: Vec<TopicInfo>,
    message_count: Option<u64>,
    /// False for an MCAP file written without CRCs.
    crc_checked: bool,
    /// A CRC mismatch found on opening (MCAP data section).
    damaged: Option<String>,
}

#[derive(Clone, Debug)]
struct StorageFile {
    path: Arc<Path>,
    kind: StorageKind,
    crc_checked: bool,
    damaged: Option<String>,
}

/// An opened bag.
#[derive(Clone, Debug)]
pub struct BagReader {
    path: PathBuf,
    files: Vec<StorageFile>,
    topics: Vec<Arc<TopicInfo>>,
    message_count: Option<u64>,
}

impl BagReader {
    /// Opens a bag folder (with `metadata.yaml`, or without it: the `.mcap`/`.db3` files in it,
    /// by name) or a single `.mcap` / `.db3` file, and reads its topics.
    ///
    /// # Errors
    /// [`BagError::NotFound`], [`BagError::MissingFile`], [`BagError::Metadata`],
    /// [`BagError::Unsupported`] (compressed bags, other storages), [`BagError::MissingTable`],
    /// [`BagError::Sqlite`], [`BagError::Io`], or [`BagError::Empty`] when the bag is known to
    /// hold no message.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BagError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(BagError::NotFound { path });
        }
        let mut meta_topics: Vec<TopicInfo> = Vec::new();
        let files: Vec<PathBuf> = if path.is_dir() {
            let meta = path.join("metadata.yaml");
            if meta.exists() {
                let m = metadata::read(&meta)?;
                if !m.compression_mode.is_empty()
                    && !m.compression_mode.eq_ignore_ascii_case("none")
                {
                    return Err(BagError::Unsupported {
                        path,
                        what: format!(
                            "compressed bag (compression_mode {}, format {}); \
                             run `ros2 bag decompress` first",
                            m.compression_mode, m.compression_format
                        ),
                    });
                }
                meta_topics = m.topics;
                let mut files = Vec::new();
                for f in m.files {
                    let p = path.join(&f);
                    if !p.is_file() {
                        return Err(BagError::MissingFile { bag: path, file: p });
                    }
                    files.push(p);
                }
                files
            } else {
                let rd = std::fs::read_dir(&path).map_err(|source| BagError::Io {
                    path: path.clone(),
                    op: "list folder",
                    source,
                })?;
                let mut files: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && StorageKind::of(p).is_some())
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(BagError::NotABag {
                        path,
                        reason: "no metadata.yaml and no .mcap/.db3 file".into(),
                    });
                }
                log::warn!(
                    "{}: no metadata.yaml; reading {} storage file(s) found in the folder",
                    path.display(),
                    files.len()
                );
                files
            }
        } else {
            vec![path.clone()]
        };
        if files.is_empty() {
            return Err(BagError::Empty { path });
        }

        let mut storage = Vec::new();
        let mut topics: Vec<TopicInfo> = Vec::new();
        let mut count = Some(0u64);
        for f in files {
            let Some(kind) = StorageKind::of(&f) else {
                return Err(BagError::NotABag {
                    path: f,
                    reason: "storage files must end in .mcap or .db3".into(),
                });
            };
            let probe = match kind {
                StorageKind::Mcap => mcap_read::probe(&f)?,
                StorageKind::Sqlite3 => sqlite_read::probe(&f)?,
            };
            count = count.zip(probe.message_count).map(|(a, b)| a + b);
            for t in probe.topics {
                merge_topic(&mut topics, t);
            }
            storage.push(StorageFile {
                path: Arc::from(f.as_path()),
                kind,
                crc_checked: probe.crc_checked,
                damaged: probe.damaged,
            });
        }
        // Metadata carries QoS and counts written at the end of recording; storage files carry
        // what is really there. Prefer storage, fill gaps from metadata.
        for mt in meta_topics {
            match topics.iter_mut().find(|t| t.name == mt.name) {
                Some(t) => {
                    if t.offered_qos_profiles.is_empty() {
                        t.offered_qos_profiles = mt.offered_qos_profiles;
                    }
                }
                None => topics.push(mt),
            }
        }
        if count == Some(0) {
            return Err(BagError::Empty { path });
        }
        Ok(Self {
            path,
            files: storage,
            topics: topics.into_iter().map(Arc::new).collect(),
            message_count: count,
        })
    }

    /// MCAP storage files written without CRCs (as some writers do): damage inside them cannot
    /// be detected, so readers should say so. Files with CRCs have every chunk checked.
    pub fn unchecked_files(&self) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|f| !f.crc_checked)
            .map(|f| &*f.path)
            .collect()
    }

    /// CRC mismatches found when the bag was opened (an MCAP file's data section), one line
    /// per damaged file; chunks are checked again as they are read, so messages that read
    /// are intact.
    pub fn damage(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter_map(|f| f.damaged.as_deref())
            .collect()
    }

    /// The path given to [`Self::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Storage files, in the order of the metadata (or by name).
    pub fn files(&self) -> Vec<(&Path, StorageKind)> {
        self.files.iter().map(|f| (&*f.path, f.kind)).collect()
    }

    /// Topics known at open.
    pub fn topics(&self) -> &[Arc<TopicInfo>] {
        &self.topics
    }

    /// Total messages, when every storage file says (indexed MCAP, `.db3`).
    pub fn message_count(&self) -> Option<u64> {
        self.message_count
    }

    /// Every message in timestamp order across files (ties: file order, then record order).
    /// Each call reads the bag again from the start.
    ///
    /// # Errors
    /// Opening a storage file can fail ([`BagError::Io`], [`BagError::Sqlite`], ...); errors
    /// found later are yielded as items (see the module docs).
    pub fn messages(&self) -> Result<Messages, BagError> {
        let mut sources = Vec::new();
        for f in &self.files {
            let it: Source = match f.kind {
                StorageKind::Mcap => Box::new(mcap_read::stream(f.path.clone())?),
                StorageKind::Sqlite3 => Box::new(sqlite_read::stream(f.path.clone())?),
            };
            sources.push(it);
        }
        Ok(Messages::new(self.path.clone(), sources))
    }

    /// Decoded messages of the known types ([`BagMessage`]), in timestamp order. Other types
    /// are skipped and counted ([`Decoded::stats`]); a message that fails decoding is yielded
    /// as [`BagError::Decode`] and reading goes on.
    ///
    /// # Errors
    /// As [`Self::messages`].
    pub fn decoded(&self) -> Result<Decoded, BagError> {
        Ok(Decoded {
            inner: self.messages()?,
            stats: ReadStats::default(),
        })
    }
}

fn merge_topic(topics: &mut Vec<TopicInfo>, t: TopicInfo) {
    match topics
        .iter_mut()
        .find(|x| x.name == t.name && x.type_name == t.type_name)
    {
        Some(x) => {
            x.message_count = match (x.message_count, t.message_count) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            if x.offered_qos_profiles.is_empty() {
                x.offered_qos_profiles = t.offered_qos_profiles;
            }
        }
        None => topics.push(t),
    }
}

type Source = Box<dyn Iterator<Item = Result<RawMessage, BagError>> + Send>;

/// Messages of all storage files merged by timestamp. See [`BagReader::messages`].
pub struct Messages {
    bag: PathBuf,
    sources: Vec<Source>,
    /// Next message of each source: (timestamp, source index, arrival number).
    heads: BinaryHeap<Reverse<(u64, usize, u64)>>,
    slots: Vec<Option<RawMessage>>,
    errors: std::collections::VecDeque<BagError>,
    started: bool,
    arrivals: u64,
    yielded: u64,
    errored: bool,
    empty_reported: bool,
}

impl Messages {
    fn new(bag: PathBuf, sources: Vec<Source>) -> Self {
        let n = sources.len();
        Self {
            bag,
            sources,
            heads: BinaryHeap::new(),
            slots: vec![None; n],
            errors: Default::default(),
            started: false,
            arrivals: 0,
            yielded: 0,
            errored: false,
            empty_reported: false,
        }
    }

    /// Pulls the next message of source `i` into its slot; errors are queued.
    fn refill(&mut self, i: usize) {
        for item in self.sources[i].by_ref() {
            match item {
                Ok(m) => {
                    self.arrivals += 1;
                    self.heads.push(Reverse((m.timestamp_ns, i, self.arrivals)));
                    self.slots[i] = Some(m);
                    return;
                }
                Err(e) => self.errors.push_back(e),
            }
        }
    }
}

impl Iterator for Messages {
    type Item = Result<RawMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.refill(i);
            }
        }
        if let Some(e) = self.errors.pop_front() {
            self.errored = true;
            return Some(Err(e));
        }
        let Some(Reverse((_, i, _))) = self.heads.pop() else {
            // A bag whose files read cleanly but hold nothing (only known at the end for
            // MCAP files without a summary).
            if self.yielded == 0 && !self.errored && !self.empty_reported {
                self.empty_reported = true;
                return Some(Err(BagError::Empty {
                    path: self.bag.clone(),
                }));
            }
            return None;
        };
        let m = self.slots[i].take();
        self.refill(i);
        self.yielded += 1;
        m.map(Ok)
    }
}

/// Decoded messages. See [`BagReader::decoded`].
pub struct Decoded {
    inner: Messages,
    stats: ReadStats,
}

impl Decoded {
    /// Counts so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }
}

impl Iterator for Decoded {
    type Item = Result<DecodedMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let raw = match self.inner.next()? {
                Ok(raw) => raw,
                Err(e) => {
                    if e.is_storage_error() {
                        self.stats.storage_errors += 1;
                    }
                    return Some(Err(e));
                }
            };
            self.stats.messages += 1;
            match BagMessage::decode(&raw.topic.type_name, &raw.data) {
                None => {
                    *self
                        .stats
                        .skipped_unknown
                        .entry(raw.topic.name.clone())
                        .or_default() += 1;
                }
                Some(Ok(msg)) => {
                    self.stats.decoded += 1;
                    return Some(Ok(DecodedMessage {
                        topic: raw.topic,
                        timestamp_ns: raw.timestamp_ns,
                        msg,
                    }));
                }
                Some(Err(source)) => {
                    self.stats.decode_errors += 1;
                    return Some(Err(BagError::Decode {
                        path: raw.file.to_path_buf(),
                        topic: raw.topic.name.clone(),
                        type_name: raw.topic.type_name.clone(),
                        timestamp_ns: raw.timestamp_ns,
                        source: Box::new(source),
                    }));
                }
            }
        }
    }
}
