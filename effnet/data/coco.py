"""Object-detection data in the COCO 2017 layout: ``DATA/annotations/instances_{train,val}.json`` with the
images in ``DATA/train/`` and ``DATA/val/``.

Every annotation is checked once when the split is read: zero or negative size, a box outside its image,
an unknown category or a missing image file skips that annotation with one warning and counts it; corrupt,
truncated or empty images are skipped as in classification (:func:`effnet.data.check_image`).
Boxes become (x0, y0, x1, y1) pixels; categories become contiguous labels 0..C-1 in category-id order.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .folders import check_image
from .images import Contiguous, load_image

BOX_TOLERANCE = 1.0  # pixels a box may poke out of its image (rounding in annotation tools)
MAX_SIDE = 1 << 16  # largest image side a record may declare (PNG and JPEG stop at 65,535 / 65,500)


@dataclass
class CocoImage:
    id: int
    path: str
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)  # xyxy
    labels: list[int] = field(default_factory=list)


@dataclass
class CocoSplit:
    images: list[CocoImage]
    categories: list[dict]  # [{"id", "name"}] in label order
    skipped_annotations: list[tuple[int, str]]
    skipped_images: list[tuple[str, str]]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c["name"] for c in self.categories)

    def coco_ground_truth(self) -> dict:
        """The kept images and annotations as a COCO dict (for pycocotools), boxes back to xywh."""
        images, anns = [], []
        for img in self.images:
            images.append(dict(id=img.id, width=img.width, height=img.height, file_name=os.path.basename(img.path)))
            for (x0, y0, x1, y1), label in zip(img.boxes, img.labels):
                anns.append(dict(id=len(anns) + 1, image_id=img.id, category_id=self.categories[label]["id"],
                                 bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0), iscrowd=0))
        return dict(images=images, annotations=anns, categories=[dict(c) for c in self.categories])


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _image_problem(img) -> str | None:
    """Why an ``images`` record cannot be used: not an object, no whole-number id, size not positive whole
    numbers, or a ``file_name`` that is not a plain relative path inside the image folder."""
    if not isinstance(img, dict):
        return f"image record is {type(img).__name__}, not an object"
    if not _whole(img.get("id")):
        return f"image id {img.get('id')!r} is not a whole number"
    for key in ("width", "height"):
        value = img.get(key)
        whole = _whole(value) or (isinstance(value, float) and value.is_integer())  # 640.0: some tools write it
        if not whole or not 0 < value <= MAX_SIDE:
            return f"{key} {img.get(key)!r} is not a whole number of pixels (1 to {MAX_SIDE})"
    name = img.get("file_name")
    if not isinstance(name, str) or not name or "\0" in name:
        return f"file_name {name!r} is not a file name"
    if os.path.isabs(name) or ".." in Path(name).parts:
        return f"file_name {name!r} leaves the image folder (absolute or '..')"
    return None


def _bbox(ann: dict) -> tuple[float, float, float, float] | None:
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        return None  # NaN and inf compare false with everything: they would pass every range check below
    return tuple(float(v) for v in box)


def _annotation_problem(ann, img: dict | None, image_ok: bool, known: set[int]) -> str | None:
    if img is None:
        return f"missing image file (no image with id {ann.get('image_id')!r})"
    if not image_ok:
        return "missing image file (or unreadable image)"
    if not _whole(ann.get("category_id")) or ann["category_id"] not in known:
        return f"unknown category {ann.get('category_id')!r}"
    box = _bbox(ann)
    if box is None:
        return "no valid bbox [x, y, width, height] of finite numbers"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return f"zero or negative size ({w:g} x {h:g})"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > img["width"] + t or y + h > img["height"] + t:
        return f"outside the image ({x:g}, {y:g}, {w:g}, {h:g} in {img['width']} x {img['height']})"
    return None


def _read_categories(data: dict) -> list[dict]:
    cats = data["categories"]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and _whole(c.get("id")) and "name" in c
                                             for c in cats):
        raise TypeError("categories must be a list of {id: whole number, name}")
    out = sorted(({"id": c["id"], "name": str(c["name"])} for c in cats), key=lambda c: c["id"])
    if not out or len({c["id"] for c in out}) != len(out):
        raise ValueError("categories must be a non-empty list with distinct ids")
    return out


def read_coco_split(annotation_file: str | os.PathLike, image_dir: str | os.PathLike, log=print,
                    categories: list[dict] | None = None) -> CocoSplit:
    """Read and validate one split. ``categories`` (from the train split) fixes the label order for val.

    Every record is checked here, once: a bad image record or annotation (wrong types, NaN, a path out of the
    image folder) is skipped with one warning; a file that is not COCO at all is a :class:`DataError`."""
    path = Path(annotation_file)
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file (expected the COCO layout DATA/annotations/"
                        "instances_{train,val}.json)")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"top level is {type(data).__name__}, not an object")
        raw_images, raw_anns = data["images"], data.get("annotations", [])
        if not isinstance(raw_images, list) or not isinstance(raw_anns, list):
            raise TypeError("images and annotations must be lists")
        cats = categories or _read_categories(data)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    images: dict[int, CocoImage] = {}
    meta: dict[int, dict] = {}
    skipped_images = []
    for img in raw_images:
        problem = _image_problem(img)
        file = os.path.join(image_dir, img["file_name"]) if problem is None else None
        if problem is None and img["id"] in meta:
            problem = f"image id {img['id']} appears twice"
        if problem is None:
            meta[img["id"]] = img
            problem = "missing image file" if not os.path.isfile(file) else check_image(file)
        if problem is None:
            images[img["id"]] = CocoImage(img["id"], file, int(img["width"]), int(img["height"]))
        else:
            skipped_images.append((file or f"{path.name}: image record", problem))
            log(f"warning: skipping {file or path.name + ': an image record'}: {problem}")
    skipped_anns = []
    for ann in raw_anns:
        if not isinstance(ann, dict):
            skipped_anns.append((None, f"annotation is {type(ann).__name__}, not an object"))
            log(f"warning: {path.name}: an annotation is {type(ann).__name__}, not an object; skipped")
            continue
        image_id = ann.get("image_id")
        img = meta.get(image_id) if _whole(image_id) else None
        problem = _annotation_problem(ann, img, img is not None and img["id"] in images, set(label_of))
        if problem is not None:
            skipped_anns.append((ann.get("id"), problem))
            log(f"warning: {path.name}: annotation {ann.get('id')!r} (image {image_id!r}): {problem}; skipped")
            continue
        x, y, w, h = _bbox(ann)
        target = images[img["id"]]
        x0, y0 = max(0.0, x), max(0.0, y)
        target.boxes.append([x0, y0, min(x + w, target.width), min(y + h, target.height)])
        target.labels.append(label_of[ann["category_id"]])
    if not images:
        raise DataError(f"{path}: no readable images in {image_dir}")
    return CocoSplit(sorted(images.values(), key=lambda i: i.id), cats, skipped_anns, skipped_images)


def load_coco(data_dir: str | os.PathLike, log=print) -> tuple[CocoSplit, CocoSplit]:
    """(train, val) splits of a dataset in the COCO 2017 layout."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{data_dir}: not a directory")
    train = read_coco_split(root / "annotations" / "instances_train.json", root / "train", log)
    val = read_coco_split(root / "annotations" / "instances_val.json", root / "val", log, train.categories)
    return train, val


