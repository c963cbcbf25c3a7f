"""``effnet detect train|eval|predict|export``: the detect task's commands (parse flags, call the library, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from ..cpu import bf16_native
from ..data.coco import read_coco_split
from ..deploy.options import add_export_arguments, export_options
from ..deploy.predictors import ExportedFile, at_resolution, backend_for
from ..errors import DataError, UsageError
from ..files import atomic_write, check_output_path
from ..models.zoo.registry import load_model
from ..tasks import export
from ..train.allocator import use_tcmalloc
from ..train.arguments import add_train_arguments, config_for
from ..train.config import check_numbers
from ..train.loop import rate_text, train
from .evaluate import evaluate_detector
from .pipeline import SCORE_THRESHOLD
from .predict import draw_detections, predict_paths
from .predictor import DETECT_BACKENDS, Predictor
from .spec import TASK
from .task import BACKBONE_ONLY, DetectionTask


def _needs_weights(source: str, weights: str | None) -> None:
    if not weights and not Path(source).exists():
        raise UsageError(f"{source}: not a run directory or a detector .safetensors file; a detector name needs "
                         "--weights FILE or --pretrained (its published COCO weights)")


def load_for_inference(source: str, ema: bool = False, weights: str | None = None):
    """A detector from a run directory, an effnet .safetensors file, or a name + ``weights`` (e.g. effdet's)."""
    _needs_weights(source, weights)
    return load_model(source, weights=weights, ema=ema, task="detect")


def _val_split(data_dir: str, class_names: tuple[str, ...] | None):
    root = Path(data_dir)
    split = read_coco_split(root / "annotations" / "instances_val.json", root / "val",
                            lambda msg: print(msg, file=sys.stderr))
    if class_names and split.class_names != tuple(class_names):
        by_name = {c["name"]: c for c in split.categories}
        missing = [n for n in class_names if n not in by_name]
        if missing:
            raise DataError(f"{data_dir}: categories {missing[:5]} of the model are not in instances_val.json")
        split = read_coco_split(root / "annotations" / "instances_val.json", root / "val", lambda msg: None,
                                [by_name[n] for n in class_names])
    return split


def cmd_train(args: argparse.Namespace) -> int:
    if args.out and not args.resume:  # before the data is read or a model built
        check_output_path(args.out, "folder", "--out", "the run's weights, metrics and checkpoints go in it")
    use_tcmalloc()  # re-executes this command under tcmalloc when installed (EFFNET_MALLOC=system: not)
    train(config_for(args), resume_dir=args.resume, task=DetectionTask())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    check_numbers(batch_size=args.batch_size, resolution=args.resolution)
    model = load_for_inference(args.run_or_model, args.ema)
    split = _val_split(args.data_dir, model.config.class_names)
    backend = backend_for(model, args.backend)
    calibration = args.calibration or (str(Path(args.data_dir) / "train") if backend.endswith("-int8")
                                       and not isinstance(model, ExportedFile) else None)
    if calibration and not Path(calibration).is_dir():
        raise UsageError(f"{calibration}: no folder of images to calibrate int8 on; give --calibration DIR")
    res = evaluate_detector(model, split, args.resolution or model.config.resolution, args.batch_size,
                            backend=backend, calibration=calibration)
    skipped = dict(skipped_annotations=len(split.skipped_annotations), skipped_images=len(split.skipped_images))
    if args.json:
        print(json.dumps(dict(model=args.run_or_model, backend=backend, **res, **skipped)))
        return 0
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    print(f"{args.run_or_model} ({backend}): {res['images']} images, " + ", ".join(f"{k} {fmt(res[k])}" for k in
          ("AP", "AP50", "AP75", "APs", "APm", "APl")) + f", {rate_text(res['images_per_s'])} images/s"
          + (f"; skipped {skipped['skipped_annotations']} annotation(s), {skipped['skipped_images']} image(s)"
             if any(skipped.values()) else ""))
    return 0


def _predict_model(args: argparse.Namespace):
    """The detector ``detect predict`` runs: ``--model NAME --pretrained`` (published COCO weights), a run
    directory / .safetensors, or a name + ``--weights``; the first positional is the model unless ``--model``."""
    source, images = (args.model, args.inputs) if args.model else (args.inputs[0], args.inputs[1:])
    if not images:
        raise UsageError("give a model (RUN_DIR, a .safetensors file, or --model NAME --pretrained) and images")
    if args.pretrained:
        model = load_model(source, pretrained=args.pretrained, weights=args.weights, task="detect")
    else:
        model = load_for_inference(source, args.ema, args.weights)
    return at_resolution(model, args.resolution), images


def _unique_png(stem: str, used: set[str]) -> str:
    """``stem.png``, or ``stem-2.png``, ``stem-3.png``... when an earlier input of this run had the same name."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def cmd_predict(args: argparse.Namespace) -> int:
    check_numbers(score_threshold=args.score_threshold, resolution=args.resolution)
    if args.out:  # a folder: one drawn PNG per image and predictions.json
        check_output_path(args.out, "folder", "--out", "a drawn PNG per image and predictions.json go in it")
    model, images = _predict_model(args)
    preds = predict_paths(Predictor(model, backend_for(model, args.backend), args.score_threshold, args.calibration),
                          images)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for pred in preds:
            drawn = draw_detections(pred["path"], pred)
            target = out / _unique_png(Path(pred["path"]).stem, used)  # a/x.jpg and b/x.png: x.png, x-2.png
            atomic_write(target, lambda tmp, image=drawn: image.save(tmp, format="PNG"))
            pred["drawn"] = str(target)
        text = json.dumps(preds, indent=1)
        atomic_write(out / "predictions.json", lambda tmp: Path(tmp).write_text(text))
    if args.json:
        print(json.dumps(preds))
        return 0
    for pred in preds:
        if len(preds) > 1:
            print(f"{pred['path']}: {len(pred['detections'])} object(s)")
        for d in pred["detections"]:
            print(f"{d['label']} {d['score']:.2f} [{' '.join(str(round(v)) for v in d['box'])}]")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``effnet detect export``: ``effnet export`` for detectors only (same flags)."""
    if not args.pretrained:
        _needs_weights(args.model, args.weights)
    exported = export(args.model, export_options(args), args.pretrained, args.weights, args.ema, task=TASK.name)
    print(exported.text(args.json))
    return 0


def add_commands(sub) -> None:
    det = sub.add_parser("detect")
    dsub = det.add_subparsers(dest="detect_command", required=True)

    p = dsub.add_parser("train", help="train a detector on a COCO-layout dataset (the shared training loop)")
    p.add_argument("data_dir", nargs="?", help="DATA with annotations/instances_{train,val}.json, train/, val/")
    add_train_arguments(p, TASK.trainer.recipes)
    p.add_argument("--pretrained-backbone", dest="pretrained", action="store_const", const=BACKBONE_ONLY,
                   help="start the backbone from the classifier's installed ImageNet weights (--pretrained: the "
                        "published COCO detector, only the class output layer new)")
    p.add_argument("--fp32", dest="amp", action="store_false",
                   help="no bfloat16 autocast (the default where the CPU has native bf16)")
    p.set_defaults(func=cmd_train, amp=bf16_native(), **TASK.train_defaults)

    p = dsub.add_parser("eval", help="COCO AP/AP50/AP75/APs/APm/APl of a run on DATA's val split")
    p.add_argument("run_or_model", help="run directory or detector .safetensors file")
    p.add_argument("data_dir")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--resolution", type=int)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backend", choices=DETECT_BACKENDS,
                   help="score the end-to-end exported graph (decoding + NMS inside) instead of PyTorch; "
                        "openvino-int8: calibrated on DATA/train unless --calibration; unset: torch for a model, an "
                        "exported file's own engine")
    p.add_argument("--calibration", help="folder of images to calibrate openvino-int8 on (default DATA/train)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = dsub.add_parser("predict", help="'person 0.93 [x1 y1 x2 y2]' lines or JSON, and PNGs with the named boxes "
                                        "drawn (--out)")
    p.add_argument("inputs", nargs="+", metavar="[RUN_OR_MODEL] IMAGE",
                   help="a run directory or detector .safetensors (unless --model), then image files")
    p.add_argument("--model", help="a detector name (with --pretrained: its published COCO weights) or file")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model NAME: its published COCO weights (default tag; 'effnet weights efficientdet')")
    p.add_argument("--backend", choices=["auto", *DETECT_BACKENDS],
                   help=f"torch, or the end-to-end exported graph: {', '.join(DETECT_BACKENDS[1:])} (auto: torch); "
                        "unset: torch for a model, an exported file's own engine")
    p.add_argument("--calibration", help="folder of images to calibrate openvino-int8 on")
    p.add_argument("--out", help="write <image>.png with boxes drawn and predictions.json here")
    p.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD)
    p.add_argument("--resolution", type=int)
    p.add_argument("--weights", help="with a detector name: weights to import (effdet checkpoint, effnet file)")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = dsub.add_parser("export", help="= effnet export, for detectors: ONNX with box decoding + NMS in the graph "
                                       "(verified vs PyTorch), or --raw")
    add_export_arguments(p, TASK.export_flags)
    p.set_defaults(func=cmd_export)
