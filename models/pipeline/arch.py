"""Architectures (VGG-style and ResNet-style CNNs for 28x28 gray input), width bookkeeping,
MACs/params, and the slicing operations the nested ladder is built from.

Widths are a dict *unit -> channel count*. A unit is one prunable set of filters:
- a plain Conv is its own unit (unit name = conv module name);
- a residual *tie group* (all convs whose outputs meet at an Add: the stem or previous stage's
  output, the block's second conv, the 1x1 projection shortcut) is one unit named `stageN`.
Every Conv is followed by BatchNorm; the classifier is global average pooling + one Linear,
so slicing it is a column prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import PipelineError


@dataclass(frozen=True)
class ConvSpec:
    name: str            # module path of the Conv, e.g. "layer2.conv1"
    bn: str              # module path of its BatchNorm
    unit: str            # unit giving its output width
    src: str | None      # unit giving its input width (None: the image)
    k: int
    stride: int
    pad: int
    out_hw: int          # output spatial size (square)


@dataclass
class Arch:
    name: str            # "vgg" | "resnet"
    convs: list          # [ConvSpec] in graph order
    units: list          # unit names in graph order
    ties: dict           # unit -> tie group name (or None)
    fc_src: str          # unit feeding the classifier
    base: dict           # unit -> full width
    in_channels: int = 1
    classes: int = 10
    meta: dict = field(default_factory=dict)

    def members(self, unit):
        return [c for c in self.convs if c.unit == unit]

    def conv(self, name):
        return next(c for c in self.convs if c.name == name)

    def check_widths(self, w):
        for u in self.units:
            if not (1 <= int(w[u]) <= self.base[u]):
                raise PipelineError(f"{self.name}: width {w[u]} for {u} outside 1..{self.base[u]}")

    # per-conv channel counts (manifest `channels`)
    def conv_channels(self, w):
        return {f"{c.name}.weight": int(w[c.unit]) for c in self.convs}


ARCHITECTURES = ("vgg", "resnet")


def make_arch(name: str, widths) -> Arch:
    """vgg: widths (c1, c2, c3, c4, c5); resnet: widths (s1, s2, s3)."""
    if name == "vgg":
        c = list(widths)
        if len(c) != 5:
            raise PipelineError(f"vgg needs 5 widths, got {c}")
        # conv1 @28 -> pool -> conv2, conv3 @14 -> pool -> conv4, conv5 @7 -> GAP -> fc
        hw = [28, 14, 14, 7, 7]
        convs, src = [], None
        for i in range(5):
            n = f"conv{i + 1}"
            convs.append(ConvSpec(n, f"bn{i + 1}", n, src, 3, 1, 1, hw[i]))
            src = n
        units = [cv.name for cv in convs]
        return Arch("vgg", convs, units, {u: None for u in units}, "conv5",
                    dict(zip(units, c)), meta={"pool_after": ("conv1", "conv3")})
    if name == "resnet":
        s = list(widths)
        if len(s) != 3:
            raise PipelineError(f"resnet needs 3 widths, got {s}")
        # stem conv @28 -> pool -> layer1 (identity shortcut) @14 -> layer2 (stride 2, 1x1
        # projection) @7 -> layer3 (stride 2, projection) @4 -> GAP -> fc
        convs = [ConvSpec("stem.conv", "stem.bn", "stage1", None, 3, 1, 1, 28),
                 ConvSpec("layer1.conv1", "layer1.bn1", "layer1.conv1", "stage1", 3, 1, 1, 14),
                 ConvSpec("layer1.conv2", "layer1.bn2", "stage1", "layer1.conv1", 3, 1, 1, 14)]
        prev, hw = "stage1", 14
        for L in (2, 3):
            hw = (hw + 1) // 2
            inner = f"layer{L}.conv1"
            convs += [ConvSpec(inner, f"layer{L}.bn1", inner, prev, 3, 2, 1, hw),
                      ConvSpec(f"layer{L}.conv2", f"layer{L}.bn2", f"stage{L}", inner, 3, 1, 1, hw),
                      ConvSpec(f"layer{L}.proj", f"layer{L}.proj_bn", f"stage{L}", prev, 1, 2, 0,
                               hw)]
            prev = f"stage{L}"
        units = ["stage1", "layer1.conv1", "layer2.conv1", "stage2", "layer3.conv1", "stage3"]
        base = {"stage1": s[0], "layer1.conv1": s[0], "layer2.conv1": s[1], "stage2": s[1],
                "layer3.conv1": s[2], "stage3": s[2]}
        ties = {u: (u if u.startswith("stage") else None) for u in units}
        return Arch("resnet", convs, units, ties, "stage3", base)
    raise PipelineError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")


def macs(arch: Arch, w) -> int:
    total = 0
    for c in arch.convs:
        ci = arch.in_channels if c.src is None else w[c.src]
        total += c.out_hw * c.out_hw * w[c.unit] * ci * c.k * c.k
    return int(total + w[arch.fc_src] * arch.classes)


def params(arch: Arch, w) -> int:
    """Conv + BN affine + Linear (weights and bias); running statistics excluded."""
    total = 0
    for c in arch.convs:
        ci = arch.in_channels if c.src is None else w[c.src]
        total += w[c.unit] * ci * c.k * c.k + 2 * w[c.unit]
    return int(total + w[arch.fc_src] * arch.classes + arch.classes)


# ----------------------------------------------------------------------------- the network
def _container(root: nn.Module, path: str):
    parts = path.split(".")
    m = root
    for p in parts[:-1]:
        if not hasattr(m, p):
            m.add_module(p, nn.Module())
        m = getattr(m, p)
    return m, parts[-1]


class Net(nn.Module):
    """The network at widths `w`. forward(x) is the plain network; forward(x, active=widths,
    bn=stats) is the *nested* forward: it slices prefixes of this (larger) network's tensors on
    the fly, with the given per-descendant BN statistics."""

    def __init__(self, arch: Arch, w):
        super().__init__()
        arch.check_widths(w)
        self.arch = arch
        self.w = {u: int(w[u]) for u in arch.units}
        for c in arch.convs:
            ci = arch.in_channels if c.src is None else self.w[c.src]
            m, leaf = _container(self, c.name)
            m.add_module(leaf, nn.Conv2d(ci, self.w[c.unit], c.k, c.stride, c.pad, bias=False))
            m, leaf = _container(self, c.bn)
            m.add_module(leaf, nn.BatchNorm2d(self.w[c.unit]))
        self.fc = nn.Linear(self.w[arch.fc_src], arch.classes)

    def mod(self, path):
        return self.get_submodule(path)

    def _cbn(self, c: ConvSpec, x, active, bn):
        conv, norm = self.mod(c.name), self.mod(c.bn)
        if active is None:
            return norm(conv(x))
        co = active[c.unit]
        ci = self.arch.in_channels if c.src is None else active[c.src]
        y = F.conv2d(x, conv.weight[:co, :ci], None, c.stride, c.pad)
        return F.batch_norm(y, bn[f"{c.bn}.running_mean"], bn[f"{c.bn}.running_var"],
                            norm.weight[:co], norm.bias[:co], False, 0.0, norm.eps)

    def forward(self, x, active=None, bn=None, capture=None):
        a = self.arch
        cv = {c.name: c for c in a.convs}

        def rec(name, t):
            if capture is not None:
                capture[name] = t
            return t

        if a.name == "vgg":
            for c in a.convs:
                x = rec(c.name, F.relu(self._cbn(c, x, active, bn)))
                if c.name in a.meta["pool_after"]:
                    x = F.max_pool2d(x, 2)
        else:
            x = rec("stem.conv", F.relu(self._cbn(cv["stem.conv"], x, active, bn)))
            x = F.max_pool2d(x, 2)
            for L in (1, 2, 3):
                o = rec(f"layer{L}.conv1", F.relu(self._cbn(cv[f"layer{L}.conv1"], x, active, bn)))
                o = rec(f"layer{L}.conv2", self._cbn(cv[f"layer{L}.conv2"], o, active, bn))
                if f"layer{L}.proj" in cv:
                    sc = rec(f"layer{L}.proj", self._cbn(cv[f"layer{L}.proj"], x, active, bn))
                else:
                    sc = x
                x = F.relu(o + sc)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        if active is None:
            return self.fc(x)
        return F.linear(x, self.fc.weight[:, :active[a.fc_src]], self.fc.bias)


def bn_keys(arch: Arch):
    return [f"{c.bn}.{s}" for c in arch.convs for s in ("running_mean", "running_var")]


def bn_stats(net: Net):
    sd = net.state_dict()
    return {k: sd[k].detach().clone() for k in bn_keys(net.arch)}


def shared_keys(arch: Arch):
    """Every trained tensor shared between descendants (everything but BN running stats)."""
    keys = []
    for c in arch.convs:
        keys += [f"{c.name}.weight", f"{c.bn}.weight", f"{c.bn}.bias"]
    return keys + ["fc.weight", "fc.bias"]


# ----------------------------------------------------------------------------- slicing
def _index(arch: Arch, key: str, sel):
    """Index tuple for tensor `key` given sel(unit) -> index (slice or LongTensor)."""
    if key.startswith("fc."):
        return (slice(None), sel(arch.fc_src)) if key == "fc.weight" else (slice(None),)
    for c in arch.convs:
        if key == f"{c.name}.weight":
            return (sel(c.unit), slice(None) if c.src is None else sel(c.src))
        if key.startswith(c.bn + ".") and not key.endswith("num_batches_tracked"):
            return (sel(c.unit),)
    return None


def prefix_state(arch: Arch, state, w):
    """Sliced copies: each tensor's prefix block at widths `w`."""
    out = {}
    for k, t in state.items():
        idx = _index(arch, k, lambda u: slice(0, int(w[u])))
        out[k] = t.clone() if idx is None else t[idx].clone()
    return out


