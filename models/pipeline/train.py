"""Training, evaluation and BatchNorm recalibration (CPU, deterministic)."""
from __future__ import annotations

import math
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .arch import Net
from .errors import OutOfTime

LOG = print  # replaced by the runner with its logger


def seed_for(*parts) -> int:
    """A stable seed from names (independent of PYTHONHASHSEED and of run order)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def seed_all(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


def normalise(x_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """x = (pixel * (1/255) - mean) / std (the manifest's input spec): [N,28,28] u8 with scalar
    mean/std -> [N,1,28,28] f32; or [N,C,H,W] u8 with per-channel mean/std lists -> f32."""
    if x_u8.dim() == 4:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x_u8.float() * (1.0 / 255.0) - m) / s
    return ((x_u8.float() * (1.0 / 255.0) - mean) / std).unsqueeze(1)


def augment(x: torch.Tensor, g: torch.Generator, shift: int, hflip: bool) -> torch.Tensor:
    """Random translations by up to `shift` pixels (zero fill) and optional horizontal flips,
    on a u8 batch [B,28,28] (or [B,C,H,W]: the same shift for every channel of an image)."""
    gray = x.dim() == 3
    if gray:
        x = x.unsqueeze(1)
    b, c, h, w = x.shape
    if hflip:
        flip = torch.rand(b, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift:
        p = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=g)
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=g)
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
        x = p[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows,
              cols]
    return x.squeeze(1) if gray else x


def _dev(net) -> torch.device:
    return next(net.parameters()).device


def _bar(total, desc, position):
    tty = sys.stderr.isatty()
    # on a terminal: one bar per parallel app (position); in a log file: plain periodic lines
    return tqdm(total=total, desc=desc, position=position if tty else None, leave=False,
                dynamic_ncols=tty, mininterval=0.5 if tty else 60, file=sys.stderr)


def train(net: Net, ds, *, epochs: float, lr: float, seed: int, batch: int = 128,
          samples_per_epoch: int | None = None, wd: float = 5e-5, shift: int = 2,
          hflip: bool = False, masks: dict | None = None, desc: str = "train",
          position: int = 0, teacher: Net | None = None, kd: dict | None = None,
          deadline: float | None = None):
    """Adam with warm-up + cosine decay. With a teacher (the vanilla model), the loss is
    (1-alpha) * cross-entropy + alpha * T^2 * KL(teacher_T || student_T) (knowledge
    distillation, Hinton et al.). L2 decay is added to the gradient *through the masks*,
    and masked (frozen) entries get a zero gradient, so Adam never moves them (their moments
    stay 0). With a `deadline` (time.time() value), raises OutOfTime when it passes (the caller
    keeps its last stage checkpoint). Returns the final training loss."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(ds.x_train)
    y_all = torch.from_numpy(ds.y_train)
    n = len(x_all)
    per_epoch = min(n, samples_per_epoch or n)
    steps_per_epoch = max(1, per_epoch // batch)
    total = max(1, int(round(epochs * steps_per_epoch)))
    named = [(k, p) for k, p in net.named_parameters()]
    dev = _dev(net)
    mask_list = [None if masks is None else masks[k].to(dev) for k, _ in named]
    params = [p for k, p in named]
    if masks is not None:
        for (k, p), m in zip(named, mask_list):
            p.requires_grad_(bool(m.any()))
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, foreach=False)
    warm = max(1, total // 20)

    def lr_at(step):
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    net.train()
    step, loss_ema = 0, None
    bar = _bar(total, desc, position)
    while step < total:
        perm = torch.randperm(n, generator=g)[:per_epoch]
        for i in range(steps_per_epoch):
            if step >= total:
                break
            if deadline is not None and time.time() > deadline:
                bar.close()
                raise OutOfTime(f"time budget used up during {desc!r} (step {step} of {total})")
            idx = perm[i * batch:(i + 1) * batch]
            xb = augment(x_all[idx], g, shift, hflip)
            xb = normalise(xb, ds.mean, ds.std).to(dev)
            yb = y_all[idx].to(dev)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=False)
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            if teacher is not None and kd:
                with torch.no_grad():
                    t_out = teacher(xb)
                T, alpha = float(kd["T"]), float(kd["alpha"])
                soft = F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(t_out / T, 1),
                                reduction="batchmean", log_target=True) * (T * T)
                loss = (1 - alpha) * loss + alpha * soft
            loss.backward()
            with torch.no_grad():
                for p, m in zip(params, mask_list):
                    if p.grad is None:
                        continue
                    if wd:
                        p.grad.add_(p, alpha=wd)
                    if m is not None:
                        p.grad.mul_(m)  # frozen entries: exactly 0 gradient
            opt.step()
            lv = float(loss.detach())
            loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss_ema:.3f}")
    bar.close()
    for p in params:
        p.requires_grad_(True)
    net.eval()
    return loss_ema


@torch.no_grad()
def predict(net: Net, x_u8: np.ndarray, mean: float, std: float, batch: int = 1000):
    net.eval()
    outs = []
    x = torch.from_numpy(x_u8)
    for i in range(0, len(x), batch):
        outs.append(net(normalise(x[i:i + batch], mean, std).to(_dev(net))).cpu())
    return torch.cat(outs)


def accuracy(net: Net, x_u8, y, mean, std) -> float:
    if x_u8 is None:
        return None
    logits = predict(net, x_u8, mean, std)
    return float((logits.argmax(1) == torch.from_numpy(y)).float().mean())


@torch.no_grad()
def recalibrate_bn(net: Net, ds, n_images: int, seed: int, batch: int = 256):
    """Per-descendant BN statistics: reset, then a cumulative average (momentum=None) of the
    batch statistics over `n_images` training images in train mode. gamma/beta untouched."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds.x_train), generator=g)[:n_images]
    x = torch.from_numpy(ds.x_train)[idx]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for i in range(0, len(x), batch):
        net(normalise(x[i:i + batch], ds.mean, ds.std).to(_dev(net)))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()
