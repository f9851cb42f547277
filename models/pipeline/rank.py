"""Filter importance: TRR (Triplet Response Residual) and the L1-norm baseline.

TRR(f) = sum over triplets (a, p, n) of ||F_f(a) - F_f(n)||^2 - ||F_f(a) - F_f(p)||^2, where
F_f(x) is filter f's response map: the output after BN+ReLU for convs followed by a ReLU, the
BN output for convs that feed a residual Add (a block's second conv, a projection shortcut).
Scores of the convs of one unit (a residual tie group) are summed per channel index.
"""
from __future__ import annotations

import numpy as np
import torch

from .arch import Arch, Net
from .train import normalise


def triplets(y: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(int(y.max()) + 1)]
    a = rng.integers(0, len(y), n)
    p = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=np.int64)
    for i, ai in enumerate(a):
        same = by_class[y[ai]]
        pi = same[rng.integers(0, len(same))]
        while pi == ai and len(same) > 1:
            pi = same[rng.integers(0, len(same))]
        p[i] = pi
        other = rng.integers(0, len(y))
        while y[other] == y[ai]:
            other = rng.integers(0, len(y))
        neg[i] = other
    return a, p, neg


@torch.no_grad()
def trr_scores(arch: Arch, net: Net, ds, n_triplets: int, seed: int, batch: int = 200):
    """-> {unit: FloatTensor[width]} (higher = more important)."""
    net.eval()
    a, p, n = triplets(ds.y_train, n_triplets, seed)
    x = torch.from_numpy(ds.x_train)
    scores = {u: torch.zeros(net.w[u], dtype=torch.float64) for u in arch.units}
    for i in range(0, n_triplets, batch):
        caps = []
        for idx in (a[i:i + batch], p[i:i + batch], n[i:i + batch]):
            cap = {}
            net(normalise(x[torch.from_numpy(idx)], ds.mean, ds.std), capture=cap)
            caps.append(cap)
        ca, cp, cn = caps
        for c in arch.convs:
            ra, rp, rn = ca[c.name], cp[c.name], cn[c.name]
            d_neg = ((ra - rn) ** 2).sum((2, 3)).sum(0)
            d_pos = ((ra - rp) ** 2).sum((2, 3)).sum(0)
            scores[c.unit] += (d_neg - d_pos).double()
    return {u: s.float() for u, s in scores.items()}


@torch.no_grad()
def l1_scores(arch: Arch, state):
    """Classic L1-norm filter ranking (Li et al.): sum |W| of each output filter, summed over
    the convs of a tie group."""
    scores = {}
    for c in arch.convs:
        s = state[f"{c.name}.weight"].abs().sum((1, 2, 3))
        scores[c.unit] = scores.get(c.unit, 0) + s
    return scores


def keep_top(scores, widths):
    """Indices of the `widths[u]` best channels of every unit, in ascending channel order.
    Ties break towards the lower index (stable sort), so ranking is deterministic."""
    keep = {}
    for u, s in scores.items():
        order = torch.sort(-s, stable=True).indices[: int(widths[u])]
        keep[u] = torch.sort(order).values
    return keep
