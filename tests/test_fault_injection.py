"""Fault injection (issue 23): real commands killed with SIGKILL at moments the test chooses by watching what they
write (a checkpoint at a given position, a temporary file appearing, a byte count a loopback server reports) --
never by sleeping on a clock. Each rerun completes, no partial file is ever loaded, finished results are kept.
The killed commands are the CLI's ``main`` in forked children of this process (no start-up to wait for), or, for one
that trains, an ``effnet`` subprocess; the reruns that must complete are real ``effnet`` subprocesses.

``effnet train`` and ``effnet search`` have their kill tests beside their other tests (``test_train.py``,
``test_search.py``), ``effnet predict --output`` in ``test_predict_folder.py``."""

import hashlib
import http.server
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import effnet
from tests.conftest import ROOT, file_changes, kill_when, read_checkpoint
from tests.test_pretrained_download import entry_for, home, served_torchvision_b0  # noqa: F401  (test-only registry rows, cache folder)

# one thread per command: two cores shared by many processes, where OpenMP's spinning threads slow a tiny model
# down tenfold; the arithmetic is the same in the straight and the killed runs either way
ENV = dict(os.environ, OMP_NUM_THREADS="1", EFFNET_MALLOC="system")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"effnet {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _cli_in_child(args: list[str]) -> None:
    """The CLI, in a forked child of this test process (torch already imported: no start-up to wait for), with
    what the test set up here (a registry row) inherited. One thread: OpenMP's pool does not survive a fork, and
    the arithmetic is then that of ``_in_process`` and the spawned commands."""
    from tqdm import tqdm

    from effnet.cli import main

    torch.set_num_threads(1)
    # tqdm's write lock is a multiprocessing semaphore that a fork shares: an earlier child killed inside a progress
    # bar's update dies holding it, and every later child would wait on it forever. A lock of this child's own.
    tqdm.set_lock(threading.RLock())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os._exit(main(args))


class _Child:
    """``effnet ARGS`` in a forked child, shaped as `kill_when` expects of a process."""

    def __init__(self, *args: str):
        self.process = multiprocessing.get_context("fork").Process(target=_cli_in_child, args=(list(args),))
        self.process.start()
        self.pid = self.process.pid

    def poll(self):
        return self.process.exitcode

    @property
    def returncode(self):
        return self.process.exitcode

    def communicate(self):
        self.process.join()
        return "", ""


