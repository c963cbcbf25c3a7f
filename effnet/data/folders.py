"""Labelled image folders (ImageFolder layout): scanning with corrupt-file detection, splits, datasets."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, ImageLoadError
from .images import load_image


_decoded: dict[str, tuple[tuple[int, int], Any]] = {}  # path -> ((mtime_ns, size), decoded RGB image)
_decoded_budget = [0]  # bytes of pixels still allowed in _decoded; 0 = cache off (the default)


def keep_decoded_images(max_bytes: int = 2 << 30) -> None:
    """Keep the images that scanning and :class:`ImageSamples` decode in memory in this process, up to
    ``max_bytes`` of pixels (0 turns it off and frees them). For many short runs on one small dataset (the grid
    search trains dozens of candidates per worker process): each file is decoded once, not once per run and
    epoch. A file whose size or modification time changed is decoded again."""
    _decoded.clear()
    _decoded_budget[0] = max_bytes


def decoded_images_kept() -> bool:
    """Whether :func:`keep_decoded_images` turned the in-memory cache on in this process."""
    return _decoded_budget[0] > 0


def decoded_image(path: str | os.PathLike):
    """:func:`load_image`, through the in-memory cache when :func:`keep_decoded_images` turned it on."""
    if _decoded_budget[0] <= 0:
        return load_image(path)
    key = os.fspath(path)
    try:
        st = os.stat(key)
    except OSError:
        return load_image(path)  # raises the usual ImageLoadError
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _decoded.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    image = load_image(path)
    size = image.width * image.height * len(image.getbands())
    if hit is not None:  # the file changed: its old pixels give their room back
        _decoded_budget[0] += hit[1].width * hit[1].height * len(hit[1].getbands())
        del _decoded[key]
    if size <= _decoded_budget[0]:
        _decoded[key] = (stamp, image)
        _decoded_budget[0] -= size
    return image


def check_image(path: str | os.PathLike) -> str | None:
    """None if ``path`` decodes as an image, else the reason (corrupt, truncated, empty, not an image)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        decoded_image(path)
        return None
    except ImageLoadError as exc:
        return str(exc).split(": ", 1)[-1]
    except OSError as exc:
        return str(exc)


def _walk_files(folder: str):
    """Files under ``folder``, following symlinked folders once each: a link back up (``a/loop -> .``) or two
    links to one folder would list the same images many times (and across a train/val split)."""
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        yield from (os.path.join(dirpath, f) for f in filenames)


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
        files = sorted(_walk_files(folder)) if os.path.isdir(folder) else []
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
        image = decoded_image(path)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a seed for every accelerator backend,
            # which costs ~1 ms per call (a stack trace each) -- as much as decoding and augmenting a small image
            torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            return self.transform(image), label


def split_samples(samples, val_split: float, seed: int):
    rng = random.Random(seed)
    order = list(range(len(samples)))
    rng.shuffle(order)
    n_val = max(1, int(round(len(samples) * val_split)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [samples[i] for i in train], [samples[i] for i in val]


def load_splits(data_dir: str, val_split: float, seed: int, log=print):
    """(train samples, val samples, class names, skipped files) from DATA_DIR/{train,val} or one folder."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{data_dir}: not a directory")
    if (root / "train").is_dir():
        train, classes, skipped = scan_image_folder(root / "train")
        if (root / "val").is_dir():
            val, _, skipped_val = scan_image_folder(root / "val", classes)
            skipped += skipped_val
        else:
            train, val = split_samples(train, val_split, seed)
    else:
        samples, classes, skipped = scan_image_folder(root)
        train, val = split_samples(samples, val_split, seed)
    for path, reason in skipped:
        log(f"warning: skipping {path}: {reason}")
    if len(classes) < 2:
        log(f"warning: {data_dir} has one class ({classes[0]}): every prediction is right, so accuracy says nothing "
            "(a classifier needs at least two class folders)")
    return train, val, classes, skipped


HINTS_FILE = "effnet_dataset.json"
HINT_FIELDS = ("hflip", "resolution", "rrc_scale_min", "auto_augment")


def dataset_hints(data_dir: str) -> dict[str, Any]:
    """Training defaults a dataset declares in DATA_DIR/effnet_dataset.json (written by `effnet data`)."""
    path = Path(data_dir) / HINTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    return {k: v for k, v in data.get("train_defaults", {}).items() if k in HINT_FIELDS}
