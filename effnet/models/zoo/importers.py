"""Importers: foreign state dicts (timm, torchvision, lukemelas/EfficientNet-PyTorch, effdet) renamed to effnet's
names, and :func:`load_weights`, which loads any of them into a model with the BatchNorm eps its weights need."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from ...errors import CheckpointError, UsageError
from ..nets.efficientdet import EfficientDet
from ..nets.config import scale
from ..nets.efficientnet import EfficientNet
from ..nets.families import CLASSIFIERS, classifier_config
from ..nets.layers import BATCHNORMS
from .classifier_weights import torchvision_bn_eps
from .model_files import check_and_load, read_state_dict, unwrap_state_dict

def detect_source(state: Mapping[str, torch.Tensor]) -> str:
    for source, recognises in _REGISTERED.items():  # importers others added
        if recognises(state):
            return source
    if any(f"{part}stem.conv.weight" in state for part in ("", "backbone.", "encoder.")):  # effnet's own networks
        return "effnet"
    if all(any(k.startswith(part) for k in state) for part in SMP_PARTS):  # smp's Unet / FPN (its encoder: below)
        return "smp"
    if any(k.startswith("class_net.") for k in state):  # effdet's EfficientDet (its backbone is timm's)
        return "effdet"
    if "conv_stem.weight" in state:
        return "timm"
    if "features.0.0.weight" in state:
        return "torchvision"
    if "_conv_stem.weight" in state:
        return "lukemelas"
    first = ", ".join(list(state)[:3])
    raise CheckpointError(f"unrecognised state-dict naming (first keys: {first})")


_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# timm's block kinds (timm/models/_efficientnet_blocks.py), told apart by their own module names, and effnet's
# names for those modules: "ir" InvertedResidual (effnet MBConv), "ds" DepthwiseSeparable (MBConv without
# expansion), "er" EdgeResidual (EfficientNetV2's Fused-MBConv: effnet FusedMBConv), "cn" ConvBnAct (the V2
# "Fused-MBConv1" of one conv: effnet ConvBlock). hf_hub writes timm's names with the inverse of this table.
TIMM_BLOCK_NAMES: dict[str, dict[str, str]] = {
    "ir": {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "dw.conv", "bn2": "dw.bn",
           "conv_pwl": "project.conv", "bn3": "project.bn"},
    "ds": {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "project.conv", "bn2": "project.bn"},
    "er": {"conv_exp": "expand.conv", "bn1": "expand.bn", "conv_pwl": "project.conv", "bn2": "project.bn"},
    "cn": {"conv": "conv.conv", "bn1": "conv.bn"},
}
TIMM_SE_NAMES = {"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn",
             "classifier": "classifier"}


def _timm_block_kinds(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``"S.B"`` -> timm's kind of that block, read from the first module name of each of its keys."""
    modules: dict[str, set[str]] = {}
    for key in state:
        if m := re.match(r"blocks\.(\d+\.\d+)\.(\w+)\.", key):
            modules.setdefault(m.group(1), set()).add(m.group(2))
    return {block: "er" if "conv_exp" in names else "ir" if "conv_pwl" in names else "cn" if "conv" in names
            else "ds" for block, names in modules.items()}


