"""OpenVINO backend: IR export verified against PyTorch, fp32 / bf16 execution, NNCF int8, predict and eval."""

import json

import numpy as np
import pytest
import torch

import effnet
from tests.conftest import config_file, digit_subset, randomize_bn, run_cli

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from effnet.deploy import OpenVinoPredictor, auto_backend, export_model, with_backend  # noqa: E402
from effnet.deploy.openvino import compile_ir, cpu_has_bf16, ov_run  # noqa: E402
from effnet.cpu import FLAGS_ENV  # noqa: E402


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from effnet.data.bundled import write_photos

    out = tmp_path_factory.mktemp("photos")
    write_photos(out, count=48)
    return out


def test_openvino_export_matches_pytorch_and_keeps_only_the_ir(tmp_path):
    model = effnet.create_model("efficientnet_b0", tf_padding=True).eval()
    randomize_bn(model)
    report = export_model(model, tmp_path / "b0.xml", "openvino", batch="dynamic", resolution=97)
    assert report.max_abs_diff_random <= 1e-4 and report.max_abs_diff_real <= 1e-4 and report.real_images >= 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.bin", "b0.xml", "b0.xml.json"]  # no temporary left
    compiled = compile_ir(tmp_path / "b0.xml", "fp32")
    x = torch.randn(3, 3, 97, 97)  # a batch size the check did not use: the batch axis is dynamic
    with torch.no_grad():
        assert np.abs(ov_run(compiled, x) - model(x).numpy()).max() <= 1e-4


@pytest.mark.parametrize("batch", ["dynamic", 1])
def test_runner_static_shapes_and_chunks_match_pytorch(tmp_path, batch):
    """The backend's Runner: batch 1 and 2 in one call, batch 5 as chunks 2 + 2 + 1 across two streams (results
    in order), an IR exported for a fixed batch run image by image; all equal PyTorch."""
    from effnet.deploy.openvino import Runner

    model = effnet.create_model(config_file(tmp_path, "small", width_mult=0.5, depth_mult=0.5, resolution=64)).eval()
    randomize_bn(model)
    export_model(model, tmp_path / "m.xml", "openvino", batch=batch)
    runner = Runner(tmp_path / "m.xml", "fp32", threads=2)
    for n in (1, 2, 5):
        x = torch.randn(n, 3, 64, 64)
        with torch.no_grad():
            assert np.abs(runner(x) - model(x).numpy()).max() <= 1e-4, n
    if batch == "dynamic":
        assert {key for key in runner._compiled} == {(1, False), (2, False), (2, True), (1, True)}
    with pytest.raises(ValueError, match="empty batch"):
        runner(torch.zeros(0, 3, 64, 64))


def test_openvino_export_refuses_broken_parity_and_leaves_nothing(tmp_path):
    proc = run_cli("export", "efficientnet_lite0", "--pretrained", "--format", "openvino", "-o",
                   str(tmp_path / "x.xml"), "--resolution", "96", "--tolerance", "1e-12", check=False)
    assert proc.returncode == 2 and "does not match PyTorch" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_openvino_int8_export_agrees_with_fp32_on_real_photos(tmp_path, photo_dir):
    out = tmp_path / "l0_int8.xml"
    proc = run_cli("export", "efficientnet_lite0", "--pretrained", "--format", "openvino", "-o", str(out), "--int8",
                   "--calibration", str(photo_dir), "--json")
    assert "━" not in proc.stdout + proc.stderr  # NNCF's progress bars stay off the command's output
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["int8"] and report["real_images"] == 48 and report["format"] == "openvino"
    assert report["top1_agreement_confident"] >= 0.95, report
    assert report["top1_agreement"] >= 0.75, report
    assert (tmp_path / "l0_int8.bin").stat().st_size < 0.35 * (tmp_path / "l0_int8.fp32.bin").stat().st_size


