"""Semantic-segmentation data: images with per-pixel class masks, in effnet's layout or Pascal VOC's.

Two layouts are read (:func:`load_segmentation`):

- effnet's (what ``effnet data segment-digits`` writes): ``DATA/{train,val}/images/<name>.<ext>`` with the mask
  ``DATA/{train,val}/masks/<name>.png`` (matched by file stem), class names one a line in ``DATA/classes.txt``;
- Pascal VOC's: ``DATA/JPEGImages/<id>.jpg``, ``DATA/SegmentationClass/<id>.png`` and the ids of each split in
  ``DATA/ImageSets/Segmentation/{train,val}.txt``; the 21 VOC class names unless ``DATA/classes.txt`` exists.

A mask is one class index per pixel: the pixel values of a palette ("P") PNG -- the palette only colours them,
as VOC's masks -- or of a greyscale one ("L", "1", 16-bit "I;16" or 32-bit "I"). Colour masks (RGB, RGBA, ...)
are refused: mapping colours back to classes would need a palette the file does not carry. Index
:data:`IGNORE_INDEX` (255, VOC's object boundaries) marks pixels that are neither trained on nor scored.

Every sample is checked once, when its split is read: an image or mask that cannot be decoded, declares more than
``max_pixels`` pixels (refused from the header, before decoding), a missing mask, a mask whose size differs from
its image's, a colour mask, or a class index past the class names (other than 255) skips that sample with one
warning line through ``log`` (as :mod:`effnet.data.coco` and :mod:`effnet.data.folders` do) and counts it in
``skipped``; it is never trained on. A split left empty is a :class:`DataError`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .folders import check_image
from .images import load_image

IGNORE_INDEX = 255  # a mask value that is not a class: not trained on, not scored (VOC's boundary pixels)
MAX_PIXELS = 64_000_000  # largest image or mask a sample may declare (8k x 8k; under Pillow's bomb warning, 89 Mpx)
CLASSES_FILE = "classes.txt"
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# PIL modes whose pixel values are class indices: palette indices, or grey levels of 1, 8, 16 or 32 bits
INDEX_MODES = ("P", "L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I")


def voc_palette() -> list[int]:
    """Pascal VOC's 256-colour palette (flat [r, g, b, ...]): class i's colour from the bits of i, as VOC's
    devkit (``labelcolormap``); 255 is VOC's cream boundary colour."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def mask_image(mask: np.ndarray) -> Image.Image:
    """A (H, W) array of class indices as a palette ("P") image with VOC's colours, ready to save as PNG: viewers
    show the classes in colour, readers get the indices back as the pixel values."""
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), "L").convert("P")
    img.putpalette(voc_palette())
    return img


def _declared_too_big(size: tuple[int, int], max_pixels: int) -> str | None:
    w, h = size
    if w * h > max_pixels:
        return f"declares {w}x{h} = {w * h / 1e6:.1f} Mpx, above the {max_pixels / 1e6:g} Mpx limit"
    return None


def _decode_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS,
                 size: tuple[int, int] | None = None) -> np.ndarray | str:
    """The mask's class indices as uint8 (H, W), or why it cannot be used. ``size`` (w, h): the image's, checked
    from the header before the pixels are decoded."""
    if not os.path.isfile(path):
        return "missing mask file"
    try:
        with warnings.catch_warnings():  # a huge declared size is refused below, in one line of ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            mode, declared = img.mode, img.size
            problem = _declared_too_big(declared, max_pixels)
            if problem is None and mode not in INDEX_MODES:
                problem = (f"mask is mode {mode}, not class indices (save a palette 'P' or greyscale 'L' PNG whose "
                           "pixel values are the class indices)")
            if problem is None and size is not None and declared != tuple(size):
                problem = f"mask size {declared[0]}x{declared[1]} differs from its image's {size[0]}x{size[1]}"
            if problem is not None:
                return problem
            img.load()
            values = np.array(img)  # a copy: writable, so torch.from_numpy may share it
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"cannot read mask ({str(exc) or type(exc).__name__})"
    if values.dtype != np.uint8:  # "1" (bool), "I;16" (uint16), "I" (int32)
        if values.size and (values.min() < 0 or values.max() > 255):
            return f"class index {int(values.max()) if values.max() > 255 else int(values.min())} is not 0 to 255"
        values = values.astype(np.uint8)
    return np.ascontiguousarray(values)


