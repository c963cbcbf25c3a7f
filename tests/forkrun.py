"""Run the real ``effnet`` command in a fresh process without paying for its imports each time.

Most CLI tests spend their time importing torch, torchvision, ONNX Runtime and OpenVINO (3-5 s a process on 2
cores, ~150 processes a suite). This module is a fork server: one process imports those libraries once (nothing
of effnet, and it runs no torch op, so no thread pool exists yet), then forks a child per command. The child is
a real process of its own -- its own pid, exit status, stdout/stderr files, working directory and environment --
running ``effnet.cli.main`` exactly as ``python -m effnet.cli`` would, with effnet imported fresh in it.

Python's ``multiprocessing`` forkserver cannot do this: it hands back a ``Process`` with pickled targets, not a
command's exit status and file descriptors, and it cannot be told to pre-import a fixed module list without
importing ``__main__``. Hence this small loop. ``EFFNET_TEST_SUBPROCESS=1`` turns it off (plain subprocesses).

Protocol on the server's stdin/stdout: one JSON request per line ``{"args", "cwd", "env", "out", "err"}``; the
server answers ``{"pid": N}`` when the child starts and ``{"status": S}`` (``os.waitstatus_to_exitcode``) when
it ends.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import subprocess
import sys
import tempfile
import traceback

# imported once by the server; effnet itself is imported in each child, so its import-time settings are fresh
PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "torchvision.transforms.v2", "safetensors.torch",
           "onnx", "onnxruntime", "openvino", "sklearn.datasets", "timm", "optuna", "matplotlib.pyplot",
           # ~2 s a command that runs or writes a .pte (its runtime imports the exporter, exir)
           "executorch.runtime", "executorch.backends.xnnpack.partition.xnnpack_partitioner")
# variables read when those libraries load: a request whose values differ runs as a plain subprocess
IMPORT_TIME_ENV = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "TORCH", "PYTORCH", "LD_", "PYTHON", "CUDA", "OV_",
                   "ORT_", "MPLBACKEND")


def _import_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


def _child(request: dict) -> None:
    """In the forked child: become ``python -m effnet.cli ARGS`` and exit with its status."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(os.open(request["out"], os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(request["err"], os.O_WRONLY | os.O_TRUNC), 2)
        # not "effnet": a re-execution under tcmalloc (effnet/train/allocator.py) would restart this server
        sys.argv = [__file__, *request["args"]]
        from effnet.cli import main

        code = main(request["args"]) or 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what an uncaught exception does to `python -m effnet.cli`: a traceback, status 1
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def serve() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing the libraries print may corrupt the reply channel
    before = _import_env(dict(os.environ))
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # variables the libraries set themselves while loading (torch's TORCHINDUCTOR_CACHE_DIR): the pytest process
    # gets the same ones when it imports them, which must not make the server look unusable
    own = sorted(k for k, v in _import_env(dict(os.environ)).items() if before.get(k) != v)
    print(json.dumps({"ready": os.getpid(), "own": own}), file=replies)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(request)
        print(json.dumps({"pid": pid}), file=replies)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=replies)


class ForkServer:
    """The pytest side: start the server once, then :meth:`run` behaves like ``subprocess.run`` of the CLI."""

    def __init__(self, root: str):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.forkrun"], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
        self.own = frozenset(self._read(600)["own"])
        self.env = self._import_env()

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the effnet fork server died")
        return json.loads(line)

    def _import_env(self) -> dict[str, str]:
        return {k: v for k, v in _import_env(dict(os.environ)).items() if k not in self.own}

    def usable(self) -> bool:
        return self.proc.poll() is None and self._import_env() == self.env

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            open(out, "w").close(), open(err, "w").close()
            request = {"args": list(args), "cwd": self.root, "env": dict(os.environ), "out": out, "err": err}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._read(60)["pid"]
            try:
                status = self._read(timeout)["status"]
            except TimeoutError:
                os.kill(pid, 9)
                self._read(60)
                raise subprocess.TimeoutExpired(["effnet", *args], timeout) from None
            with open(out) as f, open(err) as g:
                return subprocess.CompletedProcess(["effnet", *args], status, f.read(), g.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)


if __name__ == "__main__":
    serve()
