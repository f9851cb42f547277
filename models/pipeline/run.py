"""Per-app pipeline and the command line (`models/regenerate` calls `python -m pipeline`)."""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from .arch import Net, bn_keys, macs, make_arch, params, prefix_state, shared_keys
from .config import APPS, MIN_DESCENDANTS, TINY_DATA, app_config
from .errors import PipelineError
from .export import (OPSET, bn_stat_names, export_onnx, graph_layers, install_folder, ort_run,
                     save_safetensors, sha256_bytes, sha256_file, slice_onnx, verify_folder)
from .nest import (ablation, build_roadmap, calibrate_ladder, descendant_net, grow, pick_seed,
                   width_schedule)
from .train import accuracy, recalibrate_bn, seed_all, seed_for, train

MODELS_DIR = Path(__file__).resolve().parent.parent
N_FIXTURES = 8


class Logger:
    def __init__(self, task, path: Path):
        self.task, self.path, self.t0 = task, path, time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg):
        line = f"[{time.time() - self.t0:7.1f}s] {self.task}: {msg}"
        self.f.write(line + "\n")
        print(line, flush=True)


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """Stage results in <work>/<stage>.pt with a sidecar <stage>.pt.sha256 holding the file's
    sha256 and the configuration fingerprint. Reused only with --resume."""

    def __init__(self, work: Path, cfg: dict, resume: bool, log):
        self.work, self.cfg, self.resume, self.log = work, cfg, resume, log
        self.fp = ""
        self.fps = {}
        work.mkdir(parents=True, exist_ok=True)

    def get(self, stage, compute, deps=(), parent=None, extra=()):
        """deps: config keys this stage depends on, on top of its parent stage's fingerprint
        (default: the previous stage); extra: other inputs (e.g. the ablation's widths)."""
        base = self.fp if parent is None else self.fps[parent]
        self.fp = hashlib.sha256(json.dumps([base, [self.cfg.get(k) for k in deps] + list(extra)],
                                            default=str).encode()).hexdigest()[:16]
        self.fps[stage] = self.fp
        p = self.work / f"{stage}.pt"
        side = self.work / f"{stage}.pt.sha256"
        if self.resume and p.exists():
            fix = (f"delete {p} (or the folder {self.work}) or rerun without --resume")
            if not side.exists():
                raise PipelineError(f"checkpoint {p} has no {side.name} (interrupted write?): "
                                    f"{fix}")
            want_sha, _, fp = side.read_text().strip().partition(" ")
            got = sha256_file(p)
            if got != want_sha:
                raise PipelineError(f"checkpoint {p} is corrupt (sha256 {got[:12]}.. != recorded "
                                    f"{want_sha[:12]}..): {fix}")
            if fp == self.fp:
                try:
                    obj = torch.load(p, weights_only=False)
                except Exception as e:
                    raise PipelineError(f"checkpoint {p} is corrupt ({type(e).__name__}: {e}): "
                                        f"{fix}")
                self.log(f"stage {stage}: reused checkpoint {p}")
                return obj
            self.log(f"stage {stage}: checkpoint made with another configuration: recomputing")
        obj = compute()
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        torch.save(obj, tmp)
        sha = sha256_file(tmp)
        os.replace(tmp, p)
        side_tmp = side.with_suffix(f".tmp{os.getpid()}")
        side_tmp.write_text(f"{sha} {self.fp}\n")
        os.replace(side_tmp, side)
        return obj


# ----------------------------------------------------------------------------- one app
def _f(x):
    return "n/a" if x is None else f"{x:.4f}"


def _r(x, n=6):
    return None if x is None else round(float(x), n)


def evaluate(net, ds):
    return dict(val=accuracy(net, ds.x_val, ds.y_val, ds.mean, ds.std),
                test=accuracy(net, ds.x_test, ds.y_test, ds.mean, ds.std),
                cross=accuracy(net, ds.x_cross, ds.y_cross, ds.mean, ds.std))


