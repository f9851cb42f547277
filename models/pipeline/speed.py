"""tract vs onnxruntime per descendant, for full-size families (the README's speed table).

    python -m pipeline.speed --nestdnn target/release/nestdnn --out speed.json
        [--families vgg16,resnet50,mobilenet_v2] [--sizes 224,96] [--min-runs 5]

For every family and input size: an untrained ladder (models/forge --untrained, 5
descendants, seed 10 % of the MACs), each descendant timed by `nestdnn profile` (tract, one
thread, the runtime's own sliced and BN-folded plan) and by onnxruntime (one thread, all graph
optimisations, the same descendant sliced by pipeline.export.slice_onnx), in the same run,
one after the other. Prints a markdown table; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def ort_latency_ms(model_bytes: bytes, shape, min_runs: int, min_time_s: float) -> float:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    x = np.full((1, *shape), 0.5, np.float32)
    for _ in range(3):
        sess.run(None, {"input": x})
    times, t0 = [], time.time()
    while len(times) < min_runs or time.time() - t0 < min_time_s:
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(family: str, size: int, nestdnn: str, work: Path, min_runs: int, min_time_ms: int):
    import onnx
    from safetensors.numpy import load_file
    from .export import bn_stat_names, load_manifest, slice_onnx
    d = work / f"{family}_{size}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    r = subprocess.run([sys.executable, "-m", "pipeline.forge", "--arch", family, "--untrained",
                        "--input-size", str(size), "--out", str(d), "--descendants", "5",
                        "--force"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"forge {family} {size} failed:\n{r.stderr[-2000:]}")
    r = subprocess.run([nestdnn, "profile", str(d), "--json", "--no-cache", "--min-runs",
                        str(min_runs), "--min-time-ms", str(min_time_ms)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"nestdnn profile {d} failed:\n{r.stderr[-2000:]}")
    prof = json.loads(r.stdout)
    man = load_manifest(d)
    model = onnx.load(str(d / "model.onnx"))
    bn = load_file(str(d / "bn_stats.safetensors"))
    shape = (man["input"]["channels"], size, size)
    rows = []
    tract = {p["name"]: p for p in prof["descendants"]}
    for desc in man["descendants"]:
        stats = {nm: bn[desc["bn_stats_prefix"] + nm] for pair in bn_stat_names(model)
                 for nm in pair}
        sliced = slice_onnx(model, desc["channels"], stats).SerializeToString()
        ort_ms = ort_latency_ms(sliced, shape, min_runs, min_time_ms / 1e3)
        t_ms = tract[desc["name"]]["latency_ms_median"]
        rows.append(dict(family=family, size=size, descendant=desc["name"],
                         mmac=round(desc["macs"] / 1e6, 1), tract_ms=round(t_ms, 2),
                         ort_ms=round(ort_ms, 2), ratio=round(t_ms / ort_ms, 2)))
    return rows


def table(rows):
    out = ["| family | input | descendant | MMAC | tract ms | onnxruntime ms | tract/ORT | "
           "MAC ratio to largest | tract latency ratio | ORT latency ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["family"], r["size"]), []).append(r)
    for (fam, size), rs in by.items():
        big = rs[-1]
        for r in rs:
            out.append(f"| {fam} | {size} | {r['descendant']} | {r['mmac']} | {r['tract_ms']} | "
                       f"{r['ort_ms']} | {r['ratio']:.2f} | {big['mmac'] / r['mmac']:.1f}x | "
                       f"{big['tract_ms'] / r['tract_ms']:.1f}x | "
                       f"{big['ort_ms'] / r['ort_ms']:.1f}x |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pipeline.speed")
    ap.add_argument("--nestdnn", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--families", default="vgg16,resnet50,mobilenet_v2")
    ap.add_argument("--sizes", default="224,96")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--min-time-ms", type=int, default=1500)
    a = ap.parse_args(argv)
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for fam in a.families.split(","):
            for size in (int(s) for s in a.sizes.split(",")):
                rows += measure(fam, size, a.nestdnn, Path(tmp), a.min_runs, a.min_time_ms)
                print(table([r for r in rows if r["family"] == fam and r["size"] == size]),
                      flush=True)
    import onnxruntime
    res = dict(rows=rows, seconds=round(time.time() - t0), machine=platform.processor() or
               platform.machine(), cpus=os.cpu_count(), onnxruntime=onnxruntime.__version__)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, a.out)
    print(table(rows))


if __name__ == "__main__":
    main()
