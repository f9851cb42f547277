#!/usr/bin/env python3
"""Reference CDR bytes from an independent serializer (PyPI `rosbags`), for the Rust cross-check
in nestdnn_node/tests/msgs_cdr.rs.

Types come from rosbags' own ROS 2 Humble type store (builtin_interfaces, std_msgs, sensor_msgs,
diagnostic_msgs), from the upstream vision_msgs 4.x .msg texts below, and from this repository's
msgs/msg/*.msg files (nestdnn_msgs), never from the Rust definitions.

    .venv/bin/python test/msgs/make_reference_cdr.py [OUT_DIR]   # default: test/msgs/cdr

Writes OUT_DIR/<pkg>__<Type>.bin: CDR little-endian with the 00 01 00 00 header. The values are
repeated literally in the Rust test; change both together.
"""
import sys
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

ROOT = Path(__file__).resolve().parents[2]

# vision_msgs 4.x (ros-perception/vision_msgs, msg/*.msg), comments dropped.
VISION_MSGS = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/Classification": "std_msgs/Header header\nObjectHypothesis[] results\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "std_msgs/Header header\nVisionClass[] class_map\nfloat32 threshold\n",
}


def typestore():
    ts = get_typestore(Stores.ROS2_HUMBLE)
    add = {}
    for name, text in VISION_MSGS.items():
        add.update(get_types_from_msg(text, name))
    for p in sorted((ROOT / "msgs" / "msg").glob("*.msg")):
        add.update(get_types_from_msg(p.read_text(), f"nestdnn_msgs/msg/{p.stem}"))
    ts.register(add)
    return ts


def values(ts):
    T = ts.types
    Time = T["builtin_interfaces/msg/Time"]
    Header = T["std_msgs/msg/Header"]

    def hdr(sec, nsec, frame):
        return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame)

    ObjectHypothesis = T["vision_msgs/msg/ObjectHypothesis"]
    VisionClass = T["vision_msgs/msg/VisionClass"]
    KeyValue = T["diagnostic_msgs/msg/KeyValue"]
    Status = T["diagnostic_msgs/msg/DiagnosticStatus"]
    TaskPlan = T["nestdnn_msgs/msg/TaskPlan"]
    return {
        "sensor_msgs/msg/Image": T["sensor_msgs/msg/Image"](
            header=hdr(17, 123456789, "cam0"), height=2, width=3, encoding="rgb8",
            is_bigendian=0, step=9, data=np.arange(18, dtype=np.uint8)),
        "sensor_msgs/msg/CompressedImage": T["sensor_msgs/msg/CompressedImage"](
            header=hdr(2, 5, "cam1"), format="jpeg",
            data=np.array([255, 216, 1, 2, 3], dtype=np.uint8)),
        "vision_msgs/msg/Classification": T["vision_msgs/msg/Classification"](
            header=hdr(3, 7, "cam"),
            results=[ObjectHypothesis(class_id="Trouser", score=0.75),
                     ObjectHypothesis(class_id="7", score=0.25)]),
        "vision_msgs/msg/LabelInfo": T["vision_msgs/msg/LabelInfo"](
            header=hdr(0, 0, ""),
            class_map=[VisionClass(class_id=0, class_name="T-shirt/top"),
                       VisionClass(class_id=9, class_name="Ankle boot")],
            threshold=0.5),
        "diagnostic_msgs/msg/DiagnosticArray": T["diagnostic_msgs/msg/DiagnosticArray"](
            header=hdr(9, 1, ""),
            status=[Status(level=1, name="nestdnn: fashion", message="drops", hardware_id="hw",
                           values=[KeyValue(key="fps", value="29.8"),
                                   KeyValue(key="dropped", value="3")]),
                    Status(level=0, name="nestdnn: digits", message="ok", hardware_id="",
                           values=[])]),
        "nestdnn_msgs/msg/ResourceBudget": T["nestdnn_msgs/msg/ResourceBudget"](
            header=hdr(4, 500000000, ""), cpu_cores_available=1.5, cpu_load=float("nan"),
            memory_available_bytes=3 << 30, battery_percentage=0.25, power_supply_status=2),
        "nestdnn_msgs/msg/TaskPriority": T["nestdnn_msgs/msg/TaskPriority"](
            header=hdr(6, 0, ""), task="digits_vgg", priority=2.5, enabled=False),
        "nestdnn_msgs/msg/InferenceResult": T["nestdnn_msgs/msg/InferenceResult"](
            header=hdr(7, 33, "cam2"), task="digits_resnet", descendant="d1",
            descendant_index=1, class_id=3, class_name="3", score=0.875,
            latency_queue_ms=1.25, latency_preprocess_ms=0.5, latency_inference_ms=7.0,
            latency_total_ms=8.75, frame_seq=42, frames_dropped=2),
        "nestdnn_msgs/msg/Plan": T["nestdnn_msgs/msg/Plan"](
            header=hdr(8, 0, ""), plan_id=3, trigger="budget", objective="max_min_accuracy",
            objective_value=0.875, cpu_cores_budget=1.5, cpu_cores_used=1.25,
            memory_budget_bytes=1 << 30, memory_used_bytes=12345, solve_time_ms=0.25,
            tasks=[TaskPlan(task="fashion_vgg", enabled=True, paused=False, descendant="d2",
                            descendant_index=2, descendant_count=4, share_cores=0.75,
                            expected_accuracy=0.5, expected_fps=30.0, target_fps=30.0,
                            priority=2.0, latency_ms=20.0, cost_cores=0.625, memory_bytes=1000),
                   TaskPlan(task="digits", enabled=False, paused=True, descendant="",
                            descendant_index=0, descendant_count=3, share_cores=0.0,
                            expected_accuracy=0.0, expected_fps=0.0, target_fps=15.0,
                            priority=1.0, latency_ms=0.0, cost_cores=0.0, memory_bytes=0)]),
    }


def main(argv):
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "cdr"
    out.mkdir(parents=True, exist_ok=True)
    ts = typestore()
    for name, msg in values(ts).items():
        data = bytes(ts.serialize_cdr(msg, name))
        assert data[:4] == b"\x00\x01\x00\x00", name
        pkg, _, typ = name.split("/")
        (out / f"{pkg}__{typ}.bin").write_bytes(data)
    print(f"{out}: {len(values(ts))} reference messages")


if __name__ == "__main__":
    main(sys.argv[1:])
