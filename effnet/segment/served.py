"""A segmenter behind ``effnet serve`` (``POST /segment``, and ``/v2/models/{name}/infer`` of the Open Inference
Protocol): the :class:`~effnet.deploy.engines.ServedModel` of the segment task, on any backend its task lists,
giving exactly the masks :class:`effnet.segment.Predictor` gives: the same letterbox (:func:`preprocess`), the same
engines (``with_backend``), the same way back to the image's pixels (:func:`masks_from_logits`).

``POST /segment`` answers each image in :class:`effnet.segment.schema.SegmentationResult`: its size, the classes
present (name, index, pixel count) and where they are -- each class's pixels in COCO's uncompressed run-length
encoding (``{"size": [h, w], "counts": [...]}``, column-major, what ``pycocotools.mask.frPyObjects`` reads), or,
with ``png=1``, the whole mask as one base64 palette PNG (pixel value = class index, VOC's colours). The masks are
encoded on the inference thread, not on the event loop.

The protocol answers tensors: ``mask`` (UINT8, [N, H, W]) in each image's own pixels for ``image_bytes``, at the
model's input resolution for ``pixel_values`` (the letterboxed square as it was sent); images of different sizes
in one request are padded bottom and right to the largest height and width with :data:`PADDING` (never a class:
a served segmenter has at most 255 classes) and ``sizes`` (INT32, [N, 2]) gives each one's height and width.
``classes`` (INT64, padded with -1), ``labels`` (BYTES, padded with "") and ``pixels`` (INT64, padded with 0)
list the classes present in each image, by index.

The work an image can cause is bounded before it is decoded (:meth:`Segmenter.refuse_size`): the mask is computed
in the image's own pixels from logits resized to that size, ``4 x classes + 9`` bytes a pixel, so an image whose
mask would take more than :data:`MAX_MASK_BYTES` is refused, as is one so elongated that its short side would
fall under one pixel of the model's input. A protocol request whose masks, padded to one tensor, would hold more
than twice their own pixels (and over :data:`PADDED_FLOOR`) is refused (422) rather than answered in a tensor
mostly made of padding: such images go in separate requests.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.masks import mask_image
from ..deploy.engines import Engines, build_engines
from ..errors import UsageError
from ..results import label_names
from ..taskspec import TaskSpec
from .export import LOGITS
from .predictor import masks_from_logits, preprocess

# An image's mask is computed at its own size: the logits resized to it (4 bytes a class), their argmax (8 bytes)
# and the uint8 mask. 1.5 GiB lets a 16 Mpx photo through for VOC's 21 classes, 2.6 Mpx for ADE20K's 150.
MAX_MASK_BYTES = 3 << 29
BYTES_PER_CLASS_PIXEL, BYTES_PER_PIXEL = 4, 9
MAX_CLASSES = 255  # the protocol's UINT8 mask, the palette PNG, and a padding value that is no class
PADDING = 255  # the protocol's mask beyond an image's own height and width
PADDED_FLOOR = 16_000_000  # a request's padded mask tensor may always hold this many pixels


@dataclass
class SegmentInput:
    """A letterboxed image, the size its mask is answered in, the region of ``x`` it covers, how to encode it."""

    x: torch.Tensor
    size: tuple[int, int]  # (height, width) of the answered mask
    region: tuple[int, int]  # (height, width) of the image inside the letterboxed square
    encoding: str | None  # "rle" or "png" for POST /segment; None for the protocol's tensors


@dataclass
class Segmentation:
    """One image's mask, the classes in it and their pixel counts (by index), and the mask encoded as asked."""

    mask: np.ndarray  # (height, width) uint8 class indices
    classes: list[int]
    pixels: list[int]
    rles: list[dict] | None = None  # COCO RLE per class of ``classes``
    png: str | None = None  # base64 palette PNG


def coco_rles(mask: np.ndarray, classes: list[int]) -> list[dict]:
    """COCO's uncompressed RLE of each class's pixels in ``mask``: run lengths in column-major order, the first
    run outside the class (0 when the first pixel is inside). The mask's runs are found once; each class merges
    the neighbouring runs that fall on the same side of it."""
    h, w = mask.shape
    flat = mask.T.ravel()  # column-major
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    values, lengths = flat[starts], np.diff(np.r_[starts, flat.size])
    out = []
    for c in classes:
        inside = values == c
        edges = np.flatnonzero(np.r_[True, inside[1:] != inside[:-1]])
        counts = np.add.reduceat(lengths, edges)
        out.append({"size": [h, w], "counts": ([0] if inside[0] else []) + counts.tolist()})
    return out


