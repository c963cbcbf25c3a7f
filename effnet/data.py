"""Images in, tensors out: robust image loading and each model's own preprocessing."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .config import ModelConfig


class ImageLoadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, LA, P, L, CMYK, I;16, I, F, 1) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: rescale the actual range to 0..255 rather than clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # composite on white
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB, or raise :class:`ImageLoadError` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        reason = str(exc) or type(exc).__name__
        raise ImageLoadError(f"{path}: cannot read image ({reason})") from None


def eval_transform(config: ModelConfig, resolution: int | None = None) -> v2.Compose:
    """Resize the short side to ``resolution / crop_pct``, center-crop ``resolution``, normalise.

    Takes a PIL RGB image, returns a float tensor (3, resolution, resolution).
    """
    res = resolution or config.resolution
    resize = int(math.floor(res / config.crop_pct))
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(res),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(config.mean), list(config.std)),
    ])


# ---------------------------------------------------------------------------------------------- datasets

class DataError(ValueError):
    """A dataset folder that cannot be used; the message names the folder and the problem."""


def check_image(path: str | os.PathLike) -> str | None:
    """None if ``path`` decodes as an image, else the reason (corrupt, truncated, empty, not an image)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        load_image(path)
        return None
    except ImageLoadError as exc:
        return str(exc).split(": ", 1)[-1]
    except OSError as exc:
        return str(exc)


def scan_image_folder(root: str | os.PathLike, classes: list[str] | None = None):
    """Walk an ImageFolder tree (``root/<class>/<file>``).

    Returns (samples [(path, class_index)], class names, skipped [(path, reason)]). Every file is decoded
    once, so corrupt, truncated, zero-byte and non-image files are found here, not mid-training.
    An empty class folder or a folder with no images is a :class:`DataError`.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a directory")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    classes = classes or found
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    samples, skipped = [], []
    for idx, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(
            os.path.join(dp, f) for dp, _, fs in os.walk(folder, followlinks=True) for f in fs
        ) if os.path.isdir(folder) else []
        good = 0
        for path in files:
            reason = check_image(path)
            if reason is None:
                samples.append((path, idx))
                good += 1
            else:
                skipped.append((path, reason))
        if good == 0:
            raise DataError(f"{folder}: class folder has no readable images")
    return samples, list(classes), skipped


class ImageSamples(torch.utils.data.Dataset):
    """(path, label) samples with a transform whose randomness depends only on (seed, epoch, index).

    The sampler encodes the epoch into the index (``epoch * len + i``), so augmentation is reproducible
    across processes, worker counts and resumed runs.
    """

    def __init__(self, samples: list[tuple[str, int]], transform, seed: int = 0) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int):
        epoch, index = divmod(int(key), len(self.samples))
        path, label = self.samples[index]
        image = load_image(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            return self.transform(image), label


def train_transform(config: ModelConfig, resolution: int, auto_augment: str = "none", scale_min: float = 0.08,
                    hflip: float = 0.5) -> v2.Compose:
    """RandomResizedCrop + flip (+ AutoAugment / RandAugment), as the paper; PIL in, tensor out."""
    ops: list = [v2.ToImage(), v2.RandomResizedCrop(resolution, scale=(scale_min, 1.0), antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif auto_augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    elif auto_augment != "none":
        raise ValueError(f"unknown auto-augment {auto_augment!r} (none, autoaugment, randaugment)")
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(config.mean), list(config.std))]
    return v2.Compose(ops)


def write_digits(out_dir: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes) as an ImageFolder.

    Writes ``out_dir/{train,val}/<digit>/<n>.png`` with a fixed stratified split. Returns counts.
    """
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


PHOTO_NAMES = ("astronaut", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
               "retina", "colorwheel", "camera", "moon", "coins", "brick", "grass", "gravel", "page", "text")


def write_photos(out_dir: str | os.PathLike, count: int = 100, seed: int = 0) -> int:
    """Real photographs bundled with scikit-image (``skimage.data``), as ``count`` JPEG views: each a random
    crop (30-100% of the area) with random flip of one photo, so that calibration and agreement checks
    see varied real content with no download. Returns the number written."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTO_NAMES:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            continue
        try:
            photos.append((name, to_rgb(Image.fromarray(np.asarray(fn())))))
        except Exception:  # a data file missing from this scikit-image build
            continue
    os.makedirs(out_dir, exist_ok=True)
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
