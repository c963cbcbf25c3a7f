"""Bad user input, one row each: the command line, the setup that makes the bad input in ``tmp_path``, and what its
one error line must say. Every row must end with exit code 2 and exactly one line on stderr, ``effnet: error: ...``,
with no traceback, nothing new or changed in ``tmp_path``, and no hang (a timeout guards every run: a command that
opened a named pipe used to wait forever for a writer).

The model a row names never exists (``{tmp}/no-run``) or is never built: the checks a row exercises must come
before any model loads, so a row whose check came later fails on the message, not on the time it took."""

import os
import socket
import subprocess

import pytest

from tests.conftest import run_cli

HANG_GUARD_S = 300  # a refusal takes seconds; past this the command is waiting on something (a FIFO)


# ---------------------------------------------------------------------------------------------- setups

def nothing(tmp):
    pass


def folder(name):
    def make(tmp):
        (tmp / name).mkdir(parents=True)
    return make


def fifo(name):
    def make(tmp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / name)
    return make


def text(name, content="x\n"):
    def make(tmp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)
    return make


def device_link(name):
    def make(tmp):
        os.symlink(os.devnull, tmp / name)  # a character device, reached through a link in tmp_path
    return make


def dangling_link(name):
    def make(tmp):
        os.symlink(tmp / "gone", tmp / name)
    return make


def unix_socket(name):
    def make(tmp):
        cwd = os.getcwd()
        os.chdir(tmp)  # bind a short relative name: a socket's path is limited to ~108 bytes
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(name)
        finally:
            os.chdir(cwd)
    return make


def exported(name, changed_after=False):
    """A file with the config `effnet export` writes beside it (its sha256 included); ``changed_after``: the file
    replaced once the config was written. The bytes are no graph: every refusal here comes before an engine opens it."""
    def make(tmp):
        from effnet.deploy.exported import ExportInfo, format_of, write_sidecar
        from effnet.models.nets.config import ModelConfig

        path = tmp / name
        path.write_bytes(b"a graph, as far as the config can tell")
        write_sidecar(path, ModelConfig(name="tiny", width_mult=0.25, resolution=32), ExportInfo(format_of(path)))
        if changed_after:
            path.write_bytes(b"another graph")
    return make


def huge_tensor_header(name):
    """A genuine effnet .safetensors whose header claims a 1 TB tensor."""
    def make(tmp):
        import json
        import struct

        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, tmp / name, metadata={"effnet_config": '{"name": "tiny"}'})
        raw = (tmp / name).read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        header["w"].update(shape=[1 << 38], data_offsets=[0, 1 << 40])
        text = json.dumps(header).encode()
        (tmp / name).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return make


def both(*setups):
    def make(tmp):
        for setup in setups:
            setup(tmp)
    return make


# ---------------------------------------------------------------------------------------------- rows

PREDICT = ("predict", "--model", "efficientnet_b0", "{photo}")
DETECT = ("detect", "predict", "{tmp}/no-run", "{photo}")
SEGMENT = ("segment", "predict", "{tmp}/no-run", "{photo}")
EXPLAIN = ("explain", "--model", "efficientnet_b0", "{photo}")

