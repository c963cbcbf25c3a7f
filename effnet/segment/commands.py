"""``effnet segment train|eval|predict|export``: the segment task's commands (parse flags, call the library, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..classify.predict import Shard, expand_inputs
from ..cpu import bf16_native
from ..data.masks import load_segmentation
from ..deploy.options import add_export_arguments, export_options
from ..deploy.predictors import backend_for
from ..errors import UsageError
from ..files import check_output_path
from ..models.zoo.registry import load_model
from ..tasks import export
from ..train.allocator import use_tcmalloc
from ..train.arguments import add_train_arguments, config_for
from ..train.config import check_numbers
from ..train.loop import rate_text, train
from .evaluate import evaluate_segmenter
from .predict import MaskFolder, check_output, predict_to_folder, stream_masks
from .predictor import SEGMENT_BACKENDS, Predictor
from .spec import TASK
from .task import SegmentationTask

CALIBRATION_IMAGES = 64  # images an int8 backend calibrates on when no --calibration folder is given


def cmd_train(args: argparse.Namespace) -> int:
    if args.out and not args.resume:  # before the data is read or a model built
        check_output_path(args.out, "folder", "--out", "the run's weights, metrics and checkpoints go in it")
    use_tcmalloc()  # re-executes this command under tcmalloc when installed (EFFNET_MALLOC=system: not)
    train(config_for(args), resume_dir=args.resume, task=SegmentationTask())
    return 0


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    check_numbers(batch_size=args.batch_size, resolution=args.resolution)
    model = load_model(args.run_or_model, weights=args.weights, ema=args.ema, task="segment")
    _, split = load_segmentation(args.data_dir, _warn)
    if model.config.class_names and tuple(model.config.class_names) != split.class_names:
        raise UsageError(f"{args.data_dir}: its classes {list(split.class_names)[:6]} are not the model's "
                         f"{list(model.config.class_names)[:6]}")
    backend = backend_for(model, args.backend)
    res = evaluate_segmenter(model, split, args.resolution, args.batch_size, backend=backend,
                             calibration=args.calibration)
    if args.json:
        print(json.dumps(dict(model=args.run_or_model, **res, skipped=len(split.skipped))))
        return 0
    print(f"{args.run_or_model} ({backend}): {res['images']} images, mIoU {res['mIoU']:.3f}, pixel accuracy "
          f"{res['pixel_accuracy']:.3f}, {rate_text(res['images_per_s'])} images/s"
          + (f"; {len(split.skipped)} sample(s) skipped" if split.skipped else ""))
    for name, iou in res["per_class_iou"].items():
        print(f"  {name:>16}  IoU {'n/a' if iou is None else f'{iou:.3f}'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    check_numbers(batch_size=args.batch_size, resolution=args.resolution)
    source, images = (args.model, args.inputs) if args.model else (args.inputs[0], args.inputs[1:])
    if not images:
        raise UsageError("give a segmenter (RUN_DIR, a .safetensors file, or --model NAME --weights FILE) and images")
    check_output(args.output, args.resume)  # before the model loads
    shard = Shard.parse(args.shard) if args.shard else Shard()
    paths = [p for p in expand_inputs(images) if shard.holds(p)]
    model = load_model(source, weights=args.weights, ema=args.ema, task="segment")
    try:
        predictor = Predictor(model, backend_for(model, args.backend), args.calibration, resolution=args.resolution,
                              images=paths[:CALIBRATION_IMAGES])
    except UsageError:
        raise
    except Exception as exc:  # export / quantization problems: one line, not a traceback
        raise UsageError(f"backend {args.backend}: {exc}") from None
    if args.output:
        run = predict_to_folder(predictor, paths, MaskFolder(Path(args.output), args.overlays, args.resume),
                                args.batch_size)
        rate = f"; {rate_text(run.images_per_s)} images/s" if run.predicted + run.errors else ""
        print(f"{run.predicted} images segmented, {run.errors} unreadable, {run.skipped} already in {args.output}"
              f"{rate}", file=sys.stderr)
        return 1 if run.errors else 0
    errors = 0
    for path, image, found in stream_masks(predictor, paths, args.batch_size):
        if image is None:
            errors += 1
            print(f"effnet: error: {found}", file=sys.stderr)
            continue
        total = sum(found["pixels"])
        parts = [f"{n} {c / total:.1%}" for n, c in zip(found["names"], found["pixels"])]
        print(json.dumps(dict(path=path, classes=dict(zip(found["names"], found["pixels"])))) if args.json
              else f"{path}: {image.width}x{image.height}, " + ", ".join(parts))
    return 1 if errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    """``effnet segment export``: ``effnet export`` for segmenters only (same flags)."""
    exported = export(args.model, export_options(args), False, args.weights, args.ema, task=TASK.name)
    print(exported.text(args.json))
    return 0


def add_commands(sub) -> None:
    seg = sub.add_parser("segment")
    ssub = seg.add_subparsers(dest="segment_command", required=True)

    p = ssub.add_parser("train", help="train a U-Net / FPN segmenter on images beside masks (the shared training loop)")
    p.add_argument("data_dir", nargs="?", help="DATA with {train,val}/images + {train,val}/masks and classes.txt, or "
                                               "the Pascal VOC layout")
    add_train_arguments(p, TASK.trainer.recipes)
    p.add_argument("--pretrained-backbone", dest="pretrained", action="store_true",
                   help="start the encoder from its classifier's ImageNet weights (smp's encoder_weights='imagenet')")
    p.add_argument("--fp32", dest="amp", action="store_false",
                   help="no bfloat16 autocast (the default where the CPU has native bf16)")
    p.set_defaults(func=cmd_train, amp=bf16_native(), **TASK.train_defaults)

    p = ssub.add_parser("eval", help="mean IoU, per-class IoU and pixel accuracy of a segmenter on DATA's val split")
    p.add_argument("run_or_model", help="run directory, segmenter .safetensors, or a name with --weights")
    p.add_argument("data_dir")
    p.add_argument("--weights", help="with a segmenter name: weights to import (an smp checkpoint)")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--resolution", type=int, help="input size, a multiple of 32 (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backend", choices=SEGMENT_BACKENDS,
                   help="score an exported graph instead of PyTorch; -int8 backends calibrate on DATA's val images "
                        "unless --calibration; unset: torch for a model, an exported file's own engine")
    p.add_argument("--calibration", help="folder of images to calibrate an int8 backend on")
    p.add_argument("--json", action="store_true", help="the scores, per-class IoU and confusion matrix as JSON")
    p.set_defaults(func=cmd_eval)

    p = ssub.add_parser("predict", help="class masks of images, folders or globs: a summary line each, or mask PNGs "
                                        "(+ overlays) and predictions.jsonl in --output")
    p.add_argument("inputs", nargs="+", metavar="[RUN_OR_MODEL] IMAGE",
                   help="a run directory or segmenter .safetensors (unless --model), then images, folders or globs")
    p.add_argument("--model", help="a segmenter: run directory, .safetensors, or a name with --weights")
    p.add_argument("--weights", help="with a segmenter name: weights to import (an smp checkpoint)")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--backend", choices=["auto", *SEGMENT_BACKENDS],
                   help="torch, or an exported graph (cached): " + ", ".join(SEGMENT_BACKENDS[1:]) + "; unset: "
                        "torch for a model, an exported file's own engine")
    p.add_argument("--calibration", help="folder of images to calibrate an int8 backend on (default: the inputs)")
    p.add_argument("--output", help="a folder: masks/NAME.png (pixel value = class index), predictions.jsonl")
    p.add_argument("--overlays", action="store_true", help="with --output: also overlays/NAME.png, the image with "
                                                           "its classes tinted")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output run")
    p.add_argument("--shard", help="K/N: only this machine's share of the inputs (as effnet predict)")
    p.add_argument("--resolution", type=int, help="input size, a multiple of 32 (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = ssub.add_parser("export", help="= effnet export, for segmenters: ONNX / OpenVINO / TorchScript / ExecuTorch, "
                                       "optional int8, verified against PyTorch")
    add_export_arguments(p, TASK.export_flags)
    p.set_defaults(func=cmd_export)
