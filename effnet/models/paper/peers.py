"""The paper's comparisons as data: Table 2 (B0-B7 beside the ConvNets of similar accuracy) and Table 4 (CPU
latency), with the peers torchvision can build counted here, on the meta device, beside the published numbers.

Every number below is copied from arXiv:1905.11946v5 (Tan & Le, 11 Sep 2020): Table 2 "EfficientNet
Performance Results on ImageNet" and Table 4 "Inference Latency Comparison" (batch 1, one core of an Intel Xeon
CPU E5-2690). The paper's "FLOPs" are multiply-adds (B = 10^9). This module imports no torch at load time.

EfficientNetV2's published numbers (:data:`V2_ROWS`) come from arXiv:2104.00298 (Tan & Le, ICML 2021) Table 7 and
the official code's README (google/automl ``efficientnetv2/README.md``), each row naming its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE = "arXiv:1905.11946v5"
TABLE2 = f"{SOURCE} Table 2"
TABLE4 = f"{SOURCE} Table 4"


@dataclass(frozen=True)
class Published:
    """One row of the paper's Table 2, and how to build the model here when torchvision has it."""

    name: str  # as the paper prints it, citation included
    top1: float  # ImageNet top-1 %, single crop
    top5: float
    params_m: float  # millions
    flops_b: float | None  # billions of multiply-adds (GPipe: "-" in the paper)
    group: str  # the EfficientNet the paper groups it with (similar accuracy)
    ratios: tuple[float, float | None] = (1, 1)  # "Ratio-to-EfficientNet" of params and FLOPs, as printed
    effnet: str | None = None  # our model name, for the EfficientNet rows
    torchvision: str | None = None  # torchvision.models builder of the same architecture
    kwargs: tuple[tuple[str, object], ...] = ()  # builder arguments (Inception-v3 without its training-only aux head)
    resolution: int = 224  # input size the measured MACs are counted at
    note: str = field(default="", compare=False)


def _b(i: int, top1: float, top5: float, params: float, flops: float) -> Published:
    return Published(f"EfficientNet-B{i}", top1, top5, params, flops, f"B{i}", effnet=f"efficientnet_b{i}")


# arXiv v5 Table 2, in the paper's order (each EfficientNet followed by the ConvNets grouped with it)
TABLE2_ROWS: tuple[Published, ...] = (
    _b(0, 77.1, 93.3, 5.3, 0.39),
    Published("ResNet-50 (He et al., 2016)", 76.0, 93.0, 26, 4.1, "B0", ratios=(4.9, 11), torchvision="resnet50"),
    Published("DenseNet-169 (Huang et al., 2017)", 76.2, 93.2, 14, 3.5, "B0", ratios=(2.6, 8.9),
              torchvision="densenet169"),
    _b(1, 79.1, 94.4, 7.8, 0.70),
    Published("ResNet-152 (He et al., 2016)", 77.8, 93.8, 60, 11, "B1", ratios=(7.6, 16), torchvision="resnet152"),
    Published("DenseNet-264 (Huang et al., 2017)", 77.9, 93.9, 34, 6.0, "B1", ratios=(4.3, 8.6)),
    Published("Inception-v3 (Szegedy et al., 2016)", 78.8, 94.4, 24, 5.7, "B1", ratios=(3.0, 8.1),
              torchvision="inception_v3", kwargs=(("aux_logits", False), ("init_weights", False)), resolution=299),
    Published("Xception (Chollet, 2017)", 79.0, 94.5, 23, 8.4, "B1", ratios=(3.0, 12)),
    _b(2, 80.1, 94.9, 9.2, 1.0),
    Published("Inception-v4 (Szegedy et al., 2017)", 80.0, 95.0, 48, 13, "B2", ratios=(5.2, 13)),
    Published("Inception-resnet-v2 (Szegedy et al., 2017)", 80.1, 95.1, 56, 13, "B2", ratios=(6.1, 13)),
    _b(3, 81.6, 95.7, 12, 1.8),
    # the 80.9/95.6 are ResNeXt-101 64x4d tested on 320x320 crops (Xie et al. 2017, Table 5): 32B MACs there
    Published("ResNeXt-101 (Xie et al., 2017)", 80.9, 95.6, 84, 32, "B3", ratios=(7.0, 18),
              torchvision="resnext101_64x4d", resolution=320, note="64x4d at 320 px"),
    Published("PolyNet (Zhang et al., 2017)", 81.3, 95.8, 92, 35, "B3", ratios=(7.7, 19)),
    _b(4, 82.9, 96.4, 19, 4.2),
    Published("SENet (Hu et al., 2018)", 82.7, 96.2, 146, 42, "B4", ratios=(7.7, 10)),
    Published("NASNet-A (Zoph et al., 2018)", 82.7, 96.2, 89, 24, "B4", ratios=(4.7, 5.7)),
    Published("AmoebaNet-A (Real et al., 2019)", 82.8, 96.1, 87, 23, "B4", ratios=(4.6, 5.5)),
    Published("PNASNet (Liu et al., 2018)", 82.9, 96.2, 86, 23, "B4", ratios=(4.5, 6.0)),
    _b(5, 83.6, 96.7, 30, 9.9),
    Published("AmoebaNet-C (Cubuk et al., 2019)", 83.5, 96.5, 155, 41, "B5", ratios=(5.2, 4.1)),
    _b(6, 84.0, 96.8, 43, 19),
    _b(7, 84.3, 97.0, 66, 37),
    Published("GPipe (Huang et al., 2018)", 84.3, 97.0, 557, None, "B7", ratios=(8.4, None)),
)


