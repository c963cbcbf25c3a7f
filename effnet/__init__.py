"""effnet: the EfficientNet family (Tan & Le, ICML 2019) with compound scaling as a method."""

from .config import (
    B0_STAGES,
    VARIANTS,
    BlockArgs,
    ModelConfig,
    compound,
    round_filters,
    round_repeats,
    scale,
)
from .accounting import profile
from .model import EfficientNet, EfficientNetFeatures
from .registry import create_model, list_models
from .weights import load, load_weights, save

__version__ = "0.1.0"

__all__ = [
    "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats",
    "scale", "EfficientNet", "EfficientNetFeatures", "create_model", "list_models",
    "profile", "save", "load", "load_weights",
]
