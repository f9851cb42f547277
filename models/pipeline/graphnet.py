"""Any traced CNN as a multi-capacity model (the forge's engine; the four bundled apps use the
hand-written `arch.py`).

The network is traced with torch.fx. Walking the graph gives every tensor a *channel tag*:
- a prunable **unit** (one Conv's output filters): a Conv (groups=1) starts a unit;
- **depthwise coupling**: a depthwise Conv (groups = in = out channels) and the BatchNorm,
  activations and pooling after it keep their input's unit, so a depthwise layer is sliced
  together with the layer that feeds it;
- **residual tie groups**: the inputs of an Add are merged into one unit (union-find), so
  every Conv whose output meets at an Add (a block's last conv, its downsample shortcut, the
  previous block's output) shares one width in every descendant;
- **flatten heads**: Flatten(axis=1) of a unit-tagged [N,C,H,W] tensor gives a flat tag
  (unit, H*W): the first Linear after it keeps a prefix of `width * H*W` input features.
Linear outputs (hidden classifier layers, logits) are never sliced. Any other operation on a
unit-tagged tensor (concatenation, grouped convolution, attention, multiplication) is refused
naming the node, as the Rust runtime would refuse it at load time.

From the tags, every state-dict tensor gets a per-dimension layout (`dims`): which unit, with
which repeat factor, indexes each of its dimensions. Slicing a descendant (prefix), pruning
(index selection), the freeze-&-grow masks and the standalone sub-network all follow from it.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from .errors import PipelineError

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Dropout, nn.Identity, nn.MaxPool2d,
                 nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Sigmoid, nn.LeakyReLU)
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)
_PASS_FUNCS = {F.relu, torch.relu, F.relu6, F.hardtanh, F.dropout, F.max_pool2d,
               F.avg_pool2d, F.adaptive_avg_pool2d, F.leaky_relu, torch.sigmoid}
_ACT_FUNCS = {F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_PASS_METHODS = {"relu", "relu_", "contiguous"}

IMG = ("img",)
OPAQUE = ("opaque",)


@dataclass
class ConvInfo:
    name: str               # module path
    unit: str               # unit of its output channels (resolved root)
    src: str | None         # unit of its input channels (None: the image)
    depthwise: bool
    k: int                  # kh * kw
    hw: int                 # output spatial size (H * W)
    in_channels: int        # full input channels (image channels when src is None)
    bias: bool
    node: str               # fx node name
    bn: str | None = None   # module path of the BatchNorm right after it
    response: str = ""      # fx node whose output is the TRR response map


@dataclass
class LinearInfo:
    name: str
    src: str | None         # unit feeding it (first Linear after the features) or None
    factor: int             # input features per channel of `src` (H*W of the flattened map)
    in_features: int
    out_features: int
    bias: bool


@dataclass
class GraphSpec:
    """The traced network (`gm`, full width) and its unit structure."""
    gm: fx.GraphModule
    input_shape: tuple      # (C, H, W)
    classes: int
    units: list             # unit names (roots), graph order
    base: dict              # unit -> full width
    members: dict           # unit -> [conv module paths]
    convs: list             # [ConvInfo], graph order
    linears: list           # [LinearInfo], graph order
    dims: dict              # state key -> tuple per dim of (unit, factor) or None
    meta: dict = field(default_factory=dict)

    def tie(self, unit):
        """The manifest's tie-group name of a unit: set when several Convs share its width."""
        return unit if len(self.members[unit]) > 1 else None

    def conv_channels(self, w):
        """Manifest `channels`: {conv weight name: output channels} at widths `w`."""
        return {f"{c.name}.weight": int(w[c.unit]) for c in self.convs}

    def check_widths(self, w):
        for u in self.units:
            if not (1 <= int(w[u]) <= self.base[u]):
                raise PipelineError(f"width {w[u]} for unit {u} outside 1..{self.base[u]}")


class _UF:
    """Union-find over unit names; the earlier unit (graph order) stays the root."""

    def __init__(self):
        self.p = {}
        self.order = {}

    def add(self, u):
        self.p.setdefault(u, u)
        self.order.setdefault(u, len(self.order))

    def find(self, u):
        while self.p[u] != u:
            self.p[u] = self.p[self.p[u]]
            u = self.p[u]
        return u

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if self.order[ra] < self.order[rb]:
                self.p[rb] = ra
            else:
                self.p[ra] = rb


