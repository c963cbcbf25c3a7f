"""``effnet train``, ``effnet eval`` and ``effnet plot``: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..data import scan_image_folder
from ..errors import UsageError
from ..models.weights import load
from .allocator import use_tcmalloc
from .config import TrainConfig
from .evaluate import eval_loader, evaluate, model_for_backend
from .loop import train
from .metrics import plot_run


def config_for(args: argparse.Namespace, config_type=TrainConfig):
    """The run's config: flags, or the saved args.json of ``--resume RUN_DIR`` (DATA_DIR may be moved)."""
    if args.resume:
        path = Path(args.resume) / "args.json"
        if not path.is_file():
            raise UsageError(f"{args.resume}: not a run directory (no args.json)")
        saved = json.loads(path.read_text())
        if args.data_dir:
            saved["data_dir"] = args.data_dir
        return config_type(**saved)
    if not args.data_dir:
        raise UsageError("give DATA_DIR (or --resume RUN_DIR)")
    fields = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def cmd_train(args: argparse.Namespace) -> int:
    use_tcmalloc()  # re-executes this command under tcmalloc when installed (EFFNET_MALLOC=system: not)
    train(config_for(args), resume_dir=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    source = Path(args.run_or_weights)
    weights = source
    if source.is_dir():
        weights = source / ("model_ema.safetensors" if args.ema else "model.safetensors")
    model = load(weights)
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


def cmd_plot(args: argparse.Namespace) -> int:
    print(f"wrote {plot_run(args.run_dir)}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``effnet train`` after DATA_DIR (shared with ``effnet detect train``)."""
    p.add_argument("--model", default=None, help="model name or config .json (default efficientnet_b0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", action="store_true", default=None)
    g.add_argument("--weights", help="start from these weights (effnet .safetensors or a foreign checkpoint)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--resolution", type=int)
    p.add_argument("--lr", type=float, help="absolute learning rate (default: recipe lr x global batch / ref batch)")
    p.add_argument("--freeze-backbone", action="store_true", default=None)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--val-split", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--recipe", choices=["auto", "paper", "finetune", "detect"])
    p.add_argument("--optimizer", choices=["rmsprop", "adamw", "sgd"])
    p.add_argument("--schedule", choices=["exp", "cosine", "constant"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--auto-augment", choices=["none", "autoaugment", "randaugment"])
    p.add_argument("--rrc-scale-min", type=float, help="RandomResizedCrop minimum area fraction")
    p.add_argument("--hflip", type=float, help="horizontal flip probability")
    p.add_argument("--ema-decay", type=float, help="0 disables EMA")
    p.add_argument("--drop-path-rate", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument("--workers", type=int)
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--sync-bn", action="store_true", default=None)
    p.add_argument("--memory-efficient", action="store_true", default=None,
                   help="SiLU/SE that recompute in backward instead of storing activations")
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="per-block gradient checkpointing")
    p.add_argument("--checkpoint-stages", type=int,
                   help="with --grad-checkpoint: only the blocks of the first N stages (the high-resolution ones)")
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--precise-bn", type=int, help="recompute BN statistics over N train batches before the final eval")
    p.add_argument("--dump-rank-weights", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", default=None)


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
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8"],
                   default="torch", help="evaluate an exported copy (-int8: calibrated on DATA/train unless --calibration)")
    p.add_argument("--calibration", help="folder of images to calibrate an -int8 backend on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="write RUN_DIR/curves.png")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_plot)
