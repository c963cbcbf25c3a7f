"""EfficientNetV2 through every path EfficientNet (V1) has: the lean training kernels (memory-efficient layers, bf16,
gradient checkpointing) give the plain model's gradients; ONNX, TorchScript, OpenVINO and ExecuTorch exports, and
their int8 forms (ONNX Runtime, NNCF, PT2E), verified against PyTorch on real photos; ``effnet explain`` on a V2.

The model: V2-S's table with one or two blocks a stage at quarter width, 64 px (:func:`small_v2`), so that every
block kind -- the one-conv block, Fused-MBConv, MBConv -- has a residual. The int8 checks measure what V1's do (top-1
agreement with fp32 on real photos) on a model that has something to agree on: :func:`photo_classifier` trains it
for seconds to tell the 17 scikit-image photos apart (random weights give near-uniform logits, where agreement is
trivially 1.0 -- or, fitted as a head on random features, a decision too fragile for any int8 model).
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cpu import int8_scheme
from effnet.deploy import export_model
from effnet.models.nets.blocks import ConvBlock, FusedMBConv, MBConv
from effnet.models.nets.efficientnet_v2 import V2_S_STAGES
from effnet.models.nets.families import classifier_config
from tests.conftest import randomize_bn, run_cli

RES = 64


def small_v2(**changes) -> effnet.ModelConfig:
    """V2-S's stage table (conv, Fused-MBConv x2, MBConv x3) with 2, 2, 1, 2, 1, 1 blocks at width 0.25."""
    blocks = tuple(replace(b, repeats=r) for b, r in zip(V2_S_STAGES, (2, 2, 1, 2, 1, 1)))
    settings = dict(name="v2_small", blocks=blocks, width_mult=0.25, resolution=RES, train_resolution=None)
    return classifier_config("efficientnetv2_s").replace(**{**settings, **changes})


def test_the_small_v2_has_every_block_kind_with_a_residual():
    model = effnet.create_model(small_v2())
    assert {type(block) for stage in model.blocks for block in stage if block.has_residual} == {
        ConvBlock, FusedMBConv, MBConv}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from effnet.data.bundled import write_photos

    out = tmp_path_factory.mktemp("photos")
    write_photos(out, count=48)  # 17 photos, 2-3 random crops of each
    return out


