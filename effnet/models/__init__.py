"""The networks: the paper's tables as data (``config``), layers and MBConv blocks, EfficientNet and its
feature backbone, the name registry, parameter/MAC accounting and weight files/importers.

Names are imported on first use (PEP 562): ``effnet list`` reads the tables without loading torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    **{name: (".config", name) for name in (
        "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats", "scale")},
    "EfficientNet": (".efficientnet", "EfficientNet"),
    "EfficientNetFeatures": (".efficientnet", "EfficientNetFeatures"),
    "create_model": (".registry", "create_model"),
    "resolve_config": (".registry", "resolve_config"),
    "list_models": (".names", "list_models"),
    "load": (".registry", "load_any"),
    "profile": (".accounting", "profile"),
    "save": (".weights", "save"),
    "load_weights": (".weights", "load_weights"),
    "save_pretrained": (".hf", "save_pretrained"),
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