def letterbox(image: torch.Tensor, size: int, fill: list[float]) -> tuple[torch.Tensor, float]:
    """Resize the longer side to ``size`` (keeping the aspect ratio) and pad bottom/right to size x size, as
    the official EfficientDet input pipeline. Returns the image and the resize scale."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = TF.resize(image, [nh, nw], antialias=True)
    # C-contiguous whatever the layout in: an image at its size needs no padding, and a view of a PIL image's pixels
    # (TF.to_image: channels-last strides) would come back as it is (effnet.data.images.Contiguous says why not)
    return TF.pad(image, [0, 0, size - nw, size - nh], fill=fill).contiguous(), scale


def detection_train_transform(mean, std, size: int, hflip: float = 0.5, scale_range=(0.5, 1.5)) -> v2.Compose:
    """Box-preserving augmentation (torchvision transforms v2 with ``tv_tensors.BoundingBoxes``): flip, scale
    jitter (the official "random scale" of the letterboxed image), random crop / pad to size x size."""
    fill = {tv_tensors.Image: [round(255 * m) for m in mean], "others": 0}
    ops: list = [v2.ToImage()]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    ops += [v2.ScaleJitter((size, size), scale_range=tuple(scale_range), antialias=True),
            v2.RandomCrop(size, pad_if_needed=True, fill=fill), v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=2), Contiguous(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std)]
    return v2.Compose(ops)


def detection_eval_image(image, mean, std, size: int) -> tuple[torch.Tensor, float]:
    """Eval preprocessing of a PIL image: letterbox to size x size, normalise. Returns (tensor, scale)."""
    x = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    x, scale = letterbox(x, size, [float(m) for m in mean])
    return TF.normalize(x, list(mean), list(std)), scale


class DetectionSamples(torch.utils.data.Dataset):
    """Images + targets of a split. ``train=True``: augmented, the randomness a function of (seed, epoch,
    index) as :class:`effnet.data.ImageSamples`; else letterboxed, with the scale and image id returned."""

    def __init__(self, split: CocoSplit, mean, std, size: int, train: bool, hflip: float = 0.5,
                 seed: int = 0, scale_range=(0.5, 1.5)) -> None:
        self.images, self.mean, self.std, self.size, self.train, self.seed = split.images, mean, std, size, train, seed
        self.transform = detection_train_transform(mean, std, size, hflip, scale_range) if train else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int):
        epoch, index = divmod(int(key), len(self.images))
        item = self.images[index]
        image = load_image(item.path)
        boxes = torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(item.labels, dtype=torch.long)
        if not self.train:
            x, scale = detection_eval_image(image, self.mean, self.std, self.size)
            return x, dict(boxes=boxes * scale, labels=labels, image_id=item.id, scale=scale)
        target = dict(boxes=tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
                      labels=labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            x, target = self.transform(image, target)
        return x, dict(boxes=target["boxes"].as_subclass(torch.Tensor), labels=target["labels"],
                       image_id=item.id, scale=1.0)


def collate_detection(batch):
    """Stack the images; keep the targets as a list (a different number of boxes per image)."""
    return torch.stack([x for x, _ in batch]), [t for _, t in batch]
