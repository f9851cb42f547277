#!/usr/bin/env python3
"""Small bags written by PyPI `rosbags` (an independent rosbag2 writer) for the Rust bag tests
(nestdnn_node/tests/bag_read.rs), plus `expected.json`: every message with its decoded content.

    .venv/bin/python test/bags/make_fixture_bags.py [OUT_DIR]   # default test/bags/fixtures

OUT_DIR/mcap/      rosbag2 folder, MCAP storage (metadata.yaml + mcap.mcap)
OUT_DIR/sqlite3/   rosbag2 folder, sqlite3 storage (metadata.yaml + sqlite3.db3)
OUT_DIR/split/     one bag in two MCAP files whose time ranges interleave, with a metadata.yaml
                   listing both (what `ros2 bag record --max-bag-size` makes, minus the ordering)
Deterministic: the same files every run (rosbags writes no wall-clock time into them).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer

from bagtools import DEFAULT, LATCHED, SENSOR_DATA, header, typestore

T0 = 1_700_000_000_000_000_000  # bag start, ns


def messages(ts):
    """[(topic, type, timestamp_ns, message, expected-json)] in an order that is *not* the
    timestamp order (the reader must sort)."""
    T = ts.types
    out = []
    for i in range(3):
        t = T0 + i * 33_333_333
        data = (np.arange(18, dtype=np.uint8) * (i + 1)).astype(np.uint8)
        out.append(("/cam/image_raw", "sensor_msgs/msg/Image", t,
                    T["sensor_msgs/msg/Image"](header=header(ts, t, "cam"), height=2, width=3,
                                               encoding="rgb8", is_bigendian=0, step=9, data=data),
                    {"kind": "Image", "stamp_ns": t, "frame_id": "cam", "height": 2, "width": 3,
                     "encoding": "rgb8", "step": 9, "data": data.tolist()}))
        label = ["Trouser", "Bag", "Sneaker"][i]
        # Same header stamp as the image; recorded 1 us later (as a recorder would).
        out.append(("/cam/image_raw/ground_truth", "vision_msgs/msg/Classification", t + 1000,
                    T["vision_msgs/msg/Classification"](
                        header=header(ts, t, "cam"),
                        results=[T["vision_msgs/msg/ObjectHypothesis"](class_id=label, score=1.0)]),
                    {"kind": "Classification", "stamp_ns": t, "frame_id": "cam",
                     "results": [[label, 1.0]]}))
    for i in range(2):
        t = T0 + 10_000_000 + i * 50_000_000
        jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0, i, 0xFF, 0xD9])
        out.append(("/cam2/image_raw/compressed", "sensor_msgs/msg/CompressedImage", t,
                    T["sensor_msgs/msg/CompressedImage"](header=header(ts, t, "cam2"), format="jpeg",
                                                         data=np.frombuffer(jpeg, dtype=np.uint8)),
                    {"kind": "CompressedImage", "stamp_ns": t, "frame_id": "cam2",
                     "format": "jpeg", "data": list(jpeg)}))
    t = T0 + 5_000_000
    out.append(("/nestdnn/resource_budget", "nestdnn_msgs/msg/ResourceBudget", t,
                T["nestdnn_msgs/msg/ResourceBudget"](header=header(ts, t, ""), cpu_cores_available=1.5,
                                                     cpu_load=0.25, memory_available_bytes=2 << 30,
                                                     battery_percentage=0.75, power_supply_status=2),
                {"kind": "ResourceBudget", "stamp_ns": t, "cpu_cores_available": 1.5,
                 "cpu_load": 0.25, "memory_available_bytes": 2 << 30,
                 "battery_percentage": 0.75, "power_supply_status": 2}))
    t = T0 + 40_000_000
    out.append(("/nestdnn/task_priority", "nestdnn_msgs/msg/TaskPriority", t,
                T["nestdnn_msgs/msg/TaskPriority"](header=header(ts, t, ""), task="fashion_vgg",
                                                   priority=3.0, enabled=True),
                {"kind": "TaskPriority", "stamp_ns": t, "task": "fashion_vgg", "priority": 3.0,
                 "enabled": True}))
    # A type the node does not decode: skipped and counted, never fatal.
    for i in range(2):
        t = T0 + 20_000_000 + i * 20_000_000
        out.append(("/chatter", "std_msgs/msg/String", t, T["std_msgs/msg/String"](data=f"hello {i}"),
                    {"kind": "skipped"}))
    return out


QOS = {"/nestdnn/resource_budget": LATCHED, "/nestdnn/task_priority": DEFAULT, "/chatter": DEFAULT}


def write_bag(path, storage, msgs, ts):
    with Writer(path, version=8, storage_plugin=storage) as w:
        conns = {}
        for topic, typ, _, _, _ in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts,
                                                offered_qos_profiles=[QOS.get(topic, SENSOR_DATA)])
        for topic, typ, t, msg, _ in msgs:
            w.write(conns[topic], t, bytes(ts.serialize_cdr(msg, typ)))


def main(argv):
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "fixtures"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ts = typestore()
    msgs = messages(ts)
    write_bag(out / "mcap", StoragePlugin.MCAP, msgs, ts)
    write_bag(out / "sqlite3", StoragePlugin.SQLITE3, msgs, ts)

    # split: even-indexed messages (by time) in one file, odd in the other.
    by_time = sorted(msgs, key=lambda m: m[2])
    parts = [by_time[0::2], by_time[1::2]]
    (out / "split").mkdir()
    metas = []
    for k, part in enumerate(parts):
        tmp = out / f"split_part{k}"
        write_bag(tmp, StoragePlugin.MCAP, part, ts)
        (tmp / f"split_part{k}.mcap").rename(out / "split" / f"split_{k}.mcap")
        metas.append(yaml.safe_load((tmp / "metadata.yaml").read_text()))
        shutil.rmtree(tmp)
    meta = metas[0]
    info = meta["rosbag2_bagfile_information"]
    info["relative_file_paths"] = ["split_0.mcap", "split_1.mcap"]
    info["message_count"] = len(msgs)
    info["files"] = [dict(m["rosbag2_bagfile_information"]["files"][0], path=f"split_{k}.mcap")
                     for k, m in enumerate(metas)]
    (out / "split" / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))

    expected = [{"topic": topic, "type": typ, "timestamp_ns": t, **exp}
                for topic, typ, t, _, exp in sorted(msgs, key=lambda m: m[2])]
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{out}: {len(msgs)} messages in mcap/, sqlite3/, split/")


if __name__ == "__main__":
    main(sys.argv[1:])