def select_state(arch: Arch, state, keep):
    """Keep channels `keep[unit]` (LongTensor, in that order) of every tensor."""
    out = {}
    for k, t in state.items():
        idx = _index(arch, k, lambda u: keep[u])
        if idx is None:
            out[k] = t.clone()
        elif len(idx) == 2 and not isinstance(idx[1], slice):
            out[k] = t[idx[0]][:, idx[1]].clone()
        else:
            out[k] = t[idx].clone()
    return out


def prefix_masks(arch: Arch, big_w, small_w):
    """Gradient masks for freeze-&-grow: 0 on every weight that exists in the smaller
    descendant (the prefix block), 1 on the added ones. Keys: parameter names."""
    masks = {}
    for c in arch.convs:
        ci_b = arch.in_channels if c.src is None else big_w[c.src]
        m = torch.ones(big_w[c.unit], ci_b, c.k, c.k)
        if c.src is None:
            m[:small_w[c.unit]] = 0
        else:
            m[:small_w[c.unit], :small_w[c.src]] = 0
        masks[f"{c.name}.weight"] = m
        for s in ("weight", "bias"):
            b = torch.ones(big_w[c.unit])
            b[:small_w[c.unit]] = 0
            masks[f"{c.bn}.{s}"] = b
    fm = torch.ones(arch.classes, big_w[arch.fc_src])
    fm[:, :small_w[arch.fc_src]] = 0
    masks["fc.weight"] = fm
    masks["fc.bias"] = torch.zeros(arch.classes)
    return masks
