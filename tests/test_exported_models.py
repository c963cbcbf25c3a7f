"""An exported file is a model: every export writes ``PATH.json`` beside it (config, engine, precision, parity,
sha256), and ``predict``, ``eval``, ``serve``, ``detect predict`` and ``effnet.load_model`` / ``create_model`` take
``.onnx``, ``.xml`` and ``.pte`` files and run them on the engine the file names, giving PyTorch's answers on real
photos. Run folders and saved files work in ``create_model`` as on the command line."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.deploy.options import ExportOptions
from effnet.deploy.predictors import ExportedFile
from effnet.errors import UsageError
from effnet.tasks import export
from tests.conftest import config_file, digit_subset, photo_statistics, run_cli
from tests.test_serve import post_image, running_server

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("executorch")

FILES = {"onnx": "l0.onnx", "openvino": "l0.xml", "executorch": "l0.pte"}


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained=True).eval()


@pytest.fixture(scope="module")
def exports(lite0, tmp_path_factory) -> dict[str, Path]:
    """Pretrained Lite0 in each runtime format, each verified as `effnet export` verifies it."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt, name in FILES.items():
        export("efficientnet_lite0", ExportOptions(str(folder / name), fmt), pretrained=True)
        out[fmt] = folder / name
    return out


@pytest.fixture(scope="module")
def torch_top1(lite0, photos) -> dict[str, str]:
    """PyTorch's top-1 label for each photo, as `effnet predict` computes it."""
    from effnet.classify.predict import predict_files

    results, _ = predict_files(lite0, list(photos.values()), topk=1)
    return {Path(r["path"]).stem: r["predictions"][0]["label"] for r in results}


def test_every_export_writes_its_config_with_engine_precision_and_hashes(exports, lite0):
    for fmt, path in exports.items():
        side = json.loads(Path(f"{path}.json").read_text())
        info, config = side["effnet_export"], side["model"]
        assert info["format"] == fmt and info["precision"] == "fp32" and info["graph"] == "model"
        assert info["verified"]["real_images"] == 5 and info["verified"]["max_abs_diff_real"] < 1e-3
        assert path.name in info["files"] and len(info["files"][path.name]) == 64
        assert config["name"] == "efficientnet_lite0" and config["resolution"] == lite0.config.resolution
        assert tuple(config["mean"]) == tuple(lite0.config.mean) and config["num_classes"] == 1000  # ImageNet's names
    assert "l0.bin" in json.loads(Path(f"{exports['openvino']}.json").read_text())["effnet_export"]["files"]


def test_predict_on_each_exported_file_gives_pytorchs_top1(exports, photos, torch_top1):
    for fmt, path in exports.items():
        rows = json.loads(run_cli("predict", "--model", str(path), *map(str, photos.values()), "--topk", "1",
                                  "--json").stdout)
        got = {Path(r["path"]).stem: r["predictions"][0]["label"] for r in rows}
        assert got == torch_top1, fmt


def test_load_model_and_create_model_run_an_exported_file(exports, lite0, photos):
    from effnet.data import eval_transform

    x = torch.stack([eval_transform(lite0.config)(Image.open(p).convert("RGB")) for p in photos.values()])
    with torch.no_grad():
        want = lite0(x)
    for fmt, path in exports.items():
        model = effnet.load_model(str(path))
        assert isinstance(model, ExportedFile) and model.info.backend == fmt
        got = model(x)
        assert torch.equal(got.argmax(1), want.argmax(1)) and float((got - want).abs().max()) < 1e-3
        assert torch.equal(effnet.create_model(str(path))(x).argmax(1), want.argmax(1))
        assert torch.equal(effnet.load(str(path))(x).argmax(1), want.argmax(1))
    with pytest.raises(UsageError, match="exported graph and runs as exported"):
        effnet.create_model(str(exports["onnx"]), num_classes=3)
    with pytest.raises(UsageError, match="runs on --backend auto or onnx, not openvino"):
        effnet.load_model(str(exports["onnx"])).engine("openvino")


def test_eval_on_each_exported_file_matches_pytorch(exports, photos, torch_top1, tmp_path):
    """An ImageFolder whose class folders are PyTorch's top-1 for each photo: 100% for PyTorch, so for each
    exported file too when it gives PyTorch's class."""
    for stem, label in torch_top1.items():
        (tmp_path / "val" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photos[stem], tmp_path / "val" / label / f"{stem}.png")
    for fmt, path in exports.items():
        res = json.loads(run_cli("eval", str(path), str(tmp_path), "--json").stdout)
        assert res["images"] == len(photos) and res["top1"] == 100.0 and res["backend"] == fmt, fmt
    proc = run_cli("eval", str(exports["onnx"]), str(tmp_path), "--resolution", "256", check=False)
    assert proc.returncode == 2 and "was exported at 224 px" in proc.stderr


def test_serve_runs_each_exported_file(exports, photos, torch_top1, tmp_path):
    for fmt, path in exports.items():
        with running_server(tmp_path, "--model", str(path)) as (base, _, _):
            health = httpx.get(f"{base}/health").json()
            assert health["kind"] == "classify"
            for stem in ("chelsea", "coffee"):
                answer = post_image(base, photos[stem].read_bytes(), f"{stem}.png").json()["results"][0]
                assert answer["predictions"][0]["label"] == torch_top1[stem], (fmt, stem)


