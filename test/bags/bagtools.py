"""Shared helpers of the bag generators: the rosbags type store (ROS 2 Humble standard types,
upstream vision_msgs 4.x texts, this repository's msgs/msg/*.msg) and the QoS profiles.
Independent of the Rust code on purpose: these bags test it."""
from pathlib import Path

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

ROOT = Path(__file__).resolve().parents[2]

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


_ZERO = QosTime(sec=0, nsec=0)


def qos(reliable: bool, transient_local: bool, depth: int) -> Qos:
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)


SENSOR_DATA = qos(False, False, 5)      # REP-2003 sensor data
LATCHED = qos(True, True, 1)            # budgets, plans
DEFAULT = qos(True, False, 10)


def header(ts, t_ns: int, frame: str):
    T = ts.types
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000),
        frame_id=frame)
