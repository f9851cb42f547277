"""A small real-image folder for trying and testing the forge: crops of the photographs that
ship inside scikit-image (`skimage.data`), one class per photograph, written as JPEG and PNG
files in the `DIR/train/<class>/`, `DIR/val/<class>/` layout. The classes are real photos; the
task (which photo a crop comes from) is easy, which is what a smoke test needs.

    python -m pipeline.samples OUT_DIR [--per-class 24] [--val 6]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo_crops(out: Path, per_class: int = 24, val: int = 6, seed: int = 7,
                photos=PHOTOS) -> Path:
    from PIL import Image
    from skimage import data as skd
    rng = np.random.default_rng(seed)
    out = Path(out)
    for name in photos:
        img = getattr(skd, name)()
        h, w = img.shape[:2]
        for split, n in (("train", per_class), ("val", val)):
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
                y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
                crop = Image.fromarray(img[y:y + side, x:x + side])
                # mixed sizes and formats, as a real folder has
                crop = crop.resize((int(side * rng.uniform(0.3, 0.6)),) * 2)
                if i % 2:
                    crop.save(d / f"{name}_{i:03d}.jpg", quality=90)
                else:
                    crop.save(d / f"{name}_{i:03d}.png")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m pipeline.samples")
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=24)
    ap.add_argument("--val", type=int, default=6)
    a = ap.parse_args()
    if a.out.exists():
        print(f"error: {a.out} exists", file=sys.stderr)
        sys.exit(2)
    photo_crops(a.out, a.per_class, a.val)
    print(a.out)
