"""``effnet explain``: where a classifier looks (class activation maps over the photo), and the paper's Figure 7."""

from __future__ import annotations

import argparse
import json

from .options import DEFAULT_LAYER, METHODS


def cmd_explain(args: argparse.Namespace) -> int:
    from ..files import atomic_write, check_output_path

    # before the photo is read or a model built (and before torch loads): the files this run will write
    check_output_path(args.output, "file", "--output")
    if args.heatmap:
        check_output_path(args.heatmap, "file", "--heatmap")

    from ..data import load_image
    from ..errors import UsageError
    from .cam import explain, overlay

    photo = load_image(args.photo)
    if args.compare:
        return _compare(args, photo)
    if args.model is None and args.run is None:
        raise UsageError("give --model NAME [--pretrained] or a RUN directory / .safetensors file")
    if args.model and args.run:
        raise UsageError("give --model NAME or RUN, not both")
    from ..models.zoo.registry import CLASSIFY, load_model

    model = load_model(args.model or args.run, pretrained=args.pretrained, task=CLASSIFY)
    e = explain(model, photo, args.class_index, args.method, args.layer)
    atomic_write(args.output, lambda tmp: overlay(photo, e.heatmap).save(tmp, format="PNG"))
    if args.heatmap:
        from PIL import Image

        heat = Image.fromarray((e.heatmap * 255).round().astype("uint8"), mode="L")
        atomic_write(args.heatmap, lambda tmp: heat.save(tmp, format="PNG"))
    info = dict(model=model.config.name, method=e.method, layer=e.layer, class_index=e.class_index,
                class_name=e.class_name, probability=e.probability, predicted=e.predicted, peak=list(e.peak),
                output=args.output, heatmap=args.heatmap)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote {args.output}: {e.method} at {e.layer} for class {e.class_index} '{e.class_name}' "
              f"(p={e.probability:.3f}; top-1 {e.predicted}), peak at x={e.peak[0]} y={e.peak[1]} of the photo")
    return 0


def _compare(args: argparse.Namespace, photo) -> int:
    from ..errors import UsageError
    from .compare import compare, draw_sheet, named_columns, study_columns

    if bool(args.study) == bool(args.models):
        raise UsageError("--compare needs --study DIR (an `effnet study` folder) or --models SPEC [SPEC ...]")
    columns = study_columns(args.study, args.phi) if args.study else named_columns(args.models, args.pretrained)
    k, maps = compare(columns, photo, args.class_index, args.method, args.layer)
    title = (f"Class activation maps ({args.method}, layer {args.layer}) for class {k} '{maps[0].class_name}'"
             f"{' -- models of ' + args.study if args.study else ''} (paper: Figure 7)")
    draw_sheet(columns, maps, photo, args.output, title)
    for col, e in zip(columns, maps):
        print(f"{col.label.splitlines()[0]:<18} p({e.class_name})={e.probability:.3f} top-1 {e.predicted:>4} "
              f"peak x={e.peak[0]} y={e.peak[1]}")
    print(f"wrote {args.output}")
    return 0


def add_commands(sub) -> None:

    p = sub.add_parser("explain")
    p.add_argument("run", nargs="?", help="a training run directory or .safetensors file (or use --model)")
    p.add_argument("photo")
    p.add_argument("--model", help="registered model name (with --pretrained: its published weights)")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("-o", "--output", default="cam.png", help="the map over the photo (PNG)")
    p.add_argument("--heatmap", help="also write the bare map (8-bit grayscale PNG, the photo's size)")
    p.add_argument("--method", default="gradcam", choices=list(METHODS))
    p.add_argument("--class", dest="class_index", type=int, help="class index (default: the model's top-1)")
    p.add_argument("--layer", default=DEFAULT_LAYER, help=f"module to take the map at (default {DEFAULT_LAYER}: "
                                                          "the last convolution)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--compare", action="store_true",
                   help="Figure 7: baseline, deeper, wider, higher-resolution and compound models side by side")
    p.add_argument("--study", help="with --compare: an `effnet study` output folder (its runs are the models)")
    p.add_argument("--phi", type=float, help="with --study: which phi (default the largest)")
    p.add_argument("--models", nargs="+", help="with --compare: runs, files or names (with --pretrained)")
    p.set_defaults(func=cmd_explain)
