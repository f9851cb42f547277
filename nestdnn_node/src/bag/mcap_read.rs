//! MCAP storage files (ros2 profile).
//!
//! With a summary section (every finished rosbag2 file has one) messages are read chunk by
//! chunk through the chunk index in log-time order, each chunk checked against its CRC. Without
//! one (a truncated file) the file is read front to back, in file order, up to the damage.
//! Nothing is mapped or read whole: memory stays at about one chunk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use mcap::records::{op, ChunkIndex, Record};
use mcap::sans_io::{
    LinearReadEvent, LinearReader, LinearReaderOptions, MessageReadEvent, MessageReader,
    SummaryReadEvent, SummaryReader, SummaryReaderOptions,
};
use mcap::{Channel, McapError, Summary};

use super::{BagError, Probe, RawMessage, TopicInfo};

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> BagError {
    let path = path.to_path_buf();
    move |source| BagError::Io { path, op, source }
}

fn open(path: &Path) -> Result<(File, u64), BagError> {
    let f = File::open(path).map_err(io_err(path, "open"))?;
    let len = f.metadata().map_err(io_err(path, "stat"))?.len();
    Ok((f, len))
}

fn limit(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX).max(1024)
}

/// Runs one step of the `mcap` crate's parser, turning a panic inside it into `Err(reason)`.
/// mcap 0.26 subtracts a record's length from what is left of its chunk without a check
/// (`sans_io/linear_reader.rs`), so a record longer than its uncompressed chunk panics in
/// builds with overflow checks (found by the `mcap` fuzz target; regression test in
/// `tests/fuzz_regressions.rs`). A reader that panicked is not used again.
fn guarded<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("malformed record (the MCAP parser failed: {what})")
    })
}

/// The summary section, or `None` when the file has none or it cannot be read (truncated).
fn read_summary(path: &Path, file: &mut File, len: u64) -> Result<Option<Summary>, BagError> {
    let mut r = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(len)
            .with_record_length_limit(limit(len)),
    );
    loop {
        let ev = match guarded(|| r.next_event()) {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(reason) => {
                log::debug!(
                    "{}: no usable summary ({reason}); reading linearly",
                    path.display()
                );
                return Ok(None);
            }
        };
        match ev {
            Ok(SummaryReadEvent::ReadRequest(n)) => {
                let got = file.read(r.insert(n)).map_err(io_err(path, "read"))?;
                r.notify_read(got);
            }
            Ok(SummaryReadEvent::SeekRequest(to)) => {
                let pos = file.seek(to).map_err(io_err(path, "seek"))?;
                r.notify_seeked(pos);
            }
            Err(e) => {
                log::debug!(
                    "{}: no usable summary ({e}); reading linearly",
                    path.display()
                );
                return Ok(None);
            }
        }
    }
    Ok(r.finish())
}

fn topic_of(ch: &Channel<'_>, count: Option<u64>) -> TopicInfo {
    TopicInfo {
        name: ch.topic.clone(),
        type_name: ch
            .schema
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        serialization_format: ch.message_encoding.clone(),
        offered_qos_profiles: ch
            .metadata
            .get("offered_qos_profiles")
            .cloned()
            .unwrap_or_default(),
        message_count: count,
    }
}

fn check_profile(path: &Path, ch: &Channel<'_>) {
    if ch.message_encoding != "cdr" {
        log::warn!(
            "{}: topic {} has message encoding {:?}, not cdr; it will not decode",
            path.display(),
            ch.topic,
            ch.message_encoding
        );
    }
}

pub(super) fn probe(path: &Path) -> Result<Probe, BagError> {
    let (mut file, len) = open(path)?;
    if let Some(summary) = read_summary(path, &mut file, len)? {
        let counts = summary.stats.as_ref().map(|s| &s.channel_message_counts);
        let mut channels: Vec<_> = summary.channels.values().collect();
        channels.sort_by_key(|c| c.id);
        let topics = channels
            .into_iter()
            .map(|c| {
                check_profile(path, c);
                topic_of(c, counts.and_then(|m| m.get(&c.id).copied()))
            })
            .collect();
        let chunk_crc = first_chunk_crc(&mut file, &summary);
        let (data_crc, damaged) = check_data_section(path, &mut file, len)?;
        let crc_checked = chunk_crc.is_some_and(|c| c != 0) || data_crc;
        return Ok(Probe {
            topics,
            message_count: summary.stats.as_ref().map(|s| s.message_count),
            crc_checked,
            damaged,
        });
    }
    // No summary: scan for channels, tolerating damage (it is reported when reading).
    let mut topics: Vec<TopicInfo> = Vec::new();
    let mut lin = Linear::new(Arc::from(path), file, len)?;
    for item in lin.by_ref() {
        if item.is_err() {
            break;
        }
    }
    let mut chans: Vec<_> = lin.topics.into_iter().collect();
    chans.sort_by_key(|(id, _)| *id);
    for (_, t) in chans {
        let mut t = (*t).clone();
        t.message_count = None;
        topics.push(t);
    }
    Ok(Probe {
        topics,
        message_count: None,
        crc_checked: true,
        damaged: None,
    })
}