def _shape(node):
    tm = node.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def trace(model: nn.Module, input_shape, what: str = "the model") -> GraphSpec:
    """Derives the unit structure of `model` for inputs [N, *input_shape]. Raises PipelineError
    naming the node when the graph uses an operation slicing cannot follow."""
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise PipelineError(f"{what} cannot be traced by torch.fx ({type(e).__name__}: {e}); "
                            f"data-dependent control flow is not supported")
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(2, *input_shape))
    except Exception as e:
        raise PipelineError(f"{what} does not run on input [N,{','.join(map(str, input_shape))}]"
                            f" ({type(e).__name__}: {e}); check --input-size and the image "
                            f"channels")
    mods = dict(gm.named_modules())
    uf = _UF()
    tag = {}
    convs, linears, users = [], [], {}
    for n in gm.graph.nodes:
        for a in n.all_input_nodes:
            users.setdefault(a.name, []).append(n)

    def t_of(a):
        return tag.get(a.name, OPAQUE) if isinstance(a, fx.Node) else None

    def unit_inputs(n):
        return [t for t in (t_of(a) for a in n.all_input_nodes) if t and t[0] in ("u", "flat")]

    def refuse(n, what_op):
        raise PipelineError(f"{what}: node {n.name!r} ({what_op}) is not supported on a sliced "
                            f"tensor; supported: Conv (groups 1 or depthwise), BatchNorm, "
                            f"ReLU/ReLU6/Hardtanh, MaxPool/AvgPool/AdaptiveAvgPool, Dropout, "
                            f"Add (residual), Flatten, Linear")

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            tag[n.name] = IMG
            continue
        if n.op in ("get_attr", "output"):
            if n.op == "output":
                for a in n.all_input_nodes:
                    if t_of(a)[0] in ("u", "flat"):
                        raise PipelineError(f"{what}: the model output ({a.name}) would be "
                                            f"sliced; end the network with a Linear classifier")
            tag[n.name] = OPAQUE
            continue
        x = n.args[0] if n.args else None
        tx = t_of(x) if isinstance(x, fx.Node) else None
        if n.op == "call_module":
            m = mods[n.target]
            if isinstance(m, nn.Conv2d):
                shp = _shape(n)
                hw = shp[2] * shp[3] if shp else 0
                k = m.kernel_size[0] * m.kernel_size[1]
                if tx is None or tx[0] == "flat":
                    refuse(n, "Conv on a flattened tensor")
                if m.groups == 1:
                    u = n.target
                    uf.add(u)
                    src = tx[1] if tx[0] == "u" else None
                    if tx == OPAQUE:
                        refuse(n, "Conv on an untracked tensor")
                    convs.append(ConvInfo(n.target, u, src, False, k, hw, m.in_channels,
                                          m.bias is not None, n.name))
                    tag[n.name] = ("u", u)
                elif m.groups == m.in_channels == m.out_channels and tx[0] == "u":
                    convs.append(ConvInfo(n.target, tx[1], None, True, k, hw, 1,
                                          m.bias is not None, n.name))
                    tag[n.name] = tx
                else:
                    raise PipelineError(
                        f"{what}: node {n.name!r} ({n.target}): grouped convolution with "
                        f"groups={m.groups} (in {m.in_channels}, out {m.out_channels}) is not "
                        f"supported; only groups=1 and depthwise (groups = in = out channels, "
                        f"after a Conv) can be sliced")
            elif isinstance(m, nn.BatchNorm2d):
                if tx is None or tx[0] != "u":
                    refuse(n, "BatchNorm not after a sliced Conv")
                if x.op == "call_module" and isinstance(mods[x.target], nn.Conv2d):
                    for c in convs:
                        if c.node == x.name:
                            c.bn = n.target
                tag[n.name] = tx
            elif isinstance(m, nn.Linear):
                if tx is not None and tx[0] == "flat":
                    linears.append(LinearInfo(n.target, tx[1], tx[2], m.in_features,
                                              m.out_features, m.bias is not None))
                elif tx is not None and tx[0] == "u":
                    refuse(n, "Linear on an unflattened feature map")
                else:
                    linears.append(LinearInfo(n.target, None, 1, m.in_features, m.out_features,
                                              m.bias is not None))
                tag[n.name] = OPAQUE
            elif isinstance(m, nn.Flatten):
                tag[n.name] = _flatten(n, tx, m.start_dim, refuse)
            elif isinstance(m, _PASS_MODULES):
                tag[n.name] = tx if tx is not None else OPAQUE
            else:
                if unit_inputs(n):
                    refuse(n, f"module {type(m).__name__}")
                tag[n.name] = OPAQUE
        elif n.op == "call_function":
            f = n.target
            if f in _ADD_FUNCS:
                ts = [t_of(a) for a in n.args[:2]]
                us = [t for t in ts if t is not None and t[0] == "u"]
                if any(t is not None and t[0] == "flat" for t in ts):
                    refuse(n, "Add of flattened tensors")
                if us and (len(us) != 2 or any(t is None for t in ts)):
                    refuse(n, "Add of a sliced tensor and a constant or untracked tensor")
                if len(us) == 2:
                    uf.union(us[0][1], us[1][1])
                    tag[n.name] = us[0]
                else:
                    tag[n.name] = OPAQUE
            elif f is torch.flatten:
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                tag[n.name] = _flatten(n, tx, start, refuse)
            elif f in _PASS_FUNCS:
                tag[n.name] = tx if tx is not None else OPAQUE
            elif f in (getattr, operator.getitem) and (tx is None or tx[0] not in ("u", "flat")):
                tag[n.name] = OPAQUE
            else:
                if unit_inputs(n):
                    refuse(n, f"function {getattr(f, '__name__', f)}")
                tag[n.name] = OPAQUE
        elif n.op == "call_method":
            if n.target == "size":
                tag[n.name] = OPAQUE
            elif n.target == "flatten":
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                tag[n.name] = _flatten(n, tx, start, refuse)
            elif n.target in ("view", "reshape") and tx is not None and tx[0] == "u":
                out, inp = _shape(n), _shape(x)
                if out and inp and len(out) == 2 and len(inp) == 4 and out[1] == \
                        inp[1] * inp[2] * inp[3]:
                    tag[n.name] = ("flat", tx[1], inp[2] * inp[3])
                else:
                    refuse(n, f"{n.target} other than [N,C,H,W] -> [N,C*H*W]")
            elif n.target in _PASS_METHODS:
                tag[n.name] = tx if tx is not None else OPAQUE
            else:
                if unit_inputs(n):
                    refuse(n, f"method {n.target}")
                tag[n.name] = OPAQUE
        else:
            tag[n.name] = OPAQUE

    if not any(not c.depthwise for c in convs):
        raise PipelineError(f"{what} has no Conv2d layer to slice")
    # resolve unions
    for c in convs:
        c.unit = uf.find(c.unit)
        c.src = uf.find(c.src) if c.src is not None else None
    for li in linears:
        li.src = uf.find(li.src) if li.src is not None else None
    units, base, members = [], {}, {}
    for c in convs:
        if c.unit not in base:
            units.append(c.unit)
            base[c.unit] = mods[c.name].out_channels
            members[c.unit] = []
        members[c.unit].append(c.name)
    # TRR response: the BN output, or the activation right after it
    nodes = {n.name: n for n in gm.graph.nodes}
    for c in convs:
        node = nodes[c.node]
        us = users.get(node.name, [])
        if len(us) == 1 and us[0].op == "call_module" and isinstance(mods[us[0].target],
                                                                      nn.BatchNorm2d):
            node = us[0]
            us = users.get(node.name, [])
        if len(us) == 1 and ((us[0].op == "call_module" and isinstance(mods[us[0].target],
                                                                        _ACT_MODULES))
                             or (us[0].op == "call_function" and us[0].target in _ACT_FUNCS)):
            node = us[0]
        c.response = node.name
    out_shape = _shape(next(n for n in gm.graph.nodes if n.op == "output").args[0])
    classes = int(out_shape[-1]) if out_shape else 0
    dims = _layouts(gm, convs, linears)
    return GraphSpec(gm, tuple(input_shape), classes, units, base, members, convs, linears, dims)


