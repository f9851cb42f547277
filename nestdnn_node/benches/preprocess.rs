//! Guards pre-processing cost: a 640x480 camera frame to a 1x28x28 model input (the committed
//! models' input), as raw rgb8 (whole frame and a 480x480 region of interest), raw mono8, and
//! JPEG / PNG compressed frames (decode included).

use std::io::Cursor;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use image::{ImageBuffer, ImageFormat, Rgb};
use nestdnn::model::{Color, InputSpec};
use nestdnn::preprocess::{CompressedImage, Preprocessor, RawImage, Roi};

fn bench(c: &mut Criterion) {
    let spec = |color: Color| InputSpec {
        name: "input".into(),
        layout: "NCHW".into(),
        channels: if color == Color::Gray { 1 } else { 3 },
        color,
        height: 28,
        width: 28,
        scale: 1.0 / 255.0,
        mean: vec![0.286; if color == Color::Gray { 1 } else { 3 }],
        std: vec![0.353; if color == Color::Gray { 1 } else { 3 }],
    };
    let (w, h) = (640u32, 480u32);
    // Camera-like content: smooth gradients plus texture.
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13) % 31) as u8;
        Rgb([
            (x / 3) as u8 ^ t,
            (y / 2) as u8,
            ((x + y) / 5) as u8 ^ (t / 2),
        ])
    });
    let rgb = img.as_raw().clone();
    let mono: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
    let encode = |f| {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, f).expect("encode");
        out.into_inner()
    };
    let jpeg = encode(ImageFormat::Jpeg);
    let png = encode(ImageFormat::Png);
    eprintln!("640x480 jpeg {} bytes, png {} bytes", jpeg.len(), png.len());

    let gray = Preprocessor::new(&spec(Color::Gray), None).expect("spec");
    let gray_roi = Preprocessor::new(
        &spec(Color::Gray),
        Some(Roi {
            x: 80,
            y: 0,
            width: 480,
            height: 480,
        }),
    )
    .expect("spec");
    let rgb_pre = Preprocessor::new(&spec(Color::Rgb), None).expect("spec");
    let mut out1 = vec![0.0; 28 * 28];
    let mut out3 = vec![0.0; 3 * 28 * 28];
    let frame = RawImage {
        width: w,
        height: h,
        encoding: "rgb8",
        is_bigendian: false,
        step: w * 3,
        data: &rgb,
    };
    let mono_frame = RawImage {
        width: w,
        height: h,
        encoding: "mono8",
        is_bigendian: false,
        step: w,
        data: &mono,
    };

    let mut g = c.benchmark_group("preprocess/640x480");
    g.bench_function("rgb8_to_gray28", |b| {
        b.iter(|| gray.raw(&frame, &mut out1).expect("pre"))
    });
    g.bench_function("rgb8_roi480_to_gray28", |b| {
        b.iter(|| gray_roi.raw(&frame, &mut out1).expect("pre"))
    });
    g.bench_function("rgb8_to_rgb28", |b| {
        b.iter(|| rgb_pre.raw(&frame, &mut out3).expect("pre"))
    });
    g.bench_function("mono8_to_gray28", |b| {
        b.iter(|| gray.raw(&mono_frame, &mut out1).expect("pre"))
    });
    g.bench_function("jpeg_to_gray28", |b| {
        b.iter(|| {
            gray.compressed(
                &CompressedImage {
                    format: "jpeg",
                    data: &jpeg,
                },
                &mut out1,
            )
            .expect("pre")
        })
    });
    g.bench_function("png_to_gray28", |b| {
        b.iter(|| {
            gray.compressed(
                &CompressedImage {
                    format: "png",
                    data: &png,
                },
                &mut out1,
            )
            .expect("pre")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
