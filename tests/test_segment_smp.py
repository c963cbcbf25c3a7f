"""segmentation_models_pytorch (smp) Unet / FPN checkpoints imported into effnet segmenters: for one encoder of each
smp EfficientNet family (lukemelas' efficientnet-bX, with B0 the odd one out in its taps and B1 in its padding;
timm-efficientnet-bX; timm-tf_efficientnet_liteX), the converted file gives smp's outputs on a real photo."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.errors import UsageError
from effnet.models.nets.config import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD
from effnet.models.nets.segmenter import Segmenter
from effnet.models.nets.segmenter_config import default_taps
from effnet.models.zoo.importers import detect_source
from effnet.models.zoo.model_files import read_metadata
from effnet.models.zoo.smp_import import convert_smp, import_smp
from tests.conftest import run_cli

smp = pytest.importorskip("segmentation_models_pytorch")
# smp 0.6 deprecates its timm-* encoders for tu-* ones; files trained with them are what this imports
pytestmark = pytest.mark.filterwarnings("ignore:`timm-` encoders are deprecated:DeprecationWarning")

TOLERANCE = 1e-4
HEIGHT, WIDTH = 128, 160  # multiples of 32, small: a float64 comparison takes about a second
# smp's pretrained settings for "imagenet" weights (what get_preprocessing_params reads from the Hub)
SMP_MEAN_STD = {"efficientnet-b0": (IMAGENET_MEAN, IMAGENET_STD), "efficientnet-b1": (IMAGENET_MEAN, IMAGENET_STD),
                "timm-efficientnet-b0": (IMAGENET_MEAN, IMAGENET_STD),
                "timm-tf_efficientnet_lite0": (TF_MEAN, TF_STD)}


def photos(*names: str) -> torch.Tensor:
    """scikit-image's photos, RGB in [0, 1], resized to HEIGHT x WIDTH: (N, 3, H, W)."""
    import skimage.data

    images = [Image.fromarray(getattr(skimage.data, n)()).resize((WIDTH, HEIGHT), Image.BILINEAR) for n in names]
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images])).permute(0, 3, 1, 2)


def normalised(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """What the outputs are compared on: the astronaut, (1, 3, H, W), RGB in [0, 1]."""
    return photos("astronaut")


@pytest.fixture(scope="module")
def calibration() -> torch.Tensor:
    """The photos the smp models' BatchNorm statistics are taken on, ImageNet-normalised: the astronaut, the cat,
    the coffee (with the astronaut among them, its activations stay in range on untrained weights)."""
    return normalised(photos("astronaut", "chelsea", "coffee"), IMAGENET_MEAN, IMAGENET_STD)


def smp_model(architecture: str, encoder: str, classes: int, calibration: torch.Tensor) -> torch.nn.Module:
    """An smp model as training leaves it: every BatchNorm's and GroupNorm's affine parameters drawn at random,
    then the BatchNorms' statistics taken on real photos, so that no two norms are alike and deep features keep
    their spatial detail. (Arbitrary statistics on random weights make deep features mostly BatchNorm bias, where
    a wrong padding barely shows, or scale them up layer after layer.)"""
    model = getattr(smp, architecture)(encoder, encoder_weights=None, classes=classes).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, torch.nn.BatchNorm2d):  # only they learn (no drop path, no dropout): one batch's stats
                m.reset_running_stats()
                m.momentum = None
                m.train()
        model(calibration)
    return model.eval()


def max_diff(ours: Segmenter, ref: torch.nn.Module, photo: torch.Tensor, mean, std) -> float:
    """The largest |difference| between the two models' logits on ``photo``, computed in float64: in float32 the
    rounding of equal computations done differently (smp's timm encoders compute SiLU as x * sigmoid(x)) reaches
    1e-4 on logits of about 10, and a tolerance would have to make room for it."""
    x = normalised(photo, mean, std).double()
    with torch.no_grad():
        expected, got = copy.deepcopy(ref).double()(x), copy.deepcopy(ours).double()(x)
    assert got.shape == expected.shape and got.shape[-2:] == (HEIGHT, WIDTH)
    return (got - expected).abs().max().item()


def smp_taps(encoder: str, backbone) -> tuple[int, ...]:
    """The blocks smp taps: its efficientnet-bX table's out_indexes; its timm encoders' stage ends."""
    params = smp.encoders.encoders[encoder]["params"]
    return tuple(params["out_indexes"]) if "out_indexes" in params else default_taps(backbone)


def check_config(model: Segmenter, ref: torch.nn.Module, encoder: str) -> None:
    """The saved config says how smp runs this encoder: its taps, BatchNorm eps, padding and preprocessing."""
    backbone = model.config.backbone
    assert model.config.taps == smp_taps(encoder, backbone)
    assert backbone.bn_eps == next(m for m in ref.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)).eps
    assert backbone.tf_padding == (not encoder.startswith("timm-"))
    assert (backbone.mean, backbone.std) == SMP_MEAN_STD[encoder]


@pytest.mark.parametrize("encoder, source, classes", [
    ("efficientnet-b0", "auto", 3), ("efficientnet-b1", "smp", 4), ("timm-efficientnet-b0", "auto", 5),
    ("timm-tf_efficientnet_lite0", "smp", 3)])