/// Checks the data section's CRC (the DataEnd record's, when its writer computed one) by
/// reading the data section once. Returns whether there was a CRC, and a description of the
/// damage if it does not match. Chunks carry CRCs of their own, checked as they are read; this
/// also catches damage outside chunks (message indexes, schemas, channels).
fn check_data_section(
    path: &Path,
    file: &mut File,
    len: u64,
) -> Result<(bool, Option<String>), BagError> {
    // Footer: opcode, length, summary_start, summary_offset_start, summary_crc; then magic.
    const FOOTER: u64 = 1 + 8 + 8 + 8 + 4;
    const DATA_END: u64 = 1 + 8 + 4;
    if len < 8 + FOOTER + 8 + DATA_END {
        return Ok((false, None));
    }
    let footer_at = len - 8 - FOOTER;
    let mut b = [0u8; 8];
    file.seek(SeekFrom::Start(footer_at + 9))
        .and_then(|_| file.read_exact(&mut b))
        .map_err(io_err(path, "read footer"))?;
    let summary_start = u64::from_le_bytes(b);
    let end_at = if summary_start == 0 {
        footer_at
    } else {
        summary_start
    };
    let Some(data_end_at) = end_at.checked_sub(DATA_END).filter(|&a| a >= 8) else {
        return Ok((false, None));
    };
    let mut rec = [0u8; 13];
    file.seek(SeekFrom::Start(data_end_at))
        .and_then(|_| file.read_exact(&mut rec))
        .map_err(io_err(path, "read data end"))?;
    if rec[0] != op::DATA_END {
        return Ok((false, None));
    }
    let crc = u32::from_le_bytes([rec[9], rec[10], rec[11], rec[12]]);
    if crc == 0 {
        return Ok((false, None));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err(path, "seek"))?;
    let mut h = crc32fast::Hasher::new();
    let mut left = data_end_at;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])
            .map_err(io_err(path, "read data section"))?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    let got = h.finalize();
    Ok((
        true,
        (got != crc).then(|| {
            format!(
                "{}: data section CRC mismatch (recorded {crc:#010x}, computed {got:#010x}): the file is damaged; chunks are checked one by one as they are read",
                path.display()
            )
        }),
    ))
}

/// The `uncompressed_crc` of the file's first chunk (0: its writer computed no CRCs, so
/// damage inside chunks cannot be detected), `None` without chunks or if unreadable.
fn first_chunk_crc(file: &mut File, summary: &Summary) -> Option<u32> {
    let c = summary.chunk_indexes.first()?;
    // Chunk record: opcode (1), length (8), start time (8), end time (8), size (8), crc (4).
    let mut b = [0u8; 4];
    file.seek(SeekFrom::Start(c.chunk_start_offset.checked_add(33)?))
        .ok()?;
    file.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

pub(super) fn stream(
    path: Arc<Path>,
) -> Result<Box<dyn Iterator<Item = Result<RawMessage, BagError>> + Send>, BagError> {
    let (mut file, len) = open(&path)?;
    match read_summary(&path, &mut file, len)? {
        Some(summary) if !summary.chunk_indexes.is_empty() => {
            Ok(Box::new(Indexed::new(path, file, len, summary)))
        }
        _ => {
            file.seek(SeekFrom::Start(0))
                .map_err(io_err(&path, "seek"))?;
            Ok(Box::new(Linear::new(path, file, len)?))
        }
    }
}

// ------------------------------------------------------------------ indexed, log-time order

struct Pending {
    log_time: u64,
    arrival: u64,
    channel: u16,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.log_time, self.arrival) == (o.log_time, o.arrival)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.log_time, self.arrival).cmp(&(o.log_time, o.arrival))
    }
}

