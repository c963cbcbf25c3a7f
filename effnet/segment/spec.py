"""Semantic segmentation as one object (:class:`effnet.taskspec.TaskSpec`): what training, ``effnet export``,
``effnet serve`` and ``effnet plot`` need from this task."""

from __future__ import annotations

from ..models.nets.segmenter_config import SegmenterConfig
from ..models.zoo.registry import SEGMENT
from ..taskspec import Route, RouteOption, TaskSpec
from .predictor import SEGMENT_BACKENDS
from .task import SegmentationTask


def _result() -> type:
    from .schema import SegmentationResult

    return SegmentationResult


def _served(*args, **kwargs):
    from .served import served_segmenter  # the service's dependencies load only when serving

    return served_segmenter(*args, **kwargs)


def _export(model, options):
    from .export import export_segmenter  # onnx / openvino load only when exporting

    return export_segmenter(model, options)


PNG = RouteOption("png", int, 0, 0, 1, "1: each mask as one base64 PNG (palette, pixel value = class index) "
                                        "instead of each class's COCO RLE")

TASK = TaskSpec(
    name=SEGMENT, noun="a segmenter", plural="segmenters", config_type=SegmenterConfig,
    trainer=SegmentationTask,
    route=Route("/segment", "a class index for every pixel of each uploaded image (multipart field `file`, repeated "
                            "for several), in the image's own pixels: the classes present with their pixel counts, "
                            "each class's pixels in COCO's uncompressed RLE ({\"size\": [h, w], \"counts\": [...]}, "
                            "column-major: pycocotools.mask.frPyObjects reads it), or with png=1 the whole mask as "
                            "one base64 palette PNG (pixel value = class index)", _result, (PNG,)),
    make_served=_served, export=_export, backends=SEGMENT_BACKENDS,
    train_defaults={"model": "unet_efficientnet_b0", "recipe": "segment", "batch_size": 8, "channels_last": True})
