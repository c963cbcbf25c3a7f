"""ImageNet-1k class names, taken from the installed torchvision (no download)."""

from __future__ import annotations

from functools import lru_cache

from ...results import label_names


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import EfficientNet_B0_Weights  # any ImageNet-1k weights' meta: torchvision's public list

    return tuple(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def class_names_for(config) -> tuple[str, ...]:
    """The model's own class names, ImageNet's for a 1000-class model, else ``class_<i>``
    (:func:`effnet.results.label_names`, the fallback every task answers with)."""
    if not config.class_names and config.num_classes == 1000:
        return imagenet_classes()
    return label_names(config.class_names, config.num_classes)
