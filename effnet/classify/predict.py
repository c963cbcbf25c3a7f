"""Classify images at folder scale: files, folders and globs expanded, decoded by worker processes, predicted in
batches and written as they come (JSON Lines or CSV), resumable after a kill, and split across machines with
``shard`` (a Slurm array or a Kubernetes indexed Job runs one shard each).

Every result is :func:`effnet.results.classification`'s schema; a file that cannot be read gives
``{"path": ..., "error": ...}`` and the run goes on.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import results
from ..data import eval_transform, load_image
from ..errors import ImageLoadError, UsageError
from ..files import check_output_path
from ..models.zoo.imagenet import class_names_for

OUTPUT_FORMATS = (".jsonl", ".csv")


# ---------------------------------------------------------------------------------------------- which files

def expand_inputs(specs: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given, folders walked (image files, symlinked folders not followed: no loops), globs matched;
    in order, each file once. A spec that matches nothing stays, so it is reported as missing."""
    images = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    out: list[str] = []
    for spec in map(str, specs):
        if os.path.isdir(spec):
            for root, dirs, files in os.walk(spec):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in images]
        elif os.path.exists(spec) or not glob.has_magic(spec):
            out.append(spec)
        else:
            matched = sorted(glob.glob(spec, recursive=True))
            out += [m for m in matched if os.path.isfile(m)] or [spec]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: a file belongs to the shard its path's hash picks, so every machine
    decides alone, and the shards together hold every file exactly once."""

    index: int = 0
    count: int = 1

    @staticmethod
    def parse(text: str) -> "Shard":
        k, _, n = text.partition("/")
        try:
            shard = Shard(int(k), int(n))
        except ValueError:
            raise UsageError(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
        if not (shard.count >= 1 and 0 <= shard.index < shard.count):
            raise UsageError(f"--shard {text}: K must be in 0..N-1 and N >= 1")
        return shard

    def holds(self, path: str) -> bool:
        digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


# ---------------------------------------------------------------------------------------------- predicting

class _Images(Dataset):
    """Decoded, preprocessed images; an unreadable file is an error message, not an exception."""

    def __init__(self, paths: list[str], transform: Callable):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None, str | None]:
        try:
            return self.paths[i], self.transform(load_image(self.paths[i])), None
        except ImageLoadError as exc:
            return self.paths[i], None, str(exc)


def _as_list(batch: list) -> list:
    return batch


@torch.inference_mode()
def stream_predictions(model: nn.Module, paths: list[str], topk: int = 5, batch_size: int = 32,
                       workers: int = 0) -> Iterator[dict]:
    """One result per path, in order, as each batch finishes: decoding runs in ``workers`` processes while the
    model predicts the previous batch."""
    config = model.config
    names = class_names_for(config)
    k = min(topk, len(names))
    loader = DataLoader(_Images(paths, eval_transform(config)), batch_size=batch_size, num_workers=workers,
                        collate_fn=_as_list, prefetch_factor=4 if workers else None)
    model.eval()
    for batch in loader:
        good = [(p, t) for p, t, err in batch if err is None]
        top = iter(())
        if good:
            values, indices = model(torch.stack([t for _, t in good])).softmax(-1).topk(k, dim=-1)
            top = zip(values.tolist(), indices.tolist())
        for path, tensor, err in batch:
            if err is not None:
                yield {"path": path, "error": err}
            else:
                v, i = next(top)
                yield results.classification(i, v, names, path=path)


def predict_files(model: nn.Module, paths: list[str | os.PathLike], topk: int = 5,
                  batch_size: int = 16) -> tuple[list[dict], list[str]]:
    """Top-k predictions for each readable image (the :mod:`effnet.results` schema), and one error line for
    each file that is not."""
    found, errors = [], []
    for r in stream_predictions(model, [str(p) for p in paths], topk, batch_size):
        if "error" in r:
            errors.append(r["error"])
        else:
            found.append(r)
    return found, errors


# ---------------------------------------------------------------------------------------------- writing

class ResultFile:
    """Results appended as they come to ``.jsonl`` (one object per line) or ``.csv`` (top-k columns). With
    ``resume`` an interrupted file is continued: a line cut by a kill is dropped, the paths it holds are done.

    Made before the model loads, it only checks and reads: a path that is not a regular file (a folder, a named
    pipe, a device) or an existing file without ``resume`` is one :class:`UsageError`; nothing is created or
    changed until the first :meth:`write`, so a run refused later (a bad model) leaves no empty file behind."""

    def __init__(self, path: str | os.PathLike, topk: int, resume: bool = False):
        self.path, self.topk, self.fh, self.csv = Path(path), topk, None, None
        self.suffix = self.path.suffix.lower()
        if self.suffix not in OUTPUT_FORMATS:
            raise UsageError(f"--output {path}: expected a .jsonl or .csv file")
        exists = check_output_path(self.path, "file", "--output")  # stat only: a FIFO is never opened
        if exists and not resume:
            raise UsageError(f"--output {path} exists: --resume continues it (nothing in it is overwritten)")
        self.done, self._complete = self._read_done() if exists else (set(), None)

    def _header(self) -> list[str]:
        return ["path", *[f"{c}{i}" for i in range(1, self.topk + 1) for c in ("label", "index", "score")], "error"]

    def _read_done(self) -> tuple[set[str], int]:
        """The paths an interrupted file holds, and the length of its complete lines (a kill can cut the last
        line: it is dropped when the file is opened for writing, and its image redone)."""
        data = self.path.read_bytes()
        complete = data[:data.rfind(b"\n") + 1]
        try:
            text = complete.decode("utf-8")
            if self.suffix == ".csv":
                rows = list(csv.reader(io.StringIO(text)))
                return {row[0] for row in rows[1:] if row}, len(complete)
            return {json.loads(line)["path"] for line in text.splitlines() if line.strip()}, len(complete)
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise UsageError(f"--resume {self.path}: not an effnet predictions file ({exc})") from None

    def _open(self) -> None:
        """Create (with missing parent folders) or continue the file; a fresh CSV gets its header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._complete is not None and self.path.stat().st_size != self._complete:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._complete)  # the line a kill cut
        self.fh = open(self.path, "a", newline="", encoding="utf-8")  # at the end: tell() is the size
        self.csv = csv.writer(self.fh) if self.suffix == ".csv" else None
        if self.csv and self.fh.tell() == 0:
            self.csv.writerow(self._header())
            self.fh.flush()

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` and flush: what a kill leaves is every finished batch."""
        if self.fh is None:
            self._open()
        for r in rows:
            if self.csv is None:
                self.fh.write(json.dumps(r) + "\n")
                continue
            cells = [r["path"]]
            for p in r.get("predictions", []):
                cells += [p["label"], p["index"], p["score"]]
            cells += [""] * (len(self._header()) - 1 - len(cells)) + [r.get("error", "")]
            self.csv.writerow(cells)
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


@dataclass(frozen=True)
class PredictRun:
    """What a folder-scale run did."""

    predicted: int
    errors: int
    skipped: int  # already in the output (--resume)
    seconds: float

    @property
    def images_per_s(self) -> float:
        return (self.predicted + self.errors) / self.seconds if self.seconds > 0 else 0.0


def predict_to_file(model: nn.Module, paths: list[str], output: ResultFile, batch_size: int = 32, workers: int = 0,
                    progress: bool | None = None) -> PredictRun:
    """Predict the ``paths`` not yet in ``output`` and append each batch's results as it finishes."""
    from tqdm import tqdm

    todo = [p for p in paths if p not in output.done]
    t0, predicted, errors, pending = time.perf_counter(), 0, 0, []
    with tqdm(total=len(todo), unit="img", disable=None if progress is None else not progress) as bar:
        for r in stream_predictions(model, todo, output.topk, batch_size, workers):
            pending.append(r)
            errors += "error" in r
            predicted += "error" not in r
            if len(pending) >= batch_size:
                output.write(pending)
                bar.update(len(pending))
                pending = []
        output.write(pending)
        bar.update(len(pending))
    return PredictRun(predicted, errors, len(paths) - len(todo), time.perf_counter() - t0)
