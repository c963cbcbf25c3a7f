"""`effnet detect train|eval|predict` end to end on a tiny detect-digits set (tiny resolution, few steps)."""

import csv
import json
import re

import pytest
from PIL import Image

from effnet.train.loop import rate_text
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    data, run = root / "dd", root / "run"
    run_cli("data", "detect-digits", str(data), "--count", "8")
    proc = run_cli("detect", "train", str(data), "--model", "efficientdet_lite0", "--pretrained-backbone",
                   "--resolution", "64", "--epochs", "1", "--batch-size", "4", "--out", str(run))
    return data, run, proc


def test_train_writes_a_detector_run(tiny_run):
    data, run, _ = tiny_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["images_train"] == 8 and summary["classes"] == 10
    assert 0.0 <= summary["val_AP50"] <= 1.0
    assert (run / "model.safetensors").is_file() and (run / "checkpoint.pt").is_file()
    assert (run / "curves.png").stat().st_size > 1000
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "val_AP50" in rows[0] and "train_box_loss" in rows[0] and len(rows) == 2


def test_train_prints_each_epochs_rate_as_metrics_csv_has_it(tiny_run):
    _, run, proc = tiny_run
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    printed = re.findall(r"^epoch (\d+)/1: .*, (\S+) img/s, ", proc.stdout, re.MULTILINE)
    assert [int(epoch) for epoch, _ in printed] == [int(row["epoch"]) for row in rows] == [1]
    for (_, text), row in zip(printed, rows):
        rate = float(row["img_per_s"])  # images trained / seconds in the training steps
        assert rate > 0 and text == rate_text(rate) and abs(float(text) - rate) <= 0.05 * rate


def test_eval_json_has_coco_metrics(tiny_run):
    data, run, _ = tiny_run
    proc = run_cli("detect", "eval", str(run), str(data), "--json")
    res = json.loads(proc.stdout)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert key in res and (res[key] is None or 0.0 <= res[key] <= 1.0)
    assert res["images"] == 2 and res["images_per_s"] > 0


def test_eval_scores_the_int8_graph_calibrated_on_train(tiny_run, tmp_path, monkeypatch):
    """`detect eval --backend openvino-int8` exports the end-to-end graph, quantizes it with NNCF on DATA/train and
    scores it on DATA/val (the accuracy claim itself: benchmarks/detect_int8_ap.py)."""
    pytest.importorskip("openvino")
    data, run, _ = tiny_run
    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    proc = run_cli("detect", "eval", str(run), str(data), "--backend", "openvino-int8", "--json")
    res = json.loads(proc.stdout)
    assert res["backend"] == "openvino-int8" and res["images"] == 2 and res["images_per_s"] > 0
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= res[key] <= 1.0
    irs = list((tmp_path / "home" / "detect-openvino").glob("*-int8-*.xml"))
    assert len(irs) == 1 and "FakeQuantize" in irs[0].read_text()  # what was scored is the int8 graph
    empty = tmp_path / "no_train"
    (empty / "annotations").mkdir(parents=True)
    for name in ("annotations/instances_val.json", "val"):
        (empty / name).symlink_to(data / name)
    proc = run_cli("detect", "eval", str(run), str(empty), "--backend", "openvino-int8", check=False)
    assert proc.returncode == 2 and "calibrate int8" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_writes_json_and_drawn_pngs(tiny_run, tmp_path):
    data, run, _ = tiny_run
    images = sorted((data / "val").glob("*.jpg"))
    twin = tmp_path / "elsewhere" / (images[0].stem + ".png")  # another folder, the same name
    twin.parent.mkdir()
    Image.open(images[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(twin)
    out = tmp_path / "pred"
    proc = run_cli("detect", "predict", str(run), *map(str, images), str(twin), "--out", str(out), "--json",
                   "--score-threshold", "0.0")
    preds = json.loads(proc.stdout)
    assert [p["path"] for p in preds] == [*map(str, images), str(twin)]  # effnet.results.detection's schema
    drawn_twice = [Image.open(out / f"{images[0].stem}{s}.png") for s in ("", "-2")]  # neither overwrites
    assert drawn_twice[0].tobytes() != drawn_twice[1].tobytes()
    det = preds[0]["detections"]
    assert det and set(det[0]) == {"box", "score", "label", "index"} and det[0]["label"] in "0123456789"
    drawn = Image.open(out / (images[0].stem + ".png"))
    assert drawn.size == Image.open(images[0]).size
    assert json.loads((out / "predictions.json").read_text())[0]["path"] == str(images[0])
    lines = run_cli("detect", "predict", "--model", str(run), str(images[0]), "--score-threshold", "0.0").stdout
    first = lines.splitlines()[0].split(" ", 2)  # "7 0.42 [x1 y1 x2 y2]"
    assert first[0] == det[0]["label"] and float(first[1]) == round(det[0]["score"], 2)
    assert [round(v) for v in det[0]["box"]] == [int(v) for v in first[2].strip("[]").split()]


def test_user_mistakes_are_one_line_errors(tiny_run, tmp_path):
    data, run, _ = tiny_run
    proc = run_cli("detect", "predict", str(tmp_path / "nope"), str(data / "val" / "00000.jpg"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("effnet: error:") and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    proc = run_cli("detect", "predict", str(run), str(bad), check=False)
    assert proc.returncode == 2 and "bad.jpg" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("detect", "train", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "instances_train.json" in proc.stderr


def test_export_command_writes_a_verified_onnx(tiny_run, tmp_path):
    data, run, _ = tiny_run
    images = sorted((data / "val").glob("*.jpg"))
    proc = run_cli("detect", "export", str(run), "-o", str(tmp_path / "det.onnx"), "--images", *map(str, images))
    assert "decoding + NMS inside" in proc.stdout and (tmp_path / "det.onnx").stat().st_size > 1_000_000


def test_effnet_export_takes_a_detector_run(tiny_run, tmp_path):
    """`effnet export` (the deploy command) hands detectors to the end-to-end export, checked the same way."""
    data, run, _ = tiny_run
    proc = run_cli("export", str(run), "-o", str(tmp_path / "e2e.onnx"), "--calibration", str(data / "val"))
    assert "decoding + NMS inside" in proc.stdout and (tmp_path / "e2e.onnx").stat().st_size > 1_000_000
    import onnx

    def op_types(graph):  # NMS sits in the "any boxes left?" branch of an If node: walk subgraphs too
        for node in graph.node:
            yield node.op_type
            for attr in node.attribute:
                yield from op_types(attr.g)

    assert "NonMaxSuppression" in set(op_types(onnx.load(str(tmp_path / "e2e.onnx")).graph))
    proc = run_cli("export", str(run), "--int8", "-o", str(tmp_path / "x.onnx"), check=False)
    assert proc.returncode == 2 and "detectors export to --format onnx" in proc.stderr


def test_create_model_takes_a_detector_run_folder(tiny_run):
    """The Python API takes what `effnet detect predict RUN` takes: the run's trained detector, weights and all."""
    import torch

    import effnet

    _, run, _ = tiny_run
    model, saved = effnet.create_model(str(run)).eval(), effnet.load(str(run / "model.safetensors")).eval()
    assert type(model).__name__ == "EfficientDet" and model.config == saved.config
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(*(sum(m(x), []) for m in (model, saved))):
        assert torch.equal(a, b)
    three = effnet.create_model(str(run), num_classes=3)  # fine-tuning: a new class output layer, the rest kept
    assert three.config.num_classes == 3 and torch.equal(three.box_net.predict.pw.weight, saved.box_net.predict.pw.weight)
