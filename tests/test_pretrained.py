"""Published weights: the installed Lite0/1/2 against their reference implementation, and the registry's
facts against the metadata that torchvision, timm and the packages ship themselves."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.data import eval_transform
from effnet.models.zoo import downloads
from effnet.models.nets.config import VARIANTS
from effnet.models.zoo.classifier_weights import default_tag, find_weights, list_weights

reference = pytest.importorskip("efficientnet_lite_pytorch")  # PyPI efficientnet-lite-pytorch (lukemelas lineage)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")


@pytest.fixture(scope="module")
def images():
    import skimage.data

    return [Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB") for name in PHOTOS]


def _reference_model(i: int):
    entry = find_weights(f"efficientnet_lite{i}")
    path = downloads.package_file(entry)
    if path is None:
        pytest.skip(f"{entry.package} not installed")
    # The reference builds static TF "SAME" padding for its native image size and BatchNorm eps 1e-3.
    return reference.EfficientNet.from_pretrained(f"efficientnet-lite{i}", weights_path=str(path)).eval()


@pytest.mark.parametrize("i,resolution", [(0, 224), (1, 240), (2, 260)])
def test_installed_lite_weights_match_reference_on_photos(i, resolution, images):
    ours = effnet.create_model(f"efficientnet_lite{i}", pretrained=True).eval()
    ref = _reference_model(i)
    cfg = ours.config
    assert (cfg.resolution, cfg.tf_padding, cfg.bn_eps) == (resolution, True, 1e-3)
    assert ref.input_image_size == resolution
    x = torch.stack([eval_transform(cfg)(img) for img in images])  # the preprocessing the file carries
    assert x.shape == (len(PHOTOS), 3, resolution, resolution)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert (a - b).abs().max().item() <= 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_symmetric_padding_was_the_lite0_bug(images):
    """The same weights with PyTorch-style padding (what pretrained Lite0 used to run) are far off."""
    entry = find_weights("efficientnet_lite0")
    wrong = effnet.load_weights(effnet.create_model("efficientnet_lite0"), downloads.package_file(entry)).eval()
    ref = _reference_model(0)
    x = torch.stack([eval_transform(wrong.config)(img) for img in images])
    with torch.no_grad():
        assert (wrong(x) - ref(x)).abs().max().item() > 0.5


def test_pretrained_backbone_keeps_padding():
    feats = effnet.create_model("efficientnet_lite0", pretrained=True, features_only=True)
    assert feats.config.tf_padding and feats.config.bn_eps == 1e-3


def test_package_files_have_registered_sha256():
    for entry in list_weights():
        if entry.package and (path := downloads.package_file(entry)) is not None:
            assert downloads.sha256_of(path) == entry.sha256
            assert entry.sha256.startswith(entry.file_name.rsplit("-", 1)[1].split(".")[0])


def test_torchvision_entries_match_torchvision_metadata():
    tv = pytest.importorskip("torchvision.models")
    checked = 0
    for i in range(8):
        enum = getattr(tv, f"EfficientNet_B{i}_Weights")
        for w in enum:
            e = find_weights(f"efficientnet_b{i}", "tv_in1k" if w.name.endswith("V1") else "tv2_in1k")
            t = w.transforms()
            assert e.url == w.url and e.url.rsplit("-", 1)[1].startswith(e.sha256)
            assert e.top1 == w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            assert e.params_m * 1e6 == pytest.approx(w.meta["num_params"])
            assert e.resolution == t.crop_size[0]
            assert math.floor(e.resolution / e.crop_pct) == t.resize_size[0]  # what eval_transform computes
            assert e.interpolation == t.interpolation.value
            assert e.mean == tuple(t.mean) and e.std == tuple(t.std)
            assert not e.tf_padding and e.bn_eps == (1e-5 if i < 5 else 1e-3)
            checked += 1
        assert default_tag(f"efficientnet_b{i}") == ("tv2_in1k" if enum.DEFAULT.name.endswith("V2") else "tv_in1k")
    assert checked == 9


def test_timm_entries_match_timm_cfgs():
    timm = pytest.importorskip("timm")
    from timm.models import get_pretrained_cfg

    checked = 0
    for e in list_weights():
        if not e.origin.startswith("timm") or e.model not in VARIANTS:  # EfficientNetV2's: tests/test_v2_weights.py
            continue
        arch = "tf_" + e.model if e.tag.startswith("tf_") else e.model
        cfg = get_pretrained_cfg(f"{arch}.{e.tag.removeprefix('tf_')}").to_dict()
        assert e.url == cfg["url"] and e.url.rsplit("-", 1)[1].startswith(e.sha256)
        assert (e.mean, e.std, e.interpolation) == (cfg["mean"], cfg["std"], cfg["interpolation"])
        sizes = {cfg["input_size"][1], (cfg.get("test_input_size") or cfg["input_size"])[1]}
        assert e.resolution in sizes and e.crop_pct in {cfg["crop_pct"], cfg.get("test_crop_pct")}
        assert e.tf_padding == arch.startswith("tf_") and e.bn_eps == (1e-3 if e.tf_padding else 1e-5)
        checked += 1
    assert checked == 45
    assert timm.create_model("tf_efficientnet_b0").bn1.eps == 1e-3  # the TF ports keep TF's epsilon


def test_registry_covers_the_family_and_carries_preprocessing():
    entries = [e for e in list_weights() if e.model in VARIANTS]  # the classifiers (detectors: test_detect_pretrained)
    assert {e.model for e in entries} == set(VARIANTS)
    assert len({e.name for e in entries}) == len(entries) == 57
    for e in entries:
        assert find_weights(e.model) is not None and 70 < e.top1 < 90
        cfg = e.config()
        assert (cfg.resolution, cfg.crop_pct, cfg.interpolation, cfg.mean) == (
            e.resolution, e.crop_pct, e.interpolation, e.mean)
    advprop = find_weights("efficientnet_b3", "tf_ap_in1k")
    assert advprop.mean == (0.5, 0.5, 0.5) and find_weights("efficientnet_b3", "tf_aa_in1k").mean[0] == 0.485
