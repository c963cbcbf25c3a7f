import argparse

import pytest
import torch

import effnet
from effnet import load, save
from effnet.errors import CheckpointError
from effnet.models.zoo.importers import load_weights
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def _compare(ours, theirs, size, tol=1e-4):
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    diff = (a - b).abs().max().item()
    assert diff <= tol, diff
    return diff


@pytest.mark.parametrize("timm_name,ours_name,tf_padding,bn_eps,size", [
    ("efficientnet_b0", "efficientnet_b0", False, 1e-5, 160),
    ("tf_efficientnet_b3", "efficientnet_b3", True, None, 195),  # odd size: asymmetric SAME pads matter
    ("tf_efficientnet_lite0", "efficientnet_lite0", True, None, 131),
])
def test_timm_import_parity(timm_name, ours_name, tf_padding, bn_eps, size):
    torch.manual_seed(0)
    src = timm.create_model(timm_name, pretrained=False)
    randomize_bn(src)
    model = effnet.create_model(ours_name, tf_padding=tf_padding)
    load_weights(model, src.state_dict(), source="timm", bn_eps=bn_eps)
    _compare(model, src, size)


@pytest.mark.parametrize("name,size", [("efficientnet_b0", 160), ("efficientnet_b2", 130)])
def test_torchvision_import_parity(name, size, tmp_path):
    from effnet.models.zoo.classifier_weights import torchvision_bn_eps

    torch.manual_seed(0)
    src = getattr(torchvision.models, name)(weights=None)
    randomize_bn(src)
    path = tmp_path / "tv.pth"
    torch.save(src.state_dict(), path)  # a real file, loaded with weights_only=True
    model = load_weights(effnet.create_model(name), path, bn_eps=torchvision_bn_eps(name))
    _compare(model, src, size)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.1).eval()
    randomize_bn(model)
    path = tmp_path / "m.safetensors"
    save(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
    again = load(path).eval()
    assert again.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_compound_config_survives_save(tmp_path):
    cfg = effnet.compound(0.7, alpha=1.3, beta=1.05, gamma=1.2)
    model = effnet.create_model(cfg, num_classes=3)
    save(model, tmp_path / "c.safetensors")
    assert load(tmp_path / "c.safetensors").config == model.config


def test_truncated_checkpoint_error_names_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save(effnet.create_model("efficientnet_lite0"), path)
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load(bad)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: file is empty"):
        load_weights(effnet.create_model("efficientnet_b0"), empty)


def test_mismatched_checkpoint_names_first_keys(tmp_path):
    path = tmp_path / "b0.safetensors"
    save(effnet.create_model("efficientnet_b0"), path)
    with pytest.raises(CheckpointError) as info:
        load_weights(effnet.create_model("efficientnet_b1"), path)
    msg = str(info.value)
    assert "b0.safetensors" in msg and "efficientnet_b1" in msg and "missing" in msg
    assert "blocks.0.1" in msg  # B1 has a second block in stage 1 that B0 lacks


def test_foreign_checkpoint_error(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="foreign.pth: unrecognised state-dict naming"):
        load_weights(effnet.create_model("efficientnet_b0"), path)
    with pytest.raises(CheckpointError, match="no effnet config"):
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        load(tmp_path / "plain.safetensors")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": argparse.Namespace(a=1)}, path)  # arbitrary object
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_weights(effnet.create_model("efficientnet_b0"), path)


def test_real_pretrained_lite0_classifies_real_photos(photos):
    from effnet.classify import predict_files

    model = effnet.create_model("efficientnet_lite0", pretrained=True)
    results, errors = predict_files(model, [photos["chelsea"], photos["coffee"]], topk=5)
    assert errors == []
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert results[0]["predictions"][0]["label"] in cats
    assert results[1]["predictions"][0]["label"] == "espresso"


def test_pretrained_with_new_head_keeps_backbone():
    a = effnet.create_model("efficientnet_lite0", pretrained=True)
    b = effnet.create_model("efficientnet_lite0", pretrained=True, num_classes=10)
    assert b.classifier.out_features == 10 and b.config.num_classes == 10
    assert torch.equal(a.stem.conv.weight, b.stem.conv.weight)
    with pytest.raises(ValueError, match="no weights tagged 'no_such_tag' for efficientnet_b7"):
        effnet.create_model("efficientnet_b7", pretrained="no_such_tag")
