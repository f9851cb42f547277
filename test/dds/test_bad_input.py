"""Bad input over the wire: the node logs (throttled), counts, keeps serving, and its memory
stays bounded."""
import time
from dataclasses import dataclass, field

import numpy as np
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final

import rosdds as r
from conftest import binary, write_params
from peers import Camera, Collector, Fixtures, budget, priority


@dataclass
@final
class TruncatedImage(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    """Same DDS type name as sensor_msgs/Image but only a header: undecodable as an Image."""
    header: r.Header = field(default_factory=r.Header)


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def diag_values(diags, name):
    for d in reversed(diags.poll()):
        for s in d.status:
            if s.name == name:
                return {kv.key: kv.value for kv in s.values}
    return {}


def test_bad_input_is_counted_and_the_node_keeps_serving(procs, models, tmp_path, dp):
    params = write_params(tmp_path / "params.yaml", models)
    node = procs([binary("nestdnn_node"), "--ros-args", "--params-file", params], name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, 120), node.text()
    diags = Collector(dp, "/diagnostics", r.DiagnosticArray, r.RELIABLE_READER)
    fb = Fixtures(f"{models}/digits_vgg")
    good = Camera(dp, "/camera_b/image_raw", fb)
    good.start()
    results = Collector(dp, "/nestdnn/digits_vgg/result", r.InferenceResult, r.RELIABLE_READER)
    try:
        assert results.wait(lambda x: len(x) >= 10, 30), node.text()
        pid = node.p.pid
        rss0 = rss_kb(pid)
        w = r.writer(dp, "/camera_a/image_raw", r.Image, r.SENSOR_DATA)
        time.sleep(1.0)
        hdr = lambda: r.Header(stamp=r.now(), frame_id="bad")
        for _ in range(50):  # data shorter than step * height
            w.write(r.Image(header=hdr(), height=28, width=28, encoding="rgb8", step=84, data=bytes(100)))
            time.sleep(0.005)
        for _ in range(50):  # unknown encoding
            w.write(r.Image(header=hdr(), height=28, width=28, encoding="yuv_weird", step=84, data=bytes(84 * 28)))
            time.sleep(0.005)
        wt = r.writer(dp, "/camera_a/image_raw", TruncatedImage, r.SENSOR_DATA)
        time.sleep(0.5)
        for _ in range(20):  # not an Image at all
            wt.write(TruncatedImage(header=hdr()))
            time.sleep(0.005)
        ob = r.writer(dp, "/nestdnn/resource_budget", r.ResourceBudget, r.LATCHED)
        op = r.writer(dp, "/nestdnn/task_priority", r.TaskPriority, r.RELIABLE)
        time.sleep(0.5)
        ob.write(budget(float("nan")))
        op.write(priority("no_such_task", 2.0))
        op.write(priority("digits_vgg", float("nan")))
        time.sleep(0.5)
        ob.write(budget(0.0))   # valid: pauses every task
        assert plans.wait(lambda ps: ps[-1].cpu_cores_budget == 0.0 and all(t.paused for t in ps[-1].tasks), 10)
        ob.write(budget(2.0))   # and serving resumes
        assert plans.wait(lambda ps: ps[-1].cpu_cores_budget == 2.0 and any(not t.paused for t in ps[-1].tasks), 10)
        # a burst of 1,000 VGA frames as fast as the peer can send
        frame = r.Image(height=480, width=640, encoding="rgb8", step=1920,
                        data=np.random.default_rng(1).integers(0, 255, 640 * 480 * 3, dtype=np.uint8).tobytes())
        t0 = time.time()
        for i in range(1000):
            frame.header = r.Header(stamp=r.now(), frame_id=f"burst:{i}")
            w.write(frame)
        burst_s = time.time() - t0
        time.sleep(2.0)
        rss1 = rss_kb(pid)
        n = len(results.poll())
        assert results.wait(lambda x: len(x) >= n + 10, 10), "the node stopped serving"
        assert node.alive()
        assert diags.wait(lambda ds: diag_values(diags, "nestdnn_node: inputs").get("budgets_rejected") == "1", 5)
        inputs = diag_values(diags, "nestdnn_node: inputs")
        fa = diag_values(diags, "nestdnn_node: fashion_vgg")
        print("burst of 1000 VGA frames sent in", round(burst_s, 2), "s; rss", rss0, "->", rss1, "kB;",
              "inputs", inputs, "fashion_vgg", {k: fa[k] for k in fa if k.startswith("frames")})
        assert int(inputs["priorities_rejected"]) == 2 and int(inputs["budgets_zero"]) == 1
        assert int(inputs["samples_undecodable"]) >= 1
        assert int(fa["frames_bad"]) >= 90
        assert int(fa["frames_received"]) >= 100
        assert rss1 - rss0 < 200 * 1024, f"memory grew from {rss0} kB to {rss1} kB"
        log = node.text()
        assert log.count("dropped a frame") <= 4, "bad frames are not log-throttled"
        assert log.count("dropped an undecodable sample") <= 2
        assert "every task is paused" in log
    finally:
        good.stop()
    assert node.stop() == 0
