"""The README's picture of real overlays: a segmenter trained on segment-digits, on held-out val images.

For each of the first ``--count`` val images of DATA: the photo, its ground-truth mask as an overlay, and the
model's mask as an overlay (``effnet.segment.Predictor`` on ``--backend``; ``effnet.segment.predict.overlay``,
the drawing ``effnet segment predict --overlays`` writes), side by side, one row per image.

    python benchmarks/segment_overlays.py RUN DATA [--backend torch] [--out docs/segment_digits_overlays.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from PIL import Image, ImageDraw

    from effnet.data import load_image
    from effnet.data.masks import load_segmentation, read_mask
    from effnet.models.zoo.registry import load_model
    from effnet.segment import Predictor
    from effnet.segment.metrics import confusion, scores
    from effnet.segment.predict import overlay

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--backend", default="torch")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--height", type=int, default=200, help="each panel's height in the picture")
    p.add_argument("--out", default=str(ROOT / "docs" / "segment_digits_overlays.png"))
    args = p.parse_args()

    import numpy as np
    import torch

    model = load_model(args.run, task="segment")
    _, val = load_segmentation(args.data, log=lambda *a: None)
    predictor = Predictor(model, args.backend, images=[i for i, _ in val.samples[:32]])
    rows, names = [], model.config.class_names
    for image_path, mask_path in val.samples[:args.count]:
        image, truth = load_image(image_path), read_mask(mask_path)
        found = predictor([image])[0]["mask"]
        s = scores(confusion(torch.from_numpy(found.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)),
                             len(names)), names)
        panels = [image, overlay(image, truth), overlay(image, found)]
        scale = args.height / image.height
        panels = [im.resize((round(im.width * scale), args.height)) for im in panels]
        row = Image.new("RGB", (sum(im.width for im in panels) + 8 * (len(panels) - 1), args.height + 18), "white")
        x = 0
        for im, caption in zip(panels, ("photo", "ground truth", f"{model.config.name} ({args.backend}): "
                                                                  f"mIoU {s['mIoU']:.2f}")):
            row.paste(im, (x, 18))
            ImageDraw.Draw(row).text((x + 2, 3), caption, fill="black")
            x += im.width + 8
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 6 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 6
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({len(rows)} val images of {args.data})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