def from_timm(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    """timm's EfficientNet / EfficientNetV2 naming -> ours (any mix of ir, ds, er and cn blocks)."""
    kinds = _timm_block_kinds(state)
    out = {}
    for key, value in state.items():
        if m := re.match(r"blocks\.(\d+\.\d+)\.(.+)\.(\w+)$", key):
            block, module, param = m.groups()
            table = {**TIMM_BLOCK_NAMES[kinds[block]], **TIMM_SE_NAMES}
            if module not in table:
                raise CheckpointError(f"unexpected timm key {key}")
            out[f"blocks.{block}.{table[module]}.{param}"] = value
        elif (m := re.match(r"(\w+)\.(\w+)$", key)) and m.group(1) in _TIMM_TOP:
            out[f"{_TIMM_TOP[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"unexpected timm key {key}")
    return out


def _weighted_parts(block: nn.Module) -> list[str]:
    """The parts of one of our blocks that hold weights, in order: what torchvision numbers ``block.0``,
    ``block.1`` ... -- MBConv: expand (when it expands), dw, se, project; FusedMBConv: expand, project
    (torchvision's has no SE); ConvBlock: conv (torchvision's FusedMBConv at expand_ratio 1, one
    Conv2dNormActivation)."""
    return [name for name, child in block.named_children() if next(child.parameters(), None) is not None]


def _torchvision_block_key(model: EfficientNet, key: str, stage: int, idx: int, j: int, rest: str) -> str:
    if not 1 <= stage <= len(model.blocks) or idx >= len(model.blocks[stage - 1]):
        raise CheckpointError(f"unexpected torchvision key {key} (does not fit {model.config.name})")
    parts = _weighted_parts(model.blocks[stage - 1][idx])
    if j >= len(parts):
        raise CheckpointError(f"unexpected torchvision key {key} (does not fit {model.config.name})")
    if parts[j] == "se":
        rest = rest.replace("fc1", "reduce").replace("fc2", "expand")
    else:
        rest = re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", rest))
    return f"blocks.{stage - 1}.{idx}.{parts[j]}.{rest}"


def _from_torchvision(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    """torchvision's EfficientNet (features.N.M.block.K, MBConv) and EfficientNetV2 (FusedMBConv too) -> ours."""
    head_idx = len(model.blocks) + 1
    out = {}
    for key, value in state.items():
        if m := re.match(rf"features\.0\.([01])\.{_BN}$|features\.0\.0\.(weight)$", key):
            part = "conv" if key.startswith("features.0.0.") else "bn"
            out[f"stem.{part}.{key.rsplit('.', 1)[1]}"] = value
        elif m := re.match(rf"features\.{head_idx}\.([01])\.(\w+)$", key):
            out[f"head.{'conv' if m.group(1) == '0' else 'bn'}.{m.group(2)}"] = value
        elif m := re.match(r"features\.(\d+)\.(\d+)\.block\.(\d)\.(.+)$", key):
            stage, idx, j = (int(g) for g in m.groups()[:3])
            out[_torchvision_block_key(model, key, stage, idx, j, m.group(4))] = value
        elif m := re.match(r"classifier\.1\.(weight|bias)$", key):
            out[f"classifier.{m.group(1)}"] = value
        else:
            raise CheckpointError(f"unexpected torchvision key {key}")
    return out


def _from_lukemelas(state: Mapping[str, torch.Tensor], model: EfficientNet) -> dict[str, torch.Tensor]:
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "classifier"}
    inner = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
             "_se_reduce": "se.reduce", "_se_expand": "se.expand", "_project_conv": "project.conv", "_bn2": "project.bn"}
    # lukemelas numbers blocks flat (_blocks.N); our model nests them by stage.
    flat = [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in state.items():
        if m := re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key):
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat) or module not in inner:
                raise CheckpointError(f"unexpected lukemelas key {key} (model has {len(flat)} blocks)")
            out[f"blocks.{flat[n]}.{inner[module]}.{param}"] = value
        elif (m := re.match(r"(\w+)\.(\w+)$", key)) and m.group(1) in top:
            out[f"{top[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"unexpected lukemelas key {key}")
    return out


# ---------------------------------------------------------------------------------------------- effdet

def _effdet_neck_key(key: str) -> str:
    """Rename one effdet BiFPN key (``fpn.resample.N`` / ``fpn.cell.R.fnode.K``) to ours."""
    if m := re.match(r"fpn\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)$", key):
        return f"fpn.extra.{int(m.group(1)) - 3}.conv.{m.group(2)}.{m.group(3)}"
    m = re.match(r"fpn\.cell\.(\d+)\.fnode\.(\d+)\.(.+)$", key)
    if not m:
        raise CheckpointError(f"unexpected effdet key {key}")
    prefix, rest = f"fpn.cells.{m.group(1)}.{m.group(2)}", m.group(3)
    if rest == "combine.edge_weights":
        return f"{prefix}.edge_weights"
    if r := re.match(r"combine\.resample\.(\d+)\.conv\.(conv|bn)\.(\w+)$", rest):
        return f"{prefix}.resample.{r.group(1)}.conv.{r.group(2)}.{r.group(3)}"
    if r := re.match(r"after_combine\.conv\.(conv_dw|conv_pw|bn)\.(\w+)$", rest):
        return f"{prefix}.conv.{ {'conv_dw': 'dw', 'conv_pw': 'pw', 'bn': 'bn'}[r.group(1)]}.{r.group(2)}"
    raise CheckpointError(f"unexpected effdet key {key}")


def _effdet_head_key(key: str) -> str:
    m = re.match(r"(class_net|box_net)\.(.+)$", key)
    net, rest = m.group(1), m.group(2)
    if r := re.match(r"(conv_rep\.(\d+)|predict)\.(conv_dw|conv_pw)\.(\w+)$", rest):
        conv = f"convs.{r.group(2)}" if r.group(2) is not None else "predict"
        return f"{net}.{conv}.{'dw' if r.group(3) == 'conv_dw' else 'pw'}.{r.group(4)}"
    if r := re.match(r"bn_rep\.(\d+)\.(\d+)\.bn\.(\w+)$", rest):  # repeat-first (the official layout)
        return f"{net}.bns.{r.group(2)}.{r.group(1)}.{r.group(3)}"
    if r := re.match(r"bn_rep\.(\d+)\.(\d+)\.(\w+)$", rest):  # level-first (effdet's torchscript layout)
        return f"{net}.bns.{r.group(1)}.{r.group(2)}.{r.group(3)}"
    raise CheckpointError(f"unexpected effdet key {key}")


def _resample_index(model: EfficientDet, key: str) -> str:
    """effdet names a node's resamplers by input node id; ours are numbered by position in the node."""
    m = re.match(r"(fpn\.cells\.(\d+)\.(\d+)\.resample\.)(\d+)(\..+)$", key)
    if not m:
        return key
    node = model.fpn.cells[int(m.group(2))][int(m.group(3))]
    return f"{m.group(1)}{node.inputs.index(int(m.group(4)))}{m.group(5)}"


def from_effdet(state: Mapping[str, torch.Tensor], model: EfficientDet) -> dict[str, torch.Tensor]:
    """effdet (rwightman/efficientdet-pytorch) state dict -> ours. The backbone is a timm EfficientNet."""
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out = {f"backbone.{k}": v for k, v in from_timm(backbone, model.backbone).items()}
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        new = _effdet_neck_key(key) if key.startswith("fpn.") else _effdet_head_key(key)
        out[_resample_index(model, new)] = value
    return out


# ---------------------------------------------------------------------------------------------- smp

SMP_PARTS = ("encoder.", "decoder.", "segmentation_head.")  # segmentation_models_pytorch's Unet / FPN


def _from_smp(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """smp's Unet / FPN -> a Segmenter's names (effnet.models.zoo.smp_import builds the Segmenter that runs it).
    The encoder is renamed by its own naming's importer (smp's efficientnet-bX are lukemelas', its timm-* timm's),
    less the classifier head smp keeps but never runs; decoder and head are named as smp names them; smp's optional
    classification head (aux_params) has no counterpart and is dropped."""
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    try:
        source = detect_source(encoder)
    except CheckpointError:
        source = None
    if source not in ("lukemelas", "timm"):
        raise CheckpointError(f"smp encoder not imported (first key encoder.{next(iter(encoder))}); expected smp's "
                              "efficientnet-bX, timm-efficientnet-bX or timm-tf_efficientnet_liteX")
    out = {f"encoder.{k}": v for k, v in _IMPORTERS[source](encoder, model.encoder).items()
           if k.startswith(("stem.", "blocks."))}
    out.update({k: v for k, v in state.items() if not k.startswith(("encoder.", "classification_head."))})
    return out


_IMPORTERS = {"timm": from_timm, "torchvision": _from_torchvision, "lukemelas": _from_lukemelas, "effdet": from_effdet,
              "smp": _from_smp}
_REGISTERED: dict = {}  # source -> recognises(state), for the importers others add


def register_importer(source: str, importer, recognises) -> None:
    """Add a ``source`` for :func:`load_weights` (e.g. a company's own naming): ``importer(state, model)``
    renames, ``recognises(state)`` detects."""
    _IMPORTERS[source] = importer
    _REGISTERED[source] = recognises


def resolve_source(state: Mapping[str, torch.Tensor], source: str = "auto") -> str:
    """The naming of ``state``: ``source`` checked against what its keys look like, or detected (``auto``)."""
    detected = detect_source(state)
    if source == "auto":
        return detected
    if source not in _IMPORTERS:
        raise UsageError(f"unknown source {source!r}; expected auto, {', '.join(_IMPORTERS)}")
    if detected != source:
        raise CheckpointError(f"expected {source} naming but the keys look like {detected}")
    return source


def translate_state_dict(state: Mapping[str, torch.Tensor], model: EfficientNet, source: str = "auto") -> dict:
    """Rename a foreign state dict to this package's names (``source``: auto, timm, torchvision, lukemelas, effdet,
    smp -- a Segmenter's -- or one registered)."""
    source = resolve_source(state, source)
    return dict(state) if source == "effnet" else _IMPORTERS[source](state, model)


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Set every BatchNorm's epsilon (PyTorch-trained weights use 1e-5, TF-trained 1e-3)."""
    for m in model.modules():
        if isinstance(m, BATCHNORMS):
            m.eps = eps
    if hasattr(model, "config"):
        model.config = model.config.replace(bn_eps=eps)


def load_weights(
    model: EfficientNet,
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    source: str = "auto",
    bn_eps: float | None = None,
    label: str | os.PathLike | None = None,
) -> EfficientNet:
    """Load weights of any supported naming into ``model`` (in place; also returned).

    ``bn_eps`` sets the BatchNorm epsilon the weights were trained with when it differs from the model's
    1e-3: timm's non-``tf_`` EfficientNets and its ``efficientnetv2_rw_*`` use PyTorch's 1e-5 (their keys do not
    tell, so give it). For torchvision's naming, named or detected, it defaults to :func:`torchvision_bn_eps`
    (B0-B4: 1e-5; B5-B7 and V2: 1e-3). ``label`` names a state dict read elsewhere in messages (its file).
    """
    if isinstance(path_or_state_dict, Mapping):
        label, state = str(label or "<state dict>"), unwrap_state_dict(path_or_state_dict)
    else:
        label, state = str(path_or_state_dict), read_state_dict(path_or_state_dict)
    try:
        translated = translate_state_dict(state, model, source)
        source = resolve_source(state, source)
    except CheckpointError as exc:
        raise CheckpointError(f"{label}: {exc}") from None
    check_and_load(model, translated, label)
    if bn_eps is None and source == "torchvision":
        bn_eps = torchvision_bn_eps(model.config.name)
    if bn_eps is not None:
        set_bn_eps(model, bn_eps)
    return model


# ---------------------------------------------------------------------------------------------- architecture

# where each naming keeps its stem conv, its blocks (stage, index), a squeeze-excitation marker and its head conv
_LAYOUTS = {
    "timm": (r"conv_stem\.weight$", r"blocks\.(\d+)\.(\d+)\.", ".se.", r"conv_head\.weight$"),
    "torchvision": (r"features\.0\.0\.weight$", r"features\.(\d+)\.(\d+)\.block\.", ".fc1.",
                    r"features\.\d+\.0\.weight$"),
}
# timm builds these one way only (timm/models/efficientnet.py): EfficientNetV2-B0..B3 as TF ports only
# (tf_efficientnetv2_b*: SAME padding, BatchNorm eps 1e-3), its own efficientnetv2_rw_* only with PyTorch's padding
# and eps 1e-5 -- so a timm file of one of them says how it runs. The others exist both ways (efficientnet_b0 and
# tf_efficientnet_b0, efficientnetv2_s and tf_efficientnetv2_s): their files need the name.
TIMM_ONE_WAY: dict[str, str] = {**{f"efficientnetv2_b{i}": f"tf_efficientnetv2_b{i}" for i in range(4)},
                                **{f"efficientnetv2_rw_{s}": f"efficientnetv2_rw_{s}" for s in "tsm"}}
_HEADS = {"timm": "classifier.weight", "effnet": "classifier.weight", "torchvision": "classifier.1.weight",
          "lukemelas": "_fc.weight"}


def layout_of(state: Mapping[str, torch.Tensor], source: str) -> tuple | None:
    """What a timm or torchvision file's shapes say of its network: (stem channels, ((blocks, out channels,
    squeeze-excitation), ...) per stage, head channels) -- :func:`layout_of_config`'s form; None for other
    namings. A block's output channels are those of its last conv in sorted key order, squeeze-excitation aside
    (timm's conv_pwl / conv_pw / conv, torchvision's last block.K)."""
    if source not in _LAYOUTS:
        return None
    stem_key, block_re, se_mark, head_re = _LAYOUTS[source]
    stem = [v for k, v in state.items() if re.match(stem_key, k)]
    heads = [k for k in state if re.match(head_re, k) and not re.match(stem_key, k)]
    stages: dict[int, dict[int, list[str]]] = {}
    for key in state:
        if m := re.match(block_re, key):
            stages.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), []).append(key)
    if not stem or not heads or not stages:
        return None
    layout = []
    for s in sorted(stages):
        last = stages[s][max(stages[s])]
        out = [k for k in sorted(last) if state[k].dim() == 4 and se_mark not in k]
        has_se = any(se_mark in k for block in stages[s].values() for k in block)
        layout.append((len(stages[s]), int(state[out[-1]].shape[0]), has_se))
    head = max(heads, key=lambda k: [int(n) for n in re.findall(r"\d+", k)])
    return int(stem[0].shape[0]), tuple(layout), int(state[head].shape[0])


def layout_of_config(config) -> tuple:
    """:func:`layout_of`'s form for a :class:`~effnet.models.nets.config.ModelConfig`."""
    arch = scale(config)
    stages = tuple((s.repeats, s.out_channels, s.se_ratio > 0) for s in arch.stages)
    return arch.stem_channels, stages, arch.head_channels


def recognise_architecture(state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """The classifier architectures (effnet names) whose shapes are those of a timm or torchvision ``state``."""
    layout = layout_of(state, source)
    if layout is None:
        return []
    return [name for name in CLASSIFIERS if layout_of_config(classifier_config(name)) == layout]


def classes_in(state: Mapping[str, torch.Tensor], source: str) -> int | None:
    """The number of classes of the file's classifier (None: a naming without one, or a headless file)."""
    head = state.get(_HEADS.get(source, ""))
    return None if head is None else int(head.shape[0])
