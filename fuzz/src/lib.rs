//! Shared helpers of the fuzz targets (`src/bin/*.rs`): a scratch file for readers that take a
//! path, and a byte cursor that turns fuzz input into structured fields.

use std::path::PathBuf;

/// A per-process scratch path with the given file name (in `/dev/shm` when there is one, so
/// writing it each execution stays cheap). The parent folder is created once.
pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("nestdnn-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir.join(name)
}

/// Reads fields from the front of the input; missing bytes read as zero.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A string of up to `max` bytes (length byte first, lossy UTF-8).
    pub fn string(&mut self, max: usize) -> String {
        let n = (self.u8() as usize).min(max).min(self.data.len());
        let (s, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Opens the bag at `path` (a file of `len` bytes) and reads all of it: topics, their QoS,
/// every message decoded. Panics if reading does not end within one item per byte.
pub fn read_bag(path: &std::path::Path, len: usize) {
    let Ok(bag) = nestdnn::bag::BagReader::open(path) else {
        return;
    };
    for t in bag.topics() {
        let _ = t.qos_profiles();
    }
    let _ = bag.message_count();
    let Ok(mut it) = bag.decoded() else {
        return;
    };
    let mut items = 0usize;
    for item in it.by_ref() {
        items += 1;
        assert!(
            items <= len + 2,
            "bag reader does not end: {items} items from {len} bytes"
        );
        if let Err(e) = item {
            let _ = e.to_string();
            let _ = e.is_storage_error();
        }
    }
    let _ = it.stats();
}
