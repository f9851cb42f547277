//! Image pre-processing: raw frames with arbitrary encoding, size, step, byte order and data,
//! and compressed frames (JPEG, PNG, format strings as image_transport writes them), each with
//! an optional region of interest, into a model input of fuzzed size and colour.
//!
//! Input layout: `[flags][in_w][in_h][roi x,y,w,h: u16 each]` then for raw frames
//! `[width u16][height u16][step u32][encoding: len + bytes]` and for compressed ones
//! `[format: len + bytes]`; the rest is the pixel data or the encoded file.
//! Oracle: no panic, and every output value is finite.

use nestdnn::model::{Color, InputSpec};
use nestdnn::preprocess::{CompressedImage, Preprocessor, RawImage, Roi};
use nestdnn_fuzz::Cursor;

const ENCODINGS: [&str; 9] = [
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1", "",
];
const FORMATS: [&str; 7] = [
    "jpeg",
    "png",
    "",
    "rgb8; jpeg compressed bgr8",
    "bgr8; png compressed rgb8",
    "16UC1; compressedDepth png",
    "jpg",
];

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let mut c = Cursor::new(data);
        let flags = c.u8();
        let (in_w, in_h) = (1 + (c.u8() % 64) as usize, 1 + (c.u8() % 64) as usize);
        let gray = flags & 1 == 0;
        let spec = InputSpec {
            name: "input".into(),
            layout: "NCHW".into(),
            channels: if gray { 1 } else { 3 },
            color: if gray { Color::Gray } else { Color::Rgb },
            height: in_h,
            width: in_w,
            scale: 1.0 / 255.0,
            mean: vec![0.5; if gray { 1 } else { 3 }],
            std: vec![0.25; if gray { 1 } else { 3 }],
        };
        let roi = [c.u16(), c.u16(), c.u16(), c.u16()];
        let roi = (flags & 2 != 0).then_some(Roi {
            x: roi[0] as u32,
            y: roi[1] as u32,
            width: roi[2] as u32,
            height: roi[3] as u32,
        });
        let pre = Preprocessor::new(&spec, roi).expect("valid spec");
        let out = if flags & 4 == 0 {
            let width = c.u16() as u32;
            let height = c.u16() as u32;
            let step = c.u32();
            let encoding = if flags & 8 == 0 {
                ENCODINGS[c.u8() as usize % ENCODINGS.len()].to_string()
            } else {
                c.string(32)
            };
            let img = RawImage {
                width,
                height,
                encoding: &encoding,
                is_bigendian: flags & 16 != 0,
                step,
                data: c.rest(),
            };
            pre.raw_to_vec(&img)
        } else {
            let format = if flags & 8 == 0 {
                FORMATS[c.u8() as usize % FORMATS.len()].to_string()
            } else {
                c.string(48)
            };
            let img = CompressedImage {
                format: &format,
                data: c.rest(),
            };
            pre.compressed_to_vec(&img)
        };
        match out {
            Ok(v) => {
                assert_eq!(v.len(), pre.output_len());
                assert!(v.iter().all(|x| x.is_finite()), "non-finite model input");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
