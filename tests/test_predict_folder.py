"""`effnet predict` at folder scale (issue 24): folders and globs streamed in batches to a .jsonl / .csv file,
a SIGKILL mid-run continued with --resume (no row lost, none twice), --shard K/N covering every file once, and
bad files reported and skipped. 2,000 real images: scikit-learn's digits and views of scikit-image's photos,
both written by `effnet data`; a tiny EfficientNet at 32 px so that the run is about the files, not the model."""

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.cli import main
from tests.conftest import HANG_S, ROOT, config_file, run_cli


@pytest.fixture(scope="module")
def corpus(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    run_cli("data", "photos", str(root / "photos"), "--count", "203")
    (root / "bad").mkdir()
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header and nothing else
    images = sorted(str(p) for p in (*digits.rglob("*.png"), *(root / "photos").rglob("*.jpg")))
    assert len(images) == 2000
    model = config_file(root, "tiny", resolution=32, width_mult=0.25, depth_mult=0.34, num_classes=10)
    return dict(root=root, inputs=[str(digits), str(root / "photos"), str(root / "bad")], images=images,
                bad=str(root / "bad" / "broken.png"), model=str(model))


def _predict(corpus, *extra: str) -> list[str]:
    return ["predict", *corpus["inputs"], "--model", corpus["model"], "--backend", "torch", "--batch-size", "16",
            *extra]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_then_resume_gives_every_file_exactly_once(corpus, tmp_path):
    out = tmp_path / "preds.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli", *_predict(corpus, "--output", str(out))],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + HANG_S
    while time.time() < deadline and proc.poll() is None:  # kill once 300 rows are on disk, mid-stream
        if out.exists() and out.read_bytes().count(b"\n") >= 300:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_bytes()
    kept = before[:before.rfind(b"\n") + 1]
    assert 300 <= kept.count(b"\n") < 2001

    done = run_cli(*_predict(corpus, "--output", str(out), "--resume"), check=False)
    assert done.returncode == 1 and "images/s" in done.stderr  # 1: one unreadable file, reported in its row
    assert out.read_bytes().startswith(kept)  # finished rows are never rewritten
    rows = _jsonl(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 2001
    assert set(paths) == {*corpus["images"], corpus["bad"]}
    (error,) = [r for r in rows if "error" in r]
    assert error["path"] == corpus["bad"] and "cannot read image" in error["error"]
    good = [r for r in rows if "error" not in r]
    assert all(len(r["predictions"]) == 5 and 0 <= r["predictions"][0]["score"] <= 1 for r in good)
    # a finished file resumed again has nothing left to do
    again = run_cli(*_predict(corpus, "--output", str(out), "--resume"), check=False)
    assert "0 images predicted" in again.stderr and len(_jsonl(out)) == 2001


def test_shards_cover_every_file_once_and_output_is_never_overwritten(corpus, tmp_path):
    halves = []
    for k in (0, 1):
        out = tmp_path / f"shard{k}.csv"
        run_cli(*_predict(corpus, "--output", str(out), "--shard", f"{k}/2", "--workers", "1"), check=False)
        lines = out.read_text().splitlines()
        assert lines[0].startswith("path,label1,index1,score1,")
        halves.append([line.split(",")[0] for line in lines[1:]])
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted([*corpus["images"], corpus["bad"]])
    assert all(800 < len(h) < 1200 for h in halves)  # a hash of the path splits evenly

    written = (tmp_path / "shard0.csv").read_bytes()
    code, err = _main(*_predict(corpus, "--output", str(tmp_path / "shard0.csv")))
    assert code == 2 and "exists: --resume continues it" in err
    assert (tmp_path / "shard0.csv").read_bytes() == written
    for bad, says in ((("--shard", "2/2"), "K must be in 0..N-1"), (("--topk", "0"), "--topk must be 1 to"),
                      (("--output", str(tmp_path / "x.txt")), "expected a .jsonl or .csv file")):
        code, err = _main(*_predict(corpus, *bad))
        assert code == 2 and says in err and "Traceback" not in err, bad


def _main(*argv: str) -> tuple[int, str]:
    """The CLI in this process (for refusals that happen before any model is built): exit code and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    return code, err.getvalue()


def test_globs_stream_a_json_array_in_the_shared_schema(corpus):
    pattern = str(corpus["root"] / "photos" / "**" / "*.jpg")
    proc = run_cli("predict", pattern, corpus["bad"], "--model", corpus["model"], "--backend", "torch", "--json",
                   "--topk", "2", check=False)
    assert proc.returncode == 1 and "broken.png: cannot read image" in proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 203 and all(r["path"].startswith(str(corpus["root"] / "photos")) for r in rows)
    assert set(rows[0]) == {"path", "predictions"} and set(rows[0]["predictions"][0]) == {"label", "index", "score"}
