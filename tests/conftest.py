import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# `effnet train` re-executes itself under tcmalloc when installed (effnet/train/allocator.py): ~2 s of start-up
# per command; tests keep the system allocator except test_train_runs_under_tcmalloc, which asks for it
os.environ.setdefault("EFFNET_MALLOC", "system")
# The commands under test (run_cli's children, subprocesses, servers) run on one OpenMP thread: they share two cores
# with pytest, often a second command, sometimes other work, and there OpenMP's spinning threads slow the tiny models
# the tests train several-fold (test_kill_9_then_resume_is_bit_exact: 13 s on an idle machine and 77 s beside two
# CPU-bound processes on two threads, 11 s and 21-33 s on one). Set after `import torch`: this process keeps the
# thread count OpenMP read when torch loaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _effnet_home(tmp_path_factory):
    """Exports, caches and downloads go to a folder of this session, as on a fresh machine: a run does not read
    what an earlier run left in ~/.cache/effnet (its timings and results do not depend on it) nor leave files
    there. Tests that need a home of their own still set $EFFNET_HOME themselves."""
    saved = os.environ.get("EFFNET_HOME")
    os.environ["EFFNET_HOME"] = str(tmp_path_factory.mktemp("effnet_home"))
    yield
    if saved is None:
        os.environ.pop("EFFNET_HOME", None)
    else:
        os.environ["EFFNET_HOME"] = saved


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_FORK_SERVER: list = []  # the one ForkServer of this pytest process, started on first use


def _fork_server():
    from tests.forkrun import ForkServer

    if os.environ.get("EFFNET_TEST_SUBPROCESS") == "1":
        return None
    if not _FORK_SERVER or _FORK_SERVER[0].proc.poll() is not None:
        _FORK_SERVER[:] = [ForkServer(str(ROOT))]
    return _FORK_SERVER[0] if _FORK_SERVER[0].usable() else None


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_server():
    yield
    for server in _FORK_SERVER:
        server.close()


# A hang guard, never a speed test: the longest command of the suite (Lite0's 3-epoch fine-tune on digits) takes
# about a minute on two idle cores; on a loaded machine several times that. Past this, it has hung.
HANG_S = 1200


def run_cli(*args: str, check: bool = True, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """Run the real `effnet` command in a process of its own: forked from a server that has imported torch and
    friends once (tests/forkrun.py), or, with EFFNET_TEST_SUBPROCESS=1, as `python -m effnet.cli`."""
    server = _fork_server()
    if server is not None:
        proc = server.run([str(a) for a in args], timeout)
    else:
        proc = subprocess.run([sys.executable, "-m", "effnet.cli", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"effnet {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos shipped with scikit-image, written as PNG files."""
    import skimage.data

    out = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee", "astronaut"):
        path = out / f"{name}.png"
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
        paths[name] = path
    return paths


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (the latency protocol runs on one thread) gives the next test its
    cores back: without this every later in-process test ran on one thread."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics so that weight-import tests check every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's digits (real scans) written by the real `effnet data digits` command."""
    out = tmp_path_factory.mktemp("digits")
    proc = run_cli("data", "digits", str(out))
    assert "1437 train, 360 val" in proc.stdout
    assert len(list((out / "train").glob("*/*.png"))) == 1437
    return out


def digit_subset(digits: Path, out: Path, n_train: int, n_val: int, classes=("0", "1", "7")) -> Path:
    """A few classes with the first n images each: runs that need only seconds."""
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in classes:
            (out / split / cls).mkdir(parents=True)
            for f in sorted((digits / split / cls).glob("*.png"))[:n]:
                shutil.copy(f, out / split / cls / f.name)
    return out


def config_file(folder: Path, name: str, **fields) -> Path:
    """A small EfficientNet written as a config .json (what `--model` / `--base` accept)."""
    from effnet.models.nets.config import ModelConfig

    path = folder / f"{name}.json"
    path.write_text(ModelConfig(name=name, **fields).to_json())
    return path
