"""The classifier families, in one place: EfficientNet (V1, :mod:`~effnet.models.nets.config`) and EfficientNetV2
(:mod:`~effnet.models.nets.efficientnet_v2`). Every name a classifier can be built by, and the one function that
turns a name into its config, live here; the zoo, the paper's tables and the detector's backbones ask these.

Names as users write them elsewhere are accepted too: the paper's shorthand (``b0``, ``lite0``, ``v2_s``),
timm's TensorFlow ports (``tf_efficientnetv2_s``: the same architecture with TF "SAME" padding) and torchvision's
``efficientnet_v2_s``. No torch here.
"""

from __future__ import annotations

from ...errors import UnknownModelError
from .config import VARIANTS, ModelConfig, efficientnet_config
from .efficientnet_v2 import V2_VARIANTS, v2_config

FAMILIES: dict[str, tuple[str, ...]] = {
    "EfficientNet": tuple(VARIANTS),
    "EfficientNetV2": tuple(V2_VARIANTS),
}
CLASSIFIERS: tuple[str, ...] = (*VARIANTS, *V2_VARIANTS)  # every classifier architecture, V1 first
TF_PREFIX = "tf_"  # timm's name for a TensorFlow-trained port: SAME padding, BN eps 1e-3


def family_of(name: str) -> str:
    """``"EfficientNet"`` or ``"EfficientNetV2"`` for an architecture name (any spelling :func:`classifier_name`
    reads)."""
    name = classifier_name(name)
    for family, names in FAMILIES.items():
        if name in names:
            return family
    raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(CLASSIFIERS)}")


def classifier_name(name: str) -> str:
    """The effnet architecture ``name`` stands for: ``"b0"`` -> ``"efficientnet_b0"``, ``"v2_s"`` and torchvision's
    ``"efficientnet_v2_s"`` -> ``"efficientnetv2_s"``, timm's ``"tf_efficientnetv2_s"`` -> ``"efficientnetv2_s"``;
    any other name comes back unchanged."""
    bare = name.removeprefix(TF_PREFIX)
    spellings = (bare, f"efficientnet_{bare}", f"efficientnet{bare}", bare.replace("efficientnet_v2", "efficientnetv2"))
    for candidate in spellings:
        if candidate in CLASSIFIERS:
            return candidate
    return name


def classifier_config(name: str) -> ModelConfig:
    """The config of a named classifier of either family; a ``tf_`` name gets TensorFlow's padding."""
    canonical = classifier_name(name)
    if canonical in V2_VARIANTS:
        config = v2_config(canonical)
    elif canonical in VARIANTS:
        config = efficientnet_config(canonical)
    else:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(CLASSIFIERS)}")
    return config.replace(tf_padding=True) if name.startswith(TF_PREFIX) else config