struct Indexed {
    path: Arc<Path>,
    file: File,
    len: u64,
    chunks: VecDeque<ChunkIndex>,
    pending: BinaryHeap<Reverse<Pending>>,
    topics: HashMap<u16, Arc<TopicInfo>>,
    arrivals: u64,
    buf: Vec<u8>,
}

impl Indexed {
    fn new(path: Arc<Path>, file: File, len: u64, summary: Summary) -> Self {
        let mut chunks = summary.chunk_indexes;
        chunks.sort_by_key(|c| (c.message_start_time, c.chunk_start_offset));
        let topics = summary
            .channels
            .iter()
            .map(|(id, c)| (*id, Arc::new(topic_of(c, None))))
            .collect();
        Self {
            path,
            file,
            len,
            chunks: chunks.into(),
            pending: BinaryHeap::new(),
            topics,
            arrivals: 0,
            buf: Vec::new(),
        }
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> BagError {
        BagError::CorruptChunk {
            path: self.path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    fn load(&mut self, c: &ChunkIndex) -> Result<(), BagError> {
        let at = c.chunk_start_offset;
        let end = at.saturating_add(c.chunk_length);
        if end > self.len || c.chunk_length < 9 {
            return Err(BagError::Truncated {
                path: self.path.to_path_buf(),
                offset: at,
                len: self.len,
                reason: format!(
                    "chunk index points at bytes {at}..{end}, past the end of the file"
                ),
            });
        }
        let n = usize::try_from(c.chunk_length).map_err(|_| self.corrupt(at, "chunk too large"))?;
        self.buf.resize(n, 0);
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.read_exact(&mut self.buf))
            .map_err(io_err(&self.path, "read chunk"))?;
        if self.buf[0] != op::CHUNK {
            return Err(self.corrupt(at, format!("opcode {:#04x}, not a chunk", self.buf[0])));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&self.buf[1..9]);
        let body_len = u64::from_le_bytes(l);
        let body = usize::try_from(body_len)
            .ok()
            .and_then(|b| self.buf.get(9..9usize.checked_add(b)?))
            .ok_or_else(|| {
                self.corrupt(at, format!("record length {body_len} exceeds the chunk"))
            })?;
        let record_end = 9 + body.len();
        match mcap::parse_record(op::CHUNK, body) {
            Ok(Record::Chunk { .. }) => {}
            Ok(_) => return Err(self.corrupt(at, "not a chunk record")),
            Err(e) => return Err(self.corrupt(at, e.to_string())),
        }
        let limit = limit(self.len);
        let parsed = guarded(|| chunk_messages(&self.buf[..record_end], limit));
        let loaded = parsed
            .and_then(|r| r)
            .map_err(|reason| self.corrupt(at, reason))?;
        for mut p in loaded {
            self.arrivals += 1;
            p.arrival = self.arrivals;
            self.pending.push(Reverse(p));
        }
        Ok(())
    }
}

/// The messages of one chunk record (`record`: opcode, length, body), read with the linear
/// reader's record length limit (`limit`, from the file length). mcap's `ChunkReader` sets no
/// limit, so a record length of 2^56 inside a compressed chunk made it reserve that much and
/// abort (found by the `mcap` fuzz target; regression test in `tests/fuzz_regressions.rs`).
/// Messages before damage are not used either: a chunk is kept or dropped whole, so a damaged
/// chunk never yields garbage that happened to parse.
fn chunk_messages(record: &[u8], limit: usize) -> Result<Vec<Pending>, String> {
    let mut r = LinearReader::new_with_options(
        LinearReaderOptions::default()
            .with_skip_start_magic(true)
            .with_skip_end_magic(true)
            .with_validate_chunk_crcs(true)
            .with_record_length_limit(limit),
    );
    let mut src = record;
    let mut loaded = Vec::new();
    while let Some(ev) = r.next_event() {
        match ev.map_err(|e| e.to_string())? {
            LinearReadEvent::ReadRequest(n) => {
                let k = n.min(src.len());
                r.insert(k).copy_from_slice(&src[..k]);
                r.notify_read(k);
                src = &src[k..];
            }
            LinearReadEvent::Record { data, opcode } => {
                if let Record::Message { header, data } =
                    mcap::parse_record(opcode, data).map_err(|e| e.to_string())?
                {
                    loaded.push(Pending {
                        log_time: header.log_time,
                        arrival: 0,
                        channel: header.channel_id,
                        data: data.into_owned(),
                    });
                }
            }
        }
    }
    Ok(loaded)
}

impl Iterator for Indexed {
    type Item = Result<RawMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Load chunks until the earliest pending message cannot be preceded by an unloaded one.
        while let Some(c) = self.chunks.front() {
            let need = match self.pending.peek() {
                Some(Reverse(p)) => c.message_start_time <= p.log_time,
                None => true,
            };
            if !need {
                break;
            }
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            if let Err(e) = self.load(&c) {
                return Some(Err(e));
            }
        }
        let Reverse(p) = self.pending.pop()?;
        let Some(topic) = self.topics.get(&p.channel).cloned() else {
            return Some(Err(BagError::Mcap {
                path: self.path.to_path_buf(),
                offset: 0,
                reason: format!("message on channel {} not in the summary", p.channel),
            }));
        };
        Some(Ok(RawMessage {
            topic,
            timestamp_ns: p.log_time,
            data: p.data,
            file: self.path.clone(),
        }))
    }
}

// ------------------------------------------------------------------ linear, file order

struct Linear {
    path: Arc<Path>,
    file: File,
    len: u64,
    pos: u64,
    reader: MessageReader,
    topics: HashMap<u16, Arc<TopicInfo>>,
    done: bool,
}

impl Linear {
    fn new(path: Arc<Path>, file: File, len: u64) -> Result<Self, BagError> {
        let reader = MessageReader::new_with_options(
            LinearReaderOptions::default()
                .with_prevalidate_chunk_crcs(true)
                .with_validate_chunk_crcs(true)
                .with_record_length_limit(limit(len)),
        );
        Ok(Self {
            path,
            file,
            len,
            pos: 0,
            reader,
            topics: HashMap::new(),
            done: false,
        })
    }

