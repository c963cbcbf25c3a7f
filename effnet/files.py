"""Where effnet keeps its files (:func:`cache_root`), and writing them so that a crash never leaves a
half-written one behind."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
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


# Temporaries are named ``.NAME.HOST-PID.XXXXXXXX.tmp`` beside their target: a later process on this host can tell
# one whose writer was killed (kill -9 runs no cleanup) from one being written right now, and removes it.
TEMP_SUFFIXES = (".tmp", ".partial")
_swept: set[Path] = set()


def _owner() -> str:
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()).strip("-")[:32] or "host"
    return f"{host}-{os.getpid()}"


def _writer_died(owner: str) -> bool:
    """Whether the process ``owner`` (``HOST-PID``) has ended. Only this host's processes can be asked, and only
    where signal 0 asks without acting (POSIX); anything else counts as alive: its file is left alone."""
    host, _, pid = owner.rpartition("-")
    if os.name != "posix" or host != _owner().rpartition("-")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def remove_dead_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries in ``folder`` (files or folders) left by writers that were killed; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        suffix = next((s for s in TEMP_SUFFIXES if name.endswith(s)), None)
        if not name.startswith(".") or suffix is None:
            continue
        head = name[: -len(suffix)].rpartition(".")[0]  # drop the random part
        if "." in head[1:] and _writer_died(head.rpartition(".")[2]):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def new_temp(path: str | os.PathLike, directory: bool = False, suffix: str = ".tmp") -> Path:
    """A new empty temporary file (or folder) beside ``path``, named for this process; the first time a process
    writes into a folder, temporaries that killed writers left there are removed."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if parent.resolve() not in _swept:
        remove_dead_temps(parent)
        _swept.add(parent.resolve())
    prefix = f".{path.name}.{_owner()}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so a crash never leaves a half-written file. The file
    gets the mode any new file would (0666 less the umask), not ``mkstemp``'s private 0600."""
    path = Path(path)
    tmp = str(new_temp(path))
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
    tmp = new_temp(path, directory=True)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.is_dir():
            path.rmdir()  # empty (checked above); a folder that filled meanwhile fails here, loudly
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# what a name ending so is taken to mean: a file the user wants, never a folder to fill
FILE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".json", ".jsonl",
                           ".csv", ".txt", ".onnx", ".xml", ".pte", ".pt", ".safetensors"})


def _what(mode: int) -> str:
    """What a path that is not a regular file or folder is, in a user's words."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(path: str | os.PathLike, kind: str = "file", flag: str = "--output",
                      holds: str | None = None) -> bool:
    """Refuse, before any work is done, an output ``path`` that a command could not write as a ``kind``
    (``"file"`` or ``"folder"``), with one :class:`UsageError` line; return whether it exists already.

    Only asks the file system (``stat``), never opens anything: opening a named pipe blocks until another process
    opens its other end, so a ``--resume`` on one used to hang. Refused: a folder where a file is wanted and a
    file where a folder is, a named pipe, a device, a socket, a dangling link, a parent that is a file or cannot be
    written in, and (``kind="folder"``) a new name ending like a file (``--out drawn.png``), which would otherwise
    become a folder of that name; ``holds`` says what the folder is for. Missing parent folders are no error:
    every effnet writer creates them (as ``atomic_write`` and a training run's ``--out`` always have)."""
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    path = Path(path)
    where = f"{flag} {path}".strip()  # flag "": a positional argument
    other = "folder" if kind == "file" else "file"
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a parent that is a file is named by _check_parents
        mode = None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if mode is not None:
        if stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode):
            return True
        kind_of = other if (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) else None
        raise UsageError(f"{where}: is {'a ' + kind_of if kind_of else _what(mode)}, not a {kind}")
    if os.path.islink(path):
        raise UsageError(f"{where}: is a link to {os.readlink(path)}, which does not exist")
    if kind == "folder" and path.suffix.lower() in FILE_SUFFIXES:
        instead = f"{flag} {path.with_suffix('')}".strip()
        raise UsageError(f"{where}: names a folder{f' ({holds})' if holds else ''}, not a {path.suffix} file; give a "
                         f"folder name, e.g. {instead}")
    _check_parents(path, where)
    return False


def _check_parents(path: Path, where: str) -> None:
    """The nearest existing folder above ``path`` is a folder this process may create entries in."""
    parent = path.parent
    while True:
        try:
            mode = os.stat(parent).st_mode
            break
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:  # nothing above exists (the working folder was removed): let the write say
                return
            parent = parent.parent
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{where}: {parent} is {'a file' if stat.S_ISREG(mode) else _what(mode)}, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: cannot write in {parent} (permission denied)")
