//! Writes the seed corpora: `make_seeds REPO_ROOT OUT_DIR` fills `OUT_DIR/<target>/` from the
//! repository's real files (CDR references, bag fixtures, params files, model manifests) and
//! small generated inputs (uncompressed/zstd/lz4/truncated MCAP, a 512-byte-page `.db3`,
//! raw and JPEG/PNG frames). Deterministic. Not a fuzz target.

use std::io::Cursor as IoCursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use nestdnn::bag::{McapCompression, McapWriter};
use nestdnn::msgs::{
    Classification, CompressedImage, Header, Image, ObjectHypothesis, ResourceBudget, TaskPriority,
    Time,
};

fn copy_matching(dir: &Path, ext: &str, out: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        panic!("{}: missing", dir.display());
    };
    let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in files {
        if f.is_file() && f.extension().is_some_and(|e| e == ext) {
            let name = format!(
                "{}_{}",
                dir.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            std::fs::copy(&f, out.join(name)).expect("copy seed");
        }
    }
}

fn header(sec: i32) -> Header {
    Header {
        stamp: Time { sec, nanosec: 5 },
        frame_id: "cam".into(),
    }
}

fn png(img: DynamicImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut IoCursor::new(&mut v), ImageFormat::Png)
        .expect("png");
    v
}

fn jpeg(img: DynamicImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut IoCursor::new(&mut v), ImageFormat::Jpeg)
        .expect("jpeg");
    v
}

fn small_images() -> Vec<(&'static str, Vec<u8>)> {
    let g = ImageBuffer::from_fn(4, 3, |x, y| Luma([(x * 60 + y * 20) as u8]));
    let rgb = ImageBuffer::from_fn(4, 3, |x, y| Rgb([(x * 60) as u8, (y * 80) as u8, 7]));
    let rgba = ImageBuffer::from_fn(3, 2, |x, y| Rgba([(x * 60) as u8, (y * 80) as u8, 7, 200]));
    let g16 = ImageBuffer::from_fn(3, 3, |x, y| Luma([(x * 9000 + y * 300) as u16]));
    let ga = ImageBuffer::from_fn(2, 2, |x, y| LumaA([(x * 90 + y) as u8, 128]));
    vec![
        ("png_gray", png(DynamicImage::ImageLuma8(g.clone()))),
        ("png_rgb", png(DynamicImage::ImageRgb8(rgb.clone()))),
        ("png_rgba", png(DynamicImage::ImageRgba8(rgba))),
        ("png_gray16", png(DynamicImage::ImageLuma16(g16))),
        ("png_graya", png(DynamicImage::ImageLumaA8(ga))),
        ("jpeg_gray", jpeg(DynamicImage::ImageLuma8(g))),
        ("jpeg_rgb", jpeg(DynamicImage::ImageRgb8(rgb))),
    ]
}

fn write_bag(path: &Path, compression: McapCompression) {
    let mut w = McapWriter::create_with(path, compression).expect("create mcap");
    let img = Image {
        header: header(1),
        height: 2,
        width: 2,
        encoding: "mono8".into(),
        is_bigendian: 0,
        step: 2,
        data: vec![1, 2, 3, 4],
    };
    w.write("/cam/image_raw", 1_000, &img).unwrap();
    let cls = Classification {
        header: header(1),
        results: vec![ObjectHypothesis {
            class_id: "7".into(),
            score: 1.0,
        }],
    };
    w.write("/cam/image_raw/ground_truth", 1_000, &cls).unwrap();
    let png = small_images().remove(0).1;
    let c = CompressedImage {
        header: header(2),
        format: "png".into(),
        data: png,
    };
    w.write("/cam2/image_raw/compressed", 2_000, &c).unwrap();
    let b = ResourceBudget {
        header: header(3),
        cpu_cores_available: 1.5,
        cpu_load: 0.25,
        memory_available_bytes: 1 << 30,
        battery_percentage: f32::NAN,
        power_supply_status: 2,
    };
    w.write("/nestdnn/resource_budget", 500, &b).unwrap();
    let p = TaskPriority {
        header: header(4),
        task: "digits_vgg".into(),
        priority: 2.0,
        enabled: true,
    };
    w.write("/nestdnn/task_priority", 3_000, &p).unwrap();
    w.finish().expect("finish mcap");
}

