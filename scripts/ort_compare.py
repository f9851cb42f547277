#!/usr/bin/env python3
"""tract vs onnxruntime, per descendant, single thread, batch 1, same inputs.

For every model folder given (default: every models/*/manifest.yaml):
  1. `nestdnn export-descendant` writes each descendant exactly as the runtime builds it
     (sliced, BatchNorm folded with its own statistics) plus the BN-folded vanilla model;
  2. `nestdnn profile --json --no-cache` measures tract (median of single-thread batch-1 runs);
  3. onnxruntime runs the same files (intra/inter-op threads 1, sequential, all graph
     optimisations) on the fixture image, checks every fixture's logits against the PyTorch
     reference in fixtures.safetensors, and is timed the same way;
  4. prints one row per descendant: tract ms, ORT ms, tract/ORT.

ORT figures include the Python call overhead of `session.run`, measured separately on an
Identity model and printed (subtract it for the engine-only ratio; the table does not).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from safetensors.numpy import load_file


def timed(fn, warmup, min_runs, min_time):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    p90 = times[max(0, int(np.ceil(0.9 * len(times))) - 1)]
    return statistics.median(times), p90, len(times)


def session(path_or_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def call_overhead(args):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = session(m.SerializeToString())
    a = np.zeros((1, 1, 28, 28), np.float32)
    return timed(lambda: s.run(None, {"x": a}), args.warmup, args.min_runs, args.min_time)[0]


def compare(model_dir, args, out):
    import yaml

    manifest = yaml.safe_load(open(os.path.join(model_dir, "manifest.yaml")))
    task = manifest["task"]
    fx = load_file(os.path.join(model_dir, manifest["fixtures"]["file"]))
    inputs = fx["input"]
    export_dir = os.path.join(out, task)
    subprocess.run([args.nestdnn, "export-descendant", model_dir, "--out", export_dir], check=True,
                   stdout=subprocess.DEVNULL)
    prof = json.loads(subprocess.run(
        [args.nestdnn, "profile", model_dir, "--json", "--no-cache",
         "--min-time-ms", str(int(args.min_time * 1000)), "--min-runs", str(args.min_runs)],
        check=True, capture_output=True, text=True).stdout)
    tract = {d["name"]: d for d in prof["descendants"] + ([prof["vanilla"]] if prof.get("vanilla") else [])}
    macs = {d["name"]: d["macs"] for d in manifest["descendants"]}
    macs["vanilla"] = manifest["vanilla"]["macs"]
    rows = []
    for name in [d["name"] for d in manifest["descendants"]] + ["vanilla"]:
        s = session(os.path.join(export_dir, f"{name}.onnx"))
        iname = s.get_inputs()[0].name
        worst = 0.0
        ref = fx.get(f"{name}/logits")
        for i in range(inputs.shape[0]):
            y = s.run(None, {iname: inputs[i:i + 1]})[0]
            if ref is not None:
                worst = max(worst, float(np.abs(y[0] - ref[i]).max()))
        x = inputs[0:1]
        med, p90, n = timed(lambda: s.run(None, {iname: x}), args.warmup, args.min_runs, args.min_time)
        t = tract[name]["latency_ms_median"]
        rows.append(dict(task=task, name=name, macs=macs[name], tract_ms=t, ort_ms=med, ort_p90_ms=p90,
                         ort_runs=n, ratio=t / med, ort_max_abs_diff=worst))
    return prof["cpu_model"], rows


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dirs", nargs="*")
    ap.add_argument("--nestdnn", default=os.path.join(root, "target", "release", "nestdnn"))
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per descendant")
    ap.add_argument("--min-runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dirs = args.model_dirs or sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "models", "*", "manifest.yaml")))
    if not dirs:
        sys.exit("no models found (give MODEL_DIR arguments)")
    overhead = call_overhead(args)
    all_rows, cpu = [], "?"
    with tempfile.TemporaryDirectory() as out:
        for d in dirs:
            cpu, rows = compare(d, args, out)
            all_rows += rows
    if args.json:
        print(json.dumps(dict(cpu=cpu, onnxruntime=ort.__version__, ort_call_overhead_ms=overhead,
                              rows=all_rows), indent=2))
        return
    print(f"CPU: {cpu}; onnxruntime {ort.__version__}; single thread, batch 1; "
          f"ORT Python call overhead {overhead * 1000:.1f} us (included below)")
    hdr = f"{'task':<16} {'descendant':<10} {'MMAC':>8} {'tract ms':>10} {'ORT ms':>10} {'tract/ORT':>9} {'ORT |diff|':>10}"
    print(hdr)
    for r in all_rows:
        print(f"{r['task']:<16} {r['name']:<10} {r['macs'] / 1e6:>8.2f} {r['tract_ms']:>10.4f} {r['ort_ms']:>10.4f} "
              f"{r['ratio']:>9.2f} {r['ort_max_abs_diff']:>10.1e}")
    bad = [r for r in all_rows if r["ort_max_abs_diff"] > 1e-4]
    if bad:
        sys.exit(f"ORT disagrees with the PyTorch reference for {[(r['task'], r['name']) for r in bad]}")


if __name__ == "__main__":
    main()
