"""EfficientNetV2 weights (issue 33): every V2 architecture timm and torchvision build converts to equal logits on a
real photo (random weights, randomised BatchNorm statistics, saved to a file, naming detected); ``effnet convert``
reads a V2 file; Hub folders go both ways; every registry row carries its facts as timm and torchvision publish
them. Downloads through the loopback mirror: tests/test_pretrained_download.py."""

import functools
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.data import eval_transform, load_image
from effnet.models.nets.efficientnet_v2 import V2_VARIANTS
from effnet.models.zoo.classifier_weights import default_tag, find_weights, list_weights
from effnet.models.zoo.importers import detect_source, recognise_architecture
from effnet.models.zoo.names import split_tag
from tests.conftest import randomize_bn, run_cli

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def chelsea():
    import skimage.data

    return Image.fromarray(np.asarray(skimage.data.chelsea())).convert("RGB")


def _logits_agree(ours, reference, image, size: int) -> float:
    x = eval_transform(ours.config, resolution=size)(image)[None]  # a real photo at a small size
    with torch.no_grad():
        a, b = ours.eval()(x), reference.eval()(x)
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# The V2 builders of timm and torchvision -> (the name effnet builds it by, BatchNorm eps of the weights, photo
# size). timm's TF ports: SAME padding from the tf_ name, eps 1e-3 (the model's default), at multiples of 32, where
# every stride-2 3x3 conv gets SAME's asymmetric pad (0 before, 1 after; at odd sizes it pads 1 and 1, as symmetric
# padding does); timm's own rw_* were trained in PyTorch: eps 1e-5; torchvision's: eps 1e-3 set by the importer.
# The large ones (each a few seconds to build twice and save) at 32 px, in the slow tier.
SMALL = {
    "timm:tf_efficientnetv2_b0": ("tf_efficientnetv2_b0", None, 64),
    "timm:tf_efficientnetv2_b1": ("tf_efficientnetv2_b1", None, 64),
    "timm:tf_efficientnetv2_b2": ("tf_efficientnetv2_b2", None, 64),
    "timm:tf_efficientnetv2_b3": ("tf_efficientnetv2_b3", None, 64),
    "timm:tf_efficientnetv2_s": ("tf_efficientnetv2_s", None, 64),
    "timm:efficientnetv2_rw_t": ("efficientnetv2_rw_t", 1e-5, 64),
    "timm:efficientnetv2_rw_s": ("efficientnetv2_rw_s", 1e-5, 48),
    "torchvision:efficientnet_v2_s": ("efficientnet_v2_s", None, 64),
}
LARGE = {
    "timm:tf_efficientnetv2_m": ("tf_efficientnetv2_m", None, 32),
    "timm:tf_efficientnetv2_l": ("tf_efficientnetv2_l", None, 32),
    "timm:tf_efficientnetv2_xl": ("tf_efficientnetv2_xl", None, 32),
    "timm:efficientnetv2_rw_m": ("efficientnetv2_rw_m", 1e-5, 32),
    "torchvision:efficientnet_v2_m": ("efficientnet_v2_m", None, 48),
    "torchvision:efficientnet_v2_l": ("efficientnet_v2_l", None, 32),
}


def _converts_to_equal_logits(reference_spec: str, row: tuple, image, folder) -> None:
    """Build the reference with random weights and randomised BatchNorm statistics, save its state dict to a
    file, load that file into effnet's model (naming detected) and compare logits on ``image``."""
    library, name = reference_spec.split(":")
    ours_name, bn_eps, size = row
    reference = timm.create_model(name) if library == "timm" else getattr(torchvision.models, name)(weights=None)
    randomize_bn(reference)
    path = folder / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = effnet.load_weights(effnet.create_model(ours_name), path, bn_eps=bn_eps)
    assert model.config.tf_padding == name.startswith("tf_")
    assert model.config.bn_eps == (bn_eps or 1e-3)
    assert _logits_agree(model, reference, image, size) <= 1e-4


@pytest.mark.parametrize("reference", list(SMALL))
def test_v2_file_converts_to_equal_logits(reference, chelsea, tmp_path):
    _converts_to_equal_logits(reference, SMALL[reference], chelsea, tmp_path)


@pytest.mark.parametrize("reference", list(LARGE))
def test_large_v2_file_converts_to_equal_logits(reference, chelsea, tmp_path):
    _converts_to_equal_logits(reference, LARGE[reference], chelsea, tmp_path)