def test_a_file_without_its_config_or_with_another_is_one_line(exports, tmp_path, photos):
    bare = tmp_path / "bare.onnx"
    shutil.copy(exports["onnx"], bare)
    proc = run_cli("predict", "--model", str(bare), str(photos["chelsea"]), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"effnet: error: {bare}: no bare.onnx.json beside it (the config `effnet export` writes: task, "
        "preprocessing, class names); copy it along with the model, or export again"]
    shutil.copy(f"{exports['openvino']}.json", f"{bare}.json")  # another file's config
    proc = run_cli("predict", "--model", str(bare), str(photos["chelsea"]), check=False)
    assert proc.returncode == 2 and f"describes an export in openvino (model graph), not {bare.name}" in proc.stderr
    shutil.copy(f"{exports['onnx']}.json", f"{bare}.json")
    bare.write_bytes(bare.read_bytes()[:-10] + b"0123456789")  # replaced after export
    proc = run_cli("predict", "--model", str(bare), str(photos["chelsea"]), check=False)
    assert proc.returncode == 2 and "sha256 differs" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("predict", "--model", str(exports["onnx"]), "--backend", "torch", str(photos["chelsea"]),
                   check=False)
    assert proc.returncode == 2 and "runs on --backend auto or onnx, not torch" in proc.stderr


# ---------------------------------------------------------------------------------------------- detectors

def small_detector(images: list) -> torch.nn.Module:
    """A Lite0 detector with TF "SAME" padding (as the published weights; the exports freeze it), cut to seconds of
    lowering: one BiFPN cell and head layer, quarter-depth backbone, 128 px. Random weights with BatchNorm
    statistics measured on ``images`` (:func:`tests.conftest.photo_statistics`: each photo gets detections of its
    own), and class scores decisive enough for a few boxes per photo."""
    torch.manual_seed(0)
    config = effnet.create_model("efficientdet_lite0", num_classes=3, tf_padding=True).config
    config = config.replace(fpn_repeats=1, head_repeats=1, resolution=128, class_names=("cat", "cup", "person"),
                            backbone=config.backbone.replace(depth_mult=0.25, drop_path_rate=0.0))
    model = photo_statistics(effnet.create_model(config, num_classes=3), images)
    with torch.no_grad():
        model.class_net.predict.pw.weight.mul_(1.5)
        model.class_net.predict.pw.bias.fill_(-4.0)
    return model


@pytest.fixture(scope="module")
def detector(tmp_path_factory, photos):
    """:func:`small_detector`, saved, and exported end to end (ONNX, OpenVINO IR), raw (ONNX) and as an ExecuTorch
    program."""
    model = small_detector([Image.open(p).convert("RGB") for p in photos.values()])
    folder = tmp_path_factory.mktemp("det")
    saved = folder / "det.safetensors"
    effnet.save(model, saved)
    files = {"det.onnx": ("onnx", {}), "det.xml": ("openvino", {}), "det.pte": ("executorch", {}),
             "raw.onnx": ("onnx", {"raw": True})}
    for name, (fmt, settings) in files.items():
        export(str(saved), ExportOptions(str(folder / name), fmt, settings=settings))
    return saved, [folder / name for name in files]


def test_detect_predict_on_each_exported_file_gives_the_models_boxes(detector, photos):
    saved, files = detector
    images = [str(photos["chelsea"]), str(photos["coffee"])]
    want = json.loads(run_cli("detect", "predict", str(saved), *images, "--score-threshold", "0.2", "--json").stdout)
    assert sum(len(p["detections"]) for p in want) >= 4
    assert len({len(p["detections"]) for p in want}) > 1  # the photos get different detections
    for path in files:
        got = json.loads(run_cli("detect", "predict", str(path), *images, "--score-threshold", "0.2",
                                 "--json").stdout)
        for g, w in zip(got, want):
            assert [d["label"] for d in g["detections"]] == [d["label"] for d in w["detections"]], path.name
            diff = np.abs(np.array([d["box"] for d in g["detections"]]) - [d["box"] for d in w["detections"]])
            assert diff.max() < 0.05, path.name  # pixels of the photo
    graph = json.loads(Path(f"{files[0]}.json").read_text())["effnet_export"]["graph"]
    raw = json.loads(Path(f"{files[3]}.json").read_text())["effnet_export"]["graph"]
    assert (graph, raw) == ("end_to_end", "raw")


# ---------------------------------------------------------------------------------------------- run folders

def test_create_model_takes_a_classifier_run_folder(digits, tmp_path):
    data = digit_subset(digits, tmp_path / "data", 12, 3)
    cfg = config_file(tmp_path, "tiny", width_mult=0.25, depth_mult=0.25, resolution=32)
    run = tmp_path / "run"
    run_cli("train", str(data), "--model", str(cfg), "--epochs", "1", "--batch-size", "12", "--out", str(run),
            "--quiet")
    model = effnet.create_model(str(run))
    saved = effnet.load(str(run))
    x = torch.randn(2, 3, 32, 32)
    assert model.config.class_names == ("0", "1", "7")
    assert torch.equal(model.eval()(x), saved.eval()(x))
    five = effnet.create_model(str(run), num_classes=5)  # transfer: a new head, the trained body
    assert five.config.num_classes == 5 and torch.equal(five.stem.conv.weight, saved.stem.conv.weight)
    with pytest.raises(UsageError, match="carries its weights"):
        effnet.create_model(str(run), pretrained=True)
