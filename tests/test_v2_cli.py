"""EfficientNetV2 through the command line, as EfficientNet (V1) goes: `effnet train` a V2-B0-shaped config on the
bundled digits, `effnet eval` and `effnet predict` on two backends, `effnet serve` answering a real request, and
`effnet info` / `effnet family --family efficientnetv2` beside the V2 paper's tables."""

import json
from pathlib import Path

import pytest
import torch

import effnet
from effnet.models.nets.blocks import ConvBlock, FusedMBConv, MBConv
from effnet.models.nets.efficientnet_v2 import V2_VARIANTS
from effnet.models.nets.families import classifier_config
from tests.conftest import digit_subset, run_cli


@pytest.fixture(scope="module")
def v2_run(digits, tmp_path_factory):
    """One epoch (6 steps) of a V2-B0 table at width 0.25, depth 0.5, 32 px, on 3 digit classes x 30 images, with
    the lean training switches on; and its data."""
    root = tmp_path_factory.mktemp("v2run")
    data = digit_subset(digits, root / "data", 30, 10)
    config = classifier_config("efficientnetv2_b0").replace(name="tiny_v2", width_mult=0.25, depth_mult=0.5,
                                                            resolution=32, train_resolution=None, dropout=0.1)
    (root / "tiny_v2.json").write_text(config.to_json())
    run_cli("train", str(data), "--model", str(root / "tiny_v2.json"), "--epochs", "1", "--batch-size", "16",
            "--workers", "0", "--memory-efficient", "--grad-checkpoint", "--out", str(root / "run"), "--quiet")
    return root / "run", data


def _images(data: Path) -> list[str]:
    return [str(p) for d in sorted((data / "val").iterdir()) for p in sorted(d.glob("*.png"))[:2]]


def test_train_then_eval_and_predict_on_two_backends(v2_run):
    run, data = v2_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "tiny_v2" and summary["steps"] >= 5 and summary["stop_reason"] == "completed"
    model = effnet.load(run)
    assert [type(stage[0]) for stage in model.blocks] == [ConvBlock, FusedMBConv, FusedMBConv, MBConv, MBConv, MBConv]
    assert model.config.class_names == ("0", "1", "7")
    res = {b: json.loads(run_cli("eval", str(run), str(data), "--backend", b, "--json").stdout) for b in ("torch", "onnx")}
    assert res["onnx"]["images"] == 30 and res["onnx"]["top1"] == res["torch"]["top1"]
    assert res["onnx"]["loss"] == pytest.approx(res["torch"]["loss"], abs=1e-4)
    preds = {b: json.loads(run_cli("predict", "--model", str(run), "--backend", b, "--json", *_images(data)).stdout)
             for b in ("torch", "onnx")}
    assert len(preds["onnx"]) == 6
    for a, b in zip(preds["torch"], preds["onnx"]):
        assert a["predictions"][0]["label"] == b["predictions"][0]["label"] in {"0", "1", "7"}
        assert a["predictions"][0]["score"] == pytest.approx(b["predictions"][0]["score"], abs=1e-4)


def test_serve_a_v2_run_answers_like_predict(v2_run, tmp_path):
    pytest.importorskip("fastapi")
    from effnet.classify.predict import predict_files
    from tests.test_serve import assert_same_answer, httpx, post_image, running_server

    run, data = v2_run
    images = _images(data)[::2]
    expected, errors = predict_files(effnet.load(run), images, topk=3)
    assert not errors
    with running_server(tmp_path, "--model", str(run), "--backend", "onnx", "--max-wait-ms", "50") as (base, _, _):
        health = httpx.get(f"{base}/health").json()
        assert health["model"] == "tiny_v2" and health["backend"] == "onnx"
        for path, want in zip(images, expected):
            answer = post_image(base, Path(path).read_bytes(), Path(path).name, topk=3)
            assert answer.status_code == 200, answer.text
            assert_same_answer(answer.json(), want)


def test_info_prints_the_v2_papers_table_4_view():
    from effnet.models.paper.accounting import FAMILY_TABLES
    from effnet.models.paper.commands import FAMILY_CHOICES

    assert tuple(FAMILY_TABLES) == FAMILY_CHOICES  # every family `effnet family --family` offers has its table
    out = run_cli("info", "efficientnetv2_s").stdout
    for operator in ("Fused-MBConv1, k3x3", "Fused-MBConv4, k3x3", "MBConv6, k3x3", "21,458,488", "trained at 300"):
        assert operator in out, out
    data = json.loads(run_cli("info", "efficientnetv2_s", "--json").stdout)
    stages = data["stages"]  # V2's Table 4: stage 0 the stem ... 7 the head
    assert [s["stage"] for s in stages] == list(range(8)) and data["resolution"] == 384
    assert [(s["channels"], s["layers"]) for s in stages[1:7]] == [(24, 2), (48, 4), (64, 4), (128, 6), (160, 9),
                                                                  (256, 15)]


def test_family_v2_counts_every_variant_as_timm_does(tmp_path):
    """`effnet family --family efficientnetv2`: all eleven V2s measured beside the published numbers; each
    measured parameter count equals timm's model of that name (both built on the meta device)."""
    timm = pytest.importorskip("timm")
    chart = tmp_path / "v2.png"
    out = run_cli("family", "--family", "efficientnetv2", "--chart", str(chart)).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in V2_VARIANTS}
    assert list(rows) == list(V2_VARIANTS)
    for name, line in rows.items():
        with torch.device("meta"):
            theirs = timm.create_model(name if "_rw_" in name else f"tf_{name}")
        assert line.split()[5] == f"{sum(p.numel() for p in theirs.parameters()):,}", line
    assert "83.9" in rows["efficientnetv2_s"] and "Table 7" in rows["efficientnetv2_s"]  # the paper's V2-S
    assert "78.7" in rows["efficientnetv2_b0"] and "README" in rows["efficientnetv2_b0"]
    assert "arXiv:2104.00298" in out and chart.stat().st_size > 10_000
    bad = run_cli("family", "--family", "efficientnetv2", "--peers", check=False)
    assert bad.returncode == 2 and "--family efficientnet)" in bad.stderr
