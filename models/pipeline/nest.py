"""The NestDNN offline method: pruning roadmap (TRR), seed, freeze-&-grow, per-descendant BN,
and the two ablation baselines (L1-norm pruning + fine-tuning, training from scratch)."""
from __future__ import annotations

import torch

from .arch import Arch, Net, macs, prefix_masks, prefix_state, select_state, shared_keys
from .errors import PipelineError
from .rank import keep_top, l1_scores, trr_scores
from .train import accuracy, recalibrate_bn, seed_all, seed_for, train


def width_schedule(arch: Arch, steps: int, frac: float):
    """Roadmap widths: step s keeps round(base * (1-frac)^s) filters of every unit (a fixed
    fraction of the current filters is removed per layer per step), at least one fewer than
    the step before, at least 2."""
    sched = [dict(arch.base)]
    for s in range(1, steps + 1):
        prev = sched[-1]
        w = {}
        for u in arch.units:
            target = int(round(arch.base[u] * (1.0 - frac) ** s))
            w[u] = max(2, min(target, prev[u] - 1))
            if w[u] >= prev[u]:
                raise PipelineError(f"{arch.name}: unit {u} (width {arch.base[u]}) is too narrow "
                                    f"for {steps} pruning steps; widen it or use fewer steps")
        sched.append(w)
    return sched


def _net(arch, w, state):
    net = Net(arch, w)
    net.load_state_dict(state)
    return net.eval()


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32),
                                              b.contiguous().view(torch.int32))


# ----------------------------------------------------------------------------- roadmap
def _teacher(arch, vanilla_state, cfg):
    if not cfg.get("kd"):
        return None
    t = _net(arch, arch.base, vanilla_state)
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def build_roadmap(task, arch: Arch, vanilla_state, vanilla_val, ds, cfg, floor, log, pos=0):
    """Iterative pruning: rank by TRR, drop the lowest fraction of every unit, retrain briefly,
    record which filters (vanilla channel ids) each step removed. Stops after cfg.steps steps or
    at the first model below the accuracy floor (validation split)."""
    sched = width_schedule(arch, cfg["steps"], cfg["frac"])
    teacher = _teacher(arch, vanilla_state, cfg)
    ids = {u: torch.arange(arch.base[u]) for u in arch.units}
    steps = [dict(step=0, widths=sched[0], ids=ids, state=vanilla_state, val=vanilla_val,
                  removed=None)]
    for s in range(1, len(sched)):
        cur = steps[-1]
        net = _net(arch, cur["widths"], cur["state"])
        scores = trr_scores(arch, net, ds, cfg["triplets"], seed_for(task, "trr", s))
        keep = keep_top(scores, sched[s])
        state = select_state(arch, cur["state"], keep)
        new_ids = {u: cur["ids"][u][keep[u]] for u in arch.units}
        removed = {}
        for u in arch.units:
            mask = torch.ones(cur["widths"][u], dtype=torch.bool)
            mask[keep[u]] = False
            removed[u] = cur["ids"][u][mask]
        net = _net(arch, sched[s], state)
        train(net, ds, seed=seed_for(task, "roadmap", s), desc=f"{task} prune {s}",
              position=pos, teacher=teacher, kd=cfg.get("kd"), **cfg["retrain"])
        recalibrate_bn(net, ds, cfg["bn_images"], seed_for(task, "bn", "roadmap", s))
        val = accuracy(net, ds.x_val, ds.y_val, ds.mean, ds.std)
        st = dict(step=s, widths=sched[s], ids=new_ids, state=net.state_dict(), val=val,
                  removed=removed)
        steps.append(st)
        log(f"roadmap step {s}: widths {list(sched[s].values())} "
            f"{macs(arch, sched[s]) / 1e6:.2f} MMAC, val acc {val:.4f}")
        if val < floor:
            log(f"roadmap step {s} is below the floor {floor}: stop pruning")
            break
    return steps


def pick_seed(task, steps, floor, min_descendants):
    ok = [st["step"] for st in steps if st["val"] >= floor]
    best = max(st["val"] for st in steps)
    if not ok or max(ok) < min_descendants - 1:
        need = [st for st in steps if st["step"] == min_descendants - 1]
        hint = (f"; the {min_descendants - 1}-step model reached {need[0]['val']:.4f}"
                if need else "")
        raise PipelineError(
            f"{task}: accuracy floor {floor} is unreachable for a ladder of >= {min_descendants} "
            f"descendants (roadmap validation accuracies: "
            f"{', '.join('%.4f' % st['val'] for st in steps)}; best {best:.4f}{hint}). "
            f"Lower --floor.")
    return max(ok)


# ----------------------------------------------------------------------------- freeze & grow
def grow_permutation(units, small_ids, big_ids):
    """Channel order of the larger roadmap model for a grow step: the smaller descendant's
    filters first (in its order, so they form the prefix), then the ones the roadmap removed.
    ids: {unit: LongTensor of vanilla channel ids}. Returns (perm, reordered big ids)."""
    perm, ids_big = {}, {}
    for u in units:
        pos = {int(i): j for j, i in enumerate(big_ids[u])}
        old = [pos[int(i)] for i in small_ids[u]]
        old_set = set(int(i) for i in small_ids[u])
        new = [j for j, i in enumerate(big_ids[u]) if int(i) not in old_set]
        perm[u] = torch.tensor(old + new, dtype=torch.long)
        ids_big[u] = big_ids[u][perm[u]]
    return perm, ids_big


