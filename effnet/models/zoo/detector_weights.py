"""The published COCO EfficientDet weights, kept as data: where each file is, how to check it, how to run it.

Every detector effdet (rwightman/efficientdet-pytorch 0.4.1) publishes, as a row: the file (its release URL;
the 8 hex digits in the name are the start of its sha256), what the weights need to reproduce their published
COCO val2017 AP -- padding (TF "SAME" for the ``tf_`` ports of the official google/automl checkpoints), BatchNorm
eps of backbone and BiFPN/heads, the conv bias in front of BatchNorm (official layout), input size, mean/std --
the effdet state-dict naming for the importer, and the AP itself.

Sources (nothing here is measured by this package): ``effdet/config/model_config.py`` (URLs, image sizes,
mean/std, padding, redundant bias; BatchNorm eps 1e-3 in BiFPN and heads, the backbone's timm default: 1e-3 for
``tf_`` backbones, 1e-5 for timm's PyTorch-trained ones) and effdet's README model table (mAP val2017, params).
The label map is COCO 2017's: 90 category ids (1-90), 80 of them used; output index ``i`` is category ``i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..nets.config import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD
from ..nets.detector_config import DetectorConfig, detector_config
from .published import PublishedFile, hash_prefix

# COCO 2017 categories by id - 1 (torchvision's COCO_V1 meta without "__background__"): "N/A" marks the 10 ids
# the 2017 release does not use (the detectors keep 90 outputs, as the official models do).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
UNUSED_CLASS = "N/A"


@dataclass(frozen=True)
class DetectorWeights(PublishedFile):
    """One published set of COCO weights for one effnet detector architecture."""

    model: str  # effnet detector name (a key of DETECTOR_VARIANTS)
    tag: str
    effdet_name: str  # effdet's model name (its config and state-dict naming)
    url: str
    sha256: str  # the published prefix (the hex in the file name), or a full digest
    ap: float  # published COCO val2017 AP (x100), effdet's own evaluation
    params_m: float  # published parameter count, millions
    tf_padding: bool
    redundant_bias: bool
    backbone_bn_eps: float
    resolution: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bn_eps: float = 1e-3  # BiFPN and heads (effdet's norm_kwargs)
    origin: str = "effdet (TF port)"
    source: str = "effdet"  # state-dict naming for the importer
    package: str = ""  # never shipped in a package: always downloaded
    file: str = ""
    class_names: tuple[str, ...] = COCO_CLASSES

    @property
    def score(self) -> float:
        return self.ap

    @property
    def published(self) -> str:
        """The published score, as ``effnet weights`` shows it."""
        return f"AP {self.ap:.1f}"

    @property
    def preprocessing(self) -> str:
        return f"{self.resolution}px letterbox, mean {self.mean}"

    def config(self) -> DetectorConfig:
        """The architecture with the padding, eps, label map and preprocessing these weights were trained with."""
        base = detector_config(self.model, len(self.class_names), self.tf_padding)
        backbone = base.backbone.replace(bn_eps=self.backbone_bn_eps, mean=self.mean, std=self.std,
                                         resolution=self.resolution)
        return base.replace(backbone=backbone, resolution=self.resolution, bn_eps=self.bn_eps,
                            redundant_bias=self.redundant_bias, class_names=self.class_names)

    def build(self):
        from ..nets.efficientdet import EfficientDet  # the table stays free of torch: `effnet list` reads it

        return EfficientDet(self.config())


_RELEASE = "https://github.com/rwightman/efficientdet-pytorch/releases/download/v0.1/"
_TF = dict(tf_padding=True, redundant_bias=True, backbone_bn_eps=1e-3)
_AP = dict(_TF, mean=TF_MEAN, std=TF_STD)
_LITE = dict(_TF, mean=TF_MEAN, std=TF_STD)
# PyTorch-trained by effdet's author: symmetric padding, no redundant bias, timm's backbone eps 1e-5
_RW = dict(tf_padding=False, redundant_bias=False, backbone_bn_eps=1e-5, origin="effdet (PyTorch)")

# (effnet model, tag, effdet name, file, AP val2017, params M, resolution, settings)
_EFFDET = [
    ("efficientdet_d0", "rw_coco", "efficientdet_d0", "efficientdet_d0-f3276ba8.pth", 33.6, 3.88, 512, _RW),
    ("efficientdet_d1", "rw_coco", "efficientdet_d1", "efficientdet_d1-bb7e98fe.pth", 39.4, 6.62, 640, _RW),
    ("efficientdet_d0", "tf_coco", "tf_efficientdet_d0", "tf_efficientdet_d0_34-f153e0cf.pth", 34.2, 3.88, 512, _TF),
    ("efficientdet_d1", "tf_coco", "tf_efficientdet_d1", "tf_efficientdet_d1_40-a30f94af.pth", 40.1, 6.63, 640, _TF),
    ("efficientdet_d2", "tf_coco", "tf_efficientdet_d2", "tf_efficientdet_d2_43-8107aa99.pth", 43.4, 8.10, 768, _TF),
    ("efficientdet_d3", "tf_coco", "tf_efficientdet_d3", "tf_efficientdet_d3_47-0b525f35.pth", 47.1, 12.0, 896, _TF),
    ("efficientdet_d4", "tf_coco", "tf_efficientdet_d4", "tf_efficientdet_d4_49-f56376d9.pth", 49.2, 20.7, 1024, _TF),
    ("efficientdet_d5", "tf_coco", "tf_efficientdet_d5", "tf_efficientdet_d5_51-c79f9be6.pth", 51.2, 33.7, 1280, _TF),
    ("efficientdet_d6", "tf_coco", "tf_efficientdet_d6", "tf_efficientdet_d6_52-4eda3773.pth", 52.0, 51.9, 1280, _TF),
    ("efficientdet_d7", "tf_coco", "tf_efficientdet_d7", "tf_efficientdet_d7_53-6d1d7a95.pth", 53.1, 51.9, 1536, _TF),
    ("efficientdet_d7x", "tf_coco", "tf_efficientdet_d7x", "tf_efficientdet_d7x-f390b87c.pth", 54.3, 77.1, 1536, _TF),
    # AdvProp + AutoAugment (official Det-AdvProp.md): inputs in [-1, 1]
    ("efficientdet_d0", "tf_ap_coco", "tf_efficientdet_d0_ap", "tf_efficientdet_d0_ap-d0cdbd0a.pth", 34.8, 3.88, 512, _AP),
    ("efficientdet_d1", "tf_ap_coco", "tf_efficientdet_d1_ap", "tf_efficientdet_d1_ap-7721d075.pth", 40.8, 6.63, 640, _AP),
    ("efficientdet_d2", "tf_ap_coco", "tf_efficientdet_d2_ap", "tf_efficientdet_d2_ap-a2995c19.pth", 44.2, 8.10, 768, _AP),
    ("efficientdet_d3", "tf_ap_coco", "tf_efficientdet_d3_ap", "tf_efficientdet_d3_ap-e4a2feab.pth", 47.7, 12.0, 896, _AP),
    ("efficientdet_d4", "tf_ap_coco", "tf_efficientdet_d4_ap", "tf_efficientdet_d4_ap-f601a5fc.pth", 50.2, 20.7, 1024, _AP),
    ("efficientdet_d5", "tf_ap_coco", "tf_efficientdet_d5_ap", "tf_efficientdet_d5_ap-3673ae5d.pth", 52.1, 33.7, 1280, _AP),
    ("efficientdet_lite0", "tf_coco", "tf_efficientdet_lite0", "tf_efficientdet_lite0-dfacfc78.pth", 27.1, 3.24, 320, _LITE),
    ("efficientdet_lite1", "tf_coco", "tf_efficientdet_lite1", "tf_efficientdet_lite1-6dc7ab30.pth", 32.2, 4.25, 384, _LITE),
    ("efficientdet_lite2", "tf_coco", "tf_efficientdet_lite2", "tf_efficientdet_lite2-86c5d55b.pth", 35.9, 5.25, 448, _LITE),
    ("efficientdet_lite3", "tf_coco", "tf_efficientdet_lite3", "tf_efficientdet_lite3-506852cb.pth", 39.6, 8.35, 512, _LITE),
    ("efficientdet_lite3x", "tf_coco", "tf_efficientdet_lite3x", "tf_efficientdet_lite3x-8404c57b.pth", 43.6, 9.28, 640,
     _LITE),
    ("efficientdet_lite4", "tf_coco", "tf_efficientdet_lite4", "tf_efficientdet_lite4-391ddabc.pth", 44.2, 15.1, 640, _LITE),
]


def detector_entries() -> list[DetectorWeights]:
    return [DetectorWeights(model, tag, effdet_name, _RELEASE + file, hash_prefix(file), ap, params, resolution=res,
                            **settings)
            for model, tag, effdet_name, file, ap, params, res, settings in _EFFDET]


# pretrained=True takes the official TF port (the paper's checkpoints, as effdet's tf_* names)
DEFAULT_DETECTOR_TAG = "tf_coco"
