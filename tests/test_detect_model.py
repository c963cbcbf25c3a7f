"""EfficientDet: parameter counts and raw outputs against the installed effdet 0.4.1 (rwightman's port)."""

import pytest
import torch

import effnet
from effnet.models.nets.detector_config import DETECTOR_VARIANTS, DetectorConfig
from effnet.models.zoo.registry import load_detector
from tests.conftest import randomize_bn

effdet = pytest.importorskip("effdet")

# effdet 0.4.1 parameter counts (random init), the official TF layout: tf_efficientdet_*
EFFDET_PARAMS = {"efficientdet_d0": 3_880_067, "efficientdet_d1": 6_625_898, "efficientdet_d4": 20_723_675,
                 "efficientdet_d7": 51_871_782, "efficientdet_lite0": 3_243_470,
                 "efficientdet_lite3x": 9_280_862, "efficientdet_d7x": 77_147_166}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(EFFDET_PARAMS))
def test_param_counts_match_issue(name):
    assert n_params(effnet.create_model(name)) == EFFDET_PARAMS[name]


@pytest.mark.parametrize("d", range(8))
def test_param_counts_equal_effdet_d0_to_d7(d):
    ours = effnet.create_model(f"efficientdet_d{d}")
    theirs = effdet.create_model(f"tf_efficientdet_d{d}", pretrained=False, pretrained_backbone=False)
    assert n_params(ours) == n_params(theirs)


def test_scaling_table_follows_the_paper():
    """Paper section 3.4: width 64*1.35^phi, depth 3+phi, heads 3+floor(phi/3), input 512+128 phi."""
    for phi in range(8):
        _, width, depth, head, res, *_ = DETECTOR_VARIANTS[f"efficientdet_d{phi}"]
        expected = 64 * 1.35 ** min(phi, 6)  # D7 keeps D6's width (Table 1)
        assert abs(width - expected) / expected < 0.06
        assert depth == (3 + phi if phi <= 4 else (7 if phi == 5 else 8))  # paper Table 1 rounds D5-D7
        assert head == 3 + phi // 3
        assert res == (512 + 128 * phi if phi <= 4 else {5: 1280, 6: 1280, 7: 1536}[phi])  # Table 1 again


def _parity(name, effdet_name, size, num_classes=5):
    theirs = effdet.create_model(effdet_name, pretrained=False, pretrained_backbone=False,
                                 num_classes=num_classes, image_size=(size, size))
    randomize_bn(theirs, seed=1)
    with torch.no_grad():  # non-trivial fusion weights and biases too
        for n, p in theirs.named_parameters():
            if "edge_weights" in n or n.endswith("bias"):
                p.copy_(torch.rand_like(p) * 0.5 + 0.25)
    theirs.eval()
    ours = effnet.create_model(name, num_classes=num_classes, tf_padding=True)
    effnet.load_weights(ours, theirs.state_dict(), source="effdet")
    ours.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (c1, b1), (c2, b2) = ours(x), theirs(x)
    assert len(c1) == len(c2) == 5
    for a, b in zip(c1 + b1, c2 + b2):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()
    return ours


def test_raw_outputs_equal_effdet_d0():
    _parity("efficientdet_d0", "tf_efficientdet_d0", 128)


def test_raw_outputs_equal_effdet_lite0_odd_size():
    # 200 px: odd sizes at P5-P7 exercise TF "SAME" pooling and nearest upsampling to exact sizes
    _parity("efficientdet_lite0", "tf_efficientdet_lite0", 200)


def test_save_and_load_rebuilds_the_detector(tmp_path):
    model = effnet.create_model("efficientdet_lite0", num_classes=3).eval()
    randomize_bn(model)
    model.config = model.config.replace(class_names=("a", "b", "c"))
    effnet.save(model, tmp_path / "det.safetensors")
    again = load_detector(tmp_path / "det.safetensors").eval()
    assert again.config == model.config and isinstance(again.config, DetectorConfig)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x)[0], again(x)[0]):
            assert torch.equal(a, b)


def test_end_to_end_onnx_export_matches_pytorch(tmp_path):
    """Box decoding and NMS inside the ONNX graph (NonMaxSuppression), checked by export_detector itself with
    ONNX Runtime and OpenVINO against the PyTorch path on real photos; the file is read back here too."""
    onnx = pytest.importorskip("onnx")
    from effnet.detect.export import export_detector

    model = effnet.create_model("efficientdet_lite0", num_classes=3).eval()
    randomize_bn(model)
    with torch.no_grad():  # decisive, varied scores so that a few dozen boxes survive NMS
        model.class_net.predict.pw.bias.fill_(-4.0)
        model.class_net.predict.pw.weight.mul_(3)
    model.config = model.config.replace(resolution=128)
    report = export_detector(model, tmp_path / "det.onnx")
    assert report.same_detections and report.images == 3 and report.max_box_diff < 1e-2
    def ops(graph):  # torchvision's batched_nms puts NMS inside an If (the "no boxes" branch is the other)
        for node in graph.node:
            yield node.op_type
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from ops(attr.g)

    found = set(ops(onnx.load(str(tmp_path / "det.onnx")).graph))
    assert "NonMaxSuppression" in found and "TopK" in found
    raw = export_detector(model, tmp_path / "raw.onnx", raw=True, check_openvino=False)
    assert not raw.end_to_end and raw.max_box_diff < 1e-3
    assert len(onnx.load(str(tmp_path / "raw.onnx")).graph.output) == 10


def test_freeze_early_keeps_backbone_bn_frozen_through_train():
    """The detect recipe's fine-tuning: stem + first two stages without gradients, backbone BatchNorm in eval
    mode even after .train() (the loop calls it every epoch); the rest trains and the weights' names stay."""
    model = effnet.create_model("efficientdet_lite0", num_classes=3)
    keys = set(model.state_dict())
    model.freeze_early(2)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert not any(p.requires_grad for p in model.backbone.blocks[1].parameters())
    assert all(p.requires_grad for p in model.backbone.blocks[2].parameters())
    assert all(p.requires_grad for p in model.fpn.parameters())
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.fpn.training and model.class_net.training and set(model.state_dict()) == keys
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    # the lean switches (effnet detect train --memory-efficient --grad-checkpoint --checkpoint-stages 3) keep
    # frozen BatchNorm frozen too
    model.set_memory_efficient(True).set_grad_checkpointing(True, 3)
    assert model.backbone._checkpointed_stages() == 3
    cls, box = model(torch.randn(2, 3, 64, 64))
    sum(t.sum() for t in cls + box).backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert model.backbone.blocks[3][0].project.conv.weight.grad is not None
