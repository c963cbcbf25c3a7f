"""Segmenters trained in segmentation_models_pytorch (smp): its ``Unet`` and ``FPN`` on its three EfficientNet
encoder families, read from a ``torch.save``'d state dict (``.pth``, never fully unpickled) or a
``save_pretrained`` folder (``config.json`` + ``model.safetensors``), turned into an effnet segmenter whose saved
config says how it runs.

A ``.pth`` holds no config, so the architecture is read from its keys and shapes: the encoder's naming tells the
family, its shapes the variant (B0..B7, Lite0..4), the decoder's keys Unet or FPN, its shapes the channels, the
head's the classes. A ``save_pretrained`` folder's ``config.json`` names the encoder and smp's settings outright.
What smp builds for each family, read in smp 0.6's ``encoders/efficientnet.py``, ``_efficientnet.py`` and
``timm_efficientnet.py``:

- ``efficientnet-bX``: lukemelas' EfficientNet-PyTorch layout (``encoder._conv_stem``, ``_blocks.N``), BatchNorm eps
  1e-3 (momentum 0.01), TF "SAME" padding computed once for the native resolution
  (``Conv2dStaticSamePadding``), and taps from smp's ``out_indexes`` table -- B0's stride-16 map is the first block
  of its 112-channel stage (block 8), not the last (block 10).
- ``timm-efficientnet-bX`` and ``timm-tf_efficientnet_liteX``: timm's layout, built with timm's defaults --
  symmetric padding and BatchNorm eps 1e-5 (momentum 0.1) even for the ``tf_`` Lite names (smp passes no
  ``pad_type`` nor TF BatchNorm args) -- tapped at the end of the stages at strides 4, 8, 16 and 32.

smp normalises inputs as ``get_preprocessing_params(encoder, weights)`` says: ImageNet's mean and std, except the
Lite encoders and AdvProp weights, which take [-1, 1] (mean = std = 0.5). A ``.pth`` does not say which weights an
encoder started from; smp's default, ``"imagenet"``, is assumed and the saved file says so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import CheckpointError, UsageError
from ..nets.config import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, ModelConfig, scale
from ..nets.efficientnet import EfficientNet
from ..nets.families import classifier_config
from ..nets.segmenter import Segmenter
from ..nets.segmenter_config import FPN_DROPOUT, FPN_UPSAMPLING, SegmenterConfig, segmenter_config
from .importers import translate_state_dict
from .model_files import check_and_load, read_state_dict, save, unwrap_state_dict

# smp's efficientnet-bX encoders take the stride 4/8/16/32 maps after these blocks (``out_indexes``); its timm-*
# encoders take the end of each stage, effnet's default_taps
LUKEMELAS_TAPS: dict[int, tuple[int, int, int, int]] = {
    0: (2, 4, 8, 15), 1: (4, 7, 15, 22), 2: (4, 7, 15, 22), 3: (4, 7, 17, 25),
    4: (5, 9, 21, 31), 5: (7, 12, 26, 38), 6: (8, 14, 30, 44), 7: (10, 17, 37, 54),
}
# how each naming's encoder runs: BatchNorm eps and momentum, TF padding (lukemelas': static, at the native size)
NAMINGS = {"lukemelas": dict(bn_eps=1e-3, bn_momentum=0.01, tf_padding=True),
           "timm": dict(bn_eps=1e-5, bn_momentum=0.1, tf_padding=False)}
SMP_DECODERS = {"Unet": "unet", "FPN": "fpn"}
# smp's settings effnet's decoders reproduce; a save_pretrained config.json with another value is refused
SMP_DEFAULTS = {"encoder_depth": 5, "in_channels": 3, "decoder_attention_type": None,
                "decoder_interpolation": "nearest", "decoder_merge_policy": "add", "decoder_use_norm": "batchnorm",
                "decoder_use_batchnorm": True}
EXPECTED = ("smp Unet or FPN on efficientnet-b0..b7, timm-efficientnet-b0..b7/l2 or timm-tf_efficientnet_lite0..4 "
            "(keys encoder.*, decoder.*, segmentation_head.*)")


@dataclass(frozen=True)
class SmpEncoder:
    """One smp encoder effnet imports: its smp name, the effnet classifier it is, its state dict's naming."""

    name: str  # smp's encoder_name, e.g. "efficientnet-b0"
    classifier: str  # effnet's architecture, e.g. "efficientnet_b0"
    naming: str  # "lukemelas" or "timm"
    taps: tuple[int, ...] | None = None  # smp's out_indexes; None: the stage ends (SegmenterConfig's default)

    def mean_std(self, weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """smp's ``get_preprocessing_params(name, weights)`` (its pretrained settings' mean and std)."""
        if "lite" in self.name or weights == "advprop":
            return TF_MEAN, TF_STD
        return IMAGENET_MEAN, IMAGENET_STD

    def backbone(self, weights: str | None) -> ModelConfig:
        mean, std = self.mean_std(weights)
        config = classifier_config(self.classifier).replace(num_classes=0, mean=mean, std=std, **NAMINGS[self.naming])
        if self.naming == "lukemelas" and pads_differently(config):
            config = config.replace(tf_padding_size=config.resolution)
        return config


SMP_ENCODERS: dict[str, SmpEncoder] = {
    **{f"efficientnet-b{i}": SmpEncoder(f"efficientnet-b{i}", f"efficientnet_b{i}", "lukemelas", taps)
       for i, taps in LUKEMELAS_TAPS.items()},
    **{f"timm-efficientnet-{v}": SmpEncoder(f"timm-efficientnet-{v}", f"efficientnet_{v}", "timm")
       for v in (*(f"b{i}" for i in range(8)), "l2")},
    **{f"timm-tf_efficientnet_lite{i}": SmpEncoder(f"timm-tf_efficientnet_lite{i}", f"efficientnet_lite{i}", "timm")
       for i in range(5)},
}


def pads_differently(config: ModelConfig) -> bool:
    """Whether lukemelas' padding, TF "SAME" computed once for ``config.resolution``, differs from "SAME" computed
    for each input on a segmenter's inputs (sides multiples of 32, so every strided conv sees an even side): it does
    where a strided conv sees an odd side at the native resolution (B1's last stride, 15 px at 240; never B0's),
    and only there is the static size recorded (``tf_padding_size``)."""
    size = config.resolution
    for stride in (2, *(stage.stride for stage in scale(config).stages)):  # the stem, then each stage's first block
        if stride > 1:
            if size % 2:
                return True
            size = (size + stride - 1) // stride
    return False


@dataclass(frozen=True)
class SmpImport:
    """What an smp file was read as, and the effnet config that runs it as smp does."""

    architecture: str  # smp's class: "Unet" or "FPN"
    encoder: SmpEncoder
    weights: str | None  # smp's encoder_weights where a config.json says; None: not said (smp's default assumed)
    config: SegmenterConfig
    notes: tuple[str, ...] = ()

    def preprocessing(self) -> str:
        mean, std = self.encoder.mean_std(self.weights)
        said = f"{self.weights!r}" if self.weights else "'imagenet' (assumed: smp's default)"
        return (f"smp get_preprocessing_params({self.encoder.name!r}, {said}): RGB in [0, 1], mean "
                f"{list(mean)}, std {list(std)}")

    def metadata(self) -> dict[str, str]:
        """Saved beside the config: where the weights came from and how smp fed them."""
        return {"imported_from": f"smp {self.architecture} {self.encoder.name}", "preprocessing": self.preprocessing()}

    def describe(self) -> str:
        backbone = self.config.backbone
        fixed = self.encoder.naming == "lukemelas" and pads_differently(backbone)
        static = f" (static, for {backbone.resolution} px sides)" if fixed else ""
        text = (f"{self.config.name} from smp {self.architecture} {self.encoder.name}, {self.config.num_classes} "
                f"classes, taps {list(self.config.taps)}, bn_eps {backbone.bn_eps:g}, tf_padding "
                f"{backbone.tf_padding}{static}; {self.preprocessing()}")
        return "; ".join((text, *self.notes))


def read_smp(src: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors of an smp ``.pth`` / ``.safetensors`` file, or of a ``save_pretrained`` folder with its
    ``config.json`` (else None)."""
    path = Path(src)
    if not path.is_dir():
        return read_state_dict(path), None
    weights = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
    if not (path / "config.json").is_file() or not weights:
        raise UsageError(f"{src}: not an smp save_pretrained folder (expected config.json and model.safetensors)")
    try:
        settings = json.loads((path / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise UsageError(f"{src}: config.json is not readable JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise UsageError(f"{src}: config.json is not smp's (expected an object with _model_class, encoder_name)")
    return read_state_dict(weights[0]), settings


def import_smp(src: str | os.PathLike | Mapping[str, torch.Tensor], model: str | None = None,
               label: str | os.PathLike | None = None) -> tuple[Segmenter, SmpImport]:
    """An smp Unet / FPN as an effnet :class:`Segmenter` (eval mode) that gives smp's outputs, and what it was read
    as. ``src``: a ``.pth`` file, a ``save_pretrained`` folder, or a state dict; ``model``: an effnet segmenter name
    (``unet_efficientnet_b3``) the file must be, as a check."""
    if isinstance(src, Mapping):
        state, settings, label = unwrap_state_dict(src), None, str(label or "<state dict>")
    else:
        (state, settings), label = read_smp(src), str(label or src)
    found = recognise_smp(state, settings, model, label)
    segmenter = Segmenter(found.config)
    try:
        translated = translate_state_dict(state, segmenter, "smp")
    except CheckpointError as exc:
        raise CheckpointError(f"{label}: {exc}") from None
    check_and_load(segmenter, translated, label)
    return segmenter.eval(), found


def convert_smp(src: str | os.PathLike | Mapping[str, torch.Tensor], output: str | os.PathLike,
                model: str | None = None, label: str | os.PathLike | None = None) -> SmpImport:
    """``effnet convert SRC --from smp -o OUTPUT``: write the effnet segmenter file (atomically; config, smp's
    encoder and preprocessing in its metadata) and say what was read."""
    segmenter, found = import_smp(src, model, label)
    save(segmenter, output, extra_metadata=found.metadata())
    return found


# ---------------------------------------------------------------------------------------------- recognition

def recognise_smp(state: Mapping[str, torch.Tensor], settings: dict | None = None, model: str | None = None,
                  label: str = "<state dict>") -> SmpImport:
    """The smp architecture of ``state``: from ``settings`` (a save_pretrained config.json) where given, else from
    the keys and shapes; ``model`` (an effnet segmenter name) must agree."""
    notes = []
    if settings is not None:
        architecture, encoder, weights = _from_settings(settings, label)
        if settings.get("activation"):
            notes.append(f"smp applied {settings['activation']!r} to its output; effnet's is the logits before it")
    else:
        architecture, weights = _architecture(state, label), None
        encoder = _encoder(state, label, model)
    if any(k.startswith("classification_head.") for k in state):
        notes.append("smp's classification head (aux_params) dropped: a segmenter has none")
    decoder = SMP_DECODERS[architecture]
    config = segmenter_config(f"{decoder}_{encoder.classifier}", _classes(state, label))
    config = config.replace(backbone=encoder.backbone(weights), taps=encoder.taps or config.taps,
                            **_decoder_fields(state, decoder, settings or {}, label))
    if model is not None:
        wanted = segmenter_config(model)
        if (wanted.decoder, wanted.backbone.name) != (decoder, encoder.classifier):
            raise UsageError(f"{label}: an smp {architecture} on {encoder.name} ({config.name}), not {model}")
    return SmpImport(architecture, encoder, weights, config, tuple(notes))


def _from_settings(settings: dict, label: str) -> tuple[str, SmpEncoder, str | None]:
    architecture, name = settings.get("_model_class"), settings.get("encoder_name")
    if architecture not in SMP_DECODERS:
        raise UsageError(f"{label}: smp {architecture or 'model'} is not imported; expected {EXPECTED}")
    if name not in SMP_ENCODERS:
        raise UsageError(f"{label}: smp encoder {name!r} is not imported; expected {EXPECTED}")
    for key, value in settings.items():
        if key in SMP_DEFAULTS and value != SMP_DEFAULTS[key] and not (key == "decoder_use_norm" and value is True):
            raise UsageError(f"{label}: smp {architecture} with {key}={value!r}; effnet builds smp's default "
                             f"{SMP_DEFAULTS[key]!r} only")
    return architecture, SMP_ENCODERS[name], settings.get("encoder_weights")


def _architecture(state: Mapping[str, torch.Tensor], label: str) -> str:
    if "decoder.p5.weight" in state:
        return "FPN"
    if "decoder.blocks.0.conv1.0.weight" in state:
        return "Unet"
    raise UsageError(f"{label}: smp decoder not recognised (neither Unet's decoder.blocks.N.conv1 nor FPN's "
                     f"decoder.p5); expected {EXPECTED}")


def _encoder(state: Mapping[str, torch.Tensor], label: str, model: str | None) -> SmpEncoder:
    """The smp encoder whose shapes are those of the file's ``encoder.*`` (``model`` picks among several)."""
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    naming = "lukemelas" if "_conv_stem.weight" in encoder else "timm" if "conv_stem.weight" in encoder else None
    if naming is None:
        raise UsageError(f"{label}: smp encoder not imported (first key encoder.{next(iter(encoder), '')}); "
                         f"expected {EXPECTED}")
    found = [e for e in SMP_ENCODERS.values() if e.naming == naming and _fits(encoder, e)]
    if model is not None and len(found) > 1:
        found = [e for e in found if e.classifier == segmenter_config(model).backbone.name] or found
    if len(found) != 1:
        what = f"several encoders ({', '.join(e.name for e in found)}): give --model" if found else \
            f"no smp encoder of these shapes; expected {EXPECTED}"
        raise UsageError(f"{label}: {naming} naming, {what}")
    return found[0]


def _fits(encoder: Mapping[str, torch.Tensor], candidate: SmpEncoder) -> bool:
    """Whether ``encoder`` has exactly the stem, blocks and head shapes of ``candidate``'s classifier (built on the
    meta device: no memory, no time; only where the stem width and the block count already agree)."""
    config = classifier_config(candidate.classifier).replace(num_classes=0)
    arch = scale(config)
    blocks = {m.group(1) for k in encoder if (m := re.match(r"(_blocks\.\d+|blocks\.\d+\.\d+)\.", k))}
    stem = encoder.get("_conv_stem.weight", encoder.get("conv_stem.weight"))
    if stem.shape[0] != arch.stem_channels or len(blocks) != sum(s.repeats for s in arch.stages):
        return False
    with torch.device("meta"):
        network = EfficientNet(config)
    try:
        renamed = translate_state_dict(encoder, network, candidate.naming)
    except CheckpointError:
        return False
    own = network.state_dict()
    return renamed.keys() == own.keys() and all(renamed[k].shape == own[k].shape for k in own)


def _classes(state: Mapping[str, torch.Tensor], label: str) -> int:
    head = state.get("segmentation_head.0.weight")
    if head is None or head.dim() != 4:
        raise UsageError(f"{label}: no smp segmentation head (segmentation_head.0.weight); expected {EXPECTED}")
    return int(head.shape[0])


def _decoder_fields(state: Mapping[str, torch.Tensor], decoder: str, settings: dict, label: str) -> dict:
    """The decoder's SegmenterConfig fields, from its shapes (and a config.json's settings that hold no weights)."""
    head_in = int(state["segmentation_head.0.weight"].shape[1])
    if decoder == "unet":
        channels = []
        while (conv := state.get(f"decoder.blocks.{len(channels)}.conv1.0.weight")) is not None:
            channels.append(int(conv.shape[0]))
        if len(channels) != 5 or channels[-1] != head_in:
            raise UsageError(f"{label}: an smp Unet of {len(channels)} decoder blocks; effnet's has 5 "
                             "(encoder_depth=5, smp's default)")
        return {"decoder_channels": tuple(channels)}
    segmentation = state.get("decoder.seg_blocks.0.block.0.block.0.weight")
    if segmentation is None or int(segmentation.shape[0]) != head_in:
        raise UsageError(f"{label}: an smp FPN whose head does not take its segmentation blocks' sum "
                         "(decoder_merge_policy='add', smp's default, is the one effnet builds)")
    return {"pyramid_channels": int(state["decoder.p5.weight"].shape[0]), "segmentation_channels": head_in,
            "decoder_dropout": float(settings.get("decoder_dropout", FPN_DROPOUT)),
            "upsampling": int(settings.get("upsampling", FPN_UPSAMPLING))}

