"""Where effnet keeps its files (:func:`cache_root`), and writing them so that a crash never leaves a
half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError


def cache_root() -> Path:
    """The one folder effnet caches into: downloaded weights (``weights/``) and ONNX / OpenVINO exports for
    ``--backend`` (``onnx/``, ``openvino/``). ``$EFFNET_HOME``, else ``~/.cache/effnet`` (where weights were
    always cached: a new default would lose every download made before)."""
    return Path(os.environ.get("EFFNET_HOME") or Path.home() / ".cache" / "effnet").expanduser()


def _umask() -> int:
    """This process's umask (read without changing it where Linux reports it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves a half-written file. The file
    gets the mode any new file would (0666 less the umask), not ``mkstemp``'s private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after writing: some writers (safetensors) create the file anew
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unique_dir(base: str | os.PathLike) -> Path:
    """Create and return ``base``, or ``base-2``, ``base-3``, ... when taken: ``mkdir`` is atomic, so two runs
    started in the same second never share a folder."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: 10,000 folders of this name exist")


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary sibling folder to fill; on success it is renamed to ``path`` (which must not exist or be
    empty), on failure removed: readers see the whole folder or none of it."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path}: exists and is not an empty folder (choose a new one)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()  # empty (checked above); a folder that filled meanwhile fails here, loudly
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
