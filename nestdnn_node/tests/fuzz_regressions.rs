//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz.sh`) found to crash the library, kept in
//! `test/fuzz-regressions/`: each must now give the module's error, never a panic.

use std::path::{Path, PathBuf};

use nestdnn::bag::{BagError, BagReader};

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test/fuzz-regressions")
}

/// Reads a bag to the end; returns the errors met (open error or yielded items).
fn read_all(path: &Path) -> Vec<String> {
    let bag = match BagReader::open(path) {
        Ok(b) => b,
        Err(e) => return vec![e.to_string()],
    };
    let mut errors = Vec::new();
    let mut it = bag.decoded().expect("open storage");
    let len = std::fs::metadata(path).unwrap().len() as usize;
    let mut items = 0;
    for item in it.by_ref() {
        items += 1;
        assert!(items <= len + 2, "{}: reading does not end", path.display());
        if let Err(e) = item {
            errors.push(e.to_string());
        }
    }
    errors
}

/// mcap 0.26 subtracts an inner record's length from what is left of its uncompressed chunk
/// unchecked: a 144-byte file whose chunk (CRC 0, no summary) holds a record longer than the
/// chunk panicked with "attempt to subtract with overflow" in builds with overflow checks.
/// `bag/mcap_read.rs` (`guarded`) turns that into `BagError::Mcap`.
#[test]
fn mcap_record_longer_than_its_chunk_is_an_error() {
    let path = regressions().join("mcap-record-longer-than-chunk.mcap");
    let bag = BagReader::open(&path).expect("the file opens: header and topics are fine");
    let items: Vec<Result<_, BagError>> = bag.messages().expect("storage opens").collect();
    let err = items
        .iter()
        .find_map(|i| i.as_ref().err())
        .expect("the malformed chunk is reported");
    assert!(err.is_storage_error(), "{err}");
    assert!(err.to_string().contains("malformed record"), "{err}");
}

/// Every bag in `test/fuzz-regressions/` reads to the end without a panic.
#[test]
fn every_regression_bag_reads_without_panic() {
    let mut n = 0;
    for e in std::fs::read_dir(regressions()).unwrap() {
        let p = e.unwrap().path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("mcap" | "db3")) {
            let _ = read_all(&p);
            n += 1;
        }
    }
    assert!(n > 0);
}

/// zune-jpeg 0.5.15 (the `image` crate's JPEG decoder) asserts `input.len() * 2 <=
/// scratch_space.len()` in its AVX2 upsampler on this 688-byte JPEG, a panic in release builds
/// too. `Preprocessor::compressed` turns a panicking decoder into `PreprocessError::Decode`.
#[test]
fn jpeg_that_panics_the_decoder_is_a_decode_error() {
    let data = std::fs::read(regressions().join("preprocess-jpeg-upsampler-assert.jpg")).unwrap();
    let spec = nestdnn::model::InputSpec {
        name: "input".into(),
        layout: "NCHW".into(),
        channels: 1,
        color: nestdnn::model::Color::Gray,
        height: 28,
        width: 28,
        scale: 1.0 / 255.0,
        mean: vec![0.5],
        std: vec![0.25],
    };
    let pre = nestdnn::preprocess::Preprocessor::new(&spec, None).unwrap();
    for format in ["jpeg", ""] {
        let img = nestdnn::preprocess::CompressedImage {
            format,
            data: &data,
        };
        // Without AVX2 the decoder takes another path; either way: no panic, and any error
        // is a decode error.
        if let Err(e) = pre.compressed_to_vec(&img) {
            assert_eq!(e.kind(), "decode", "{e}");
        }
    }
}

/// A compressed chunk (found via the summary's chunk index) whose inner record declares a length
/// of ~2^56: mcap's `ChunkReader` reserved that much and the process aborted ("memory
/// allocation failed"), in release builds too. `bag/mcap_read.rs` (`chunk_messages`) reads
/// chunks with the linear reader's record length limit: the chunk is reported as corrupt.
#[test]
fn mcap_chunk_record_with_huge_length_is_an_error() {
    let path = regressions().join("mcap-chunk-inner-record-length-huge.mcap");
    let errors = read_all(&path);
    assert!(!errors.is_empty(), "the damaged chunk is reported");
}
