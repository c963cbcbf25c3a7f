"""Deploy path: BN folding, ONNX / TorchScript export verified by ONNX Runtime, int8, lean training."""

import json
import tempfile
from pathlib import Path

import onnx
import pytest
import torch

import effnet
from effnet.deploy import export_model, optimize
from tests.conftest import config_file, randomize_bn, run_cli


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from effnet.data.bundled import write_photos

    out = tmp_path_factory.mktemp("photos")
    write_photos(out, count=48)
    return out


@pytest.mark.parametrize("name,tf_padding", [("efficientnet_b0", False), ("efficientnet_b2", True)])
def test_optimize_folds_bn_and_keeps_logits(name, tf_padding):
    model = effnet.create_model(name, tf_padding=tf_padding).eval()
    randomize_bn(model)
    fast = optimize(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in fast.modules())
    x = torch.randn(2, 3, 131, 131)
    with torch.no_grad():
        ref, out = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert ref.abs().max() > 1e-2  # non-trivial logits
    assert (ref - out).abs().max() <= 1e-4


def test_onnx_export_matches_pytorch_and_has_static_pads(tmp_path):
    model = effnet.create_model("efficientnet_b0", tf_padding=True).eval()
    randomize_bn(model)
    report = export_model(model, tmp_path / "b0.onnx", resolution=197)
    assert report.max_abs_diff_random <= 1e-3 and report.max_abs_diff_real <= 1e-3 and report.real_images >= 4
    graph = onnx.load(str(tmp_path / "b0.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "Pad" in ops and "Shape" not in ops  # SAME padding frozen to constants for the fixed size
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_onnx_dynamic_batch_and_torchscript(tmp_path, photos):
    from effnet.deploy import OnnxPredictor

    model = effnet.create_model("efficientnet_lite0", pretrained=True)
    export_model(model, tmp_path / "l0.onnx", batch="dynamic")
    pred = OnnxPredictor(str(tmp_path / "l0.onnx"), model.config)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert (pred(x) - model.eval()(x)).abs().max() < 1e-3
    report = export_model(model, tmp_path / "l0.pt", fmt="torchscript")
    assert report.max_abs_diff_real <= 1e-4
    loaded = torch.jit.load(str(tmp_path / "l0.pt"))
    with torch.no_grad():
        assert (loaded(x[:1]) - model(x[:1])).abs().max() < 1e-4


def test_export_refuses_broken_parity_and_leaves_nothing(tmp_path):
    proc = run_cli("export", "efficientnet_lite0", "--pretrained", "-o", str(tmp_path / "x.onnx"), "--tolerance", "1e-12",
                   check=False)
    assert proc.returncode == 2 and "does not match PyTorch" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_int8_export_agrees_with_fp32_on_real_photos(tmp_path, photo_dir):
    out = tmp_path / "l0_int8.onnx"
    proc = run_cli("export", "efficientnet_lite0", "--pretrained", "-o", str(out), "--int8", "--calibration",
                   str(photo_dir), "--json")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["int8"] and report["real_images"] == 48
    assert report["top1_agreement_confident"] >= 0.9, report
    assert report["top1_agreement"] >= 0.7, report
    fp32 = tmp_path / "l0_int8.onnx.fp32.onnx"
    assert out.stat().st_size < 0.55 * fp32.stat().st_size  # int8 conv weights (classifier stays fp32)


def test_lean_training_gradients_match_plain_path():
    torch.manual_seed(0)
    plain = effnet.create_model("efficientnet_b0", drop_path_rate=0.0, dropout=0.0, num_classes=10).train()
    lean = effnet.create_model("efficientnet_b0", drop_path_rate=0.0, dropout=0.0, num_classes=10).train()
    lean.load_state_dict(plain.state_dict())
    lean.set_memory_efficient().set_grad_checkpointing()
    assert any(type(m).__name__ == "MemoryEfficientSiLU" for m in lean.modules())
    x = torch.randn(4, 3, 64, 64)
    y = torch.randint(0, 10, (4,))
    for m in (plain, lean):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    for (name, p), (_, q) in zip(plain.named_parameters(), lean.named_parameters()):
        assert (p.grad - q.grad).norm() <= 1e-4 * p.grad.norm() + 1e-5, name  # 1e-5: float noise on ~0 grads
    # recomputation in backward must not update BatchNorm statistics twice
    for (name, a), (_, b) in zip(plain.named_buffers(), lean.named_buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-7), name


def test_export_after_memory_efficient_training(tmp_path):
    model = effnet.create_model("efficientnet_b0", num_classes=5)
    model.set_memory_efficient(True)
    model.set_grad_checkpointing(True)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    report = export_model(model.eval(), tmp_path / "m.onnx", resolution=64)
    assert report.max_abs_diff_random <= 1e-3
    assert any(type(m).__name__ == "MemoryEfficientSiLU" for m in model.modules())  # caller's model untouched


def test_predict_backends_agree(photos):
    outs = {}
    for backend in ("torch", "onnx"):
        proc = run_cli("predict", "--model", "efficientnet_lite0", "--pretrained", "--backend", backend, "--json",
                       str(photos["chelsea"]), str(photos["coffee"]))
        outs[backend] = json.loads(proc.stdout)
    for a, b in zip(outs["torch"], outs["onnx"]):
        assert a["predictions"][0]["label"] == b["predictions"][0]["label"]
        assert a["predictions"][0]["score"] == pytest.approx(b["predictions"][0]["score"], abs=1e-4)
    assert outs["onnx"][1]["predictions"][0]["label"] == "espresso"


def test_one_cache_root_for_weights_and_exports(tmp_path, monkeypatch):
    """$EFFNET_HOME, else ~/.cache/effnet (the weights' old default, also with XDG_CACHE_HOME set): the weights
    cache and the backend exports."""
    from effnet.files import cache_root
    from effnet.models.zoo.downloads import effnet_home

    monkeypatch.delenv("EFFNET_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == effnet_home() == tmp_path / ".cache" / "effnet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    assert cache_root() == effnet_home() == tmp_path / "home"


def test_backend_exports_live_in_effnet_home_and_int8_calibration_leaves_nothing(tmp_path, monkeypatch, photos):
    """with_backend keeps its ONNX exports in $EFFNET_HOME/onnx and reuses them; an int8 export calibrated on
    image files links them from a temporary folder that is gone afterwards."""
    from effnet.deploy import with_backend

    home, tmp = tmp_path / "home", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("EFFNET_HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where this process's temporary folders go
    model = effnet.create_model(config_file(tmp_path, "tiny", width_mult=0.25, depth_mult=0.25, resolution=32),
                                num_classes=3).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    fp32 = with_backend(model, "onnx")
    (exported,) = (home / "onnx").glob("*.onnx")
    assert exported.name.endswith("-fp32.onnx") and Path(f"{exported}.json").is_file()  # its config beside it
    with torch.no_grad():
        ref = model(x)
        assert (fp32(x) - ref).abs().max() <= 1e-4
        written = exported.stat().st_mtime_ns
        assert (with_backend(model, "onnx")(x) - ref).abs().max() <= 1e-4
        assert exported.stat().st_mtime_ns == written  # the cached file, not a new export
        int8 = with_backend(model, "onnx-int8", images=[str(p) for p in photos.values()])
        assert 0 < (int8(x) - fp32(x)).abs().max() < ref.abs().max()  # quantized, still the same model
    assert len(list((home / "onnx").glob("*-int8-u8??.onnx"))) == 1  # int8 files are named by their scheme too
    assert not list(tmp.glob("effnet-calib-*"))
