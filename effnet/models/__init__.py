"""EfficientNet and EfficientDet in three floors: ``nets`` (the networks and the paper's tables as data), ``zoo``
(names, the one resolver, published weights, model files, importers, the download cache, Hugging Face Hub
folders) and ``paper`` (the paper's tables of peers, parameter/MAC accounting, the Table 4 latency protocol).

Names are imported on first use (PEP 562): ``effnet list`` reads the tables without loading torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

# public name -> (module, attribute); effnet/__init__.py exports the same names
EXPORTS: dict[str, tuple[str, str]] = {
    **{name: ("effnet.models.nets.config", name) for name in (
        "B0_STAGES", "VARIANTS", "BlockArgs", "ModelConfig", "compound", "round_filters", "round_repeats", "scale")},
    "EfficientNet": ("effnet.models.nets.efficientnet", "EfficientNet"),
    "EfficientNetFeatures": ("effnet.models.nets.efficientnet", "EfficientNetFeatures"),
    "create_model": ("effnet.models.zoo.registry", "create_model"),
    "resolve_config": ("effnet.models.zoo.registry", "resolve_config"),
    "list_models": ("effnet.models.zoo.names", "list_models"),
    "load": ("effnet.models.zoo.registry", "load_any"),
    "load_model": ("effnet.models.zoo.registry", "load_model"),
    "profile": ("effnet.models.paper.accounting", "profile"),
    "save": ("effnet.models.zoo.model_files", "save"),
    "load_weights": ("effnet.models.zoo.importers", "load_weights"),
    "save_pretrained": ("effnet.models.zoo.hf_hub", "save_pretrained"),
}

__all__ = list(EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), EXPORTS)