def photo_classifier(photo_dir: Path, steps: int = 30) -> torch.nn.Module:
    """:func:`small_v2` trained on the photo views (labels: which photo; flips; label smoothing 0.1), then its
    BatchNorm statistics measured over them (precise BN: 30 steps are too few for momentum 0.01). Measured: every
    view right, 48 of 48 with a top-1 margin > 0.1, logits up to ~6."""
    from effnet.deploy.export import real_batch

    files = sorted(photo_dir.glob("*.jpg"))
    names = sorted({p.stem.split("_", 1)[1] for p in files})
    labels = torch.tensor([names.index(p.stem.split("_", 1)[1]) for p in files])
    torch.manual_seed(0)
    model = effnet.create_model(small_v2(name="v2_photos", num_classes=len(names), class_names=tuple(names),
                                         dropout=0.0, drop_path_rate=0.0))
    x, read = real_batch(model.config, str(photo_dir))
    assert [Path(r).name for r in read] == [p.name for p in files]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        flipped = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x, x.flip(-1))
        loss = torch.nn.functional.cross_entropy(model(flipped), labels, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # the plain average over the pass
    with torch.no_grad():
        model(x)
        model.eval()
        assert (model(x).argmax(1) == labels).float().mean() >= 0.95
    return model


@pytest.fixture(scope="module")
def trained(photo_dir, tmp_path_factory):
    """The photo classifier, and the same saved as an effnet file (what the command line takes)."""
    model = photo_classifier(photo_dir)
    path = tmp_path_factory.mktemp("v2") / "v2_photos.safetensors"
    effnet.save(model, path)
    return model, path


# ------------------------------------------------------------------------------------------------ lean training

def _two_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Two training steps (gradients of the second kept); returns the bytes autograd saved in the last forward."""
    stored: dict[int, int] = {}

    def pack(t):
        stored[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for _ in range(2):
        model.zero_grad()
        stored.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
    return sum(stored.values())


def test_lean_training_gives_the_plain_gradients_and_exports(monkeypatch, tmp_path):
    """set_memory_efficient on V2: every ConvBNAct's BatchNorm + SiLU (the Fused-MBConv's k x k expansion, the one-conv
    block's conv) stores only the conv output, SE gating its logits, MBConv's expansion goes into its depthwise
    conv unstored (threshold 0: all); with and without per-block gradient checkpointing the gradients, running
    statistics and batch counters are the plain model's (float32), and autograd keeps fewer bytes. The lean model
    then exports (plain ops) and matches PyTorch."""
    from effnet.models.nets import lean as lean_kernels

    monkeypatch.setattr(lean_kernels, "LEAN_FUSE_MIN_BYTES", 0)
    config = small_v2(num_classes=10, drop_path_rate=0.0, dropout=0.0)
    plain = effnet.create_model(config).train()
    lean, ckpt = (effnet.create_model(config).train() for _ in range(2))
    for model in (lean, ckpt):
        model.load_state_dict(plain.state_dict())
    lean.set_memory_efficient(True)
    ckpt.set_memory_efficient(True).set_grad_checkpointing(True)
    x, y = torch.randn(4, 3, RES, RES), torch.randint(0, 10, (4,))
    saved = {name: _two_steps(m, x, y) for name, m in (("plain", plain), ("lean", lean), ("ckpt", ckpt))}
    for other in (lean, ckpt):
        for (n, p), q in zip(plain.named_parameters(), other.parameters()):
            # a projection's BatchNorm bias feeds a training-mode BatchNorm (plus the residual): its true gradient
            # is ~0 and both paths return rounding noise (as V1's test)
            assert (p.grad - q.grad).norm() <= 1e-4 * p.grad.norm() + 5e-5, n
        for (n, a), b in zip(plain.named_buffers(), other.buffers()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), n
    assert saved["lean"] < 0.9 * saved["plain"], saved
    assert saved["ckpt"] < 0.5 * saved["plain"], saved  # block inputs only
    report = export_model(ckpt.eval(), tmp_path / "lean.onnx")
    assert report.max_abs_diff_random <= 1e-4 and report.max_abs_diff_real <= 1e-4
    assert any(type(m).__name__ == "MemoryEfficientSiLU" for m in ckpt.modules())  # the caller's model untouched


def test_lean_bf16_training_keeps_the_gradients():
    """bf16 autocast, channels_last, memory-efficient layers and checkpointing of the first 3 stages (the recipe of
    benchmarks/bench_train.py) on V2: the gradients point where plain bf16 training's do."""
    torch.manual_seed(0)
    config = small_v2(num_classes=10, drop_path_rate=0.0, dropout=0.0)
    plain, lean = (effnet.create_model(config).train().to(memory_format=torch.channels_last) for _ in range(2))
    lean.load_state_dict(plain.state_dict())
    lean.set_memory_efficient().set_grad_checkpointing(True, stages=3)
    x = torch.randn(4, 3, RES, RES).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    for model in (plain, lean):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    for (n, p), q in zip(plain.named_parameters(), lean.parameters()):
        if p.grad.norm() > 1e-3 and not n.endswith("project.bn.bias"):  # as V1's: ~0 true gradients are noise
            assert torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0) > 0.97, n


# ------------------------------------------------------------------------------------------------------ exports

def test_tf_padded_v2_exports_static_pads_to_onnx_and_torchscript(tmp_path):
    """timm's tf_efficientnetv2_* pad like TensorFlow: the strided Fused-MBConv expansions and the stem get
    asymmetric pads, frozen to constants for the exported size (67 px: odd sizes pad unevenly)."""
    import onnx

    model = effnet.create_model(small_v2(tf_padding=True)).eval()
    randomize_bn(model)
    report = export_model(model, tmp_path / "v2.onnx", resolution=67)
    assert report.max_abs_diff_random <= 1e-4 and report.max_abs_diff_real <= 1e-4 and report.real_images >= 4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "v2.onnx")).graph.node}
    assert "Pad" in ops and "Shape" not in ops
    report = export_model(model, tmp_path / "v2.pt", "torchscript", resolution=67)
    assert report.max_abs_diff_real <= 1e-4
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        assert (torch.jit.load(str(tmp_path / "v2.pt"))(x) - model(x)).abs().max() <= 1e-4


def test_onnx_int8_export_agrees_with_fp32_on_real_photos(trained, photo_dir, tmp_path):
    """`effnet export FILE --int8` of a V2 (ONNX Runtime static quantization, calibrated on the photos): V1's
    test's checks. Measured: 48 of 48 views agree."""
    _, path = trained
    out = tmp_path / "v2_int8.onnx"
    proc = run_cli("export", str(path), "-o", str(out), "--int8", "--calibration", str(photo_dir), "--json")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["int8"] and report["real_images"] == 48 and report["max_abs_diff_real"] <= 1e-4
    assert report["confident_images"] >= 40, report
    assert report["top1_agreement_confident"] >= 0.95 and report["top1_agreement"] >= 0.95, report
    import onnx

    # the weights in 8 bits, signed or not as this CPU's int8 scheme says (all but the stem's and the classifier's,
    # kept float); a model this small is mostly graph in the file, so the file sizes say little (V1's test compares
    # them for Lite0)
    weights = onnx.TensorProto.INT8 if int8_scheme().onnx_signed_weights else onnx.TensorProto.UINT8
    stored = {weights: 0, onnx.TensorProto.FLOAT: 0}
    for tensor in onnx.load(str(out)).graph.initializer:
        stored[tensor.data_type] = stored.get(tensor.data_type, 0) + len(tensor.raw_data)
    assert stored[weights] > 3 * stored[onnx.TensorProto.FLOAT], stored  # measured 111 kB vs 33 kB


