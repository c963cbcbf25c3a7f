"""``detect-digits``: a small real-image detection set in the COCO 2017 layout, built from installed data.

scikit-learn's handwritten digit scans (real 8x8 scans, 10 classes) are printed as paper tiles at several
sizes onto random crops of scikit-image's bundled photographs. Train and val use disjoint scans.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ..files import atomic_dir
from ..errors import UsageError
from .bundled import MAX_COUNT, load_photos

CLASSES = tuple(str(d) for d in range(10))


def _tile(scan: np.ndarray, size: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """The scan as dark ink on light paper, ``size`` px square, and its paste mask (slightly transparent)."""
    ink = Image.fromarray((scan / 16.0 * 255).astype(np.uint8), "L").resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(ink, dtype=np.float32)[..., None] / 255.0
    paper = rng.uniform(190, 255, size=3)
    pen = rng.uniform(0, 70, size=3)
    rgb = (paper * (1 - a) + pen * a).clip(0, 255).astype(np.uint8)
    mask = Image.new("L", (size, size), int(rng.uniform(215, 255)))
    return Image.fromarray(rgb, "RGB"), mask


def place_tile(placed: list, size: int, w: int, h: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """A top-left corner for a ``size`` square tile in a ``w`` x ``h`` canvas that keeps 4 px from every tile in
    ``placed`` ((x, y, width, height) each), or None after 30 tries."""
    for _ in range(30):
        x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
        if all(x + size + 4 <= bx or bx + bw + 4 <= x or y + size + 4 <= by or by + bh + 4 <= y
               for bx, by, bw, bh in placed):
            return x, y
    return None


def random_view(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of ``photo``, 224-320 px a side (less where the photo is smaller): one image of the set."""
    w, h = min(photo.width, int(rng.integers(224, 321))), min(photo.height, int(rng.integers(224, 321)))
    x0, y0 = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    return photo.crop((x0, y0, x0 + w, y0 + h))


def _write_split(out_dir: str, split: str, count: int, scans, targets, photos, rng, min_size, max_size) -> int:
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, anns = [], []
    for i in range(count):
        canvas = random_view(photos[i % len(photos)], rng)
        w, h = canvas.size
        boxes: list = []
        for _ in range(int(rng.integers(1, 5))):
            size = int(rng.integers(min_size, max_size + 1))
            spot = place_tile(boxes, size, w, h, rng)
            if spot is None:
                continue
            k = int(rng.integers(0, len(scans)))
            tile, mask = _tile(scans[k], size, rng)
            canvas.paste(tile, spot, mask)
            boxes.append((*spot, size, size))
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(targets[k]) + 1,
                             bbox=[spot[0], spot[1], size, size], area=size * size, iscrowd=0))
        name = f"{i:05d}.jpg"
        canvas.save(os.path.join(out_dir, split, name), quality=90)
        images.append(dict(id=i + 1, file_name=name, width=w, height=h))
    cats = [dict(id=d + 1, name=CLASSES[d]) for d in range(10)]
    with open(os.path.join(out_dir, "annotations", f"instances_{split}.json"), "w") as fh:
        json.dump(dict(images=images, annotations=anns, categories=cats), fh)
    return len(anns)


def write_detect_digits(out_dir: str | os.PathLike, train: int = 400, val: int = 100, seed: int = 0,
                        min_size: int = 24, max_size: int = 96) -> dict[str, int]:
    """Write ``out_dir/{train,val}/*.jpg`` and ``out_dir/annotations/instances_{train,val}.json``.

    Returns the numbers of images and boxes per split. The folder appears whole or not at all (written beside
    it, then renamed; ``out_dir`` must be new or empty).
    """
    if not (1 <= train <= MAX_COUNT and 1 <= val <= MAX_COUNT):
        raise UsageError(f"--count must be 1 to {MAX_COUNT} images per split, got {train} train, {val} val")
    with atomic_dir(out_dir) as tmp:
        return _write_detect_digits(os.fspath(tmp), train, val, seed, min_size, max_size)


def _write_detect_digits(out_dir: str, train: int, val: int, seed: int, min_size: int, max_size: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.images))
    tr, va = train_test_split(idx, test_size=0.25, random_state=seed, stratify=digits.target)
    rng = np.random.default_rng(seed)
    photos = [img for _, img in load_photos(min_side=256)]
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    counts = {}
    for split, n, chosen in (("train", train, tr), ("val", val, va)):
        boxes = _write_split(out_dir, split, n, digits.images[chosen], digits.target[chosen], photos, rng,
                             min_size, max_size)
        counts[f"{split}_images"], counts[f"{split}_boxes"] = n, boxes
    # digits are not mirror-symmetric: no flips; the set is made for 256 px inputs
    hints = {"name": "detect-digits", "classes": 10, "train_defaults": {"hflip": 0.0, "resolution": 256}}
    with open(os.path.join(out_dir, "effnet_dataset.json"), "w") as fh:
        json.dump(hints, fh, indent=1)
    return counts