def test_the_comparison_sees_a_wrong_padding_or_eps(chelsea):
    """What the parity tests guard: the same weights with symmetric padding (a TF port) or TF's eps (a PyTorch-trained
    rw_*) are far off at these sizes."""
    tf_port = timm.create_model("tf_efficientnetv2_b0")
    randomize_bn(tf_port)
    symmetric = effnet.load_weights(effnet.create_model("efficientnetv2_b0"), tf_port.state_dict())
    assert _logits_agree(symmetric, tf_port, chelsea, 64) > 1e-3
    rw = timm.create_model("efficientnetv2_rw_t")
    randomize_bn(rw)
    tf_eps = effnet.load_weights(effnet.create_model("efficientnetv2_rw_t"), rw.state_dict())
    assert _logits_agree(tf_eps, rw, chelsea, 64) > 1e-3


def test_the_namings_and_architectures_are_told_apart():
    """timm's and torchvision's V2 files are told apart by their keys, and each names its architecture by its
    shapes (no two classifiers share them): what `effnet convert` without --model reads."""
    with torch.device("meta"):  # shapes only
        tv = torchvision.models.efficientnet_v2_m().state_dict()
        tm = timm.create_model("efficientnetv2_rw_s").state_dict()
    assert detect_source(tv) == "torchvision" and detect_source(tm) == "timm"
    assert recognise_architecture(tv, "torchvision") == ["efficientnetv2_m"]
    assert recognise_architecture(tm, "timm") == ["efficientnetv2_rw_s"]


def test_convert_a_timm_v2_file_then_predict(tmp_path, photos):
    """``effnet convert FILE --from auto`` without --model: timm builds EfficientNetV2-B0 one way only (a TF port),
    so its file says architecture, padding and eps, and the converted file predicts as the reference does. V2-S
    exists in timm both ways: one line asks for the name."""
    reference = timm.create_model("tf_efficientnetv2_b0", num_classes=7).eval()  # a head of its own
    randomize_bn(reference)
    src = tmp_path / "v2_b0.pth"
    torch.save(reference.state_dict(), src)
    out = tmp_path / "v2_b0.safetensors"
    wrote = run_cli("convert", str(src), "--from", "auto", "-o", str(out)).stdout
    assert "efficientnetv2_b0" in wrote and "bn_eps 0.001, tf_padding True" in wrote
    proc = run_cli("predict", "--model", str(out), "--json", "--topk", "3", str(photos["chelsea"]))
    top = json.loads(proc.stdout)[0]["predictions"]
    config = effnet.load(out).config
    assert (config.num_classes, config.tf_padding, config.bn_eps) == (7, True, 1e-3)
    with torch.no_grad():
        probs = reference(eval_transform(config)(load_image(photos["chelsea"]))[None]).softmax(1)[0]
    scores, indices = probs.topk(3)
    assert [p["index"] for p in top] == indices.tolist()
    assert np.allclose([p["score"] for p in top], scores.tolist(), atol=1e-4)

    named = tmp_path / find_weights("efficientnetv2_b0", "tf_in1k").file_name  # a published file by its name
    named.write_bytes(src.read_bytes())
    asked = run_cli("convert", str(named), "-o", str(tmp_path / "named.safetensors"), check=False)
    assert asked.returncode == 2 and "--model efficientnetv2_b0.tf_in1k" in asked.stderr

    both_ways = tmp_path / "v2_s.pth"
    torch.save(timm.create_model("tf_efficientnetv2_s").state_dict(), both_ways)
    asked = run_cli("convert", str(both_ways), "-o", str(tmp_path / "s.safetensors"), check=False)
    assert asked.returncode == 2 and len(asked.stderr.strip().splitlines()) == 1, asked.stderr
    assert "--model tf_efficientnetv2_s" in asked.stderr and not (tmp_path / "s.safetensors").exists()


def test_convert_reads_a_torchvision_v2_architecture_from_its_shapes(tmp_path):
    src = tmp_path / "tv_v2_s.pth"
    torch.save(torchvision.models.efficientnet_v2_s(weights=None).state_dict(), src)
    out = tmp_path / "v2_s.safetensors"
    proc = run_cli("convert", str(src), "-o", str(out))
    assert "efficientnetv2_s" in proc.stdout and "bn_eps 0.001" in proc.stdout
    assert effnet.load(out).config.name == "efficientnetv2_s"


def test_a_timm_v2_folder_loads_in_effnet(tmp_path, chelsea):
    from timm.models import save_for_hf

    reference = timm.create_model("tf_efficientnetv2_b1", num_classes=3).eval()
    randomize_bn(reference)
    save_for_hf(reference, tmp_path, safe_serialization=True)
    model = effnet.create_model(f"local-dir:{tmp_path}")
    assert model.config.name == "efficientnetv2_b1" and model.config.tf_padding and model.config.bn_eps == 1e-3
    assert _logits_agree(model, reference, chelsea, 64) <= 1e-4