def read_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The class indices of a mask file as a uint8 (H, W) array (see the module's docstring for the modes that
    hold class indices), or :class:`DataError` naming the file and the reason."""
    mask = _decode_mask(path, max_pixels)
    if isinstance(mask, str):
        raise DataError(f"{path}: {mask}")
    return mask


@dataclass(frozen=True)
class SegmentationSplit:
    samples: list[tuple[str, str]]  # (image path, mask path), each checked once
    class_names: tuple[str, ...]  # index order; mask value i is class_names[i]
    skipped: list[tuple[str, str]]  # (path of the file at fault, reason)


def _header_size(path: str) -> tuple[int, int] | None:
    """(w, h) an image file declares, from its header alone; None if it has none Pillow can read."""
    try:
        with warnings.catch_warnings():  # a huge declared size is refused below, in one line of ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except Exception:  # PIL raises many types for corrupt data
        return None


def _sample_problem(image: str, mask: str, num_classes: int, max_pixels: int) -> tuple[str, str] | None:
    """(file at fault, reason) if this image / mask pair cannot be trained on, else None."""
    if not os.path.isfile(image):
        return image, "missing image file"
    size = _header_size(image)
    if size is None:
        return image, check_image(image) or "cannot read image"
    problem = _declared_too_big(size, max_pixels) or check_image(image)
    if problem is not None:
        return image, problem
    values = _decode_mask(mask, max_pixels, size)
    if isinstance(values, str):
        return mask, values
    bad = np.unique(values[(values >= num_classes) & (values != IGNORE_INDEX)])
    if bad.size:
        return mask, (f"class index {int(bad[0])} is past the {num_classes} classes (0 to {num_classes - 1}, "
                      f"or {IGNORE_INDEX} to ignore)")
    return None


def _check_pairs(pairs: list[tuple[str, str]], class_names: tuple[str, ...], where: str, log, max_pixels: int,
                 skipped: list[tuple[str, str]] | None = None) -> SegmentationSplit:
    """The split of the usable ``pairs``; ``skipped``: entries its listing already refused (logged here too)."""
    skipped = list(skipped or [])
    for path, reason in skipped:
        log(f"warning: skipping {path}: {reason}")
    samples = []
    for image, mask in pairs:
        problem = _sample_problem(image, mask, len(class_names), max_pixels)
        if problem is None:
            samples.append((image, mask))
        else:
            skipped.append(problem)
            log(f"warning: skipping {problem[0]}: {problem[1]}")
    if not samples:
        raise DataError(f"{where}: no usable image and mask pairs ({len(skipped)} skipped)")
    return SegmentationSplit(samples, class_names, skipped)


def _read_class_names(path: Path) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the class names ({exc})") from None
    if not 2 <= len(names) <= IGNORE_INDEX:
        raise DataError(f"{path}: {len(names)} class names; a mask needs 2 to {IGNORE_INDEX} (one a line, "
                        f"background first; {IGNORE_INDEX} is the ignore index)")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears twice")
    return names


def _effnet_pairs(folder: Path) -> list[tuple[str, str]]:
    images = sorted(e.path for e in os.scandir(folder / "images") if e.is_file() and not e.name.startswith("."))
    return [(path, os.fspath(folder / "masks" / (Path(path).stem + ".png"))) for path in images]


def _voc_pairs(root: Path, split: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(image, mask) pairs the split's listing names, and the (listing line, reason) of ids that are not names."""
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: no such file (the VOC layout lists each split's image ids there)")
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: cannot read the image ids ({exc})") from None
    pairs, refused = [], []
    for number, line in enumerate(lines, start=1):
        ids = line.split()  # an id, or an id and a flag as in VOC's per-class listings
        if not ids:
            continue
        if "/" in ids[0] or "\\" in ids[0] or ids[0] in (".", ".."):
            refused.append((f"{listing}:{number}", f"id {ids[0]!r} is not a file name (it would leave the folder)"))
            continue
        pairs.append((os.fspath(root / "JPEGImages" / f"{ids[0]}.jpg"),
                      os.fspath(root / "SegmentationClass" / f"{ids[0]}.png")))
    return pairs, refused


def load_segmentation(data_dir: str | os.PathLike, log=print,
                      max_pixels: int = MAX_PIXELS) -> tuple[SegmentationSplit, SegmentationSplit]:
    """(train, val) splits of a segmentation dataset in effnet's layout or Pascal VOC's (the module's docstring)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{data_dir}: not a directory")
    classes_file = root / CLASSES_FILE
    if (root / "train" / "images").is_dir() or (root / "val" / "images").is_dir():
        for folder in (root / split / sub for split in ("train", "val") for sub in ("images", "masks")):
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder (effnet's segmentation layout has "
                                "DATA/{train,val}/images and DATA/{train,val}/masks)")
        if not classes_file.is_file():
            raise DataError(f"{classes_file}: no such file: write the class names there, one a line in index "
                            "order (mask value 0 = the first line, usually background)")
        names = _read_class_names(classes_file)
        return tuple(_check_pairs(_effnet_pairs(root / split), names, os.fspath(root / split), log, max_pixels)
                     for split in ("train", "val"))
    if (root / "SegmentationClass").is_dir() and (root / "JPEGImages").is_dir():
        names = _read_class_names(classes_file) if classes_file.is_file() else VOC_CLASSES
        splits = []
        for split in ("train", "val"):
            pairs, refused = _voc_pairs(root, split)
            splits.append(_check_pairs(pairs, names, f"{root} ({split}.txt)", log, max_pixels, refused))
        return tuple(splits)
    raise DataError(f"{data_dir}: not a segmentation dataset (expected effnet's layout DATA/{{train,val}}/images + "
                    "masks/*.png + classes.txt, or Pascal VOC's DATA/JPEGImages + SegmentationClass + "
                    "ImageSets/Segmentation/{train,val}.txt)")


def letterbox_size(h: int, w: int, resolution: int) -> tuple[int, int]:
    """(new_h, new_w) of an h x w image resized so its longer side is ``resolution``, keeping the aspect ratio:
    the eval resize; the image is then padded bottom/right to resolution x resolution."""
    scale = resolution / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


class _ScaleJitter(v2.ScaleJitter):
    """torchvision's scale jitter with the mask resized by ``NEAREST_EXACT`` (pixel centres, as the image's
    bilinear resize) rather than ``NEAREST`` (which shifts a downscaled mask by up to half an output pixel)."""

    def make_params(self, flat_inputs):
        h, w = super().make_params(flat_inputs)["size"]
        return dict(size=(max(1, h), max(1, w)))  # a sliver of an image must not shrink to nothing

    def transform(self, inpt, params):
        exact = isinstance(inpt, tv_tensors.Mask)
        return TF.resize(inpt, params["size"], antialias=self.antialias,
                         interpolation=v2.InterpolationMode.NEAREST_EXACT if exact else self.interpolation)


def _train_transform(mean, std, resolution: int, hflip: float, scale_range) -> v2.Compose:
    """Flip, scale jitter (the factor relative to fitting the longer side to ``resolution``), then a random crop
    padded where the image is smaller. The mask is a ``tv_tensors.Mask``: resized nearest (:class:`_ScaleJitter`),
    flipped and cropped with the image. The resize runs on uint8 (torchvision's fast path) and the padding after
    normalising, so padded pixels are exactly 0 (the mean colour) and padded mask pixels exactly ``IGNORE_INDEX``."""
    ops: list = []
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    ops += [_ScaleJitter((resolution, resolution), scale_range=tuple(scale_range), antialias=True),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.RandomCrop(resolution, pad_if_needed=True,
                          fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX})]
    return v2.Compose(ops)


class SegmentationSamples(torch.utils.data.Dataset):
    """(image, mask) pairs of a split as tensors: a float32 (3, R, R) image normalised with ``mean`` / ``std`` and
    an int64 (R, R) mask of class indices, ``IGNORE_INDEX`` where padded.

    ``train=True``: augmented (:func:`_train_transform`), the randomness a function of (seed, epoch, index) as
    :class:`effnet.data.ImageSamples` (the sampler encodes the epoch into the index). Else letterboxed: resized
    so the longer side is R (:func:`letterbox_size`; bilinear with antialias, the mask ``NEAREST_EXACT``) and padded
    bottom/right (image 0, mask ``IGNORE_INDEX``)."""

    def __init__(self, split: SegmentationSplit, mean, std, resolution: int, train: bool, hflip: float = 0.5,
                 scale_range=(0.5, 2.0), seed: int = 0) -> None:
        self.samples, self.mean, self.std = split.samples, list(mean), list(std)
        self.resolution, self.train, self.seed = resolution, train, seed
        self.transform = _train_transform(mean, std, resolution, hflip, scale_range) if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(int(key), len(self.samples))
        image_path, mask_path = self.samples[index]
        image = tv_tensors.Image(TF.pil_to_tensor(load_image(image_path)))
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(mask_path)))
        if self.train:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only, as ImageSamples (torch.manual_seed would seed every accelerator too)
                torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
                x, y = self.transform(image, mask)
        else:
            x, y = self._letterbox(image, mask)
        return x.as_subclass(torch.Tensor).contiguous(), y.as_subclass(torch.Tensor).long().contiguous()

    def _letterbox(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, (nh, nw) = letterbox_image(image, self.mean, self.std, self.resolution)
        y = TF.resize(mask, [nh, nw], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return x, TF.pad(y, [0, 0, self.resolution - nw, self.resolution - nh], fill=IGNORE_INDEX)


def letterbox_image(image: torch.Tensor, mean, std, resolution: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A CHW image (uint8, or float in [0, 1]) resized so its longer side is ``resolution`` (bilinear, antialiased),
    normalised with ``mean`` / ``std`` and padded with 0 (the mean colour) at the bottom and right to a square; and
    the resized (height, width), the region the image covers. Evaluation and :class:`effnet.segment.Predictor`
    both letterbox with this, so a mask predicted from a file is the one its score was computed on."""
    nh, nw = letterbox_size(image.shape[-2], image.shape[-1], resolution)
    x = TF.resize(image, [nh, nw], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    x = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(mean), list(std))
    x = TF.pad(x, [0, 0, resolution - nw, resolution - nh], fill=0.0)
    return x.as_subclass(torch.Tensor).contiguous(), (nh, nw)