def test_openvino_fp32_and_int8_exports(trained, photo_dir, tmp_path):
    """OpenVINO IR (fp32) equals PyTorch; NNCF's int8 agrees with it. Measured 45 of 48: the three views of
    skimage's colorwheel flip -- as they do for a V1 (B0's table) trained the same way, and not with ONNX Runtime's
    int8: NNCF's activation ranges (averaged over the calibration images) cut that photo's saturated colours."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from effnet.classify.export import LOGITS
    from effnet.deploy.openvino import compile_ir, ov_run

    model, _ = trained
    report = export_model(model, tmp_path / "v2.xml", "openvino", batch="dynamic", int8=True,
                          calibration=str(photo_dir), outputs=LOGITS)
    assert report.max_abs_diff_random <= 1e-4 and report.max_abs_diff_real <= 1e-4
    assert report.agreement["top1_agreement"] >= 0.9, report
    x = torch.randn(3, 3, RES, RES)  # a batch size the check did not use: the fp32 IR kept beside the int8 one
    with torch.no_grad():
        assert np.abs(ov_run(compile_ir(tmp_path / "v2.fp32.xml"), x) - model(x).numpy()).max() <= 1e-4
    # int8 weights; measured 0.36 of the fp32 file (per-channel scales weigh more in a model this small)
    assert (tmp_path / "v2.bin").stat().st_size < 0.45 * (tmp_path / "v2.fp32.bin").stat().st_size


def test_executorch_fp32_and_int8_programs(trained, photo_dir, tmp_path):
    """The XNNPACK programs of a V2 in ExecuTorch's runtime: fp32 equals PyTorch on the photos, PT2E int8 agrees
    with it (measured 48 of 48), and the config beside the program keeps the V2 table (block kinds) and class
    names."""
    pytest.importorskip("executorch.runtime")
    from effnet.classify.export import LOGITS
    from effnet.deploy.executorch import PteRunner
    from effnet.deploy.export import real_batch

    model, _ = trained
    report = export_model(model, tmp_path / "v2.pte", "executorch", int8=True, calibration=str(photo_dir),
                          tolerance=1e-4, outputs=LOGITS)
    assert report.real_images == 48 and report.max_abs_diff_real <= 1e-4
    assert report.agreement["top1_agreement"] >= 0.95, report
    real, _ = real_batch(model.config, str(photo_dir))
    with torch.no_grad():
        want = model(real).numpy()
    assert np.abs(PteRunner(tmp_path / "v2.pte.fp32.pte")(real) - want).max() <= 1e-4
    assert np.abs(PteRunner(tmp_path / "v2.pte")(real) - want).max() > 1e-3  # really quantized
    saved = effnet.ModelConfig.from_dict(json.loads((tmp_path / "v2.pte.json").read_text())["model"])
    assert saved.blocks == model.config.blocks and saved.class_names == model.config.class_names


# ------------------------------------------------------------------------------------------------------ explain

def test_explain_a_v2_on_a_photo_it_knows(trained, photos, tmp_path):
    """`effnet explain` at the head of a V2 (Grad-CAM via torchcam): the photo's own class, a map over the part of
    the photo the model saw; a layer it lacks names the model's own last stages (V2-S has six: blocks.5 last)."""
    _, path = trained
    cam, heat = tmp_path / "cam.png", tmp_path / "map.png"
    info = json.loads(run_cli("explain", str(path), str(photos["chelsea"]), "-o", str(cam), "--heatmap", str(heat),
                              "--json").stdout)
    assert info["class_name"] == "chelsea" and info["predicted"] == info["class_index"] and info["layer"] == "head"
    photo = Image.open(photos["chelsea"])
    m = np.asarray(Image.open(heat), dtype=np.float32)
    assert Image.open(cam).size == photo.size and m.shape == (photo.size[1], photo.size[0]) and m.max() > 200
    bad = run_cli("explain", str(path), str(photos["chelsea"]), "-o", str(tmp_path / "x.png"), "--layer", "blocks.6",
                  check=False)
    assert bad.returncode == 2 and "(e.g. head, blocks.5, blocks.4)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