def _flatten(n, tx, start, refuse):
    if tx is None or tx[0] != "u":
        return OPAQUE if tx is None or tx[0] != "flat" else refuse(n, "Flatten of a flat tensor")
    if start != 1:
        refuse(n, f"Flatten with start_dim={start} (only 1)")
    shp = _shape(n.args[0])
    s = shp[2] * shp[3] if shp and len(shp) == 4 else 1
    return ("flat", tx[1], s)


def _layouts(gm, convs, linears):
    dims = {}
    for c in convs:
        if c.depthwise:
            dims[f"{c.name}.weight"] = ((c.unit, 1), None, None, None)
        else:
            dims[f"{c.name}.weight"] = ((c.unit, 1), None if c.src is None else (c.src, 1),
                                        None, None)
        if c.bias:
            dims[f"{c.name}.bias"] = ((c.unit, 1),)
        if c.bn:
            for s in ("weight", "bias", "running_mean", "running_var"):
                dims[f"{c.bn}.{s}"] = ((c.unit, 1),)
    for li in linears:
        if li.src is not None:
            dims[f"{li.name}.weight"] = (None, (li.src, li.factor))
    return dims


# ----------------------------------------------------------------------------- sizes
def macs(spec: GraphSpec, w) -> int:
    total = 0
    for c in spec.convs:
        if c.depthwise:
            total += c.hw * w[c.unit] * c.k
        else:
            ci = c.in_channels if c.src is None else w[c.src]
            total += c.hw * w[c.unit] * ci * c.k
    for li in spec.linears:
        fin = li.in_features if li.src is None else w[li.src] * li.factor
        total += fin * li.out_features
    return int(total)