@dataclass(frozen=True)
class LatencyClaim:
    """A pair the paper (or its text) compares at batch 1 on a CPU, with the paper's seconds when it gives them."""

    effnet: str
    peer: str  # torchvision builder
    peer_label: str
    paper_effnet_s: float | None
    paper_peer_s: float | None
    why: str

    @property
    def paper_speedup(self) -> float | None:
        if self.paper_effnet_s and self.paper_peer_s:
            return self.paper_peer_s / self.paper_effnet_s
        return None


# Table 4: ResNet-152 0.554 s vs EfficientNet-B1 0.098 s (5.7x). B4 vs ResNet-50 has no latency in the paper:
# section 5.2 pairs them by FLOPs (4.2B vs 4.1B, +6.3% top-1); the ratio measured here is the only one.
LATENCY_PAIRS: tuple[LatencyClaim, ...] = (
    LatencyClaim("efficientnet_b1", "resnet152", "ResNet-152", 0.098, 0.554, f"{TABLE4}: 5.7x"),
    LatencyClaim("efficientnet_b4", "resnet50", "ResNet-50", None, None,
                 f"{TABLE2}: same FLOPs class (4.2B vs 4.1B); no latency published"),
)


def rows(names: list[str] | None = None) -> list[Published]:
    return [r for r in TABLE2_ROWS if names is None or r.name in names]


def effnet_rows() -> list[Published]:
    return [r for r in TABLE2_ROWS if r.effnet]


# --- EfficientNetV2 (Tan & Le, ICML 2021) ---------------------------------------------------------------------

V2_SOURCE = "arXiv:2104.00298"
V2_TABLE7 = f"{V2_SOURCE} Table 7"
V2_README = "google/automl efficientnetv2/README.md"


@dataclass(frozen=True)
class PublishedV2:
    """One published EfficientNetV2: ImageNet top-1 (trained on ImageNet-1k; ``top1_21k``: pretrained on
    ImageNet-21k, fine-tuned on 1k), params (M) and FLOPs (B multiply-adds) at its eval size, and where they
    are printed."""

    effnet: str
    top1: float | None
    top1_21k: float | None
    params_m: float
    flops_b: float
    source: str


# S/M/L/XL: the paper's Table 7 "EfficientNetV2 Performance Results on ImageNet" (XL only pretrained on 21k; 87.3%
# is also the abstract's number). B0-B3: the official README's table of "smaller V2 models using the same scaling
# and preprocessing as V1" (they are not in the paper). The README also lists S/M/L, rounded otherwise than the
# paper: 21.5M/8.4B/83.9%, 54.1M/24.7B/85.2%, 119.5M/56.3B/85.7% (21k: 84.9, 86.2, 86.9; XL 87.2). Counted here
# (equal to timm's): 21.46M/8.37B, 54.14M/24.58B, 118.52M/56.08B -- nearer the README's than Table 7's (V2-L's
# 53B is 5.8% under the count).
# timm's efficientnetv2_rw_t/s/m were trained by timm, not published by the authors: no row.
V2_ROWS: tuple[PublishedV2, ...] = (
    PublishedV2("efficientnetv2_b0", 78.7, None, 7.1, 0.72, V2_README),
    PublishedV2("efficientnetv2_b1", 79.8, None, 8.1, 1.2, V2_README),
    PublishedV2("efficientnetv2_b2", 80.5, None, 10.1, 1.7, V2_README),
    PublishedV2("efficientnetv2_b3", 82.1, None, 14.4, 3.0, V2_README),
    PublishedV2("efficientnetv2_s", 83.9, 84.9, 22, 8.8, V2_TABLE7),
    PublishedV2("efficientnetv2_m", 85.1, 86.2, 54, 24, V2_TABLE7),
    PublishedV2("efficientnetv2_l", 85.7, 86.8, 120, 53, V2_TABLE7),
    PublishedV2("efficientnetv2_xl", None, 87.3, 208, 94, V2_TABLE7),
)
