"""Saved models on disk: effnet ``.safetensors`` files (the config in the header), training runs, and exported files
(``.onnx``, ``.xml``, ``.pte`` with their config beside them, :mod:`effnet.deploy.exported`) -- telling them apart
by their names and first bytes, the config type of each saved ``kind`` and the network each config type builds.
The resolver (:mod:`effnet.models.zoo.registry`) reads the configs and decides what a user means.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ...errors import CheckpointError
from ..nets.config import ModelConfig
from ..nets.detector_config import DetectorConfig
from ..nets.efficientdet import EfficientDet
from ..nets.efficientnet import EfficientNet
from ..nets.segmenter import Segmenter
from ..nets.segmenter_config import SegmenterConfig

# the network each config type builds, and the config type of each saved ``kind`` (a classifier's has none)
NETWORKS: dict[type, type] = {ModelConfig: EfficientNet, DetectorConfig: EfficientDet, SegmenterConfig: Segmenter}
KINDS: dict[str, type] = {"efficientdet": DetectorConfig, "segmenter": SegmenterConfig}


def config_from_dict(data: dict, source: str | os.PathLike = "config") -> ModelConfig | DetectorConfig:
    """The config a saved dict describes (a ``.safetensors`` header, an export's ``.json``): its ``kind`` says which
    type; one line naming ``source`` when it is not a config."""
    try:
        return KINDS.get(data.get("kind"), ModelConfig).from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{source}: stored config is invalid ({exc})") from None


def is_saved(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a saved model rather than a name or a config ``.json``: a run directory, a
    ``.safetensors``, an exported file (``.onnx``, ``.xml``, ``.pte``), or any other existing file."""
    path = Path(path)
    return (path.is_dir() or path.suffix.lower() == ".safetensors" or is_export(path)
            or (path.is_file() and path.suffix != ".json"))


def is_export(path: Path) -> bool:
    """Whether ``path``'s extension is one of an exported model effnet runs (``.onnx``, ``.xml``, ``.pte``)."""
    from ...deploy.exported import LOADABLE  # importing deploy loads the runtimes' wrappers: only when asked

    return path.suffix.lower() in LOADABLE


def looks_like_safetensors(path: str | os.PathLike) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and the header's ``{``: then its
    own reader's message says what is wrong with it (a header claiming more bytes than the file has...)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(9)[8:] == b"{"
    except OSError:
        return False


def load_export(path: str | os.PathLike) -> nn.Module:
    """An exported file as a model (:class:`effnet.deploy.predictors.ExportedFile`), its config read as a saved
    model's is."""
    from ...deploy.predictors import load_exported  # the runtimes load only for an exported file

    return load_exported(path, config_from_dict)