fn small_db3(fixture: &Path, out: &Path) {
    let _ = std::fs::remove_file(out);
    let src =
        rusqlite::Connection::open_with_flags(fixture, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open fixture db3");
    let dst = rusqlite::Connection::open(out).expect("create db3");
    dst.execute_batch(
        "PRAGMA page_size = 512;
         CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
           serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
         CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,
           timestamp INTEGER NOT NULL, data BLOB NOT NULL);
         CREATE INDEX timestamp_idx ON messages (timestamp ASC);",
    )
    .unwrap();
    let mut st = src
        .prepare("SELECT id, name, type, serialization_format, offered_qos_profiles FROM topics")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .unwrap();
    for (i, row) in rows.enumerate() {
        let (id, name, ty, fmt, qos) = row.unwrap();
        // Full QoS YAML on the first topic only: keeps the file small.
        let qos = if i == 0 { qos } else { String::new() };
        dst.execute(
            "INSERT INTO topics VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, name, ty, fmt, qos],
        )
        .unwrap();
    }
    let mut st = src
        .prepare("SELECT id, topic_id, timestamp, data FROM messages ORDER BY id LIMIT 8")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (id, t, ts, data) = row.unwrap();
        dst.execute(
            "INSERT INTO messages VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, t, ts, data],
        )
        .unwrap();
    }
    dst.execute_batch("VACUUM;").unwrap();
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [repo, out] = args.as_slice() else {
        eprintln!("usage: make_seeds REPO_ROOT OUT_DIR");
        std::process::exit(2);
    };
    let dir = |t: &str| {
        let d = out.join(t);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create seed folder");
        d
    };

    // CDR: the reference encodings of every message type (test/msgs/cdr, written by rosbags).
    let d = dir("cdr");
    copy_matching(&repo.join("test/msgs/cdr"), "bin", &d);

    // MCAP: small files from this crate's writer (each compression, one cut short so it has
    // no summary) and the rosbags-written fixtures.
    let d = dir("mcap");
    for (name, c) in [
        ("none", McapCompression::None),
        ("zstd", McapCompression::Zstd),
        ("lz4", McapCompression::Lz4),
    ] {
        write_bag(&d.join(format!("small_{name}.mcap")), c);
    }
    let full = std::fs::read(d.join("small_none.mcap")).unwrap();
    std::fs::write(d.join("small_truncated.mcap"), &full[..full.len() * 2 / 3]).unwrap();
    copy_matching(&repo.join("test/bags/fixtures/mcap"), "mcap", &d);

    // sqlite3: the fixture's rows in a file with 512-byte pages (the fixture itself is 28 kB).
    let d = dir("db3");
    small_db3(
        &repo.join("test/bags/fixtures/sqlite3/sqlite3.db3"),
        &d.join("small.db3"),
    );

    // Params files.
    let d = dir("params");
    copy_matching(&repo.join("params"), "yaml", &d);

    // Command lines (arguments separated by NUL), as launch files and users write them.
    let d = dir("rosargs");
    let lines = [
        "--ros-args\0--params-file\0/p.yaml\0-r\0__ns:=/robot1\0-p\0use_sim_time:=true",
        "--ros-args\0-r\0__node:=nest\0-r\0/camera/front/image_raw:=/cam0/image\0--log-level\0debug",
        "--ros-args\0-p\0tasks:=[digits_vgg]\0-p\0digits_vgg.image_topic:=~/img\0-p\0scheduler:={alpha: 0.2}\0--",
        "--ros-args\0-r\0nestdnn_node:image:=/x/y\0--log-level\0rcl:=warn\0-e\0/enc\0--enable-rosout-logs",
        "-h\0--ros-args\0-p\0nestdnn_node:memory_budget_bytes:=1000000\0--remap\0~/a:=b",
    ];
    for (i, l) in lines.iter().enumerate() {
        std::fs::write(d.join(format!("args{i}")), l).unwrap();
    }

    // Model manifests.
    let d = dir("manifest");
    for m in [
        "digits_vgg",
        "digits_resnet",
        "fashion_vgg",
        "fashion_resnet",
    ] {
        std::fs::copy(
            repo.join("models").join(m).join("manifest.yaml"),
            d.join(format!("{m}.yaml")),
        )
        .unwrap();
    }

    // Pre-processing (layout in src/bin/preprocess.rs): raw frames of every encoding, then
    // compressed frames.
    let d = dir("preprocess");
    for (i, (enc, bpp)) in [(0u8, 3u32), (1, 3), (2, 4), (3, 4), (4, 1), (6, 2)]
        .into_iter()
        .enumerate()
    {
        let (w, h) = (5u16, 4u16);
        let step = w as u32 * bpp + 1;
        let flags = if i % 2 == 0 { 1 } else { 3 }; // rgb model; odd ones with a ROI
        let mut v = vec![flags, 27, 27];
        for r in [1u16, 1, 3, 0] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        v.extend_from_slice(&w.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&step.to_le_bytes());
        v.push(enc);
        v.extend((0..step * h as u32).map(|k| (k * 37 % 251) as u8));
        std::fs::write(d.join(format!("raw{i}")), v).unwrap();
    }
    for (i, (name, data)) in small_images().into_iter().enumerate() {
        let fmt = if name.starts_with("png") { 1u8 } else { 0 };
        let flags = 4 | (i as u8 % 2) | if i % 3 == 0 { 2 } else { 0 };
        let mut v = vec![flags, 27, 27];
        for r in [0u16, 1, 0, 2] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        v.push(fmt);
        v.extend_from_slice(&data);
        std::fs::write(d.join(name), v).unwrap();
    }
    println!("seeds written to {}", out.display());
}