def params(spec: GraphSpec, w) -> int:
    """Conv (+ bias) + BN affine + Linear weights and biases; running statistics excluded."""
    total = 0
    for c in spec.convs:
        co = w[c.unit]
        if c.depthwise:
            total += co * c.k
        else:
            total += co * (c.in_channels if c.src is None else w[c.src]) * c.k
        total += co if c.bias else 0
        total += 2 * co if c.bn else 0
    for li in spec.linears:
        fin = li.in_features if li.src is None else w[li.src] * li.factor
        total += fin * li.out_features + (li.out_features if li.bias else 0)
    return int(total)


# ----------------------------------------------------------------------------- slicing
def _prefix_index(layout, w):
    return tuple(slice(None) if d is None else slice(0, int(w[d[0]]) * d[1]) for d in layout)


def prefix_state(spec: GraphSpec, state, w):
    """Sliced copies: each tensor's prefix block at widths `w`."""
    out = {}
    for k, t in state.items():
        lay = spec.dims.get(k)
        out[k] = t.clone() if lay is None else t[_prefix_index(lay, w)].clone()
    return out


def select_state(spec: GraphSpec, state, keep):
    """Keep channels `keep[unit]` (LongTensor, in that order) of every tensor."""
    out = {}
    for k, t in state.items():
        lay = spec.dims.get(k)
        if lay is None:
            out[k] = t.clone()
            continue
        for dim, d in enumerate(lay):
            if d is not None:
                u, f = d
                idx = (keep[u][:, None] * f + torch.arange(f)[None]).flatten()
                t = t.index_select(dim, idx)
        out[k] = t.clone()
    return out


def prefix_masks(spec: GraphSpec, named_params, small_w):
    """Gradient masks for freeze-&-grow: 0 on every entry that exists in the smaller
    descendant (its prefix block; a tensor no unit slices is inherited whole), 1 on the added
    ones. Keys: parameter names."""
    masks = {}
    for k, p in named_params:
        lay = spec.dims.get(k)
        m = torch.ones_like(p, dtype=torch.float32, device="cpu")
        if lay is None:
            m.zero_()
        else:
            m[_prefix_index(lay, small_w)] = 0
        masks[k] = m
    return masks


def materialize(spec: GraphSpec, w, state=None) -> fx.GraphModule:
    """A standalone network at widths `w`: a copy of the traced network with every module
    resized (Conv channels and groups, BatchNorm features, Linear inputs) and holding `state`
    (already at widths `w`; default: the prefix of the full network's own weights)."""
    spec.check_widths(w)
    if state is None:
        state = prefix_state(spec, spec.gm.state_dict(), w)
    # copy the module tree but not its tensors (they are all replaced below): a full-size
    # VGG-16 holds 0.5 GB
    memo = {id(t): torch.empty(0) for t in list(spec.gm.parameters()) + list(spec.gm.buffers())}
    net = copy.deepcopy(spec.gm, memo)
    mods = dict(net.named_modules())
    for c in spec.convs:
        m = mods[c.name]
        co = int(w[c.unit])
        m.out_channels = co
        if c.depthwise:
            m.in_channels = co
            m.groups = co
        else:
            m.in_channels = c.in_channels if c.src is None else int(w[c.src])
        if c.bn:
            mods[c.bn].num_features = co
    for li in spec.linears:
        if li.src is not None:
            mods[li.name].in_features = int(w[li.src]) * li.factor
    for k, t in state.items():
        path, _, leaf = k.rpartition(".")
        m = mods[path]
        if leaf in m._parameters:
            m._parameters[leaf] = nn.Parameter(t.detach().clone())
        elif leaf in m._buffers:
            m._buffers[leaf] = t.detach().clone()
        else:
            raise PipelineError(f"state key {k} has no parameter or buffer (internal error)")
    return net.eval()


