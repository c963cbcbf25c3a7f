"""The networks: the paper's tables as data (``config``), layers and MBConv blocks, EfficientNet and its
feature backbone, the name registry, parameter/MAC accounting and weight files/importers."""

from .accounting import profile
from .config import B0_STAGES, VARIANTS, BlockArgs, ModelConfig, compound, round_filters, round_repeats, scale
from .efficientnet import EfficientNet, EfficientNetFeatures
from .registry import create_model, list_models, resolve_config
from .registry import load_any as load
from .weights import load_weights, save

__all__ = [
    "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats", "scale",
    "EfficientNet", "EfficientNetFeatures", "create_model", "list_models", "resolve_config", "profile",
    "save", "load", "load_weights",
]
