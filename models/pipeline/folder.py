"""Image-folder datasets for the forge: `DIR/train/<class>/*` and optionally `DIR/val/<class>/*`.

Class names are the folder names (sorted; they become the manifest labels). Every file must be
a readable image in a format Pillow opens (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM, ...); files
and folders whose names start with '.' are ignored. Images are converted to RGB (or kept
grayscale when every training image is grayscale, or as `color` says) and resized to S x S by
area averaging (Pillow's BOX filter, the same rule as the Rust pre-processor). Without a val
folder, a fixed seeded split holds out 10 % of every class (at least one image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import Dataset
from .errors import PipelineError

VAL_FRACTION = 0.1
SPLIT_SEED = 20181029
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _classes(d: Path, what: str):
    if not d.is_dir():
        raise PipelineError(f"{d} is missing: the image folder needs {what}/<class>/<images>")
    cls = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    if stray:
        raise PipelineError(f"{d} holds files ({', '.join(stray[:3])}) beside the class "
                            f"folders: put every image inside {d}/<class>/")
    return cls


def _files(d: Path):
    files = sorted(p for p in d.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(d).parts))
    if not files:
        raise PipelineError(f"class folder {d} has no images")
    return files


def _mode(p: Path) -> str:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(p) as im:
            return im.mode
    except UnidentifiedImageError:
        raise PipelineError(f"{p} is not an image Pillow can read (remove it or convert it)")
    except (OSError, ValueError, SyntaxError) as e:
        raise PipelineError(f"{p} is unreadable ({e}); remove or replace it")


def _open(p: Path):
    from PIL import Image, UnidentifiedImageError
    try:
        im = Image.open(p)
        im.load()   # decodes everything: a truncated file fails here
        return im
    except UnidentifiedImageError:
        raise PipelineError(f"{p} is not an image Pillow can read (remove it or convert it)")
    except (OSError, ValueError, SyntaxError) as e:
        raise PipelineError(f"{p} is unreadable or truncated ({e}); remove or replace it")


def _convert(im, color: str, size: int) -> np.ndarray:
    from PIL import Image
    im = im.convert("L" if color == "gray" else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_folder(root: Path, size: int, color: str = "auto", log=print) -> Dataset:
    """-> Dataset with u8 [N,C,S,S] images, per-channel mean/std of the training split,
    x_test = the validation split (the forge makes no decision on validation accuracy)."""
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"--data {root} is not a folder")
    cls = _classes(root / "train", "train")
    if not cls:
        raise PipelineError(f"{root}/train has no class folders: the image folder needs "
                            f"train/<class>/<images>")
    if len(cls) < 2:
        raise PipelineError(f"{root}/train has one class ({cls[0]}): a classifier needs at "
                            f"least 2 class folders")
    train_files = {c: _files(root / "train" / c) for c in cls}
    val_dir = root / "val"
    val_files = None
    if val_dir.exists():
        vcls = _classes(val_dir, "val")
        missing = [c for c in cls if c not in vcls]
        extra = [c for c in vcls if c not in cls]
        if missing:
            raise PipelineError(f"{val_dir} lacks class folder(s) {', '.join(missing)} that "
                                f"train has: every class needs validation images")
        if extra:
            raise PipelineError(f"{val_dir} has class folder(s) {', '.join(extra)} that train "
                                f"lacks")
        val_files = {c: _files(val_dir / c) for c in cls}
    if color == "auto":   # header pass: the colour mode of every training image
        modes = {_mode(p) for c in cls for p in train_files[c]}
        color = "gray" if modes <= _GRAY_MODES else "rgb"

    def arr(files):
        return np.stack([_convert(_open(p), color, size) for p in files])

    xs, ys = [], []
    vx, vy = [], []
    rng = np.random.default_rng(SPLIT_SEED)
    for i, c in enumerate(cls):
        tf = train_files[c]
        if val_files is None:
            if len(tf) < 2:
                raise PipelineError(f"class {c} has {len(tf)} image: with no val folder, every "
                                    f"class needs at least 2 (one is held out)")
            n_val = max(1, int(round(VAL_FRACTION * len(tf))))
            perm = rng.permutation(len(tf))
            held = set(perm[:n_val].tolist())
            vf = [p for j, p in enumerate(tf) if j in held]
            tf = [p for j, p in enumerate(tf) if j not in held]
        else:
            vf = val_files[c]
        xs.append(arr(tf))
        ys.append(np.full(len(tf), i, np.int64))
        vx.append(arr(vf))
        vy.append(np.full(len(vf), i, np.int64))
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    x_val, y_val = np.concatenate(vx), np.concatenate(vy)
    f = x_train.astype(np.float64) / 255.0
    mean = [round(float(v), 4) for v in f.mean((0, 2, 3))]
    std = [round(max(float(v), 1e-3), 4) for v in f.std((0, 2, 3))]
    log(f"data {root}: {len(cls)} classes, {color}, train {len(x_train)}, val {len(x_val)}"
        f"{'' if val_files else ' (seeded 10 % split)'}; mean {mean} std {std}")
    return Dataset(root.name, cls, x_train, y_train, x_val, y_val, x_val, y_val, None, None,
                   mean, std)


def random_dataset(classes: int, channels: int, size: int, n: int = 64, seed: int = 0) -> Dataset:
    """Random images and labels: for untrained slicing checks and timing (no data needed)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    y = np.arange(n) % classes
    labels = [f"class{i}" for i in range(classes)]
    return Dataset("random", labels, x, y, x[:16], y[:16], x[:16], y[:16], None, None,
                   [0.5] * channels, [0.29] * channels)