def reinit(net: nn.Module):
    """torchvision's initialisation: Conv kaiming-normal (fan_out, relu), BN 1/0, Linear
    N(0, 0.01) with zero bias."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def at_width(spec: GraphSpec, multiplier: float, input_shape) -> GraphSpec:
    """The same family at a width multiplier (every unit round(multiplier * width), at least
    1), freshly initialised, re-traced."""
    if multiplier == 1.0:
        return spec
    w = {u: max(1, int(round(multiplier * spec.base[u]))) for u in spec.units}
    net = materialize(spec, w)
    reinit(net)
    return trace(net, input_shape)


# ----------------------------------------------------------------------------- TRR
class _Capture(fx.Interpreter):
    def __init__(self, gm, names):
        super().__init__(gm)
        self.names, self.cap = set(names), {}

    def run_node(self, n):
        r = super().run_node(n)
        if n.name in self.names:
            self.cap[n.name] = r
        return r


@torch.no_grad()
def trr_scores(spec: GraphSpec, net, x_norm_batches):
    """TRR per unit: for triplet batches (anchor, positive, negative) of normalised images,
    sum over triplets of ||F_f(a) - F_f(n)||^2 - ||F_f(a) - F_f(p)||^2 per filter, F_f the
    response map after BN (+activation); the Convs of one tie group add up per channel."""
    net.eval()
    names = [c.response for c in spec.convs if not c.depthwise]
    dev = next(net.parameters()).device
    scores = {}
    for xa, xp, xn in x_norm_batches:
        caps = []
        for xb in (xa, xp, xn):
            cap = _Capture(net, names)
            cap.run(xb.to(dev))
            caps.append(cap.cap)
        for c in spec.convs:
            if c.depthwise:
                continue
            ra, rp, rn = (cp[c.response] for cp in caps)
            d_neg = ((ra - rn) ** 2).sum((2, 3)).sum(0)
            d_pos = ((ra - rp) ** 2).sum((2, 3)).sum(0)
            s = (d_neg - d_pos).double().cpu()
            scores[c.unit] = scores.get(c.unit, 0) + s
    return {u: s.float() for u, s in scores.items()}


def width_schedule(spec: GraphSpec, steps: int, seed_fraction: float):
    """Widths of roadmap steps 0..steps: step s keeps round(width * r^s) filters of every unit
    (at least 1, never more than the step before, at least one unit one narrower), with r
    chosen by bisection so the last step's MACs are `seed_fraction` of the full model's."""
    full = macs(spec, spec.base)

    def sched(r):
        out = [dict(spec.base)]
        for s in range(1, steps + 1):
            prev = out[-1]
            w = {u: max(1, min(prev[u], int(round(spec.base[u] * r ** s)))) for u in spec.units}
            if w == prev:
                # force progress: narrow the widest unit that can still shrink
                cand = [u for u in spec.units if w[u] > 1]
                if not cand:
                    return None
                u = max(cand, key=lambda u: w[u])
                w[u] -= 1
            out.append(w)
        return out

    lo, hi = 0.05, 0.999
    for _ in range(50):
        mid = (lo + hi) / 2
        s = sched(mid)
        if s is None or macs(spec, s[-1]) < seed_fraction * full:
            lo = mid
        else:
            hi = mid
    s = sched(hi)
    if s is None:
        raise PipelineError(f"the model is too narrow for {steps} pruning steps; use fewer "
                            f"--descendants or a larger --width")
    if len({macs(spec, w) for w in s}) != len(s):
        raise PipelineError(f"the model is too narrow for {steps + 1} distinct descendants; "
                            f"use fewer --descendants or a larger --width")
    return s


def param_keys(net: nn.Module):
    return [k for k, _ in net.named_parameters()]
