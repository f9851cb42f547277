#!/usr/bin/env python3
"""How representative are a heavy app's recorded scenes? Top-1 of every model of a heavy app
(each descendant sliced from model.onnx, the vanilla model, the standalone smaller models) on
composite test scenes of several generator seeds, each seen two ways:

* raw: the scene as the generator made it (what the forge validated on);
* camera: the scene through the recording's camera exactly as make_recordings.py renders it
  (pasted into the camera's defocused background photo at its ROI, the whole frame JPEG-coded
  at the heavy cameras' quality, decoded, the ROI cut out); the bench's frames are this path
  with seed HEAVY_SCENE_SEED, the calibration recording's with CALIBRATION_SCENE_SEED.

Per seed and model it prints raw/camera top-1 and the frames the camera turned right (+) and
wrong (-), and the same pooled over the seeds other than the benchmark's. Written to explain
why `items_far_vgg` d4 scored 8.8 pt under its manifest on the benchmark's 600 frames
(docs/benchmarks.md); onnxruntime, one thread, about 1.5 minutes for the default seeds.

    .venv/bin/python test/bags/scene_seeds.py items_far_vgg [--seeds 7:600,0:2000,1:600] [--json]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(HERE))

import make_recordings as mr  # noqa: E402
from pipeline.composite import generate_u8, get_design  # noqa: E402

DEFAULT_SEEDS = "7:600,0:2000,1:600,2:600,3:600,4:600,5:600,6:600"


class Camera:
    """One heavy camera of make_recordings.py: its background frame and ROI."""

    def __init__(self, task: str):
        if task not in mr.HEAVY_CAMERAS:
            raise SystemExit(f"error: {task!r} is not a heavy camera of make_recordings.py "
                             f"(known: {', '.join(mr.HEAVY_CAMERAS)})")
        self.task = task
        self.cam = mr.HEAVY_CAMERAS[task]
        self.design = get_design(self.cam["design"])
        self.bg = mr.background(self.cam["photo"], mr.WIDTH, mr.HEIGHT, self.cam["blur"])

    def jpeg(self, scene_chw: np.ndarray) -> bytes:
        """The camera frame showing `scene_chw`, JPEG-coded as in the recording."""
        frame = mr.composite_heavy(self.bg, scene_chw, self.cam["roi"])
        return mr.jpeg(frame, mr.HEAVY_JPEG_QUALITY, 0)

    def roi(self, scene_chw: np.ndarray) -> np.ndarray:
        """What a model sees of `scene_chw` through the camera (u8 CHW)."""
        from PIL import Image
        x, y, w, h = self.cam["roi"]
        a = np.asarray(Image.open(io.BytesIO(self.jpeg(scene_chw))).convert("RGB"))
        return np.ascontiguousarray(a[y:y + h, x:x + w].transpose(2, 0, 1))


class Models:
    """Every model of a model folder as onnxruntime sessions (one thread)."""

    def __init__(self, folder: Path):
        import onnx
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from pipeline.export import bn_stat_names, load_manifest, slice_onnx
        man = load_manifest(folder)
        inp = man["input"]
        self.mean = np.array(inp["mean"], np.float32)[None, :, None, None]
        self.std = np.array(inp["std"], np.float32)[None, :, None, None]
        self.scale = np.float32(inp["scale"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1

        def session(data: bytes):
            return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folder / man["onnx"]["file"]))
        bn = load_file(str(folder / man["bn_stats"]["file"]))
        self.sessions = {}
        for d in man["descendants"]:
            stats = {nm: bn[d["bn_stats_prefix"] + nm]
                     for pair in bn_stat_names(model) for nm in pair}
            self.sessions[d["name"]] = session(
                slice_onnx(model, d["channels"], stats).SerializeToString())
        self.sessions["vanilla"] = session((folder / man["vanilla"]["file"]).read_bytes())
        for k, sq in enumerate(man.get("status_quo") or [], start=1):
            self.sessions[f"status_quo_{k}"] = session((folder / sq["file"]).read_bytes())

    def correct(self, x_u8: np.ndarray, y: np.ndarray) -> dict:
        """Per model, a bool per scene: top-1 right."""
        x = (x_u8.astype(np.float32) * self.scale - self.mean) / self.std
        out = {}
        for name, s in self.sessions.items():
            pred = np.concatenate([s.run(None, {"input": x[i:i + 200]})[0].argmax(1)
                                   for i in range(0, len(y), 200)])
            out[name] = pred == y
        return out


def parse_seeds(text: str):
    try:
        seeds = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(len(s) != 2 or s[1] <= 0 for s in seeds):
        raise SystemExit(f"error: --seeds {text!r}: expected SEED:N[,SEED:N...] with N > 0, "
                         f"e.g. {DEFAULT_SEEDS}")
    return seeds


def run(task: str, seeds) -> dict:
    cam = Camera(task)
    models = Models(ROOT / "models" / task)
    rows, pooled = [], {}
    for seed, n in seeds:
        s = generate_u8(cam.design, "test", n, seed)
        xc = np.stack([cam.roi(scene) for scene in s.x])
        raw, seen = models.correct(s.x, s.y), models.correct(xc, s.y)
        row = dict(seed=seed, n=n, benchmark=seed == mr.HEAVY_SCENE_SEED, models={})
        for m in raw:
            r, c = raw[m], seen[m]
            row["models"][m] = dict(raw=float(r.mean()), camera=float(c.mean()),
                                    turned_right=int((c & ~r).sum()),
                                    turned_wrong=int((r & ~c).sum()))
            if seed != mr.HEAVY_SCENE_SEED:
                p = pooled.setdefault(m, dict(raw=0, camera=0, n=0))
                p["raw"] += int(r.sum())
                p["camera"] += int(c.sum())
                p["n"] += n
        rows.append(row)
    return dict(task=task, benchmark_seed=mr.HEAVY_SCENE_SEED,
                calibration_seed=mr.CALIBRATION_SCENE_SEED, seeds=rows,
                pooled_other_seeds={m: dict(raw=p["raw"] / p["n"], camera=p["camera"] / p["n"],
                                            n=p["n"]) for m, p in pooled.items()})


def table(res: dict) -> str:
    names = list(res["seeds"][0]["models"])
    lines = [f"{res['task']}: top-1 % raw / camera (frames the camera turned right+ wrong-); "
             f"seed {res['benchmark_seed']} is the benchmark's, seed "
             f"{res['calibration_seed']} the calibration recording's",
             "seed      n  " + "  ".join(f"{m:>22}" for m in names)]
    for row in res["seeds"]:
        cells = [f"{100 * v['raw']:5.1f}/{100 * v['camera']:5.1f} "
                 f"({v['turned_right']:>3}+{v['turned_wrong']:>3}-)"
                 for v in row["models"].values()]
        lines.append(f"{row['seed']:>4} {row['n']:>6}  " + "  ".join(f"{c:>22}" for c in cells))
    if res["pooled_other_seeds"]:
        p = res["pooled_other_seeds"]
        n = next(iter(p.values()))["n"]
        cells = [f"{100 * v['raw']:5.2f}/{100 * v['camera']:5.2f}" for v in p.values()]
        lines.append(f"pool {n:>6}  " + "  ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", help="a heavy app: " + ", ".join(mr.HEAVY_CAMERAS))
    ap.add_argument("--seeds", default=DEFAULT_SEEDS, help="SEED:N,... (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    res = run(a.task, parse_seeds(a.seeds))
    print(json.dumps(res, indent=1) if a.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
