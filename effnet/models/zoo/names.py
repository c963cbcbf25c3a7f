"""Model names as users write them: timm's ``architecture.tag`` (``efficientnet_b0.ra_in1k``) and
``list_models`` with glob patterns (``"efficientnet_b*"``), read from the tables without building anything.

``local-dir:DIR`` and ``hf-hub:ORG/NAME`` name Hugging Face Hub folders (:mod:`effnet.models.zoo.hf_hub`).
"""

from __future__ import annotations

import fnmatch
import os

from ..nets.families import CLASSIFIERS, TF_PREFIX, classifier_name
from ..nets.detector_config import DETECTOR_VARIANTS
from .classifier_weights import list_weights

HF_HUB_PREFIXES = ("local-dir:", "hf-hub:")  # timm's spelling of a Hugging Face Hub folder, local or remote


def architectures() -> list[str]:
    """Every buildable name: the classifiers, then the EfficientDet detectors."""
    return [*CLASSIFIERS, *DETECTOR_VARIANTS]


def _matches(name: str, pattern: str) -> bool:
    # timm's filters are globs; a plain word keeps effnet's substring match (`effnet list b0`). timm's tf_ and
    # torchvision's efficientnet_v2 spellings of a pattern find effnet's names (classifier_name's rules)
    for spelling in {pattern, pattern.removeprefix(TF_PREFIX), pattern.replace("efficientnet_v2", "efficientnetv2")}:
        if fnmatch.fnmatchcase(name, spelling) if any(c in spelling for c in "*?[") else spelling in name:
            return True
    return False


def list_models(filter: str = "", pretrained: bool = False, include_tags: bool | None = None) -> list[str]:
    """Names :func:`effnet.create_model` accepts, classifiers first, as timm's ``list_models``: ``filter`` is a
    glob (``"efficientnet_b*"``) or a substring; ``pretrained`` keeps the architectures with published
    weights; ``include_tags`` (default: ``pretrained``) lists each weight set as ``architecture.tag``."""
    include_tags = pretrained if include_tags is None else include_tags
    if not (pretrained or include_tags):
        return [n for n in architectures() if _matches(n, filter)]
    published = list_weights()
    if include_tags:
        names = [e.name for e in published]
    else:
        names = list(dict.fromkeys(e.model for e in published))
    if not pretrained:  # tags of the published sets plus the architectures without any
        have = {e.model for e in published}
        names += [n for n in architectures() if n not in have]
    return [n for n in names if _matches(n, filter) or _matches(n.partition(".")[0], filter)]


def split_tag(spec: str | os.PathLike) -> tuple[str, str | None]:
    """The one parser of ``NAME.TAG``: ``"efficientnet_b0.ra_in1k"`` -> (``"efficientnet_b0"``, ``"ra_in1k"``),
    the shorthand ``"b0"`` -> (``"efficientnet_b0"``, None), torchvision's ``"efficientnet_v2_s"`` ->
    (``"efficientnetv2_s"``, None), timm's TF ports by effnet's tag for them (``"tf_efficientnetv2_s.in1k"`` ->
    (``"efficientnetv2_s"``, ``"tf_in1k"``); without a tag the name stays: ``tf_`` builds TF "SAME" padding);
    anything else (a file such as ``cfg.json``, a Hub folder, an unknown name) comes back unchanged with no tag."""
    text = str(spec)
    if text.startswith(HF_HUB_PREFIXES) or os.path.exists(text):
        return text, None
    model, _, tag = text.partition(".")
    canonical = classifier_name(model)
    if canonical not in CLASSIFIERS and model not in architectures():
        return text, None
    if model.startswith(TF_PREFIX):
        return (canonical, TF_PREFIX + tag) if tag else (model, None)
    return (canonical if canonical in CLASSIFIERS else model), tag or None
