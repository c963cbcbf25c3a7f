"""``segment-digits``: a small real-image semantic-segmentation set in effnet's layout, built from installed data.

As detect-digits (:mod:`effnet.data.detect_digits`), scikit-learn's handwritten digit scans (real 8x8 scans) are
printed as paper tiles at several sizes onto random crops of scikit-image's bundled photographs; here every pixel
is labelled. A pixel is digit d (class d + 1) where the pasted ink covers it -- the tile's ink alpha, the resized
scan's intensity / 16, is at least 0.5 -- and background (class 0) everywhere else, the paper around the ink
included. The masks are exact: they come from the same alpha that painted the ink, not from the JPEG.

Train and val use disjoint scans, and each split draws from its own random stream spawned from ``seed``: another
seed gives another set, and val never shares a scan with train.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..files import atomic_dir
from .bundled import MAX_COUNT, load_photos
from .detect_digits import CLASSES, place_tile, random_view
from .folders import HINTS_FILE
from .masks import CLASSES_FILE, mask_image

CLASS_NAMES = ("background", *CLASSES)  # mask value i is CLASS_NAMES[i]: digit d is class d + 1
INK_THRESHOLD = 0.5  # ink alpha from which a pixel is the digit's


def _ink_alpha(scan: np.ndarray, size: int) -> np.ndarray:
    """The 8x8 scan (0-16) resized to ``size`` x ``size`` as a float alpha in [0, 1] (bilinear, in float: no
    8-bit rounding between the painted ink and the threshold that labels it)."""
    alpha = Image.fromarray((scan / 16.0).astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(alpha), 0.0, 1.0)


def _write_split(out_dir: str, split: str, count: int, scans, targets, photos, rng: np.random.Generator,
                 min_size: int, max_size: int) -> tuple[int, int, int]:
    """Write one split's images and masks. Returns (digits pasted, digit pixels, all pixels)."""
    images_dir, masks_dir = os.path.join(out_dir, split, "images"), os.path.join(out_dir, split, "masks")
    os.makedirs(images_dir)
    os.makedirs(masks_dir)
    digits = ink_pixels = pixels = 0
    for i in range(count):
        view = random_view(photos[i % len(photos)], rng)
        w, h = view.size
        canvas = np.asarray(view, dtype=np.float32).copy()
        mask = np.zeros((h, w), np.uint8)
        tiles: list = []
        for _ in range(int(rng.integers(1, 5))):
            size = int(rng.integers(min_size, max_size + 1))
            spot = place_tile(tiles, size, w, h, rng)
            if spot is None:
                continue
            k = int(rng.integers(0, len(scans)))
            alpha = _ink_alpha(scans[k], size)[..., None]
            paper, pen = rng.uniform(190, 255, size=3), rng.uniform(0, 70, size=3)
            opacity = rng.uniform(215, 255) / 255  # the tile is slightly see-through, as in detect-digits
            x, y = spot
            region = canvas[y:y + size, x:x + size]
            region[:] = region * (1 - opacity) + (paper * (1 - alpha) + pen * alpha) * opacity
            mask[y:y + size, x:x + size][alpha[..., 0] >= INK_THRESHOLD] = int(targets[k]) + 1
            tiles.append((x, y, size, size))
            digits += 1
        Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8), "RGB").save(
            os.path.join(images_dir, f"{i:05d}.jpg"), quality=90)
        mask_image(mask).save(os.path.join(masks_dir, f"{i:05d}.png"))
        ink_pixels += int(np.count_nonzero(mask))
        pixels += mask.size
    return digits, ink_pixels, pixels


def write_segment_digits(out_dir: str | os.PathLike, train: int = 400, val: int = 100, seed: int = 0,
                         min_size: int = 32, max_size: int = 112) -> dict:
    """Write ``out_dir/{train,val}/images/NNNNN.jpg`` with their masks ``out_dir/{train,val}/masks/NNNNN.png``
    (palette PNGs of class indices, VOC colours), ``out_dir/classes.txt`` (background, 0 ... 9) and the training
    hints ``out_dir/effnet_dataset.json``.

    Returns ``train_images``, ``val_images``, ``train_digits``, ``val_digits`` (tiles pasted) and
    ``digit_pixel_fraction`` (of all pixels, both splits). The folder appears whole or not at all (written beside
    it, then renamed; ``out_dir`` must be new or empty).
    """
    if not (1 <= train <= MAX_COUNT and 1 <= val <= MAX_COUNT):
        raise UsageError(f"--count must be 1 to {MAX_COUNT} images per split, got {train} train, {val} val")
    if not 8 <= min_size <= max_size <= 224:
        raise UsageError(f"digit sizes must satisfy 8 <= min_size <= max_size <= 224, got {min_size}, {max_size}")
    with atomic_dir(out_dir) as tmp:
        return _write_segment_digits(os.fspath(tmp), train, val, seed, min_size, max_size)


def _write_segment_digits(out_dir: str, train: int, val: int, seed: int, min_size: int, max_size: int) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.images))
    tr, va = train_test_split(idx, test_size=0.25, random_state=seed, stratify=digits.target)
    # one stream per split, both spawned from the seed: val is drawn apart from train, whatever the counts
    streams = np.random.SeedSequence(seed).spawn(2)
    photos = [img for _, img in load_photos(min_side=256)]  # room for a 224-320 px crop
    counts: dict = {}
    ink = pixels = 0
    for (split, n, chosen), stream in zip((("train", train, tr), ("val", val, va)), streams):
        pasted, split_ink, split_pixels = _write_split(out_dir, split, n, digits.images[chosen],
                                                       digits.target[chosen], photos, np.random.default_rng(stream),
                                                       min_size, max_size)
        counts[f"{split}_images"], counts[f"{split}_digits"] = n, pasted
        ink, pixels = ink + split_ink, pixels + split_pixels
    counts["digit_pixel_fraction"] = ink / pixels
    with open(os.path.join(out_dir, CLASSES_FILE), "w") as fh:
        fh.write("".join(f"{name}\n" for name in CLASS_NAMES))
    # digits are not mirror-symmetric: no flips; the set is made for 256 px inputs
    hints = {"name": "segment-digits", "classes": len(CLASS_NAMES),
             "train_defaults": {"hflip": 0.0, "resolution": 256}}
    with open(os.path.join(out_dir, HINTS_FILE), "w") as fh:
        json.dump(hints, fh, indent=1)
    return counts
