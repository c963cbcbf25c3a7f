"""``effnet export``: parse flags, call the library, print the parity report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models.registry import build_model_for_inference
from .export import export_model


def cmd_export(args: argparse.Namespace) -> int:
    src = args.model_or_weights
    is_file = Path(src).is_file() and not src.endswith(".json")
    model = build_model_for_inference(None if is_file else src, src if is_file else None, args.pretrained)
    report = export_model(model, args.output, args.format, args.batch, args.resolution, args.int8,
                          args.calibration, args.tolerance)
    real = f", real images ({report.real_images}) {report.max_abs_diff_real:.2e}" if report.real_images else ""
    print(f"wrote {report.path} ({report.format}{', int8' if report.int8 else ''}); parity vs PyTorch: "
          f"max |logit diff| random {report.max_abs_diff_random:.2e}{real}")
    if report.int8:
        conf = (f"; {report.top1_agreement_confident:.1%} on the {report.confident_images} where fp32 is confident"
                if report.top1_agreement_confident is not None else "")
        print(f"int8 top-1 agreement with fp32 on {report.real_images} real images: {report.top1_agreement:.1%}{conf}")
    if args.json:
        print(json.dumps(report.__dict__))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX / TorchScript (verified against PyTorch), optional int8")
    p.add_argument("model_or_weights", help="model name, config .json or weights file (.safetensors)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--batch", choices=["static", "dynamic"], default="static")
    p.add_argument("--resolution", type=int)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime static quantization (needs --calibration)")
    p.add_argument("--calibration", help="folder of real images for int8 calibration and parity checks")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| allowed vs PyTorch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