def test_effnet_convert_imports_an_smp_unet(tmp_path, photo, calibration, encoder, source, classes):
    ref = smp_model("Unet", encoder, classes, calibration)
    src, out = tmp_path / "unet.pth", tmp_path / "unet.safetensors"
    torch.save(ref.state_dict(), src)
    proc = run_cli("convert", str(src), "--from", source, "-o", str(out))
    assert f"from smp Unet {encoder}" in proc.stdout
    model = effnet.load(out).eval()
    assert isinstance(model, Segmenter) and model.config.num_classes == classes
    check_config(model, ref, encoder)
    assert read_metadata(out)["imported_from"] == f"smp Unet {encoder}"
    diff = max_diff(model, ref, photo, model.config.mean, model.config.std)
    assert diff <= TOLERANCE, f"{encoder}: max |diff| {diff:.3g}"


@pytest.mark.parametrize("encoder, classes", [("efficientnet-b0", 4), ("timm-efficientnet-b0", 3),
                                              ("timm-tf_efficientnet_lite0", 5)])
def test_convert_smp_imports_an_smp_fpn(tmp_path, photo, calibration, encoder, classes):
    ref = smp_model("FPN", encoder, classes, calibration)
    torch.save(ref.state_dict(), tmp_path / "fpn.pth")
    found = convert_smp(tmp_path / "fpn.pth", tmp_path / "fpn.safetensors")
    assert (found.architecture, found.encoder.name) == ("FPN", encoder)
    model = effnet.load(tmp_path / "fpn.safetensors").eval()
    check_config(model, ref, encoder)
    diff = max_diff(model, ref, photo, model.config.mean, model.config.std)
    assert diff <= TOLERANCE, f"{encoder}: max |diff| {diff:.3g}"


def test_a_save_pretrained_folder_names_its_encoder_and_weights(tmp_path, photo, calibration):
    """smp's save_pretrained folder: config.json says the encoder and the weights it started from (AdvProp's are
    fed [-1, 1], which the converted config records); its settings that effnet does not build are refused."""
    ref = smp_model("FPN", "timm-efficientnet-b0", 3, calibration)
    ref.save_pretrained(tmp_path / "fpn")
    settings = json.loads((tmp_path / "fpn" / "config.json").read_text())
    (tmp_path / "fpn" / "config.json").write_text(json.dumps({**settings, "encoder_weights": "advprop"}))
    proc = run_cli("convert", str(tmp_path / "fpn"), "-o", str(tmp_path / "fpn.safetensors"))
    assert "'advprop'" in proc.stdout
    model = effnet.load(tmp_path / "fpn.safetensors").eval()
    assert (model.config.mean, model.config.std) == (TF_MEAN, TF_STD)
    assert max_diff(model, ref, photo, TF_MEAN, TF_STD) <= TOLERANCE
    (tmp_path / "fpn" / "config.json").write_text(json.dumps({**settings, "decoder_merge_policy": "cat"}))
    with pytest.raises(UsageError, match="decoder_merge_policy='cat'"):
        import_smp(tmp_path / "fpn")


def test_wrong_taps_or_padding_are_caught(photo, calibration):
    """Controls: the comparison the tests above pass sees a wrong import. effnet's default taps (stage ends) on smp's
    efficientnet-b0, whose stride-16 map is block 8, not 10; and TF padding computed for each input on
    efficientnet-b1, whose last strided conv smp pads as for a 15 px side (lukemelas' static padding at 240 px)."""
    for encoder, wrong in (("efficientnet-b0", lambda c: c.replace(taps=default_taps(c.backbone))),
                           ("efficientnet-b1", lambda c: c.replace(backbone=c.backbone.replace(tf_padding_size=None)))):
        ref = smp_model("Unet", encoder, 3, calibration)
        model, found = import_smp(ref.state_dict())
        assert found.config.backbone.tf_padding_size == (240 if encoder == "efficientnet-b1" else None)
        wrong_model = Segmenter(wrong(found.config)).eval()
        wrong_model.load_state_dict(model.state_dict())
        assert max_diff(wrong_model, ref, photo, found.config.mean, found.config.std) > 100 * TOLERANCE, encoder


def test_auto_tells_smp_from_effnet_and_refuses_other_encoders_in_one_line(tmp_path, calibration):
    ref = smp_model("Unet", "efficientnet-b0", 3, calibration)
    model, _ = import_smp(ref.state_dict())
    assert detect_source(ref.state_dict()) == "smp" and detect_source(model.state_dict()) == "effnet"
    torch.save(ref.state_dict(), tmp_path / "b0.pth")
    torch.save(smp.Unet("mobilenet_v2", encoder_weights=None, classes=3).state_dict(), tmp_path / "mobilenet.pth")
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not a checkpoint")
    cases = [(("mobilenet.pth",), "expected smp Unet or FPN on efficientnet-b0..b7"),
             (("b0.pth", "--model", "unet_efficientnet_b3"), "not unet_efficientnet_b3"),
             (("b0.pth", "--num-classes", "7"), "drop --num-classes"),
             (("broken.pth", "--from", "smp"), "cannot read checkpoint")]
    for args, message in cases:
        proc = run_cli("convert", str(tmp_path / args[0]), *args[1:], "-o", str(tmp_path / "x.safetensors"),
                       check=False)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            (args, proc.stderr)
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(UsageError, match="not an smp save_pretrained folder"):
        import_smp(tmp_path)