def grow(task, arch: Arch, steps, seed_step, ds, cfg, log, pos=0):
    teacher = _teacher(arch, steps[0]["state"], cfg)
    """Walk the roadmap backwards from the seed. Each step adds back the filters the roadmap
    removed there, *with their roadmap weights*: every added weight (new filters, the inherited
    filters' weights on the new input channels, the classifier's new columns, the new BN
    affine parameters) starts from the roadmap model of that size; every weight that exists in
    the smaller descendant is overwritten with the descendant's value and frozen. Only added
    weights train (masked gradients, no decay on frozen entries). Every inherited tensor block
    is asserted bit-for-bit unchanged after each grow step. Returns descendants smallest first:
    {step, widths, ids, state}."""
    seed = steps[seed_step]
    desc = [dict(step=seed_step, widths=seed["widths"], ids=seed["ids"], state=seed["state"])]
    keys = shared_keys(arch)
    for s in range(seed_step - 1, -1, -1):
        small, M = desc[-1], steps[s]
        perm, ids_big = grow_permutation(arch.units, small["ids"], M["ids"])
        init = select_state(arch, M["state"], perm)
        sw = small["widths"]
        zero = cfg.get("grow_init", "roadmap") == "zero"
        for c in arch.convs:
            k = f"{c.name}.weight"
            co = sw[c.unit]
            if c.src is None:
                init[k][:co] = small["state"][k]
            else:
                ci = sw[c.src]
                init[k][:co, :ci] = small["state"][k]
                if zero:
                    init[k][:co, ci:] = 0.0
            for t in ("weight", "bias"):
                init[f"{c.bn}.{t}"][:co] = small["state"][f"{c.bn}.{t}"]
        cf = sw[arch.fc_src]
        init["fc.weight"][:, :cf] = small["state"]["fc.weight"]
        if zero:
            init["fc.weight"][:, cf:] = 0.0
        init["fc.bias"] = small["state"]["fc.bias"].clone()
        big_w = M["widths"]
        net = _net(arch, big_w, init)
        grow_cfg = cfg["grow_last"] if s == 0 else cfg["grow"]
        seed_all(seed_for(task, "grow", s))
        train(net, ds, seed=seed_for(task, "grow", s), masks=prefix_masks(arch, big_w, sw),
              desc=f"{task} grow {s}", position=pos, teacher=teacher, kd=cfg.get("kd"),
              **grow_cfg)
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        inherited = prefix_state(arch, state, sw)
        for k in keys:
            if not bits_equal(inherited[k], small["state"][k]):
                raise PipelineError(f"{task}: freeze violated in grow step {s}: {k} changed "
                                    f"inside the inherited block (internal error)")
        log(f"grow to roadmap step {s}: every inherited weight bit-for-bit frozen (checked)")
        desc.append(dict(step=s, widths=big_w, ids=ids_big, state=state))
    full = desc[-1]["state"]
    for d in desc:   # the chain property, transitively: every descendant is a prefix of full
        sub = prefix_state(arch, full, d["widths"])
        for k in keys:
            if not bits_equal(sub[k], d["state"][k]):
                raise PipelineError(f"{task}: descendant at step {d['step']} is not a prefix of "
                                    f"the largest ({k}) (internal error)")
    return desc


def descendant_net(arch, full_state, widths, bn=None):
    """A standalone network holding exactly the descendant's weights (sliced copies)."""
    sub = prefix_state(arch, full_state, widths)
    if bn is not None:
        sub.update({k: v.clone() for k, v in bn.items()})
    return _net(arch, widths, sub)


def calibrate_ladder(task, arch, full_state, desc, ds, cfg):
    """Per-descendant BN statistics (the documented exception to nesting)."""
    out = []
    for d in desc:
        net = descendant_net(arch, full_state, d["widths"])
        recalibrate_bn(net, ds, cfg["bn_images"], seed_for(task, "bn", "ladder", d["step"]))
        sd = net.state_dict()
        out.append({k: sd[k].clone() for k in sd if k.endswith(("running_mean", "running_var"))})
    return out


# ----------------------------------------------------------------------------- ablations
def ablation(task, arch, vanilla_state, widths_list, ds, cfg, log, pos=0):
    """Baselines at the same widths: (b) L1-norm filter pruning of the vanilla model (one shot)
    + fine-tuning; (c) the same architecture trained from scratch."""
    rows = []
    teacher = _teacher(arch, vanilla_state, cfg)
    l1 = l1_scores(arch, vanilla_state)
    for i, w in enumerate(widths_list):
        keep = keep_top(l1, w)
        net = _net(arch, w, select_state(arch, vanilla_state, keep))
        train(net, ds, seed=seed_for(task, "l1ft", i), desc=f"{task} L1+FT {i}", position=pos,
              teacher=teacher, kd=cfg.get("kd"), **cfg["finetune"])
        recalibrate_bn(net, ds, cfg["bn_images"], seed_for(task, "bn", "l1", i))
        acc_l1 = accuracy(net, ds.x_test, ds.y_test, ds.mean, ds.std)
        seed_all(seed_for(task, "scratch-init", i))
        net = Net(arch, w)
        train(net, ds, seed=seed_for(task, "scratch", i), desc=f"{task} scratch {i}",
              position=pos, teacher=teacher, kd=cfg.get("kd"), **cfg["scratch"])
        recalibrate_bn(net, ds, cfg["bn_images"], seed_for(task, "bn", "scratch", i))
        acc_sc = accuracy(net, ds.x_test, ds.y_test, ds.mean, ds.std)
        log(f"ablation widths {list(w.values())}: L1+FT {acc_l1:.4f}, scratch {acc_sc:.4f}")
        rows.append(dict(widths=w, l1_finetune=acc_l1, scratch=acc_sc))
    return rows