ROWS = [
    # effnet predict --output: a .jsonl / .csv file
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), folder("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a folder, not a file", id="predict-output-folder"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl", "--resume"), folder("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a folder, not a file", id="predict-resume-folder"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), fifo("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a named pipe (FIFO), not a file", id="predict-output-fifo"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl", "--resume"), fifo("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a named pipe (FIFO), not a file", id="predict-resume-fifo"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), device_link("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a device, not a file", id="predict-output-device"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), unix_socket("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a socket, not a file", id="predict-output-socket"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), dangling_link("p.jsonl"),
                 "--output {tmp}/p.jsonl: is a link to {tmp}/gone, which does not exist", id="predict-output-dangling"),
    pytest.param((*PREDICT, "--output", "{tmp}/notes.txt/p.jsonl"), text("notes.txt"),
                 "--output {tmp}/notes.txt/p.jsonl: {tmp}/notes.txt is a file, not a folder",
                 id="predict-output-parent-is-a-file"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl"), text("p.jsonl", '{"path": "a.png"}\n'),
                 "--output {tmp}/p.jsonl exists: --resume continues it", id="predict-output-exists"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.jsonl", "--resume"), text("p.jsonl", "not json\n{cut"),
                 "--resume {tmp}/p.jsonl: not an effnet predictions file", id="predict-resume-not-predictions"),
    pytest.param((*PREDICT, "--output", "{tmp}/p.txt"), nothing,
                 "--output {tmp}/p.txt: expected a .jsonl or .csv file", id="predict-output-suffix"),
    pytest.param(("predict", "--model", "{tmp}/no-model.json", "{photo}", "--output", "{tmp}/new/p.jsonl"), nothing,
                 "{tmp}/no-model.json", id="predict-bad-model-leaves-no-output"),
    pytest.param(("predict", "--model", "{tmp}/no-model.json", "{photo}", "--output", "{tmp}/p.jsonl", "--resume"),
                 text("p.jsonl", '{"path": "a.png", "error": "x"}\n{"path": "b.p'),
                 "{tmp}/no-model.json", id="predict-bad-model-leaves-a-cut-file-alone"),
    pytest.param((*PREDICT, "--shard", "-1/2"), nothing, "--shard -1/2: K must be in 0..N-1",
                 id="predict-shard-negative"),
    pytest.param((*PREDICT, "--shard", "2/2"), nothing, "--shard 2/2: K must be in 0..N-1", id="predict-shard-too-big"),
    # effnet detect predict --out: a folder (a drawn PNG per image and predictions.json)
    pytest.param((*DETECT, "--out", "{tmp}/drawn.png"), nothing,
                 "--out {tmp}/drawn.png: names a folder (a drawn PNG per image and predictions.json go in it), not a "
                 ".png file; give a folder name, e.g. --out {tmp}/drawn", id="detect-out-image-name"),
    pytest.param((*DETECT, "--out", "{tmp}/drawn"), text("drawn"),
                 "--out {tmp}/drawn: is a file, not a folder", id="detect-out-file"),
    pytest.param((*DETECT, "--out", "{tmp}/drawn"), fifo("drawn"),
                 "--out {tmp}/drawn: is a named pipe (FIFO), not a folder", id="detect-out-fifo"),
    # effnet segment predict --output: a folder (masks/, overlays/, predictions.jsonl)
    pytest.param((*SEGMENT, "--output", "{tmp}/seg"), text("seg"),
                 "--output {tmp}/seg: is a file, not a folder", id="segment-output-file"),
    pytest.param((*SEGMENT, "--output", "{tmp}/masks.png"), nothing,
                 "--output {tmp}/masks.png: names a folder (masks/, overlays/ and predictions.jsonl go in it), not a "
                 ".png file", id="segment-output-image-name"),
    pytest.param((*SEGMENT, "--output", "{tmp}/seg", "--resume"), fifo("seg/predictions.jsonl"),
                 "--output {tmp}/seg/predictions.jsonl: is a named pipe (FIFO), not a file",
                 id="segment-resume-fifo-results"),
    pytest.param((*SEGMENT, "--output", "{tmp}/seg", "--resume"), folder("seg/predictions.jsonl"),
                 "--output {tmp}/seg/predictions.jsonl: is a folder, not a file", id="segment-resume-folder-results"),
    pytest.param((*SEGMENT, "--output", "{tmp}/seg"), both(folder("seg"), text("seg/masks")),
                 "--output {tmp}/seg/masks: is a file, not a folder", id="segment-output-masks-is-a-file"),
    pytest.param((*SEGMENT, "--output", "{tmp}/seg"), text("seg/predictions.jsonl", '{"path": "a.png"}\n'),
                 "--output {tmp}/seg holds a finished or interrupted run: --resume continues it",
                 id="segment-output-holds-a-run"),
    pytest.param((*SEGMENT, "--shard", "-1/2"), nothing, "--shard -1/2: K must be in 0..N-1",
                 id="segment-shard-negative"),
    # effnet explain -o / --heatmap: PNG files
    pytest.param((*EXPLAIN, "-o", "{tmp}/cam.png"), folder("cam.png"),
                 "--output {tmp}/cam.png: is a folder, not a file", id="explain-output-folder"),
    pytest.param((*EXPLAIN, "-o", "{tmp}/cam.png", "--heatmap", "{tmp}/heat.png"), fifo("heat.png"),
                 "--heatmap {tmp}/heat.png: is a named pipe (FIFO), not a file", id="explain-heatmap-fifo"),
    # train --out: the run's folder
    pytest.param(("train", "{tmp}/no-data", "--out", "{tmp}/run"), text("run"),
                 "--out {tmp}/run: is a file, not a folder", id="train-out-file"),
    pytest.param(("detect", "train", "{tmp}/no-data", "--out", "{tmp}/run"), fifo("run"),
                 "--out {tmp}/run: is a named pipe (FIFO), not a folder", id="detect-train-out-fifo"),
    pytest.param(("segment", "train", "{tmp}/no-data", "--out", "{tmp}/run.json"), nothing,
                 "--out {tmp}/run.json: names a folder (the run's weights, metrics and checkpoints go in it), not a "
                 ".json file", id="segment-train-out-file-name"),
    # exported files as models: the config beside them, and what it allows
    pytest.param(("predict", "--model", "{tmp}/bare.onnx", "{photo}"), text("bare.onnx"),
                 "{tmp}/bare.onnx: no bare.onnx.json beside it (the config `effnet export` writes", id="export-no-config"),
    pytest.param(("serve", "--model", "{tmp}/bare.pte"), text("bare.pte"),
                 "{tmp}/bare.pte: no bare.pte.json beside it", id="serve-export-no-config"),
    pytest.param(("detect", "predict", "{tmp}/d.xml", "{photo}"), text("d.xml"),
                 "{tmp}/d.bin: no such file (OpenVINO IR is the .xml and the .bin beside it)", id="export-ir-no-bin"),
    pytest.param(("predict", "--model", "{tmp}/m.onnx", "{photo}"), exported("m.onnx", changed_after=True),
                 "{tmp}/m.onnx: does not match m.onnx.json (sha256 differs", id="export-replaced-after"),
    pytest.param(("predict", "--model", "{tmp}/m.onnx", "--backend", "openvino", "{photo}"), exported("m.onnx"),
                 "runs on --backend auto or onnx, not openvino", id="export-other-backend"),
    pytest.param(("segment", "predict", "{tmp}/m.onnx", "{photo}"), exported("m.onnx"),
                 "{tmp}/m.onnx: a classifier, not a segmenter", id="export-other-task"),
    pytest.param(("export", "{tmp}/m.onnx", "-o", "{tmp}/m.xml", "--format", "openvino"), exported("m.onnx"),
                 "{tmp}/m.onnx is already an exported file", id="export-an-export"),
    pytest.param(("predict", "--model", "{tmp}/big.safetensors", "{photo}"), huge_tensor_header("big.safetensors"),
                 "{tmp}/big.safetensors: not a readable safetensors file (Error while deserializing header",
                 id="model-header-claims-1tb"),
    # sizes bounded before anything is built
    pytest.param(("info", "{tmp}/wide.json"), text("wide.json", '{"name": "wide", "width_mult": 1e9}'),
                 "wide: at least", id="info-width-mult-1e9"),
    pytest.param(("predict", "--model", "{tmp}/head.json", "{photo}"),
                 text("head.json", '{"name": "head", "head_channels": 1000000000}'),
                 "over the limit of 4e+09 (--max-params)", id="predict-head-channels-1e9"),
    # effnet data DATASET OUT_DIR
    pytest.param(("data", "digits", "{tmp}/digits"), text("digits"),
                 "{tmp}/digits: is a file, not a folder", id="data-out-file"),
    pytest.param(("data", "digits", "{tmp}/digits.png"), nothing,
                 "{tmp}/digits.png: names a folder", id="data-out-image-name"),
]


def _snapshot(root) -> dict:
    """Every entry under ``root`` with its kind, size and modification time (links not followed)."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            seen[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


@pytest.mark.parametrize("argv, setup, says", ROWS)
def test_one_line_error(argv, setup, says, tmp_path, photos):
    setup(tmp_path)
    before = _snapshot(tmp_path)
    fill = dict(tmp=tmp_path, photo=photos["chelsea"])
    args = [a.format(**fill) for a in argv]
    try:
        proc = run_cli(*args, check=False, timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"effnet {' '.join(args)} hung (killed after {HANG_GUARD_S} s)")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("effnet: error: "), proc.stderr
    assert says.format(**fill) in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _snapshot(tmp_path) == before, "the refused command wrote or changed files"
