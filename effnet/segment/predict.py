"""Segment images at folder scale: files, folders and globs expanded (as classification expands them), masks
predicted in batches and written as they come -- a palette PNG per image (pixel value = class index, VOC colours),
optionally a colour overlay, and one JSON line per image in ``predictions.jsonl`` -- resumable after a kill, and
split across machines with ``shard`` as ``effnet predict`` is.

An image that cannot be read gives ``{"path": ..., "error": ...}`` in ``predictions.jsonl`` and the run goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..classify.predict import PredictRun, ResultFile
from ..data import load_image
from ..data.masks import mask_image, voc_palette
from ..errors import ImageLoadError, UsageError
from ..files import atomic_write, check_output_path
from .predictor import Predictor

RESULTS = "predictions.jsonl"
OVERLAY_ALPHA = 0.5  # how much of a labelled pixel's colour is the class colour
BACKGROUND = 0  # class 0 is left undrawn in overlays (the background of VOC-layout sets and segment-digits)


def overlay(image: Image.Image, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """``image`` with every pixel of a class other than the background tinted by the class's VOC colour."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colours = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)[np.asarray(mask, dtype=np.intp) % 256]
    tint = (np.asarray(mask) != BACKGROUND)[..., None] * alpha
    return Image.fromarray((rgb * (1 - tint) + colours * tint).round().astype(np.uint8), "RGB")


def mask_names(paths: list[str]) -> dict[str, str]:
    """Each input's file name in the output folder: ``STEM.png``, or ``STEM-HASH.png`` where two inputs share a
    stem (the same inputs always get the same names, so a resumed run writes where the first one did)."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[Path(p).stem] = stems.get(Path(p).stem, 0) + 1
    out = {}
    for p in paths:
        stem = Path(p).stem
        tag = hashlib.sha1(p.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        out[p] = f"{stem}.png" if stems[stem] == 1 else f"{stem}-{tag}.png"
    return out


@dataclass(frozen=True)
class MaskFolder:
    """Where a run writes: ``folder/masks/NAME.png``, ``folder/overlays/NAME.png`` (``overlays``) and
    ``folder/predictions.jsonl``. ``resume`` continues an interrupted run (the images in its results are done);
    without it an existing results file is refused before anything is loaded."""

    folder: Path
    overlays: bool = False
    resume: bool = False

    def open(self) -> ResultFile:
        check_output(self.folder, self.resume)
        for sub in ("masks", *(("overlays",) if self.overlays else ())):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        return ResultFile(self.folder / RESULTS, topk=0, resume=self.resume)

    def write(self, path: str, name: str, image: Image.Image, found: dict) -> dict:
        mask = found["mask"]
        target = self.folder / "masks" / name
        atomic_write(target, lambda tmp: mask_image(mask).save(tmp, format="PNG"))
        row = dict(path=path, mask=str(target), width=mask.shape[1], height=mask.shape[0],
                   classes=[dict(index=i, label=n, pixels=c) for i, n, c in
                            zip(found["classes"], found["names"], found["pixels"])])
        if self.overlays:
            drawn = self.folder / "overlays" / name
            atomic_write(drawn, lambda tmp: overlay(image, mask).save(tmp, format="PNG"))
            row["overlay"] = str(drawn)
        return row


def stream_masks(predictor: Predictor, paths: list[str], batch_size: int = 8) -> Iterator[tuple[str, Image.Image | None, dict | str]]:
    """(path, image, prediction) per path in order, or (path, None, error line) for one that cannot be read."""
    for start in range(0, len(paths), batch_size):
        batch, images = paths[start:start + batch_size], []
        for p in batch:
            try:
                images.append((p, load_image(p)))
            except ImageLoadError as exc:
                images.append((p, str(exc)))
        good = [(p, im) for p, im in images if isinstance(im, Image.Image)]
        found = iter(predictor([im for _, im in good]) if good else [])
        for p, im in images:
            yield (p, im, next(found)) if isinstance(im, Image.Image) else (p, None, im)


def predict_to_folder(predictor: Predictor, paths: list[str], out: MaskFolder, batch_size: int = 8,
                      progress: bool | None = None) -> PredictRun:
    """Segment the ``paths`` not yet in ``out``'s results, writing each image's files and its JSON line."""
    from tqdm import tqdm

    results = out.open()
    try:
        names = mask_names(paths)
        todo = [p for p in paths if p not in results.done]
        t0, predicted, errors = time.perf_counter(), 0, 0
        with tqdm(total=len(todo), unit="img", disable=None if progress is None else not progress) as bar:
            for path, image, found in stream_masks(predictor, todo, batch_size):
                if image is None:
                    results.write([{"path": path, "error": found}])
                    errors += 1
                else:
                    results.write([out.write(path, names[path], image, found)])
                    predicted += 1
                bar.update(1)
        return PredictRun(predicted, errors, len(paths) - len(todo), time.perf_counter() - t0)
    finally:
        results.close()


def check_output(path: str | os.PathLike | None, resume: bool) -> None:
    """Refuse ``--output`` problems before a model loads, asking only ``stat`` (nothing is opened or created: a
    named pipe would block). Missing parent folders are made when the run writes."""
    if path is None:
        if resume:
            raise UsageError("--resume continues an --output folder; give --output")
        return
    folder = Path(path)
    if not check_output_path(folder, "folder", "--output", "masks/, overlays/ and predictions.jsonl go in it"):
        return
    for sub in ("masks", "overlays"):
        check_output_path(folder / sub, "folder", "--output")
    if check_output_path(folder / RESULTS, "file", "--output") and not resume:
        raise UsageError(f"--output {folder} holds a finished or interrupted run: --resume continues it")
