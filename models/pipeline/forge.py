"""`models/forge`: a user's classification CNN and image folder -> a multi-capacity model folder
(docs/model-format.md) that `nestdnn inspect`, `nestdnn replay` and the ROS node serve.

Stages (each checkpointed in the work folder, reused by --resume after verification):
  vanilla    train the full network (skipped with --weights: the user's model is the vanilla)
  roadmap-s  TRR-rank every unit's filters, keep the best, retrain briefly (s = 1..N-1)
  grow-s     freeze-&-grow back towards the full width (inherited weights bit-for-bit frozen)
  ladder     per-descendant BN statistics and accuracies
then export into a temp folder, verify with onnxruntime, rename into place.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import graphnet as gn
from .errors import OutOfTime, PipelineError
from .export import (OPSET, bn_stat_names, export_onnx, graph_layers, install_folder, ort_run,
                     save_safetensors, sha256_bytes, sha256_file, slice_onnx, verify_folder)
from .families import FAMILIES, build, load_weights
from .folder import load_folder, random_dataset
from .nest import bits_equal, grow_permutation
from .run import Checkpoints, monotone
from .train import accuracy, augment, normalise, recalibrate_bn, seed_all, seed_for, train
from .rank import keep_top, triplets

MIN_DESCENDANTS = 5
N_FIXTURES = 8

TINY = dict(vanilla=30.0, retrain=3.0, grow=4.0, grow_last=6.0, triplets=32, bn_images=256,
            batch=32, lr_scale=2.0)


class Log:
    def __init__(self, path: Path | None):
        self.t0 = time.time()
        self.lines = []
        self.path = path

    def __call__(self, msg):
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        self.lines.append(line)
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _batch(size: int) -> int:
    return 128 if size <= 64 else 64 if size <= 128 else 32


def _seconds_per_image(net, ds, batch, size, device, hflip=True) -> float:
    """Measured training cost of the full network per image: one step of the training loop's
    own work (augmentation and normalisation on the CPU, the copy to the device, forward,
    backward, weight decay, the Adam step and the loss read-back), the median of four timed
    steps after two warm-ups. On a GPU the CPU-side work is most of a step for networks this
    small, so timing the network alone would plan too many epochs for the budget."""
    g = torch.Generator().manual_seed(0)
    x_all = torch.from_numpy(ds.x_train)
    y_all = torch.from_numpy(ds.y_train)
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=1e-6, foreach=False)
    shift = max(1, size // 16)
    net.train()
    times = []
    for i in range(6):
        t = time.time()
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        xb = normalise(augment(x_all[idx], g, shift, hflip), ds.mean, ds.std).to(device)
        yb = y_all[idx].to(device)
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.grad.add_(p, alpha=5e-5)
        opt.step()
        float(loss.detach())
        if i >= 2:
            times.append(time.time() - t)
    net.eval()
    return float(np.median(times)) / batch


def plan_epochs(spec, sched, ds, args, device, log, has_weights):
    """Epochs per stage from the time budget: x * (1, 0.15, 0.35, 0.7) for vanilla, each prune
    retraining, each grow step and the last grow step, in units of the training split, with x
    chosen so the estimated training time is 80 % of the budget (the rest: ranking, BN,
    export)."""
    if args.untrained:
        return dict(vanilla=0.0, retrain=0.0, grow=0.0, grow_last=0.0, triplets=8,
                    bn_images=8, why="--untrained: no training")
    if args.tiny:
        plan = dict(TINY)
        if has_weights:
            plan["vanilla"] = 0.0
        plan["why"] = "--tiny: fixed small budgets"
        return plan
    net = gn.materialize(spec, spec.base).to(device)
    spi = _seconds_per_image(net, ds, min(_batch(args.input_size), len(ds.x_train)),
                             args.input_size, device, hflip=not args.no_flip)
    full = gn.macs(spec, spec.base)
    rel = [gn.macs(spec, w) / full for w in sched]      # step s cost relative to the full net
    if device.type == "cuda":
        # on a GPU a step of a network this small is mostly the CPU-side batch work, about the
        # same for every width (measured: 70-78 steps/s from 2.3 to 74.7 MMAC, one H200)
        rel = [1.0 for _ in sched]
    n = len(ds.x_train)
    weights = (0.0 if has_weights else 1.0) + 0.15 * sum(rel[1:]) + \
        0.35 * sum(rel[:-1]) + 0.35 * rel[0]
    budget_s = 0.8 * args.time_budget * 60
    x = budget_s / (spi * n * weights)
    plan = dict(vanilla=0.0 if has_weights else x, retrain=0.15 * x, grow=0.35 * x,
                grow_last=0.7 * x, triplets=256, bn_images=min(2048, n))
    plan["why"] = (f"--time-budget {args.time_budget:g} min, training measured at "
                   f"{1 / spi:.0f} img/s on {device.type} for the full network, "
                   f"{n} training images")
    if x < 1.0:
        log(f"warning: the time budget allows only {x:.2f} epochs of the full network; "
            f"accuracy will be poor: give a larger --time-budget")
    return plan


def _triplet_batches(ds, n, seed, batch=32):
    a, p, q = triplets(ds.y_train, n, seed)
    x = torch.from_numpy(ds.x_train)
    for i in range(0, n, batch):
        yield tuple(normalise(x[torch.from_numpy(idx[i:i + batch])], ds.mean, ds.std)
                    for idx in (a, p, q))


def _train(net, ds, epochs, lr, seed, desc, args, deadline, masks=None):
    if epochs <= 0 or args.untrained:
        return
    lr *= args.plan_lr_scale
    batch = args.plan_batch or _batch(args.input_size)
    train(net, ds, epochs=epochs, lr=lr, seed=seed, batch=min(batch, len(ds.x_train)),
          shift=max(1, args.input_size // 16), hflip=not args.no_flip, masks=masks, desc=desc,
          deadline=deadline, wd=5e-5)


def _bn(net, ds, n, seed, args):
    recalibrate_bn(net, ds, n, seed, batch=min(64, _batch(args.input_size)))


def _acc(net, ds, args):
    """Validation top-1; an untrained ladder declares chance level instead of measuring."""
    if args.untrained:
        return 1.0 / len(ds.labels)
    return accuracy(net, ds.x_test, ds.y_test, ds.mean, ds.std)


def _cpu(state):
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def run(args) -> int:
    t_start = time.time()
    out = args.out.resolve()
    # ------------------------------------------------------------------ checks before work
    if out.exists() and not args.force:
        raise PipelineError(f"--out {out} exists; choose a new folder or pass --force to "
                            f"replace it")
    for flag, inp in (("--data", args.data), ("--weights", args.weights)):
        if inp is not None and (_inside(out, Path(inp)) or _inside(Path(inp), out)):
            raise PipelineError(f"--out {out} overlaps the input {flag} {inp}; write the model "
                                f"folder elsewhere")
    if args.descendants < MIN_DESCENDANTS:
        raise PipelineError(f"--descendants {args.descendants}: at least {MIN_DESCENDANTS}")
    if not (0.0 < args.seed_fraction < 1.0):
        raise PipelineError(f"--seed-fraction {args.seed_fraction} must be in (0, 1)")
    if not (16 <= args.input_size <= 1024):
        raise PipelineError(f"--input-size {args.input_size} must be in 16..1024")
    if not (0.0 < args.width <= 1.0):
        raise PipelineError(f"--width {args.width} must be in (0, 1]")
    if args.weights is not None and args.width != 1.0:
        raise PipelineError("--width applies to fresh models only; --weights defines the widths")
    if args.data is None and not args.untrained:
        raise PipelineError("--data DIR is required (only --untrained runs without data)")
    if not (0.0 < args.grow_scale <= 1.0):
        raise PipelineError(f"--grow-scale {args.grow_scale} must be in (0, 1]")
    if args.time_budget <= 0:
        raise PipelineError(f"--time-budget {args.time_budget} must be > 0 minutes")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("--device cuda: no CUDA device is available (use auto or cpu)")
    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    task = args.task or out.name
    work = out.parent / f".{out.name}.forge-work"
    if not args.resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(work / "forge.log")
    log(f"models/forge {' '.join(sys.argv[1:])}")
    log(f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    deadline = t_start + args.time_budget * 60

    # ------------------------------------------------------------------ data and network
    if args.data is not None:
        ds = load_folder(Path(args.data), args.input_size, args.color, log)
    else:
        ch = 1 if args.color == "gray" else 3
        ds = random_dataset(args.classes, ch, args.input_size, seed=seed_for(task, "random"))
        log(f"data: {len(ds.x_train)} random images, {args.classes} classes (--untrained)")
    channels = int(ds.x_train.shape[1])
    for flag, val in (("--mean", args.mean), ("--std", args.std)):
        if val is None:
            continue
        try:
            v = [float(t) for t in val.split(",")]
        except ValueError:
            raise PipelineError(f"{flag} {val!r}: give {channels} comma-separated numbers")
        if len(v) != channels or (flag == "--std" and min(v) <= 0):
            raise PipelineError(f"{flag} {val!r}: give {channels} comma-separated numbers"
                                f"{' > 0' if flag == '--std' else ''} (one per channel)")
        if flag == "--mean":
            ds.mean = v
        else:
            ds.std = v
    if args.mean or args.std:
        log(f"input normalisation (your training's): mean {ds.mean} std {ds.std}")
    classes = len(ds.labels)
    seed_all(seed_for(task, "init"))
    net = build(args.arch, classes, channels, args.input_size, args.width)
    if args.weights is not None:
        load_weights(net, args.weights, args.arch)
        log(f"weights {args.weights}: loaded (the vanilla model; TRR ranks come from it)")
    spec = gn.trace(net, (channels, args.input_size, args.input_size), f"--arch {args.arch}")
    if spec.classes != classes:
        raise PipelineError(f"--arch {args.arch} outputs {spec.classes} classes but the data "
                            f"has {classes}")
    if args.weights is None and args.width != 1.0:
        seed_all(seed_for(task, "init-width"))
        spec = gn.at_width(spec, args.width, spec.input_shape)
    full_macs = gn.macs(spec, spec.base)
    log(f"architecture {args.arch} width {args.width:g} at {channels}x{args.input_size}x"
        f"{args.input_size}: {full_macs / 1e6:.1f} MMAC, {gn.params(spec, spec.base)} params, "
        f"{len(spec.units)} prunable units ({sum(1 for u in spec.units if spec.tie(u))} "
        f"residual/depthwise tie groups), {len(spec.convs)} Conv layers")
    steps = args.descendants - 1
    sched = gn.width_schedule(spec, steps, args.seed_fraction)
    log("ladder MACs: " + ", ".join(f"{gn.macs(spec, w) / 1e6:.1f}" for w in sched[::-1])
        + f" MMAC (seed {gn.macs(spec, sched[-1]) / full_macs:.1%} of the largest)")

    plan_file = work / "plan.json"
    if args.resume and plan_file.exists():
        plan = json.loads(plan_file.read_text())
        log(f"training plan from the interrupted run ({plan_file}): {plan}")
    else:
        plan = plan_epochs(spec, sched, ds, args, device, log, args.weights is not None)
        tmp = plan_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        os.replace(tmp, plan_file)
    args.plan_batch = plan.get("batch")
    args.plan_lr_scale = plan.get("lr_scale", 1.0)
    if args.grow_scale != 1.0:
        log(f"--grow-scale {args.grow_scale:g}: the grow steps train "
            f"{plan['grow'] * args.grow_scale:.2f} epochs ({plan['grow_last'] * args.grow_scale:.2f}"
            f" for the last) instead of the plan's")
    if not args.untrained:
        log(f"training plan ({plan['why']}): vanilla {plan['vanilla']:.2f} epochs, "
            f"{plan['retrain']:.2f} per prune step, {plan['grow']:.2f} per grow step "
            f"({plan['grow_last']:.2f} for the last)")
    cfg = dict(arch=args.arch, width=args.width, mean=ds.mean, std=ds.std, size=args.input_size, n=args.descendants,
               seed_fraction=args.seed_fraction, untrained=args.untrained, plan=plan,
               weights=None if args.weights is None else sha256_file(args.weights),
               data=[len(ds.x_train), int(ds.x_train.sum() % 1000003)], flip=not args.no_flip)
    ck = Checkpoints(work, cfg, args.resume, log)
    deps = tuple(cfg)
    stage_t = {}

    def timed(name, fn):
        t = time.time()
        try:
            return fn()
        finally:
            stage_t[name] = stage_t.get(name, 0.0) + time.time() - t

    # ------------------------------------------------------------------ 1. vanilla
    def do_vanilla():
        log("stage vanilla: " + ("the user's weights" if args.weights else
                                 "untrained (random weights)" if args.untrained else
                                 f"training {plan['vanilla']:.2f} epochs"))
        m = gn.materialize(spec, spec.base).to(device)
        if args.weights is None:
            _train(m, ds, plan["vanilla"], 2e-3, seed_for(task, "vanilla"), "vanilla", args,
                   deadline)
            _bn(m, ds, plan["bn_images"], seed_for(task, "bn", "vanilla"), args)
        acc = _acc(m, ds, args)
        return dict(state=_cpu(m.state_dict()), acc=acc)
    van = timed("vanilla", lambda: ck.get("vanilla", do_vanilla, deps))
    log(f"vanilla: val accuracy {van['acc']:.4f}")
    if args.weights is not None and van["acc"] < 1.5 / classes:
        log(f"warning: your weights score {van['acc']:.1%} on the validation images (chance is "
            f"{1 / classes:.1%}): check --mean/--std (the normalisation your training used), "
            f"--input-size and the class order (folder names, sorted)")

    # ------------------------------------------------------------------ 2. roadmap (TRR)
    road = [dict(widths=sched[0], ids={u: torch.arange(spec.base[u]) for u in spec.units},
                 state=van["state"])]
    for s in range(1, steps + 1):
        cur = road[-1]

        def do_prune(s=s, cur=cur):
            m = gn.materialize(spec, cur["widths"], cur["state"]).to(device)
            scores = gn.trr_scores(spec, m, _triplet_batches(ds, plan["triplets"],
                                                             seed_for(task, "trr", s)))
            keep = keep_top(scores, sched[s])
            state = gn.select_state(spec, cur["state"], keep)
            ids = {u: cur["ids"][u][keep[u]] for u in spec.units}
            m = gn.materialize(spec, sched[s], state).to(device)
            _train(m, ds, plan["retrain"], 1e-3, seed_for(task, "roadmap", s), f"prune {s}",
                   args, deadline)
            _bn(m, ds, plan["bn_images"], seed_for(task, "bn", "roadmap", s), args)
            acc = _acc(m, ds, args)
            return dict(widths=sched[s], ids=ids, state=_cpu(m.state_dict()), acc=acc)
        st = timed("roadmap", lambda: ck.get(f"roadmap-{s}", do_prune))
        log(f"roadmap step {s}: {gn.macs(spec, st['widths']) / 1e6:.1f} MMAC, val accuracy "
            f"{st['acc']:.4f}")
        road.append(st)

    # ------------------------------------------------------------------ 3. freeze & grow
    keys = gn.param_keys(spec.gm)
    desc = [dict(widths=road[-1]["widths"], ids=road[-1]["ids"], state=road[-1]["state"])]
    for s in range(steps - 1, -1, -1):
        small, big = desc[-1], road[s]

        def do_grow(s=s, small=small, big=big):
            perm, ids_big = grow_permutation(spec.units, small["ids"], big["ids"])
            init = gn.select_state(spec, big["state"], perm)
            sw = small["widths"]
            for k, t in small["state"].items():
                lay = spec.dims.get(k)
                if lay is None:
                    init[k] = t.clone()
                else:
                    init[k][gn._prefix_index(lay, sw)] = t
            m = gn.materialize(spec, big["widths"], init).to(device)
            masks = gn.prefix_masks(spec, m.named_parameters(), sw)
            epochs = (plan["grow_last"] if s == 0 else plan["grow"]) * args.grow_scale
            _train(m, ds, epochs, 2e-3, seed_for(task, "grow", s), f"grow {s}", args, deadline,
                   masks)
            state = _cpu(m.state_dict())
            inherited = gn.prefix_state(spec, state, sw)
            for k in keys:
                if not bits_equal(inherited[k], small["state"][k]):
                    raise PipelineError(f"freeze violated in grow step {s}: {k} changed inside "
                                        f"the inherited block (internal error)")
            return dict(widths=big["widths"], ids=ids_big, state=state)
        scale = () if args.grow_scale == 1.0 else (("grow_scale", args.grow_scale),)
        d = timed("grow", lambda: ck.get(f"grow-{s}", do_grow, extra=scale))
        big.pop("state", None)    # no longer needed: keep memory flat on full-size networks
        log(f"grow to roadmap step {s}: every inherited weight bit-for-bit frozen (checked)")
        desc.append(d)
    full = desc[-1]["state"]
    for d in desc:
        sub = gn.prefix_state(spec, full, d["widths"])
        for k in keys:
            if not bits_equal(sub[k], d["state"][k]):
                raise PipelineError(f"a descendant is not a prefix of the largest ({k}) "
                                    f"(internal error)")
        d.pop("state")

    # ------------------------------------------------------------------ 4. per-descendant BN
    def do_ladder():
        out = []
        for i, d in enumerate(desc):
            m = gn.materialize(spec, d["widths"], gn.prefix_state(spec, full, d["widths"]))
            m = m.to(device)
            _bn(m, ds, plan["bn_images"], seed_for(task, "bn", "ladder", i), args)
            sd = m.state_dict()
            out.append(dict(bn={k: sd[k].detach().cpu().clone() for k in sd
                                if k.endswith(("running_mean", "running_var"))},
                            acc=_acc(m, ds, args)))
        return out
    lad = timed("ladder", lambda: ck.get("ladder", do_ladder))
    for d, l in zip(desc, lad):
        d["bn"], d["acc"] = l["bn"], l["acc"]
        log(f"descendant {gn.macs(spec, d['widths']) / 1e6:.1f} MMAC: val accuracy "
            f"{d['acc']:.4f}")
    if args.untrained:
        for d in desc:
            d["acc"] = 1.0 / classes    # declared, not measured: see manifest `untrained`
    else:
        kept = monotone([d["acc"] for d in desc])
        if len(kept) < len(desc):
            log(f"dropped {len(desc) - len(kept)} descendant(s) more accurate than a larger one "
                f"(the ladder must not lose accuracy as it grows)")
        desc = [desc[i] for i in kept]
        if len(desc) < MIN_DESCENDANTS:
            raise PipelineError(f"only {len(desc)} descendants keep accuracy non-decreasing "
                                f"(need >= {MIN_DESCENDANTS}): give more data or a larger "
                                f"--time-budget, or raise --descendants")

    # ------------------------------------------------------------------ 5. export
    # The roadmap's pruned-and-retrained models, largest first: standalone smaller models of
    # the kind a user trains today (the benchmark's status quo levels). Their states are read
    # back from the stage checkpoints at export.
    standalone = [dict(widths=r["widths"], acc=r["acc"], file=work / f"roadmap-{s}.pt")
                  for s, r in enumerate(road) if s >= 1]
    summary = timed("export", lambda: export(spec, args, task, ds, van, full, desc, out, log,
                                             stage_t, standalone))
    log(f"done in {time.time() - t_start:.0f}s; stages: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in stage_t.items()))
    shutil.copyfile(work / "forge.log", out / "forge.log")
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _fixture_index(ds, n):
    idx, c = [], 0
    classes = int(ds.y_test.max()) + 1
    used = set()
    while len(idx) < min(n, len(ds.y_test)):
        cand = [i for i in np.flatnonzero(ds.y_test == c % classes) if i not in used]
        if cand:
            idx.append(int(cand[0]))
            used.add(int(cand[0]))
        c += 1
    return idx


def export(spec, args, task, ds, van, full, desc, out: Path, log, stage_t, standalone=()):
    names = [f"d{i}" for i in range(len(desc))]
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        shape = spec.input_shape
        n_convs = len(spec.convs)
        keys = list(spec.gm.state_dict().keys())
        keys = [k for k in keys if not k.endswith("num_batches_tracked")]
        largest = gn.materialize(spec, spec.base, {**full, **desc[-1]["bn"]})
        model_bytes = export_onnx(largest, keys, shape, n_convs)
        vnet = gn.materialize(spec, spec.base, van["state"])
        vanilla_bytes = export_onnx(vnet, keys, shape, n_convs)
        import onnx
        model = onnx.load_from_string(model_bytes)
        layers = graph_layers(model)
        want = [f"{c.name}.weight" for c in spec.convs]
        if layers != want:
            raise PipelineError("the ONNX Conv order differs from the traced graph (internal "
                                "error)")
        idx = _fixture_index(ds, N_FIXTURES)
        x_u8 = ds.x_test[idx]
        x = normalise(torch.from_numpy(x_u8), ds.mean, ds.std)
        fixtures = {"input": x.numpy(), "label": ds.y_test[idx].astype(np.int64)}
        if x_u8.shape[1] == 1:      # the format's `input_u8` holds gray pixels [N,H,W]
            fixtures["input_u8"] = x_u8[:, 0].copy()
        bn_out, worst = {}, 0.0
        bn_names = bn_stat_names(model)
        for name, d in zip(names, desc):
            sub = gn.materialize(spec, d["widths"],
                                 {**gn.prefix_state(spec, full, d["widths"]), **d["bn"]})
            with torch.no_grad():
                y = sub(x).numpy()
            fixtures[f"{name}/logits"] = y
            stats = {}
            for m, v in bn_names:
                bn_out[f"{name}/{m}"] = d["bn"][m].numpy()
                bn_out[f"{name}/{v}"] = d["bn"][v].numpy()
                stats[m], stats[v] = bn_out[f"{name}/{m}"], bn_out[f"{name}/{v}"]
            got = ort_run(slice_onnx(model, spec.conv_channels(d["widths"]), stats), x.numpy())
            err = float(np.abs(got - y).max()) / max(1.0, float(y.max() - y.min()))
            worst = max(worst, err)
            if err > 1e-4:
                raise PipelineError(f"{name}: onnxruntime on the sliced model.onnx differs from "
                                    f"PyTorch by {err:.2e} of the logit range")
        with torch.no_grad():
            yv = vnet(x).numpy()
        fixtures["vanilla/logits"] = yv
        log(f"export verified with onnxruntime: max |diff| {worst:.2e} of the logit range")
        (tmp / "model.onnx").write_bytes(model_bytes)
        (tmp / "vanilla.onnx").write_bytes(vanilla_bytes)
        status_quo = []
        for k, m in enumerate(standalone, start=1):
            st = torch.load(m["file"], weights_only=False)["state"]
            net_k = gn.materialize(spec, m["widths"], st)
            b = export_onnx(net_k, keys, shape, n_convs)
            with torch.no_grad():
                fixtures[f"status_quo{k}/logits"] = net_k(x).numpy()
            name = f"status_quo_{k}.onnx"
            (tmp / name).write_bytes(b)
            status_quo.append(dict(
                file=name, sha256=sha256_bytes(b),
                accuracy=round(float(1.0 / spec.classes if args.untrained else m["acc"]), 6),
                macs=gn.macs(spec, m["widths"]), params=gn.params(spec, m["widths"])))
        save_safetensors(tmp / "bn_stats.safetensors", bn_out)
        save_safetensors(tmp / "fixtures.safetensors", fixtures)
        color = "gray" if shape[0] == 1 else "rgb"
        descendants = [dict(
            name=name, channels=spec.conv_channels(d["widths"]), macs=gn.macs(spec, d["widths"]),
            params=gn.params(spec, d["widths"]), accuracy=round(float(d["acc"]), 6),
            cross_domain_accuracy=None, bn_stats_prefix=f"{name}/")
            for name, d in zip(names, desc)]
        manifest = dict(
            format_version=1, task=task, dataset=ds.name, architecture=args.arch,
            labels=list(ds.labels),
            input=dict(name="input", layout="NCHW", channels=shape[0], color=color,
                       height=shape[1], width=shape[2], scale=1.0 / 255.0,
                       mean=[float(m) for m in ds.mean], std=[float(s) for s in ds.std]),
            output=dict(name="logits", classes=spec.classes),
            onnx=dict(file="model.onnx", sha256=sha256_bytes(model_bytes), opset=OPSET),
            bn_stats=dict(file="bn_stats.safetensors",
                          sha256=sha256_file(tmp / "bn_stats.safetensors")),
            fixtures=dict(file="fixtures.safetensors",
                          sha256=sha256_file(tmp / "fixtures.safetensors"), count=len(idx)),
            layers=[dict(name=f"{c.name}.weight", out_channels=int(spec.base[c.unit]),
                         tie=spec.tie(c.unit)) for c in spec.convs],
            vanilla=dict(file="vanilla.onnx", sha256=sha256_bytes(vanilla_bytes),
                         accuracy=round(float(1.0 / spec.classes if args.untrained
                                              else van["acc"]), 6),
                         macs=gn.macs(spec, spec.base), params=gn.params(spec, spec.base),
                         cross_domain_accuracy=None),
            descendants=descendants,
            status_quo=status_quo,
            untrained=bool(args.untrained),
            accuracy_split="validation" if not args.untrained else
            "none: untrained ladder, accuracies are declared chance level (1/classes)",
            generator=dict(command="models/forge " + " ".join(sys.argv[1:]),
                           torch=str(torch.__version__), python=platform.python_version(),
                           seconds={k: round(v, 1) for k, v in stage_t.items()}),
        )
        import yaml
        (tmp / "manifest.yaml").write_text(
            "# generated by models/forge; format: docs/model-format.md\n"
            + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100))
        verify_folder(tmp, atol=1e-4 * max(1.0, float(np.ptp(fixtures["d0/logits"])),
                                           float(np.ptp(fixtures[f"{names[-1]}/logits"])),
                                           float(np.ptp(yv))))
        install_folder(tmp, out)
        log(f"wrote {out}: {len(desc)} descendants, "
            f"{descendants[0]['macs'] / 1e6:.1f}..{descendants[-1]['macs'] / 1e6:.1f} MMAC")
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="models/forge",
        description="Turn a classification CNN and an image folder into a multi-capacity model "
                    "folder (docs/model-format.md).")
    ap.add_argument("--arch", required=True,
                    help=f"{', '.join(FAMILIES)} (torchvision definitions) or "
                         f"package.module:ClassName")
    ap.add_argument("--data", type=Path, help="image folder: DIR/train/<class>/*, optional "
                                              "DIR/val/<class>/*")
    ap.add_argument("--out", type=Path, required=True, help="model folder to create")
    ap.add_argument("--input-size", type=int, default=64, help="square input side in px "
                                                               "(default 64)")
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier of the family "
                                                             "(0 < w <= 1, default 1)")
    ap.add_argument("--weights", type=Path, help="your trained weights (state dict) for --arch: "
                                                 "the vanilla model, ranked by TRR")
    ap.add_argument("--descendants", type=int, default=6, help="ladder size (>= 5, default 6)")
    ap.add_argument("--seed-fraction", type=float, default=0.1,
                    help="smallest descendant's MACs as a fraction of the largest's "
                         "(default 0.1)")
    ap.add_argument("--time-budget", type=float, default=60.0,
                    help="minutes for the whole run; the epochs are chosen to fit "
                         "(default 60)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--color", choices=("auto", "rgb", "gray"), default="auto",
                    help="image colour (auto: gray when every training image is gray)")
    ap.add_argument("--mean", help="per-channel input mean your training used, e.g. "
                                   "0.485,0.456,0.406 (default: the training images' own)")
    ap.add_argument("--std", help="per-channel input std your training used, e.g. "
                                  "0.229,0.224,0.225 (default: the training images' own)")
    ap.add_argument("--no-flip", action="store_true",
                    help="no horizontal-flip augmentation (e.g. text, digits)")
    ap.add_argument("--task", help="task name in the manifest (default: the --out folder name)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from its verified stage checkpoints")
    ap.add_argument("--force", action="store_true", help="replace an existing --out folder")
    ap.add_argument("--tiny", action="store_true", help="seconds-long budgets (CI)")
    ap.add_argument("--untrained", action="store_true",
                    help="no training: random weights, TRR ranks and the nested ladder only "
                         "(slicing checks and timing at full size); --data optional")
    ap.add_argument("--classes", type=int, default=10,
                    help="classes of the random data of --untrained without --data")
    ap.add_argument("--grow-scale", type=float, default=1.0,
                    help="train the freeze-&-grow steps for this fraction (0 < f <= 1) of the "
                         "plan's epochs, e.g. to finish a resumed run on a slower machine "
                         "(default 1; recorded in the manifest's command)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default 0: every CPU, at most 16); give fewer when "
                         "several forges share a machine")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads if a.threads > 0 else max(1, min(os.cpu_count() or 1, 16)))
    try:
        run(a)
        return 0
    except OutOfTime as e:
        work = a.out.resolve().parent / f".{a.out.resolve().name}.forge-work"
        print(f"error: {e}. Finished stages are checkpointed in {work}; rerun the same command "
              f"with --resume (and a larger --time-budget) to continue", file=sys.stderr)
        return 3
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