def _spawned(*args: str) -> subprocess.Popen:
    """``effnet ARGS`` as a process of its own, for a command that trains: a forked child cannot run autograd once
    this process has (torch refuses, its autograd threads do not survive a fork), and which test files ran in this
    pytest worker before is pytest-xdist's choice."""
    return subprocess.Popen([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _temp_files(folder: Path, name: str) -> list[Path]:
    """The temporaries effnet writes beside ``name`` before renaming them into place (``.NAME.*.tmp``)."""
    return sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------ effnet detect train

@pytest.fixture(scope="module")
def detect_world(tmp_path_factory):
    """A real COCO-layout set (`effnet data detect-digits`) and a tiny random EfficientDet saved as an effnet file
    (``--weights FILE`` trains that architecture)."""
    from effnet.data.detect_digits import write_detect_digits
    from effnet.models.nets.detector_config import detector_config
    from effnet.models.zoo.registry import create_detector

    root = tmp_path_factory.mktemp("detkill")
    write_detect_digits(root / "dd", train=8, val=2)
    cfg = detector_config("efficientdet_lite0", num_classes=10)
    cfg = cfg.replace(name="tinydet", backbone=cfg.backbone.replace(width_mult=0.25, depth_mult=0.25, resolution=64),
                      fpn_channels=16, fpn_repeats=1, head_repeats=1, resolution=64)
    torch.manual_seed(0)
    effnet.save(create_detector(cfg, 10), root / "tinydet.safetensors")
    return root


def _checkpoint_at(path: Path):
    """A moment: the checkpoint on disk, once it reads whole, as (epoch, batch in epoch)."""
    def moment():
        state = read_checkpoint(path)
        return state and (state["epoch"], state["batch_in_epoch"])
    return moment


def _in_process(*args: str) -> None:
    """A command in this process (no start-up), on one thread as the spawned ones: the same arithmetic."""
    from effnet.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)


def test_detect_train_killed_twice_resumes_bit_exact(detect_world, tmp_path):
    """Killed while a checkpoint is being replaced (its successor's temporary half written), then in the middle
    of the second epoch: each `--resume` continues from the last whole checkpoint, and the weights, EMA and metrics
    end equal, bit for bit, to a run never interrupted."""
    args = ["detect", "train", str(detect_world / "dd"), "--weights", str(detect_world / "tinydet.safetensors"),
            "--epochs", "2", "--batch-size", "2", "--resolution", "64", "--checkpoint-every", "1", "--seed", "3",
            "--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ckpt = killed / "checkpoint.pt"

    # 1: in the first epoch, while checkpoint.pt is being replaced -- the rename has not happened yet
    kill_when(_spawned(*args, "--out", str(killed)), lambda: ckpt.exists() and _temp_files(killed, "checkpoint.pt"))
    first = _checkpoint_at(ckpt)()
    assert first[0] == 0 and not (killed / "model.safetensors").exists()
    # 2: after a checkpoint in the middle of the second epoch (4 batches an epoch)
    at = _checkpoint_at(ckpt)
    kill_when(_spawned("detect", "train", "--resume", str(killed), "--quiet"),
              lambda: (pos := at()) and pos[0] == 1 and 1 <= pos[1] < 4, look=file_changes(ckpt))
    second = _checkpoint_at(ckpt)()
    assert second[0] == 1 and 0 < second[1] < 4 and not (killed / "model.safetensors").exists(), second

    _run("detect", "train", "--resume", str(killed), "--quiet")
    _in_process(*args, "--out", str(straight))
    for name in ("model.safetensors", "model_ema.safetensors"):
        if (straight / name).exists() or (killed / name).exists():
            a, b = load_file(straight / name), load_file(killed / name)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # every column but the timings (img_per_s, epoch_seconds)
    losses = lambda run: [row.split(",")[:6] + row.split(",")[8:] for row in (run / "metrics.csv").read_text().splitlines()]
    assert losses(straight) == losses(killed) and len(losses(killed)) == 3  # header + 2 epochs, none twice
    assert json.loads((killed / "summary.json").read_text())["steps"] == 8


# ------------------------------------------------------------------------------------------------ effnet export

@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    from tests.conftest import config_file

    root = tmp_path_factory.mktemp("exportkill")
    cfg = config_file(root, "tiny", width_mult=0.25, depth_mult=0.25, resolution=32, num_classes=3)
    torch.manual_seed(0)
    path = root / "tiny.safetensors"
    effnet.save(effnet.create_model(str(cfg)), path)
    return path


def _onnx_matches_torch(onnx_path: Path, model_path: Path, tol: float) -> float:
    """Load ``onnx_path`` in ONNX Runtime (a partial file would not load) and return its largest logit difference
    from PyTorch on random inputs, checked against ``tol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = effnet.load(model_path).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    diff = float(abs(session.run(None, {"input": x.numpy()})[0] - want).max())
    assert diff <= tol, diff
    return diff


def test_export_killed_while_verifying_and_between_fp32_and_int8(tiny_classifier, photos, tmp_path):
    """A finished export is replaced by a re-export that is killed while its file is written and verified, then by
    an int8 export killed after its verified fp32 file is in place, before the int8 one: the finished file stays
    whole and unchanged, the fp32 file is complete, and the rerun writes both, verified."""
    out = tmp_path / "out"
    target = out / "m.onnx"
    calibration = photos["chelsea"].parent
    _in_process("export", str(tiny_classifier), "-o", str(target))  # a finished result
    finished = hashlib.sha256(target.read_bytes()).hexdigest()

    # 1: a re-export, killed while its graph sits in the temporary folder beside the target, being verified
    kill_when(_Child("export", str(tiny_classifier), "-o", str(target)),
              lambda: [d for d in _temp_files(out, target.name) if (d / "model").is_file()])
    assert hashlib.sha256(target.read_bytes()).hexdigest() == finished  # never half-replaced
    _onnx_matches_torch(target, tiny_classifier, 1e-3)

    # 2: int8, killed once the verified fp32 file is in place and before the int8 file is
    int8 = ["export", str(tiny_classifier), "-o", str(target), "--int8", "--calibration", str(calibration)]
    fp32 = out / "m.onnx.fp32.onnx"
    kill_when(_Child(*int8), fp32.is_file)
    _onnx_matches_torch(fp32, tiny_classifier, 1e-3)  # whole and verified
    assert hashlib.sha256(target.read_bytes()).hexdigest() == finished

    # the rerun completes: both files verified, nothing of the killed runs left beside them
    proc = _run(*int8)
    assert "top-1 agreement" in proc.stdout or "agreement" in proc.stdout, proc.stdout
    _onnx_matches_torch(fp32, tiny_classifier, 1e-3)
    _onnx_matches_torch(target, tiny_classifier, 0.5)  # int8: loads and stays near
    assert hashlib.sha256(target.read_bytes()).hexdigest() != finished
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx", "m.onnx.fp32.onnx", "m.onnx.fp32.onnx.json", "m.onnx.json"]


# ------------------------------------------------------------------------------------------- a weights download

class _GatedServer(http.server.ThreadingHTTPServer):
    """Serves files from ``root`` and tells the test how many body bytes it has sent; with ``stop_at`` set it
    stops there (``reached`` is set) until released, so the test can kill the client at that byte count."""

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _GatedHandler)
        self.root, self.url, self.hits = root, f"http://127.0.0.1:{self.server_address[1]}", []
        self.stop_at, self.sent = None, 0
        self.reached, self.release = threading.Event(), threading.Event()

    def gate(self, stop_at: int | None) -> None:
        self.stop_at, self.sent = stop_at, 0
        self.reached.clear()
        self.release.clear()

    def handle_error(self, request, client_address):  # the killed client's broken pipe
        pass


class _GatedHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.hits.append(self.path)
        data = (server.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        while server.sent < len(data):
            if server.stop_at is not None and server.sent >= server.stop_at:
                server.reached.set()
                server.release.wait(60)
                return
            limit = len(data) if server.stop_at is None else server.stop_at
            end = min(server.sent + (1 << 16), limit)
            self.wfile.write(data[server.sent:end])
            server.sent = end


@pytest.fixture
def gated(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = _GatedServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_weights_download_killed_at_chosen_byte_counts_then_completes(gated, home, entry_for):
    """Killed before the first byte of the body, half-way through it, once the whole body is on disk but not yet
    converted, and while the converted file is being written: nothing ever appears in the cache under the
    weights' name, the rerun downloads, checks and converts it -- the file it caches verifies and gives the
    reference logits -- and removes what the killed downloads left. A finished download is never touched by a
    killed one."""
    pytest.importorskip("torchvision")
    from effnet.models.zoo import downloads

    src, served = served_torchvision_b0(gated.root)
    size, digest = served.stat().st_size, hashlib.sha256(served.read_bytes()).hexdigest()
    fields = dict(model="efficientnet_b0", origin="test", source="torchvision", url=f"{gated.url}/tv_b0.pth",
                  sha256=digest, bn_eps=1e-5, tf_padding=False, resolution=64, crop_pct=0.875)
    entry = entry_for(tag="test_kill", **fields)
    other = entry_for(tag="test_kept", **fields)
    cached = downloads.cache_path(entry)
    folder = cached.parent

    downloads.fetch(other, progress=False)  # a finished download, beside the ones to be killed
    kept = hashlib.sha256(downloads.cache_path(other).read_bytes()).hexdigest()

    def on_disk(pattern):
        return lambda: [p for p in folder.glob(pattern) if p.is_file() and p.stat().st_size == size]

    moments = [  # (bytes the server sends before it stops, the moment to kill)
        (0, gated.reached.is_set),
        (size // 2, gated.reached.is_set),
        (None, lambda: not cached.exists() and on_disk(".tv_b0.pth.*.partial")()),
        (None, lambda: [p for p in folder.glob(f".{cached.name}.*.tmp")]),
    ]
    for stop_at, moment in moments:
        gated.gate(stop_at)
        kill_when(_Child("weights", "download", entry.name, "--quiet"), moment)
        gated.release.set()
        if stop_at is not None:
            assert gated.sent == stop_at
        assert not cached.exists()  # nothing under the weights' name: no partial file can be loaded
    # kill -9 runs no cleanup: the last killed download's partial and converted temporaries are there (each
    # download removed those of the ones killed before it)
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(left) == 2 and len({name.rsplit(".", 3)[-3] for name in left}) == 1, left  # HOST-PID

    gated.gate(None)
    hits = len(gated.hits)
    path = downloads.fetch(entry, progress=False)  # the rerun: in this process, which never wrote here before
    assert len(gated.hits) == hits + 1 and path == cached and downloads._trusted(cached)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (effnet.load(cached).eval()(x) - src(x)).abs().max().item() <= 1e-4
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [cached.name, cached.name + ".sha256", downloads.cache_path(other).name, downloads.cache_path(other).name + ".sha256"])
    assert hashlib.sha256(downloads.cache_path(other).read_bytes()).hexdigest() == kept
