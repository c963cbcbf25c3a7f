"""Real datasets that ship with installed packages (scikit-learn digits, scikit-image photos), written to disk."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..files import atomic_dir
from .images import to_rgb


def write_digits(out_dir: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes) as an ImageFolder.

    Writes ``out_dir/{train,val}/<digit>/<n>.png`` with a fixed stratified split. Returns counts. The folder
    appears whole or not at all (written beside it, then renamed; ``out_dir`` must be new or empty).
    """
    with atomic_dir(out_dir) as tmp:
        return _write_digits(tmp, val_fraction, seed)


def _write_digits(out_dir, val_fraction: float, seed: int) -> dict[str, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=digits.target)
    counts = {}
    for split, indices in (("train", train_idx), ("val", val_idx)):
        for i in indices:
            folder = os.path.join(out_dir, split, str(digits.target[i]))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(images[i], "L").save(os.path.join(folder, f"{i:04d}.png"))
        counts[split] = len(indices)
    # Training defaults that follow from the data: 8x8 scans need no more than 64 px, handwritten digits
    # are not mirror-symmetric (no flips), and crops under half the area cut the strokes away.
    hints = {"name": "sklearn-digits", "images": int(len(images)), "classes": 10,
             "train_defaults": {"hflip": 0.0, "resolution": 64, "rrc_scale_min": 0.5}}
    with open(os.path.join(out_dir, "effnet_dataset.json"), "w") as fh:
        json.dump(hints, fh, indent=1)
    return counts


MAX_COUNT = 100_000  # images one `effnet data` call may write (bounds the work before doing it)
PHOTO_NAMES = ("astronaut", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
               "retina", "colorwheel", "camera", "moon", "coins", "brick", "grass", "gravel", "page", "text")


def load_photos(min_side: int = 0) -> list[tuple[str, Image.Image]]:
    """scikit-image's bundled photos (:data:`PHOTO_NAMES`) as (name, RGB image), those with both sides at least
    ``min_side`` px; a photo missing from this scikit-image build is left out."""
    import skimage.data

    photos = []
    for name in PHOTO_NAMES:
        fn = getattr(skimage.data, name, None)
        try:
            img = to_rgb(Image.fromarray(np.asarray(fn()))) if fn is not None else None
        except Exception:  # a data file missing from this scikit-image build
            img = None
        if img is not None and min(img.size) >= min_side:
            photos.append((name, img))
    return photos


def write_photos(out_dir: str | os.PathLike, count: int = 100, seed: int = 0) -> int:
    """Real photographs bundled with scikit-image (``skimage.data``), as ``count`` JPEG views: each a random
    crop (30-100% of the area) with random flip of one photo, so that calibration and agreement checks
    see varied real content with no download. Returns the number written. The folder appears whole or not at
    all (``out_dir`` must be new or empty)."""
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be 1 to {MAX_COUNT}, got {count}")
    with atomic_dir(out_dir) as tmp:
        return _write_photos(tmp, count, seed)


def _write_photos(out_dir, count: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    photos = load_photos()
    for i in range(count):
        name, img = photos[i % len(photos)]
        w, h = img.size
        area = rng.uniform(0.3, 1.0)
        cw, ch = max(32, int(w * math.sqrt(area))), max(32, int(h * math.sqrt(area)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        view = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view.save(os.path.join(out_dir, f"{i:04d}_{name}.jpg"), quality=92)
    return count