    fn error(&self, e: McapError) -> BagError {
        let path = self.path.to_path_buf();
        let reason = e.to_string();
        match e {
            McapError::UnexpectedEof | McapError::UnexpectedEoc => BagError::Truncated {
                path,
                offset: self.pos,
                len: self.len,
                reason,
            },
            McapError::BadMagic if self.pos >= self.len => BagError::Truncated {
                path,
                offset: self.pos,
                len: self.len,
                reason: "no end magic".into(),
            },
            McapError::BadChunkCrc { .. }
            | McapError::DecompressionError(_)
            | McapError::UnsupportedCompression(_)
            | McapError::ChunkTooLarge(_) => BagError::CorruptChunk {
                path,
                offset: self.pos,
                reason,
            },
            _ => BagError::Mcap {
                path,
                offset: self.pos,
                reason,
            },
        }
    }
}

impl Iterator for Linear {
    type Item = Result<RawMessage, BagError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let reader = &mut self.reader;
            let step = match guarded(move || reader.next_event()) {
                Ok(step) => step,
                Err(reason) => {
                    self.done = true;
                    return Some(Err(BagError::Mcap {
                        path: self.path.to_path_buf(),
                        offset: self.pos,
                        reason,
                    }));
                }
            };
            let ev = match step {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(self.error(e)));
                }
                Some(Ok(ev)) => ev,
            };
            match ev {
                MessageReadEvent::ReadRequest(n) => {
                    let got = match self.file.read(self.reader.insert(n)) {
                        Ok(got) => got,
                        Err(source) => {
                            self.done = true;
                            return Some(Err(BagError::Io {
                                path: self.path.to_path_buf(),
                                op: "read",
                                source,
                            }));
                        }
                    };
                    self.pos += got as u64;
                    self.reader.notify_read(got);
                }
                MessageReadEvent::Message(m) => {
                    let topic = self
                        .topics
                        .entry(m.channel.id)
                        .or_insert_with(|| {
                            check_profile(&self.path, &m.channel);
                            Arc::new(topic_of(&m.channel, None))
                        })
                        .clone();
                    return Some(Ok(RawMessage {
                        topic,
                        timestamp_ns: m.log_time,
                        data: m.data.into_owned(),
                        file: self.path.clone(),
                    }));
                }
            }
        }
    }
}