def _v2_rows():
    return [e for e in list_weights() if e.model in V2_VARIANTS]


def test_every_v2_row_carries_its_file_and_preprocessing():
    rows = _v2_rows()
    assert len(rows) == 21 and {e.model for e in rows} == set(V2_VARIANTS)
    for e in rows:
        assert re.fullmatch(r"[0-9a-f]{8}", e.sha256) and e.url.endswith(f"-{e.sha256}.pth"), e.name
        cfg = e.config()
        assert (cfg.resolution, cfg.crop_pct, cfg.interpolation, cfg.mean, cfg.std, cfg.num_classes) == (
            e.resolution, e.crop_pct, e.interpolation, e.mean, e.std, e.num_classes)
        assert (cfg.bn_eps, cfg.tf_padding) == ((1e-3, True) if e.tag.startswith("tf_") else
                                                (1e-3, False) if e.tag == "tv_in1k" else (1e-5, False))
        if e.num_classes == 1000:
            assert 78 < e.top1 < 87
        else:
            assert e.tag == "tf_in21k" and e.num_classes == 21843 and e.top1 is None and e.published == "-"
        default = find_weights(e.model)
        assert default.tag == default_tag(e.model) and default.num_classes == 1000
    assert [default_tag(f"efficientnetv2_{s}") for s in "sml"] == ["tv_in1k"] * 3  # torchvision's DEFAULT
    assert {e.name for e in rows} <= set(effnet.list_models("*v2*", pretrained=True))
    assert set(effnet.list_models("efficientnetv2_*", pretrained=True, include_tags=False)) == set(V2_VARIANTS)
    # timm's names for its TF ports find the same rows
    assert find_weights(*split_tag("tf_efficientnetv2_s.in21k_ft_in1k")).name == "efficientnetv2_s.tf_in21k_ft_in1k"


@functools.lru_cache(maxsize=None)
def _timm_count(arch: str) -> tuple[int, int]:
    with torch.device("meta"):  # the count, not the weights
        body = timm.create_model(arch, num_classes=0)
    return sum(p.numel() for p in body.parameters()), body.num_features


def test_timm_v2_rows_match_timm_cfgs():
    from timm.models import get_pretrained_cfg

    checked = 0
    for e in _v2_rows():
        if not e.origin.startswith("timm"):
            continue
        arch = "tf_" + e.model if e.tag.startswith("tf_") else e.model
        cfg = get_pretrained_cfg(f"{arch}.{e.tag.removeprefix('tf_')}").to_dict()
        assert e.url == cfg["url"] and e.num_classes == cfg["num_classes"]
        assert (e.mean, e.std, e.interpolation, e.crop_pct) == (cfg["mean"], cfg["std"], cfg["interpolation"],
                                                                cfg["crop_pct"])
        assert e.resolution == cfg["test_input_size"][-1]  # where results-imagenet.csv measured the top-1
        body, features = _timm_count(arch)  # the published count: the body's and that of the file's head
        assert e.params_m == round((body + (features + 1) * e.num_classes) / 1e6, 2)
        checked += 1
    assert checked == 18


def test_torchvision_v2_rows_match_torchvision_metadata():
    for size in "SML":
        weights = getattr(torchvision.models, f"EfficientNet_V2_{size}_Weights").IMAGENET1K_V1
        e = find_weights(f"efficientnetv2_{size.lower()}", "tv_in1k")
        t = weights.transforms()
        assert e.url == weights.url and e.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert e.params_m * 1e6 == pytest.approx(weights.meta["num_params"])
        assert (e.resolution, e.crop_pct, e.interpolation) == (t.crop_size[0], 1.0, t.interpolation.value)
        assert e.mean == tuple(t.mean) and e.std == tuple(t.std)


def test_weights_command_lists_v2():
    out = run_cli("weights", "--filter", "efficientnetv2").stdout.splitlines()
    rows = {tuple(line.split()[:2]): line for line in out[1:-1]}
    assert len(rows) == 21
    assert rows[("efficientnetv2_s", "tv_in1k")].split()[2:6] == ["*", "torchvision", "top-1", "84.23"]
    assert rows[("efficientnetv2_xl", "tf_in21k")].split()[2:5] == ["timm", "(TF", "port)"]
    assert rows[("efficientnetv2_xl", "tf_in21k")].split()[5:7] == ["-", "512"]  # no ImageNet-1k head
