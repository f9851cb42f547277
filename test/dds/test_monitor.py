"""resource_monitor over DDS, read by an independent Cyclone DDS participant."""
import math
import os
import subprocess
import time

import rosdds as r
from conftest import binary, wait_for

TOPIC = "/nestdnn/resource_budget"


def _collect(rd, into):
    into.extend(r.take_valid(rd))
    return into


def test_trace_budgets_arrive_latched(dp, procs, tmp_path):
    trace = tmp_path / "trace.yaml"
    trace.write_text("- {t: 0, cpu_cores: 2.0, memory_mb: 512, battery: 0.9, power_supply_status: 2}\n"
                     "- {t: 1.0, cpu_cores: 0.5, memory_mb: 256}\n")
    mon = procs([binary("resource_monitor"), "--trace", str(trace), "--ros-args",
                 "-p", "period_s:=5.0", "--log-level", "info"], name="monitor")
    time.sleep(2.0)  # both steps published before the reader exists: latched must deliver the last
    rd = r.reader(dp, TOPIC, r.ResourceBudget, r.LATCHED_READER)
    got = wait_for(lambda: r.take_valid(rd), 5)
    assert got, "no latched budget received: " + mon.text()
    last = got[-1]
    assert abs(last.cpu_cores_available - 0.5) < 1e-6
    assert last.memory_available_bytes == 256 << 20
    assert abs(last.battery_percentage - 0.9) < 1e-6 and last.power_supply_status == 2  # carried over
    assert last.header.stamp.sec > 0
    assert mon.stop() == 0, mon.text()


def test_remap_namespace_and_domain(dp, procs, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("t,cpu_cores,memory_bytes\n0,1.25,1000\n")
    mon = procs([binary("resource_monitor"), "--trace", str(trace), "--ros-args",
                 "-r", "__ns:=/robot7", "-r", "nestdnn/resource_budget:=budget_x"], name="monitor")
    rd = r.reader(dp, "/robot7/budget_x", r.ResourceBudget, r.LATCHED_READER)
    got = wait_for(lambda: r.take_valid(rd), 8)
    assert got and abs(got[-1].cpu_cores_available - 1.25) < 1e-6, mon.text()


def test_ros_domain_id_is_honoured(dp, procs, tmp_path):
    from cyclonedds.domain import DomainParticipant
    trace = tmp_path / "t.csv"
    trace.write_text("t,cpu_cores,memory_bytes\n0,0.75,1000\n")
    mon = procs([binary("resource_monitor"), "--trace", str(trace)], env={"ROS_DOMAIN_ID": "7"}, name="monitor")
    on7 = r.reader(DomainParticipant(7), TOPIC, r.ResourceBudget, r.LATCHED_READER)
    on0 = r.reader(dp, TOPIC, r.ResourceBudget, r.LATCHED_READER)
    got = wait_for(lambda: r.take_valid(on7), 8)
    assert got and abs(got[-1].cpu_cores_available - 0.75) < 1e-6, mon.text()
    assert not [b for b in r.take_valid(on0) if abs(b.cpu_cores_available - 0.75) < 1e-6], "leaked to the test's own domain"


def test_live_cpu_hog_lowers_budget(dp, procs):
    mon = procs([binary("resource_monitor"), "--ros-args", "-p", "period_s:=0.5",
                 "-p", "sample_period_s:=0.5", "-p", "headroom.cpu_cores:=0.0"], name="monitor")
    rd = r.reader(dp, TOPIC, r.ResourceBudget, r.LATCHED_READER)
    seen = []
    time.sleep(3.0)
    _collect(rd, seen)
    assert seen, "no budget: " + mon.text()
    before = min(b.cpu_cores_available for b in seen[-3:])
    ncpu = os.cpu_count()
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(ncpu)]
    try:
        time.sleep(3.0)
        seen.clear()
        _collect(rd, seen)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert seen, "no budget during the hog"
    during = min(b.cpu_cores_available for b in seen[-3:])
    assert during < before - 0.4 or during < 0.3, f"budget before {before:.2f}, with hogs {during:.2f}"
    assert all(0.0 <= b.cpu_load <= 1.0 for b in seen)
    assert mon.stop() == 0
