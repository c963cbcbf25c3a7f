"""Where effnet keeps its files (:func:`cache_root`), and writing them so that a crash never leaves a
half-written one behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """The one folder effnet caches into: downloaded weights (``weights/``) and ONNX / OpenVINO exports for
    ``--backend`` (``onnx/``, ``openvino/``). ``$EFFNET_HOME``, else ``~/.cache/effnet`` (where weights were
    always cached: a new default would lose every download made before)."""
    return Path(os.environ.get("EFFNET_HOME") or Path.home() / ".cache" / "effnet").expanduser()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
