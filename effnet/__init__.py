"""effnet: the EfficientNet family (Tan & Le, ICML 2019) with compound scaling as a method."""

from .models import (
    B0_STAGES,
    VARIANTS,
    BlockArgs,
    EfficientNet,
    EfficientNetFeatures,
    ModelConfig,
    compound,
    create_model,
    list_models,
    load,
    load_weights,
    profile,
    round_filters,
    round_repeats,
    save,
    scale,
)

__version__ = "0.1.0"

__all__ = [
    "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats",
    "scale", "EfficientNet", "EfficientNetFeatures", "create_model", "list_models",
    "profile", "save", "load", "load_weights",
]
