"""Where commands write: missing parent folders are made (as every effnet writer does), an interrupted ``--output``
is continued without being touched before the model loads, and the rate a command ends with is readable at any
speed. The refusals (a folder, a named pipe, a device ... where an output goes) are rows of
tests/test_user_errors.py."""

import json

import pytest

from effnet.errors import UsageError
from effnet.files import check_output_path
from effnet.segment.predict import check_output
from effnet.train.loop import rate_text
from tests.conftest import ROOT, config_file, run_cli

TINY_DETECTOR = ROOT / "tests" / "data" / "tiny_detector_saved_by_d77e2bf.safetensors"


@pytest.mark.parametrize("per_s", [0.0042, 0.42, 0.5, 3.14159, 25.34, 99.96, 1234.5])
def test_a_rate_keeps_two_significant_digits_at_any_speed(per_s):
    text = rate_text(per_s)  # "0 img/s" was a detector training at 0.4 images/s, printed with .0f
    assert float(text) > 0 and abs(float(text) - per_s) <= 0.05 * per_s, text


def test_predict_output_makes_its_folders_and_resumes_a_cut_file(tmp_path, photos):
    model = config_file(tmp_path, "tiny", width_mult=0.25, depth_mult=0.25, resolution=32, num_classes=3)
    out = tmp_path / "new" / "deeper" / "p.jsonl"
    images = [str(photos["chelsea"]), str(photos["coffee"])]
    proc = run_cli("predict", "--model", str(model), *images, "--output", str(out), "--backend", "torch")
    assert "2 images predicted, 0 unreadable, 0 already in" in proc.stderr and " images/s" in proc.stderr
    first, second = out.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["path"] for line in (first, second)] == images

    out.write_bytes(first + second[:7])  # a kill in the middle of the second line
    refused = run_cli("predict", "--model", str(tmp_path / "no-model.json"), *images, "--output", str(out),
                      "--resume", check=False)
    assert refused.returncode == 2 and out.read_bytes() == first + second[:7]  # not truncated before the model
    proc = run_cli("predict", "--model", str(model), *images, "--output", str(out), "--resume", "--backend", "torch")
    assert "1 images predicted, 0 unreadable, 1 already in" in proc.stderr
    lines = out.read_bytes().splitlines(keepends=True)
    assert lines[0] == first and [json.loads(line)["path"] for line in lines] == images

    proc = run_cli("predict", "--model", str(model), *images, "--output", str(out), "--resume", "--backend", "torch")
    assert "0 images predicted, 0 unreadable, 2 already in" in proc.stderr and "images/s" not in proc.stderr


def test_detect_predict_out_makes_its_folder(tmp_path, photos):
    out = tmp_path / "drawn" / "today"
    proc = run_cli("detect", "predict", str(TINY_DETECTOR), str(photos["chelsea"]), "--out", str(out),
                   "--score-threshold", "0.0", "--json")
    found = json.loads(proc.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "predictions.json"]
    assert json.loads((out / "predictions.json").read_text())[0]["detections"] == found[0]["detections"]


def test_output_checks_ask_the_file_system_and_create_nothing(tmp_path):
    assert check_output_path(tmp_path / "a" / "b" / "p.jsonl", "file") is False
    check_output(tmp_path / "a" / "b", resume=False)  # a segmenter's folder whose parents are made when it writes
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run").mkdir()
    assert check_output_path(tmp_path / "run", "folder", "--out") is True
    (tmp_path / "p.jsonl").write_text("")
    assert check_output_path(tmp_path / "p.jsonl", "file") is True
    with pytest.raises(UsageError, match=r"^--out .*run: is a folder, not a file$"):
        check_output_path(tmp_path / "run", "file", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "run"] and (tmp_path / "p.jsonl").read_text() == ""
