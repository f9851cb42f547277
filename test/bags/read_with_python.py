#!/usr/bin/env python3
"""Reads a ROS 2 MCAP file with two independent readers, decoding with the message definitions
stored *in the file* (not with types of their own), and prints JSON:

    {"rosbags": [msg...], "mcap_ros2": [msg...], "qos": {topic: [profile...]}}
    msg = {"topic", "type", "log_time", "data": {field: value, ...}}

Used by nestdnn_node/tests/bag_write.rs to check that what this project writes is readable by
standard tools. Usage: .venv/bin/python test/bags/read_with_python.py FILE.mcap
"""
import json
import sys
from pathlib import Path

import numpy as np


def plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    names = getattr(v, "__slots__", None) or getattr(v, "__dataclass_fields__", None) or vars(v)
    # Fields only: constants (UPPER_CASE) are class attributes in both readers.
    return {n: plain(getattr(v, n)) for n in names if not n.startswith("_") and not n.isupper()}


def with_rosbags(path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    out, qos = [], {}
    # An empty store: every type must come from the definitions in the file.
    with AnyReader([path], default_typestore=get_typestore(Stores.EMPTY)) as r:
        for c in r.connections:
            qos[c.topic] = [
                {"reliability": q.reliability.name.lower(), "durability": q.durability.name.lower(),
                 "history": q.history.name.lower(), "depth": q.depth}
                for q in c.ext.offered_qos_profiles]
        for c, t, raw in r.messages():
            out.append({"topic": c.topic, "type": c.msgtype, "log_time": t,
                        "data": plain(r.deserialize(raw, c.msgtype))})
    return out, qos


def with_mcap_ros2(path):
    from mcap_ros2.reader import read_ros2_messages
    out = []
    for m in read_ros2_messages(str(path)):
        out.append({"topic": m.channel.topic, "type": m.schema.name, "log_time": m.log_time_ns,
                    "data": plain(m.ros_msg)})
    return out


def main(argv):
    path = Path(argv[0])
    rb, qos = with_rosbags(path)
    print(json.dumps({"rosbags": rb, "mcap_ros2": with_mcap_ros2(path), "qos": qos}))


if __name__ == "__main__":
    main(sys.argv[1:])
