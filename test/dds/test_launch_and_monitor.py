"""The command line `ros2 launch nestdnn_node nestdnn.launch.py` produces, and the resource
monitor driving the node's plan over DDS."""
import os
import subprocess
import time

import pytest

import rosdds as r
from conftest import ROOT, binary, write_params
from peers import Camera, Collector, Fixtures


def launch_command(exe, params, ns, log_level, tmp_path, remaps=()):
    """What launch_ros's Node action runs for launch/nestdnn.launch.py: the executable, the
    action's `ros_arguments` in their own --ros-args section, then node name, namespace, the
    params file, a temporary params file for the dict parameters ({"use_sim_time": ...}, written
    under the `/**` key), and remappings."""
    dict_file = tmp_path / "launch_params_x1y2z3"
    dict_file.write_text("/**:\n  ros__parameters:\n    use_sim_time: false\n")
    cmd = [exe, "--ros-args", "--log-level", log_level,
           "--ros-args", "-r", f"__node:={os.path.basename(exe)}", "-r", f"__ns:={ns}",
           "--params-file", params, "--params-file", str(dict_file)]
    for a, b in remaps:
        cmd += ["-r", f"{a}:={b}"]
    return cmd


def test_launch_file_declares_what_the_test_runs():
    text = open(os.path.join(ROOT, "launch", "nestdnn.launch.py")).read()
    for needle in ('executable="resource_monitor"', 'executable="nestdnn_node"', '"namespace"',
                   '"params_file"', '"use_sim_time"', '"log_level"', 'ros_arguments=["--log-level", log_level]',
                   'parameters=[params_file, {"use_sim_time": use_sim_time}]'):
        assert needle in text, needle


def test_launch_command_line_starts_the_node(procs, models, tmp_path, dp):
    params = write_params(tmp_path / "params.yaml", models)
    cmd = launch_command(binary("nestdnn_node"), params, "/robot1", "info", tmp_path,
                         remaps=[("camera_a/image_raw", "/drivers/cam0/image")])
    node = procs(cmd, name="node")
    plans = Collector(dp, "/robot1/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, 120), "no plan under the namespace: " + node.text()
    fx = Fixtures(f"{models}/fashion_vgg")
    fd = Fixtures(f"{models}/digits_vgg")
    cam_a = Camera(dp, "/drivers/cam0/image", fx)              # remapped topic
    cam_b = Camera(dp, "/robot1/camera_b/image_raw", fd)       # relative topic in the namespace
    cam_a.start()
    cam_b.start()
    try:
        ra = Collector(dp, "/robot1/nestdnn/fashion_vgg/result", r.InferenceResult, r.RELIABLE_READER)
        rb = Collector(dp, "/robot1/nestdnn/digits_vgg/result", r.InferenceResult, r.RELIABLE_READER)
        assert ra.wait(lambda x: len(x) >= 10, 30), node.text()
        assert rb.wait(lambda x: len(x) >= 10, 30), node.text()
    finally:
        cam_a.stop()
        cam_b.stop()
    log = node.text()
    assert "/drivers/cam0/image" in log and "/robot1/camera_b/image_raw" in log
    assert "default budget" in log
    assert node.stop() == 0, node.text()
    assert "closed" in node.text()


def test_monitor_cpu_hog_replans_node(procs, models, tmp_path, dp):
    params = write_params(tmp_path / "params.yaml", models, cores=0.05)
    mon = procs([binary("resource_monitor"), "--ros-args", "-p", "period_s:=0.5", "-p", "sample_period_s:=0.5",
                 "-p", "headroom.cpu_cores:=0.0"], name="monitor")
    node = procs([binary("nestdnn_node"), "--ros-args", "--params-file", params], name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    # The monitor's budget replaces the default (0.05 cores).
    assert plans.wait(lambda ps: any(p.trigger == "budget" for p in ps), 120), node.text() + mon.text()
    time.sleep(2.0)
    plans.poll()
    calm = plans.items[-1].cpu_cores_budget
    if calm < 0.8:
        pytest.skip(f"other processes already use the machine (budget {calm:.2f} cores before the hog): "
                    "a hog cannot lower it visibly")
    n0 = len(plans.items)
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(os.cpu_count())]
    try:
        ok = plans.wait(lambda ps: any(p.trigger == "budget" and p.cpu_cores_budget < min(calm - 0.5, 0.5)
                                       for p in ps[n0:]), 15)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert ok, f"budget before the hog {calm:.2f}, plans since: " + \
        str([(p.trigger, round(p.cpu_cores_budget, 2)) for p in plans.items[n0:]])
    assert node.alive() and mon.alive()
