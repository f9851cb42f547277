"""Throughput benchmark: 4 cameras x 640x480 rgb8 x 30 Hz (Cyclone DDS, best effort) into
nestdnn_node. Reports the delivered rate, the loss, and the node's CPU time per frame spent
outside inference (DDS receive + decode + pre-processing + publishing results).

Guards against regressions in the transport path (sample cache, copies, publishing).
Run with test/dds/bench.sh (enters a private network namespace).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rosdds as r  # noqa: E402

APPS = ["fashion_vgg", "fashion_resnet", "digits_vgg", "digits_resnet"]


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--hz", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    params = "/tmp/nestdnn-bench-params.yaml"
    lines = ["nestdnn_node:", "  ros__parameters:", f"    tasks: [{', '.join(APPS)}]", f"    models_dir: {a.models}",
             "    default_budget: {cpu_cores: 2.0, memory_mb: 512.0}",
             # shares twice what the profile asks for: latency under load exceeds the profile
             "    scheduler: {share_headroom: 1.0}"]
    for i, t in enumerate(APPS):
        lines.append(f"    {t}: {{image_topic: bench/cam{i}/image_raw, target_fps: {a.hz}}}")
    open(params, "w").write("\n".join(lines) + "\n")
    log = open("/tmp/nestdnn-bench-node.log", "w")
    node = subprocess.Popen([a.node, "--ros-args", "--params-file", params, "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        dp = r.participant()
        plans = r.reader(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
        end = time.time() + 180
        while not r.take_valid(plans) and time.time() < end:
            time.sleep(0.2)
        results = {t: r.reader(dp, f"/nestdnn/{t}/result", r.InferenceResult, r.RELIABLE_READER) for t in APPS}
        diags = r.reader(dp, "/diagnostics", r.DiagnosticArray, r.RELIABLE_READER)

        def counters():
            """Latest per-task counters from /diagnostics: {task: {key: int}}."""
            time.sleep(1.2)
            out = {}
            for d in r.take_valid(diags, 1000):
                for st in d.status:
                    task = st.name.split(": ", 1)[-1]
                    if task in APPS:
                        out[task] = {kv.key: int(kv.value) for kv in st.values if kv.value.isdigit()}
            return out
        writers = [r.writer(dp, f"/bench/cam{i}/image_raw", r.Image, r.SENSOR_DATA) for i in range(len(APPS))]
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, a.width * a.height * 3, dtype=np.uint8).tobytes() for _ in range(4)]
        time.sleep(2.0)
        sent = [0] * len(APPS)
        stop = threading.Event()

        def camera(i):
            # independent drivers are not phase-locked: stagger the cameras within the period
            period = 1.0 / a.hz
            t = time.time() + i * period / len(APPS)
            while not stop.is_set():
                time.sleep(max(0.0, t - time.time()))
                img = r.Image(header=r.Header(stamp=r.now(), frame_id=f"cam{i}"), height=a.height, width=a.width,
                              encoding="rgb8", step=3 * a.width, data=frames[sent[i] % 4])
                writers[i].write(img)
                sent[i] += 1
                t += period

        threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(len(APPS))]
        for th in threads:
            th.start()
        time.sleep(3.0)  # warm up
        for rd in results.values():
            r.take_valid(rd, 100000)
        s0, c0, t0 = list(sent), cpu_s(node.pid), time.time()
        got = {t: [] for t in APPS}
        while time.time() - t0 < a.seconds:
            for t, rd in results.items():
                got[t].extend(r.take_valid(rd, 100000))
            time.sleep(0.1)
        s1, c1, t1 = list(sent), cpu_s(node.pid), time.time()
        rss = rss_mb(node.pid)
        stop.set()
        for th in threads:
            th.join()
        k1 = counters()  # totals since start (cameras stopped, last diagnostics in)
        dt = t1 - t0
        n_sent = sum(s1) - sum(s0)
        n_res = sum(len(v) for v in got.values())
        inf_s = sum(x.latency_inference_ms for v in got.values() for x in v) / 1e3
        pre_ms = [x.latency_preprocess_ms for v in got.values() for x in v]
        lat = sorted(x.latency_total_ms for v in got.values() for x in v)
        node_cpu = c1 - c0
        total = lambda key: sum(k1.get(t, {}).get(key, 0) for t in APPS)
        received = total("frames_received")
        out = {
            "cameras": len(APPS), "resolution": f"{a.width}x{a.height}", "encoding": "rgb8", "hz": a.hz,
            "seconds": round(dt, 1),
            "sent_fps": round(n_sent / dt, 1),
            "frames_sent_total": sum(sent),
            "frames_received_by_node_total": received,
            "transport_loss_percent": round(100.0 * (1 - received / max(sum(sent), 1)), 2),
            "mailbox_overrun_percent": round(100.0 * total("frames_dropped_overrun") / max(received, 1), 2),
            "classified_fps": round(n_res / dt, 1),
            "end_to_end_loss_percent": round(100.0 * (1 - n_res / max(n_sent, 1)), 2),
            "node_cpu_percent_of_one_core": round(100.0 * node_cpu / dt, 1),
            "inference_cpu_percent_of_one_core": round(100.0 * inf_s / dt, 1),
            "cpu_ms_per_frame_outside_inference": round(1e3 * (node_cpu - inf_s) / max(n_res, 1), 3),
            "preprocess_ms_per_frame_median": round(float(np.median(pre_ms)), 3) if pre_ms else None,
            "latency_ms_median": round(lat[len(lat) // 2], 2) if lat else None,
            "latency_ms_p99": round(lat[int(len(lat) * 0.99)], 2) if lat else None,
            "node_rss_mb": round(rss, 1),
            "cpus": os.cpu_count(),
        }
        print(json.dumps(out, indent=2))
        if a.json:
            open(a.json, "w").write(json.dumps(out, indent=2) + "\n")
    finally:
        node.send_signal(2)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        log.close()


if __name__ == "__main__":
    main()