def monotone(accs):
    """Indices kept so accuracy is non-decreasing along the ladder: walk from the largest down
    and drop any smaller descendant that is more accurate than a larger kept one."""
    keep = [len(accs) - 1]
    for i in range(len(accs) - 2, -1, -1):
        if accs[i] <= accs[keep[-1]]:
            keep.append(i)
    return sorted(keep)


def run_app(task: str, out: Path, work_root: Path, tiny: bool, floor, resume: bool, lane: int,
            no_ablation: bool = False):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t_start = time.time()
    cfg = app_config(task, tiny, floor)
    work = work_root / task
    if not resume and work.exists():
        shutil.rmtree(work)
    log = Logger(task, work_root / f"{task}.log")
    ck = Checkpoints(work, cfg, resume, log)
    log(f"config {'tiny' if tiny else 'full'}: {json.dumps(cfg, default=str)}")
    ds = data_mod.load(cfg["dataset"])
    if tiny:
        ds = ds.subset(TINY_DATA["n_train"], TINY_DATA["n_eval"], seed=seed_for(task, "tiny"))
    log(f"data {cfg['dataset']}: train {len(ds.x_train)}, val {len(ds.x_val)}, test "
        f"{len(ds.x_test)}, cross-domain {0 if ds.x_cross is None else len(ds.x_cross)}; "
        f"mean {ds.mean} std {ds.std}")
    arch = make_arch(cfg["arch"], cfg["widths"])
    width_schedule(arch, cfg["steps"], cfg["frac"])   # fail early on impossible schedules
    base = arch.base
    log(f"architecture {arch.name} widths {list(base.values())}: {macs(arch, base) / 1e6:.2f} "
        f"MMAC, {params(arch, base)} params")
    timings = {}

    # 1. vanilla
    def do_vanilla():
        seed_all(seed_for(task, "vanilla-init"))
        net = Net(arch, base)
        train(net, ds, seed=seed_for(task, "vanilla"), desc=f"{task} vanilla", position=lane,
              **cfg["vanilla"])
        recalibrate_bn(net, ds, cfg["bn_images"], seed_for(task, "bn", "vanilla"))
        return dict(state=net.state_dict(), metrics=evaluate(net, ds))
    t = time.time()
    van = ck.get("vanilla", do_vanilla,
                 ("dataset", "arch", "widths", "tiny", "vanilla", "bn_images"))
    timings["vanilla"] = time.time() - t
    log(f"vanilla: val {van['metrics']['val']:.4f} test {van['metrics']['test']:.4f} cross "
        f"{_f(van['metrics']['cross'])} ({timings['vanilla']:.0f}s)")

    # 2. roadmap (TRR ranking + pruning + brief retraining)
    t = time.time()
    steps = ck.get("roadmap", lambda: build_roadmap(task, arch, van["state"], van["metrics"]["val"],
                                                    ds, cfg, cfg["floor"], log, lane),
                   ("steps", "frac", "triplets", "retrain", "floor", "kd"))
    timings["roadmap"] = time.time() - t
    seed_step = pick_seed(task, steps, cfg["floor"], MIN_DESCENDANTS)
    log(f"seed = roadmap step {seed_step} (val {steps[seed_step]['val']:.4f} >= floor "
        f"{cfg['floor']}), {macs(arch, steps[seed_step]['widths']) / 1e6:.2f} MMAC")

    # 3. freeze & grow + per-descendant BN
    t = time.time()

    def do_grow():
        desc = grow(task, arch, steps, seed_step, ds, cfg, log, lane)
        full = desc[-1]["state"]
        bns = calibrate_ladder(task, arch, full, desc, ds, cfg)
        for d, b in zip(desc, bns):
            d["bn"] = b
            d["metrics"] = evaluate(descendant_net(arch, full, d["widths"], b), ds)
            del d["state"]
        return dict(full=full, desc=desc)
    lad = ck.get("ladder", do_grow, ("grow", "grow_last", "grow_init", "kd"))
    timings["grow"] = time.time() - t
    full, desc = lad["full"], lad["desc"]
    for d in desc:
        log(f"descendant step {d['step']}: {macs(arch, d['widths']) / 1e6:.2f} MMAC test "
            f"{d['metrics']['test']:.4f} val {d['metrics']['val']:.4f} cross {_f(d['metrics']['cross'])}")
    kept = monotone([d["metrics"]["test"] for d in desc])
    if len(kept) < len(desc):
        log(f"dropped {len(desc) - len(kept)} descendant(s) that were more accurate than a larger "
            f"one (steps {[desc[i]['step'] for i in range(len(desc)) if i not in kept]})")
    desc = [desc[i] for i in kept]
    if len(desc) < MIN_DESCENDANTS:
        raise PipelineError(f"{task}: only {len(desc)} descendants with non-decreasing accuracy "
                            f"(need >= {MIN_DESCENDANTS}); lower --floor or raise the budgets "
                            f"in pipeline/config.py")

    # 4. ablation baselines at the same sizes
    t = time.time()
    if no_ablation:
        abl = [dict(l1_finetune=None, scratch=None) for _ in desc[:-1]]
    else:
        abl = ck.get("ablation", lambda: ablation(task, arch, van["state"],
                                                  [d["widths"] for d in desc[:-1]], ds, cfg, log,
                                                  lane),
                     ("finetune", "scratch", "kd"), parent="roadmap",
                     extra=[[list(d["widths"].values()) for d in desc[:-1]]])
    timings["ablation"] = time.time() - t

    # 5. export into a temp folder, verify, rename into place
    t = time.time()
    summary = export_app(task, cfg, arch, ds, van, full, desc, abl, out, log, tiny)
    timings["export"] = time.time() - t
    summary["timings"] = {k: round(v, 1) for k, v in timings.items()}
    summary["seconds"] = round(time.time() - t_start, 1)
    log(f"done in {summary['seconds']:.0f}s: {summary['timings']}")
    return summary


