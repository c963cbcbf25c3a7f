"""The end-to-end detector graph (decoding + NMS inside) in ONNX Runtime and OpenVINO behind
``effnet.detect.Predictor``, ``effnet export --format openvino [--int8]`` and ``detect predict --backend``; a tiny
input size (160 px) on real photos keeps it cheap."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import effnet
from effnet.detect import Predictor
from effnet.detect.spec import TASK
from effnet.errors import UsageError
from tests.conftest import randomize_bn, run_cli
from tests.test_detect_pipeline import assert_served_like

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(np.asarray(getattr(skimage.data, n)())).convert("RGB") for n in ("chelsea", "coffee",
                                                                                              "astronaut")]


def decisive_detector(resolution: int) -> torch.nn.Module:
    """A Lite0 with TF "SAME" padding (as the published weights: odd pyramid sizes need it exported right), varied
    BatchNorm statistics and decisive class scores for three classes: boxes on real photos worth comparing."""
    torch.manual_seed(0)
    model = effnet.create_model("efficientdet_lite0", num_classes=3, tf_padding=True).eval()
    randomize_bn(model)
    with torch.no_grad():
        model.class_net.predict.pw.bias.fill_(-4.0)
        model.class_net.predict.pw.weight.mul_(3)
    model.config = model.config.replace(resolution=resolution, class_names=("cat", "cup", "person"))
    return model


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """:func:`decisive_detector` at 160 px (P5 5x5: odd), saved as an effnet file."""
    model = decisive_detector(160)
    path = tmp_path_factory.mktemp("det") / "det.safetensors"
    effnet.save(model, path)
    return model, path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))


def test_exported_graph_gives_the_torch_predictors_boxes(detector, home):
    model, _ = detector
    images = _photos()
    want = Predictor(model, score_threshold=0.1)(images)
    assert sum(len(w["scores"]) for w in want) >= 6
    as_tensors = Predictor(model, score_threshold=0.1)([TF.to_dtype(TF.to_image(im), torch.float32, scale=True)
                                                        for im in images])  # CHW floats in [0, 1]: the same boxes
    for t, w in zip(as_tensors, want):
        assert torch.equal(t["labels"], w["labels"]) and torch.allclose(t["boxes"], w["boxes"])
    with pytest.raises(UsageError, match="PIL images or CHW float tensors"):
        Predictor(model)([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    torch_served = TASK.served(model, "auto", copies=2)
    assert torch_served.backend == "torch" and torch_served.engines.first is torch_served.engines.get()
    assert_served_like(torch_served, images, want)
    for backend in ("onnx", "openvino"):  # one verified ONNX graph (cached), then its OpenVINO IR
        got = Predictor(model, backend=backend, score_threshold=0.1)(images)
        for g, w in zip(got, want):
            assert torch.equal(g["labels"], w["labels"]) and g["names"] == w["names"]
            assert float((g["scores"] - w["scores"]).abs().max()) < 1e-5
            assert float((g["boxes"] - w["boxes"]).abs().max()) < 1e-2  # pixels of the photo (up to 600 px)
        assert_served_like(TASK.served(model, backend, copies=2), images, want)


def test_openvino_int8_export_and_backend_choices(detector, tmp_path, photos, home):
    _, path = detector
    calib = tmp_path / "calib"
    calib.mkdir()
    for src in photos.values():
        (calib / src.name).write_bytes(src.read_bytes())
    proc = run_cli("export", str(path), "--format", "openvino", "--int8", "--calibration", str(calib), "-o",
                   str(tmp_path / "det.xml"), "--json")
    assert (tmp_path / "det.xml").is_file() and (tmp_path / "det.bin").is_file()
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["int8_detections"] > 0 and report["fp32_kept_by_int8"] >= 0.5 and "int8 vs fp32" in proc.stdout
    proc = run_cli("detect", "predict", str(path), str(photos["coffee"]), "--backend", "onnx-int8", check=False)
    assert proc.returncode == 2 and "onnx-int8" in proc.stderr and "Traceback" not in proc.stderr
