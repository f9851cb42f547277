"""ROS 2 message types and QoS for an independent DDS peer (Eclipse Cyclone DDS, PyPI `cyclonedds`).

Declared by hand from the .msg files, following docs/ros2.md (section 8): DDS type names
`pkg::msg::dds_::Type_`, topics `rt/<name>`, keyless `@final` structs, classic CDR (XCDR1),
`uint8[]` declared as `sequence[uint8]` with the member machine swapped for `BytesMachine`
(one memcpy instead of a per-element Python loop; wire-identical).

Every process importing this must run inside a private network namespace (see run_tests.sh).
"""
import os
import time
from dataclasses import dataclass, field

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl._machinery import BytesMachine
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float32, float64, int32, sequence, uint8, uint16, uint32, uint64
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

XCDR1 = Policy.DataRepresentation(use_cdrv0_representation=True)
SENSOR_DATA = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5),
                  Policy.Durability.Volatile, XCDR1)
# rclcpp's ClockQoS (/clock): best effort, keep last 1.
CLOCK = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1), Policy.Durability.Volatile, XCDR1)
LATCHED = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(1),
              Policy.Durability.TransientLocal, XCDR1)
RELIABLE = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10),
               Policy.Durability.Volatile, XCDR1)
# Readers of results: keep everything that arrives (the node publishes reliable, depth 10).
RELIABLE_READER = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(1000),
                      Policy.Durability.Volatile, XCDR1)
LATCHED_READER = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(100),
                     Policy.Durability.TransientLocal, XCDR1)


def _bytes_member(cls, name):
    """Swap the machine of a `sequence[uint8]` member for BytesMachine (P3)."""
    idl = cls.__idl__
    idl.populate()
    for m in (idl.v1_machine, idl.v2_machine):
        if m is not None and hasattr(m, "members_machines"):
            m.members_machines[name] = BytesMachine()
    return cls


@dataclass
@final
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
@final
class Clock(IdlStruct, typename="rosgraph_msgs::msg::dds_::Clock_"):
    clock: Time = field(default_factory=Time)


def now():
    ns = time.time_ns()
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
@final
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
@final
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = ""
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = b""


@dataclass
@final
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header = field(default_factory=Header)
    format: str = ""
    data: sequence[uint8] = b""


@dataclass
@final
class ObjectHypothesis(IdlStruct, typename="vision_msgs::msg::dds_::ObjectHypothesis_"):
    class_id: str = ""
    score: float64 = 0.0


@dataclass
@final
class Classification(IdlStruct, typename="vision_msgs::msg::dds_::Classification_"):
    header: Header = field(default_factory=Header)
    results: sequence[ObjectHypothesis] = field(default_factory=list)


@dataclass
@final
class VisionClass(IdlStruct, typename="vision_msgs::msg::dds_::VisionClass_"):
    class_id: uint16 = 0
    class_name: str = ""


@dataclass
@final
class LabelInfo(IdlStruct, typename="vision_msgs::msg::dds_::LabelInfo_"):
    header: Header = field(default_factory=Header)
    class_map: sequence[VisionClass] = field(default_factory=list)
    threshold: float32 = 0.0


@dataclass
@final
class KeyValue(IdlStruct, typename="diagnostic_msgs::msg::dds_::KeyValue_"):
    key: str = ""
    value: str = ""


@dataclass
@final
class DiagnosticStatus(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticStatus_"):
    level: uint8 = 0
    name: str = ""
    message: str = ""
    hardware_id: str = ""
    values: sequence[KeyValue] = field(default_factory=list)


@dataclass
@final
class DiagnosticArray(IdlStruct, typename="diagnostic_msgs::msg::dds_::DiagnosticArray_"):
    header: Header = field(default_factory=Header)
    status: sequence[DiagnosticStatus] = field(default_factory=list)


@dataclass
@final
class ResourceBudget(IdlStruct, typename="nestdnn_msgs::msg::dds_::ResourceBudget_"):
    header: Header = field(default_factory=Header)
    cpu_cores_available: float32 = 0.0
    cpu_load: float32 = 0.0
    memory_available_bytes: uint64 = 0
    battery_percentage: float32 = 0.0
    power_supply_status: uint8 = 0


@dataclass
@final
class TaskPriority(IdlStruct, typename="nestdnn_msgs::msg::dds_::TaskPriority_"):
    header: Header = field(default_factory=Header)
    task: str = ""
    priority: float32 = 1.0
    enabled: bool = True


@dataclass
@final
class InferenceResult(IdlStruct, typename="nestdnn_msgs::msg::dds_::InferenceResult_"):
    header: Header = field(default_factory=Header)
    task: str = ""
    descendant: str = ""
    descendant_index: uint16 = 0
    class_id: uint16 = 0
    class_name: str = ""
    score: float32 = 0.0
    latency_queue_ms: float32 = 0.0
    latency_preprocess_ms: float32 = 0.0
    latency_inference_ms: float32 = 0.0
    latency_total_ms: float32 = 0.0
    frame_seq: uint64 = 0
    frames_dropped: uint64 = 0


@dataclass
@final
class TaskPlan(IdlStruct, typename="nestdnn_msgs::msg::dds_::TaskPlan_"):
    task: str = ""
    enabled: bool = True
    paused: bool = False
    descendant: str = ""
    descendant_index: uint16 = 0
    descendant_count: uint16 = 0
    share_cores: float32 = 0.0
    expected_accuracy: float32 = 0.0
    expected_fps: float32 = 0.0
    target_fps: float32 = 0.0
    priority: float32 = 0.0
    latency_ms: float32 = 0.0
    cost_cores: float32 = 0.0
    memory_bytes: uint64 = 0


@dataclass
@final
class Plan(IdlStruct, typename="nestdnn_msgs::msg::dds_::Plan_"):
    header: Header = field(default_factory=Header)
    plan_id: uint64 = 0
    trigger: str = ""
    objective: str = ""
    objective_value: float32 = 0.0
    cpu_cores_budget: float32 = 0.0
    cpu_cores_used: float32 = 0.0
    memory_budget_bytes: uint64 = 0
    memory_used_bytes: uint64 = 0
    solve_time_ms: float32 = 0.0
    tasks: sequence[TaskPlan] = field(default_factory=list)


_bytes_member(Image, "data")
_bytes_member(CompressedImage, "data")


def participant():
    """A participant on ROS_DOMAIN_ID (0 if unset)."""
    return DomainParticipant(int(os.environ.get("ROS_DOMAIN_ID", "0") or 0))


def topic(dp, ros_name, cls):
    """The DDS topic of ROS topic `ros_name` (absolute, e.g. /camera/image_raw)."""
    assert ros_name.startswith("/"), ros_name
    return Topic(dp, "rt" + ros_name, cls)


def writer(dp, ros_name, cls, qos):
    return DataWriter(dp, topic(dp, ros_name, cls), qos=qos)


def reader(dp, ros_name, cls, qos):
    return DataReader(dp, topic(dp, ros_name, cls), qos=qos)


def take_valid(rd, n=1000):
    """Valid samples only (a leaving writer produces an InvalidSample, P13)."""
    return [s for s in rd.take(n) if type(s).__name__ != "InvalidSample"]