def test_fp32_is_fp32_and_bf16_is_reported_apart(photos, monkeypatch, capfd):
    """OpenVINO computes in bf16 by default where the CPU has it: the fp32 backend must ask for f32. On a CPU
    without native bf16 (features faked) ``openvino-bf16`` runs f32 and says so."""
    model = effnet.create_model("efficientnet_lite0", pretrained=True).eval()
    fp32 = with_backend(model, "openvino")
    bf16 = with_backend(model, "openvino-bf16")
    assert isinstance(fp32, OpenVinoPredictor)
    assert fp32.runner.compiled(1).get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert fp32.runner.compiled(2, streamed=True).get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    from effnet.data import eval_transform, load_image

    x = torch.stack([eval_transform(model.config)(load_image(p)) for p in photos.values()])
    with torch.no_grad():
        ref = model(x)
    assert (fp32(x) - ref).abs().max() <= 1e-4
    assert (bf16(x).argmax(1) == ref.argmax(1)).all()
    if cpu_has_bf16():  # bf16 really ran: logits move by more than fp32 rounding
        assert (bf16(x) - ref).abs().max() > 1e-3
    monkeypatch.setenv(FLAGS_ENV, "avx2 fma")  # an AVX2-only CPU: emulated bf16 would be slower than f32
    capfd.readouterr()
    plain = with_backend(model, "openvino-bf16")
    assert "no native bf16" in capfd.readouterr().err
    assert plain.runner.compiled(2, streamed=True).get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert (plain(x) - ref).abs().max() <= 1e-4


def test_predict_openvino_backends_and_auto(photos):
    # measured the faster fp32 engine (benchmarks/results/bench_infer_ort_ov.json); engines sharing cores: ORT
    assert auto_backend() == "openvino" and auto_backend(threads=1) == "onnx"
    outs = {}
    for backend in ("torch", "openvino", "openvino-int8"):
        proc = run_cli("predict", "--model", "efficientnet_lite0", "--pretrained", "--backend", backend, "--json",
                       str(photos["chelsea"]), str(photos["coffee"]), str(photos["astronaut"]))
        outs[backend] = json.loads(proc.stdout)
    for a, b in zip(outs["torch"], outs["openvino"]):
        assert a["predictions"][0]["label"] == b["predictions"][0]["label"]
        assert a["predictions"][0]["score"] == pytest.approx(b["predictions"][0]["score"], abs=1e-4)
    assert outs["openvino-int8"][1]["predictions"][0]["label"] == "espresso"  # calibrated on the 3 photos themselves


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A tiny EfficientNet trained for 2 epochs on 3 digit classes (32 px), and its data."""
    root = tmp_path_factory.mktemp("ovdigits")
    data = digit_subset(digits, root / "data", 60, 20)
    cfg = config_file(root, "tiny", width_mult=0.25, depth_mult=0.5, resolution=32)
    run_cli("train", str(data), "--model", str(cfg), "--epochs", "2", "--out", str(root / "run"), "--batch-size",
            "16", "--quiet")
    return root / "run", data


def test_eval_backends_on_labelled_data(trained):
    run, data = trained
    res = {b: json.loads(run_cli("eval", str(run), str(data), "--backend", b, "--json").stdout)
           for b in ("torch", "openvino", "openvino-int8", "onnx-int8")}
    assert {r["images"] for r in res.values()} == {60} and res["openvino"]["backend"] == "openvino"
    assert res["openvino"]["top1"] == res["torch"]["top1"]
    assert res["openvino"]["loss"] == pytest.approx(res["torch"]["loss"], abs=1e-4)
    for b in ("openvino-int8", "onnx-int8"):  # 60 val images: one image is 1.7 points
        assert abs(res[b]["top1"] - res["torch"]["top1"]) <= 5.0, (b, res[b]["top1"], res["torch"]["top1"])
        assert res[b]["loss"] != res["torch"]["loss"]  # really quantized


def test_eval_int8_needs_a_training_split_or_calibration(trained, tmp_path):
    run, data = trained
    proc = run_cli("eval", str(run), str(data / "val"), "--backend", "openvino-int8", check=False)
    assert proc.returncode == 2 and "--calibration" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    res = json.loads(run_cli("eval", str(run), str(data / "val"), "--backend", "openvino-int8", "--calibration",
                             str(data / "train"), "--json").stdout)
    assert res["images"] == 60