def export_app(task, cfg, arch, ds, van, full, desc, abl, out: Path, log, tiny):
    names = [f"d{i}" for i in range(len(desc))]
    tmp = out / f".tmp-{task}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        base = arch.base
        keys = shared_keys(arch) + bn_keys(arch)
        # largest descendant, carrying its own BN statistics
        largest = descendant_net(arch, full, base, desc[-1]["bn"])
        model_bytes = export_onnx(largest, keys)
        vnet = Net(arch, base)
        vnet.load_state_dict(van["state"])
        vanilla_bytes = export_onnx(vnet, keys)
        import onnx
        model = onnx.load_from_string(model_bytes)
        layers = graph_layers(model)
        bn_names = bn_stat_names(model)

        # fixtures: the first held-out test image of classes 0..7
        idx = [int(np.flatnonzero(ds.y_test == c)[0]) for c in range(N_FIXTURES)]
        x_u8 = ds.x_test[idx]
        from .train import normalise
        x = normalise(torch.from_numpy(x_u8), ds.mean, ds.std)
        fixtures = {"input": x.numpy(), "input_u8": x_u8.copy(),
                    "label": ds.y_test[idx].astype(np.int64)}
        bn_out = {}
        nested_full = Net(arch, base)
        nested_full.load_state_dict(prefix_state(arch, full, base) | desc[-1]["bn"])
        worst = 0.0
        for name, d in zip(names, desc):
            standalone = descendant_net(arch, full, d["widths"], d["bn"])
            with torch.no_grad():
                y = standalone(x)
                y_nested = nested_full(x, active=d["widths"], bn=d["bn"])
            diff = float((y - y_nested).abs().max())
            if diff > 1e-5:
                raise PipelineError(f"{task}/{name}: standalone and nested forward differ by "
                                    f"{diff:.2e} (internal error)")
            fixtures[f"{name}/logits"] = y.numpy()
            stats = {}
            for m, v in bn_names:
                bn_out[f"{name}/{m}"] = d["bn"][m].numpy()
                bn_out[f"{name}/{v}"] = d["bn"][v].numpy()
                stats[m], stats[v] = d["bn"][m].numpy(), d["bn"][v].numpy()
            ch = arch.conv_channels(d["widths"])
            got = ort_run(slice_onnx(model, ch, stats), x.numpy())
            err = float(np.abs(got - y.numpy()).max())
            worst = max(worst, err)
            if err > 1e-4:
                raise PipelineError(f"{task}/{name}: onnxruntime on the sliced model.onnx differs "
                                    f"from PyTorch by {err:.2e}")
        with torch.no_grad():
            yv = vnet(x)
            y_large = largest(x)
        fixtures["vanilla/logits"] = yv.numpy()
        err_v = float(np.abs(ort_run(vanilla_bytes, x.numpy()) - yv.numpy()).max())
        err_m = float(np.abs(ort_run(model_bytes, x.numpy()) - y_large.numpy()).max())
        if max(err_v, err_m) > 1e-4:
            raise PipelineError(f"{task}: onnxruntime differs from PyTorch by "
                                f"{max(err_v, err_m):.2e}")
        log(f"export verified with onnxruntime: max |diff| {max(worst, err_v, err_m):.2e}")

        (tmp / "model.onnx").write_bytes(model_bytes)
        (tmp / "vanilla.onnx").write_bytes(vanilla_bytes)
        save_safetensors(tmp / "bn_stats.safetensors", bn_out)
        save_safetensors(tmp / "fixtures.safetensors", fixtures)

        descendants = []
        for i, (name, d) in enumerate(zip(names, desc)):
            descendants.append(dict(
                name=name, channels=arch.conv_channels(d["widths"]),
                macs=macs(arch, d["widths"]), params=params(arch, d["widths"]),
                accuracy=_r(d["metrics"]["test"]),
                cross_domain_accuracy=_r(d["metrics"]["cross"]),
                bn_stats_prefix=f"{name}/",
                val_accuracy=_r(d["metrics"]["val"]), roadmap_step=int(d["step"])))
        ablation_rows = []
        for name, d, row in zip(names, desc, abl):
            ablation_rows.append(dict(name=name, macs=macs(arch, d["widths"]),
                                      nestdnn=_r(d["metrics"]["test"]),
                                      l1_finetune=_r(row["l1_finetune"]), scratch=_r(row["scratch"])))
        vm = van["metrics"]
        ablation_rows.append(dict(name=names[-1], macs=macs(arch, base),
                                  nestdnn=_r(desc[-1]["metrics"]["test"]), l1_finetune=_r(vm["test"]),
                                  scratch=_r(vm["test"]), note="largest: both baselines = vanilla"))
        manifest = dict(
            format_version=1, task=task, dataset=cfg["dataset"], architecture=arch.name,
            labels=list(ds.labels),
            input=dict(name="input", layout="NCHW", channels=1, color="gray", height=28, width=28,
                       scale=1.0 / 255.0, mean=[ds.mean], std=[ds.std]),
            output=dict(name="logits", classes=arch.classes),
            onnx=dict(file="model.onnx", sha256=sha256_bytes(model_bytes), opset=OPSET),
            bn_stats=dict(file="bn_stats.safetensors", sha256=sha256_file(tmp / "bn_stats.safetensors")),
            fixtures=dict(file="fixtures.safetensors", sha256=sha256_file(tmp / "fixtures.safetensors"),
                          count=N_FIXTURES),
            layers=[dict(name=l, out_channels=int(base[arch.conv(l[:-len('.weight')]).unit]),
                         tie=arch.ties[arch.conv(l[:-len('.weight')]).unit]) for l in layers],
            vanilla=dict(file="vanilla.onnx", sha256=sha256_bytes(vanilla_bytes),
                         accuracy=_r(vm["test"]), macs=macs(arch, base), params=params(arch, base),
                         cross_domain_accuracy=_r(vm["cross"])),
            descendants=descendants,
            seed=dict(name="d0", floor=cfg["floor"], roadmap_step=int(desc[0]["step"])),
            ablation=ablation_rows,
            generator=dict(command="models/regenerate" + (" --tiny" if tiny else ""),
                           configuration="tiny" if tiny else "full", torch=str(torch.__version__),
                           python=platform.python_version()),
        )
        import yaml
        (tmp / "manifest.yaml").write_text(
            f"# generated by models/regenerate; format: docs/model-format.md\n"
            + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=100))
        verify_folder(tmp)
        dest = out / task
        install_folder(tmp, dest)
        log(f"wrote {dest}")
        return dict(task=task, manifest=manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- CLI
def _worker(args):
    task, out, work, tiny, floor, resume, lane, no_abl = args
    try:
        return dict(task=task, ok=True, summary=run_app(task, Path(out), Path(work), tiny, floor,
                                                       resume, lane, no_abl))
    except PipelineError as e:
        return dict(task=task, ok=False, error=str(e))
    except Exception:
        return dict(task=task, ok=False, error=f"internal error:\n{traceback.format_exc()}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="models/regenerate",
                                 description="Regenerate the nested multi-capacity models.")
    ap.add_argument("--tiny", action="store_true", help="tiny CI configuration (needs --out)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: models/)")
    ap.add_argument("--apps", default=",".join(APPS), help="comma-separated apps")
    ap.add_argument("--floor", type=float, default=None,
                    help="seed accuracy floor (validation top-1, fraction); default per dataset")
    ap.add_argument("--jobs", type=int, default=2, help="apps trained in parallel (1 thread each)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse verified stage checkpoints from <out>/.work")
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the ablation baselines (quick experiments only)")
    a = ap.parse_args(argv)
    t0 = time.time()
    try:
        if a.tiny and a.out is None:
            raise PipelineError("--tiny needs --out DIR (tiny models must not replace the "
                                "committed ones)")
        out = (a.out or MODELS_DIR).resolve()
        apps = [s.strip() for s in a.apps.split(",") if s.strip()]
        if not apps:
            raise PipelineError("--apps is empty")
        for t in apps:
            app_config(t, a.tiny, a.floor)   # validate names before any work
        if a.floor is not None and not (0.0 <= a.floor <= 1.0):
            raise PipelineError(f"--floor {a.floor} is not a fraction in 0..1")
        out.mkdir(parents=True, exist_ok=True)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    for t in apps:
        lf = work / f"{t}.log"
        if lf.exists():
            lf.unlink()
    header = (f"models/regenerate {' '.join(argv if argv is not None else sys.argv[1:])}\n"
              f"started {_dt.datetime.now().isoformat(timespec='seconds')} on "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{a.jobs} parallel app(s), 1 torch thread each\n")
    print(header, end="", flush=True)
    jobs = max(1, min(a.jobs, len(apps)))
    # longest apps first so the two lanes finish together
    order = sorted(apps, key=lambda t: (not t.startswith("fashion"), apps.index(t)))
    args = [(t, str(out), str(work), a.tiny, a.floor, a.resume, i % jobs, a.no_ablation)
            for i, t in enumerate(order)]
    if jobs == 1:
        results = [_worker(x) for x in args]
    else:
        with mp.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
            results = list(pool.imap_unordered(_worker, args))
    results.sort(key=lambda r: apps.index(r["task"]))
    total = time.time() - t0
    lines = [header]
    for r in results:
        lf = work / f"{r['task']}.log"
        if lf.exists():
            lines.append(lf.read_text())
    summary = [f"\n== summary ({total:.0f}s wall, {total / 60:.1f} min) =="]
    failed = []
    for r in results:
        if r["ok"]:
            m = r["summary"]["manifest"]
            ds_ = m["descendants"]
            summary.append(f"{r['task']}: {len(ds_)} descendants, "
                           f"{ds_[0]['macs'] / 1e6:.2f}..{ds_[-1]['macs'] / 1e6:.2f} MMAC, accuracy "
                           f"{ds_[0]['accuracy']:.4f}..{ds_[-1]['accuracy']:.4f} (vanilla "
                           f"{m['vanilla']['accuracy']:.4f}), {r['summary']['seconds']:.0f}s")
        else:
            failed.append(r)
            summary.append(f"{r['task']}: FAILED: {r['error']}")
    text = "".join(lines) + "\n".join(summary) + "\n"
    logp = out / "regenerate.log"
    tmp = logp.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, logp)
    print("\n".join(summary), flush=True)
    for r in failed:
        print(f"error: {r['task']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
