"""effnet: the EfficientNet family (Tan & Le, ICML 2019) with compound scaling as a method.

The names below are imported on first use (PEP 562), so ``import effnet`` -- and with it ``effnet --help``,
``--version`` and ``list`` -- does not load torch until a model is actually built.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (tool.setuptools.dynamic)

# public name -> (module, attribute)
_EXPORTS = {
    **{name: ("effnet.models.config", name) for name in (
        "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats", "scale")},
    "EfficientNet": ("effnet.models.efficientnet", "EfficientNet"),
    "EfficientNetFeatures": ("effnet.models.efficientnet", "EfficientNetFeatures"),
    "create_model": ("effnet.models.registry", "create_model"),
    "list_models": ("effnet.models.names", "list_models"),
    "load": ("effnet.models.registry", "load_any"),
    "profile": ("effnet.models.accounting", "profile"),
    "save": ("effnet.models.weights", "save"),
    "load_weights": ("effnet.models.weights", "load_weights"),
    "save_pretrained": ("effnet.models.hf", "save_pretrained"),
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