def png_base64(mask: np.ndarray) -> str:
    """The mask as a palette PNG (pixel value = class index, VOC's colours), base64."""
    buf = io.BytesIO()
    mask_image(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def segmentation(mask: np.ndarray, encoding: str | None) -> Segmentation:
    counts = np.bincount(mask.ravel(), minlength=1)
    classes = np.flatnonzero(counts).tolist()
    found = Segmentation(mask, classes, counts[classes].tolist())
    if encoding == "rle":
        found.rles = coco_rles(mask, classes)
    elif encoding == "png":
        found.png = png_base64(mask)
    return found


@dataclass
class Segmenter:
    """A U-Net / FPN segmenter: the Predictor's letterbox, then one engine per inference thread (``engines``) on
    the batch, then each image's logits back to its own pixels."""

    task: TaskSpec  # segmentation's task object (its route, its options)
    engines: Engines
    name: str
    backend: str

    def __post_init__(self) -> None:
        self.config = self.engines.first.config
        self.resolution = self.config.resolution
        self.labels = label_names(self.config.class_names, self.config.num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One letterboxed image (the protocol's FP32 input)."""
        return 3, self.resolution, self.resolution

    def refuse_size(self, width: int, height: int) -> str | None:
        """Why an image of this size is not worth segmenting with this model, or None (checked before decoding)."""
        short, long = sorted((width, height))
        if long > self.resolution * short:
            return (f"image {width}x{height}: aspect ratio above {self.resolution}:1, its short side would be under "
                    f"one pixel of {self.name}'s {self.resolution} px input (refused before decoding)")
        per_pixel = BYTES_PER_CLASS_PIXEL * self.config.num_classes + BYTES_PER_PIXEL
        if width * height * per_pixel > MAX_MASK_BYTES:
            return (f"image {width}x{height} = {width * height / 1e6:.1f} Mpx: its mask is computed in the image's "
                    f"pixels from {self.config.num_classes} classes' logits, {per_pixel} bytes a pixel; "
                    f"{self.name} takes at most {MAX_MASK_BYTES / per_pixel / 1e6:.1f} Mpx (refused before "
                    "decoding: send a smaller image)")
        return None

    def preprocess(self, image: Image.Image, *, png: int = 0, **options: Any) -> SegmentInput:
        x, sizes, regions = preprocess(self.config, [image])
        return SegmentInput(x[0], sizes[0], regions[0], "png" if png else "rle")

    def tensor_input(self, x: torch.Tensor, **options: Any) -> SegmentInput:
        """An already letterboxed, normalised image: its mask is the whole square, at the model's resolution."""
        side = (self.resolution, self.resolution)
        return SegmentInput(x, side, side, None)

    @torch.inference_mode()
    def run_batch(self, inputs: list[SegmentInput]) -> list[Segmentation]:
        """Each input's mask in its own pixels, the classes it holds and its encoding, computed as one batch."""
        logits = self.engines.get()(torch.stack([i.x for i in inputs]))
        masks = masks_from_logits(logits, [i.size for i in inputs], [i.region for i in inputs])
        return [segmentation(mask, i.encoding) for mask, i in zip(masks, inputs)]

    def answer(self, found: Segmentation, path: str | None = None, **options: Any) -> dict:
        """effnet's segmentation result (:class:`effnet.segment.schema.SegmentationResult`)."""
        h, w = found.mask.shape
        out: dict = {} if path is None else {"path": path}
        out.update(width=w, height=h, classes=[{"label": self.labels[c], "index": c, "pixels": n}
                                               for c, n in zip(found.classes, found.pixels)])
        if found.rles is not None:
            for item, rle in zip(out["classes"], found.rles):
                item["rle"] = rle
        if found.png is not None:
            out["png"] = found.png
        return out

    # ---- the Open Inference Protocol (effnet.serve.protocol): its outputs
    def output_metadata(self) -> list[tuple[str, str, list[int]]]:
        return [("mask", "UINT8", [-1, -1, -1]), ("sizes", "INT32", [-1, 2]), ("classes", "INT64", [-1, -1]),
                ("labels", "BYTES", [-1, -1]), ("pixels", "INT64", [-1, -1])]

    def output_tensors(self, outputs: list[Segmentation], **options: Any) -> dict[str, np.ndarray]:
        """The masks padded to one tensor (see the module docstring), each one's size, and the classes present in
        each, padded to the most any image has. A :class:`UsageError` when padding would dwarf the masks."""
        sizes = np.array([o.mask.shape for o in outputs], np.int32).reshape(-1, 2)
        n, (height, width) = len(outputs), (int(v) for v in sizes.max(0))
        own = int(sizes.prod(1, dtype=np.int64).sum())
        if n * int(height) * int(width) > max(2 * own, PADDED_FLOOR):
            raise UsageError(f"the masks of these {n} images, padded to their largest height and width "
                             f"({height}x{width}), would hold {n * height * width / 1e6:.0f} M values for "
                             f"{own / 1e6:.0f} M pixels: send images of very different sizes in separate requests")
        mask = np.full((n, height, width), PADDING, np.uint8)
        most = max((len(o.classes) for o in outputs), default=0)
        classes, pixels = np.full((n, most), -1, np.int64), np.zeros((n, most), np.int64)
        labels = np.full((n, most), b"", dtype=object)
        for row, found in enumerate(outputs):
            h, w = found.mask.shape
            mask[row, :h, :w] = found.mask
            k = len(found.classes)
            classes[row, :k], pixels[row, :k] = found.classes, found.pixels
            labels[row, :k] = [self.labels[c].encode() for c in found.classes]
        return {"mask": mask, "sizes": sizes, "classes": classes, "labels": labels, "pixels": pixels}


def served_segmenter(task: TaskSpec, model: nn.Module, backend: str = "auto", calibration: str | None = None,
                     copies: int = 1, threads: int | None = None) -> Segmenter:
    """``model`` behind ``backend`` (any its task lists; ``auto``: the fastest fp32 one installed, as for a
    classifier) with ``copies`` engines of ``threads`` threads, one per inference thread: the PyTorch module is
    shared, an exported graph gets a runtime session each."""
    if model.config.num_classes > MAX_CLASSES:
        raise UsageError(f"{model.config.name} has {model.config.num_classes} classes; a served segmenter answers "
                         f"masks of one byte a pixel, at most {MAX_CLASSES} classes")
    engines = build_engines(model.eval(), backend, calibration, copies, threads, outputs=LOGITS)
    if backend == "auto":  # say which runtime "auto" picked
        backend = f"auto ({type(engines[0]).__name__})"
    return Segmenter(task, Engines(engines), name=model.config.name, backend=backend)
