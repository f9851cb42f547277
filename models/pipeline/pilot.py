"""Pilot: accuracy vs network size on composite-scene tasks (issue 11, first step).

For each design x width multiplier, trains a VGG-11-style CNN (Conv-BN-ReLU, the VGG-11
channel plan times the multiplier, five 2x2 max-pools, global average pooling, one Linear)
for a FIXED number of epochs (the same for every width of a design, so that a machine whose
speed varies does not bias the comparison), with the feasibility note's recipe: SGD Nesterov
0.9, lr 0.05 with linear warm-up (5 % of the steps) and cosine decay to 0, weight decay 5e-4,
batch 128, random 4 px crop (zero padding) + horizontal flip (flip only where the targets are
Fashion items: digits are not mirror-symmetric). Measures test top-1 on the generated test split
(test objects on test photos), train top-1 on the first 2,000 training scenes (no
augmentation), training throughput and wall time. The scenes are composites
(pipeline/composite.py), not captures.

    cd models && python -m pipeline.pilot --designs A,B,C --widths 0.0625,0.125,0.2,0.25 \\
        --epochs 6 --train 12000 --test 2000 --out pilots --resume
    python -m pipeline.pilot --estimate ...     # time a few steps per width, print the budget
    python -m pipeline.pilot --table --out pilots   # the markdown table from results.json

Checkpoints: every finished (design, width) row is written to OUT/results.json at once
(temp file + os.replace); after every epoch the model and optimiser go to OUT/.work/ so that an
interrupted run resumes mid-training with --resume (which also skips finished rows).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import composite
from .errors import PipelineError
from .train import accuracy, augment, normalise, seed_for

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
DEFAULT_WIDTHS = (0.0625, 0.125, 0.2, 0.25)
TRAIN_EVAL_N = 2000
RECIPE = {"optimizer": "SGD nesterov momentum 0.9", "lr": 0.05, "warmup_fraction": 0.05,
          "schedule": "linear warm-up then cosine to 0", "weight_decay": 5e-4, "batch": 128,
          "augmentation": "random 4 px crop (zero pad) + hflip (Fashion-only targets)"}


STEMS = ("pool", "strided")


class PilotVGG(nn.Module):
    """VGG-11 (configuration A) with BN, channel counts round(c * width) (at least 1), global
    average pooling and one Linear. `stem="strided"`: the first convolution runs at stride 2
    and the first max-pool goes, so no layer runs at the full input resolution (the same MACs
    after the stem, a quarter of the stem's)."""

    def __init__(self, width: float, classes: int, in_ch: int = 3, stem: str = "pool"):
        super().__init__()
        if stem not in STEMS:
            raise PipelineError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        layers, c, first, skip_pool = [], in_ch, True, stem == "strided"
        for v in VGG11:
            if v == "M":
                if skip_pool:
                    skip_pool = False
                    continue
                layers.append(nn.MaxPool2d(2))
                continue
            o = max(1, int(round(v * width)))
            stride = 2 if first and stem == "strided" else 1
            layers += [nn.Conv2d(c, o, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            c, first = o, False
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    def channels(self):
        return [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]


class SceneVGG(PilotVGG):
    """The heavy apps' network for `models/forge --arch pipeline.pilot:SceneVGG`: the pilot's
    VGG-11 at width 0.25 (39.5 MMAC at 64x64x3, the largest width of the pilot table)."""

    WIDTH = 0.25
    STEM = "pool"

    def __init__(self, num_classes: int = 10):
        super().__init__(self.WIDTH, num_classes, stem=self.STEM)


class StridedSceneVGG(SceneVGG):
    """`SceneVGG` with the strided stem (38.2 MMAC): the candidate fix for the heavy apps'
    latency span (models/README.md, "Heavy apps")."""

    STEM = "strided"


class StridedSceneVGG35(StridedSceneVGG):
    """The strided-stem network at width 0.35 (74.7 MMAC)."""

    WIDTH = 0.35


def count_macs(net: nn.Module, input_shape) -> int:
    """Exact multiply-accumulates of Conv2d and Linear layers for one image (forward hooks):
    conv: output elements x (in_channels / groups) x kh x kw; linear: in x out."""
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * \
            m.kernel_size[1]

    def lin_hook(m, inp, out):
        total[0] += m.in_features * m.out_features

    hooks = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros((1,) + tuple(input_shape)))
    net.train(was)
    for h in hooks:
        h.remove()
    return total[0]


# ----------------------------------------------------------------------------- files
def _atomic_write_bytes(path: Path, payload: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_results(path: Path) -> dict:
    if not path.exists():
        return {"rows": []}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path} is not a readable results file ({e}); move it away")
    if not isinstance(obj, dict) or not isinstance(obj.get("rows"), list):
        raise PipelineError(f"{path} has no 'rows' list; move it away")
    return obj


def row_key(r: dict) -> tuple:
    return (r["design"], float(r["width"]), int(r["size"]), int(r["epochs"]),
            int(r["n_train"]), int(r["n_test"]), int(r["seed"]), r.get("stem", "pool"))


def append_result(path: Path, row: dict):
    obj = load_results(path)
    k = row_key(row)
    obj["rows"] = [r for r in obj["rows"] if row_key(r) != k] + [row]
    obj["about"] = ("pipeline.pilot results: accuracy vs size on composite scenes (objects "
                    "pasted onto photos, not captures); see docs/pilots.md")
    _atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _ckpt_path(out: Path, key: tuple) -> Path:
    d, w, s, e, ntr, nte, seed, stem = key
    tail = "" if stem == "pool" else f"-{stem}"
    return out / ".work" / f"{d}-w{w:g}-s{s}-e{e}-n{ntr}-{nte}-seed{seed}{tail}.pt"


def _save_ckpt(path: Path, state: dict):
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    _atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- training
def evaluate(net, x_u8: torch.Tensor, y: torch.Tensor, mean, std) -> float:
    """Top-1 in percent (the pipeline's `train.accuracy` on these tensors)."""
    return 100.0 * accuracy(net, x_u8.numpy(), y.numpy(), mean, std)


def _lr_at(step: int, total: int, lr: float) -> float:
    warm = max(1, int(round(RECIPE["warmup_fraction"] * total)))
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return lr * 0.5 * (1 + math.cos(math.pi * t))


def train_one(design, width: float, data: dict, *, epochs: int, seed: int, out: Path,
              resume: bool, stem: str = "pool", log=print):
    """Trains one (design, width) for `epochs` epochs; returns (result row, checkpoint path)."""
    key = (design.key, float(width), int(design.size), int(epochs), len(data["ytr"]),
           len(data["yte"]), int(seed), stem)
    ck = _ckpt_path(out, key)
    s = seed_for("pilot", design.key, f"{width:g}", design.size, seed)
    torch.manual_seed(s)
    net = PilotVGG(width, design.classes, stem=stem)
    macs = count_macs(net, (3, design.size, design.size))
    nparams = sum(p.numel() for p in net.parameters())
    batch = RECIPE["batch"]
    opt = torch.optim.SGD(net.parameters(), lr=RECIPE["lr"], momentum=0.9, nesterov=True,
                          weight_decay=RECIPE["weight_decay"])
    xtr, ytr, xte, yte = data["xtr"], data["ytr"], data["xte"], data["yte"]
    mean, std = data["mean"], data["std"]
    n = len(ytr)
    steps_per_epoch = max(1, n // batch)
    total = epochs * steps_per_epoch
    start_epoch, history, train_s, wall_prev = 0, [], 0.0, 0.0
    if resume and ck.exists():
        try:
            st = torch.load(ck, map_location="cpu", weights_only=False)
            net.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            start_epoch, history = int(st["epoch"]), list(st["history"])
            train_s, wall_prev = float(st["train_s"]), float(st["wall_s"])
            log(f"[{design.key} w={width:g}] resuming after epoch {start_epoch} from {ck}")
        except Exception as e:   # a damaged checkpoint: start this row again
            log(f"[{design.key} w={width:g}] checkpoint {ck} unreadable ({e}); starting over")
            start_epoch, history, train_s, wall_prev = 0, [], 0.0, 0.0
    elif ck.exists():
        ck.unlink()
    t_wall = time.time()
    stem_tag = "" if stem == "pool" else f" {stem}"
    tag = f"[{design.key} w={width:g}{stem_tag} {macs / 1e6:.1f} MMAC]"
    load0 = os.getloadavg()[0]
    for ep in range(start_epoch, epochs):
        g = torch.Generator().manual_seed(seed_for("pilot-epoch", s, ep))
        perm = torch.randperm(n, generator=g)
        net.train()
        t0 = time.time()
        loss_sum, seen, correct = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = augment(xtr[idx], g, 4, design.flip_objects_ok)
            xb = normalise(xb, mean, std)
            yb = ytr[idx]
            for group in opt.param_groups:
                group["lr"] = _lr_at(ep * steps_per_epoch + i, total, RECIPE["lr"])
            out_ = net(xb)
            loss = F.cross_entropy(out_, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((out_.detach().argmax(1) == yb).sum())
            seen += len(yb)
        dt = time.time() - t0
        train_s += dt
        test_acc = evaluate(net, xte, yte, mean, std)
        h = {"epoch": ep + 1, "loss": round(loss_sum / seen, 4),
             "running_train_top1": round(100.0 * correct / seen, 2),
             "test_top1": round(test_acc, 2), "img_s": round(seen / dt, 1),
             "load1": round(os.getloadavg()[0], 2)}
        history.append(h)
        wall = wall_prev + time.time() - t_wall
        log(f"{tag} epoch {ep + 1}/{epochs} loss {h['loss']:.3f} running-train "
            f"{h['running_train_top1']:.1f}% test {h['test_top1']:.2f}% {h['img_s']:.0f} img/s "
            f"load {h['load1']} wall {wall / 60:.1f} min", flush=True)
        if ep + 1 < epochs:
            _save_ckpt(ck, {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": ep + 1,
                            "history": history, "train_s": train_s, "wall_s": wall})
    test_acc = history[-1]["test_top1"] if history else evaluate(net, xte, yte, mean, std)
    train_acc = evaluate(net, xtr[:TRAIN_EVAL_N], ytr[:TRAIN_EVAL_N], mean, std)
    wall = wall_prev + time.time() - t_wall
    row = {
        "design": design.key, "title": design.title, "width": float(width), "stem": stem,
        "size": int(design.size), "classes": design.classes, "channels": net.channels(),
        "macs": int(macs), "params": int(nparams), "epochs": int(epochs),
        "n_train": n, "n_test": len(yte), "seed": int(seed),
        "train_img_s": round(steps_per_epoch * batch * len(history) / max(train_s, 1e-9), 1),
        "train_s": round(train_s, 1), "wall_s": round(wall, 1),
        "test_top1": round(float(test_acc), 2),
        "train_top1_2k": round(float(train_acc), 2),
        "history": history, "load1_start": round(load0, 2),
        "load1_end": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return row, ck


def make_data(design, n_train: int, n_test: int, seed: int, log=print) -> dict:
    t = time.time()
    tr = composite.generate_u8(design, "train", n_train, seed)
    te = composite.generate_u8(design, "test", n_test, seed)
    xtr = torch.from_numpy(tr.x)
    f = xtr[:min(len(xtr), 4000)].float() / 255.0
    mean = [round(float(v), 4) for v in f.mean(dim=(0, 2, 3))]
    std = [round(float(v), 4) for v in f.std(dim=(0, 2, 3))]
    log(f"[{design.key}] generated {n_train} train + {n_test} test scenes at {design.size} px "
        f"in {time.time() - t:.1f} s (mean {mean}, std {std})", flush=True)
    return {"xtr": xtr, "ytr": torch.from_numpy(tr.y), "xte": torch.from_numpy(te.x),
            "yte": torch.from_numpy(te.y), "mean": mean, "std": std,
            "gen_s": round(time.time() - t, 1)}


# ----------------------------------------------------------------------------- estimate
def estimate(designs, widths, epochs, n_train, n_test, steps: int = 10, stem: str = "pool",
             log=print):
    """Times a few training steps per width (random data) and prints the expected run time."""
    total = 0.0
    for dk in designs:
        d = designs[dk]
        per = 0.0
        for w in widths:
            torch.manual_seed(0)
            net = PilotVGG(w, d.classes, stem=stem)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            x = torch.randn(RECIPE["batch"], 3, d.size, d.size)
            y = torch.randint(0, d.classes, (RECIPE["batch"],))
            net.train()
            for i in range(steps + 1):
                if i == 1:
                    t0 = time.time()
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            ips = steps * RECIPE["batch"] / (time.time() - t0)
            sec = epochs * n_train / ips * 1.0 + epochs * n_test / (3 * ips) + \
                TRAIN_EVAL_N / (3 * ips)
            per += sec
            log(f"[{dk}] width {w:g}: {count_macs(net, (3, d.size, d.size)) / 1e6:.1f} MMAC, "
                f"~{ips:.0f} img/s now -> ~{sec / 60:.1f} min for {epochs} epochs")
        per += (n_train + n_test) * 1.5e-3
        log(f"[{dk}] ~{per / 60:.1f} min")
        total += per
    log(f"estimated total: ~{total / 60:.1f} min (load {os.getloadavg()[0]:.2f})")
    return total


# ----------------------------------------------------------------------------- table
def _stem_tag(stem: str) -> str:
    return "" if stem == "pool" else f", {stem} stem"


def table(results: dict) -> str:
    rows = results.get("rows", [])
    lines = ["| design | width | MMAC | params | epochs | train / test scenes | train img/s | "
             "wall min | test top-1 | train top-1 (2k) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = {k: i for i, k in enumerate(composite.DESIGNS)}
    rows = sorted(rows, key=lambda r: (order.get(r["design"], 99), r["size"], r["epochs"],
                                       r["n_train"], r["macs"]))
    for r in rows:
        lines.append(
            f"| {r['design']} ({r['size']} px, {r['classes']} cl.)"
            f"{_stem_tag(r.get('stem', 'pool'))} | {r['width']:g} | "
            f"{r['macs'] / 1e6:.1f} | {r['params'] / 1e3:.0f}k | {r['epochs']} | "
            f"{r['n_train']} / {r['n_test']} | {r['train_img_s']:.0f} | {r['wall_s'] / 60:.1f} | "
            f"{r['test_top1']:.2f} % | {r['train_top1_2k']:.2f} % |")
    lines += ["", "| design | size | epochs | smallest (MMAC, test top-1) | largest (MMAC, test "
              "top-1) | span, points | best width |", "|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["design"], r["size"], r["epochs"], r["n_train"], r["n_test"],
                           r.get("stem", "pool")), []).append(r)
    for (dk, size, ep, _ntr, _nte, stem), rs in groups.items():
        lo = min(rs, key=lambda r: r["macs"])
        hi = max(rs, key=lambda r: r["macs"])
        best = max(rs, key=lambda r: r["test_top1"])
        span = "-" if lo is hi else f"{hi['test_top1'] - lo['test_top1']:+.2f}"
        lines.append(f"| {dk}{_stem_tag(stem)} | {size} | {ep} | "
                     f"{lo['macs'] / 1e6:.1f}, {lo['test_top1']:.2f} % | "
                     f"{hi['macs'] / 1e6:.1f}, {hi['test_top1']:.2f} % | {span} | "
                     f"{best['width']:g} ({best['test_top1']:.2f} %) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def _floats(s: str):
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise PipelineError(f"--widths must be comma-separated numbers, got {s!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.pilot", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--designs", default="A,B,C", help="comma-separated: " +
                    ", ".join(f"{k} ({d.title})" for k, d in composite.DESIGNS.items()))
    ap.add_argument("--widths", default=",".join(f"{w:g}" for w in DEFAULT_WIDTHS))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stem", choices=STEMS, default="pool",
                    help="pool: full-resolution first conv + max-pool (the heavy apps' "
                         "network); strided: first conv at stride 2, no first pool")
    ap.add_argument("--out", default="pilots")
    ap.add_argument("--resume", action="store_true",
                    help="skip finished (design, width) rows, continue from epoch checkpoints")
    ap.add_argument("--table", action="store_true", help="print the table of OUT/results.json")
    ap.add_argument("--estimate", action="store_true",
                    help="time a few steps per width and print the expected run time")
    a = ap.parse_args(argv)
    out = Path(a.out)
    res_path = out / "results.json"
    try:
        if a.table:
            print(table(load_results(res_path)))
            return 0
        torch.set_num_threads(max(1, a.threads))
        keys = [k.strip() for k in a.designs.split(",") if k.strip()]
        designs = {k: composite.get_design(k, a.size) for k in keys}
        widths = _floats(a.widths)
        if not widths or any(not (0 < w <= 1) for w in widths):
            raise PipelineError(f"--widths must be in (0, 1], got {a.widths}")
        if a.epochs < 1 or a.train < RECIPE["batch"] or a.test < 1:
            raise PipelineError("need --epochs >= 1, --train >= 128, --test >= 1")
        if a.estimate:
            estimate(designs, widths, a.epochs, a.train, a.test, stem=a.stem)
            return 0
        t_all = time.time()
        print(f"pilot: designs {','.join(keys)} widths {a.widths} epochs {a.epochs} train "
              f"{a.train} test {a.test} size {a.size} threads {torch.get_num_threads()} "
              f"out {res_path} resume {a.resume}", flush=True)
        for dk, d in designs.items():
            done = {row_key(r) for r in load_results(res_path)["rows"]} if a.resume else set()
            todo = [w for w in widths if (dk, float(w), d.size, a.epochs, a.train, a.test,
                                          a.seed, a.stem) not in done]
            for w in widths:
                if w not in todo:
                    print(f"[{dk} w={w:g}] finished earlier: skipped (--resume)", flush=True)
            if not todo:
                continue
            data = make_data(d, a.train, a.test, a.seed)
            for w in todo:
                row, ck = train_one(d, w, data, epochs=a.epochs, seed=a.seed, out=out,
                                    resume=a.resume, stem=a.stem)
                row["generation_s"] = data["gen_s"]
                row["design_params"] = d.params()
                row["recipe"] = RECIPE
                row["mean"], row["std"] = data["mean"], data["std"]
                append_result(res_path, row)
                if ck.exists():
                    ck.unlink()
                print(f"[{dk} w={w:g}] done: test {row['test_top1']:.2f}% train(2k) "
                      f"{row['train_top1_2k']:.2f}% {row['macs'] / 1e6:.1f} MMAC "
                      f"{row['train_img_s']:.0f} img/s {row['wall_s'] / 60:.1f} min -> "
                      f"{res_path}", flush=True)
        print(f"pilot: finished in {(time.time() - t_all) / 60:.1f} min", flush=True)
        return 0
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
