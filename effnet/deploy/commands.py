"""``effnet export``: parse flags, call the library, print the parity report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..detect.export import export_detector
from ..errors import UsageError
from ..models.efficientdet import is_detector_name, load_detector, read_detector_config
from ..models.registry import build_model_for_inference, create_model
from .export import export_model


def _export_detector(args: argparse.Namespace, src: str, is_file: bool) -> int:
    """Detectors export end to end: image tensor -> boxes, scores, classes (decoding and NMS in the graph)."""
    if args.format != "onnx" or args.int8:
        raise UsageError("detectors export to --format onnx (fp32): boxes, scores and classes with NMS inside")
    model = load_detector(src) if is_file else create_model(src, pretrained_backbone=args.pretrained)
    r = export_detector(model, args.output, args.resolution, raw=False,
                        images=sorted(str(p) for p in Path(args.calibration).rglob("*") if p.is_file())
                        if args.calibration else None)
    print(f"wrote {r.path} (end to end: boxes, scores, classes; decoding + NMS inside); ONNX Runtime"
          f"{' and OpenVINO' if r.openvino_checked else ''} vs PyTorch on {r.images} real images: max box diff "
          f"{r.max_box_diff:.2e} px, max score diff {r.max_score_diff:.2e}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    src = args.model_or_weights
    is_dir = Path(src).is_dir() and (Path(src) / "model.safetensors").is_file()  # a training run
    src = str(Path(src) / "model.safetensors") if is_dir else src
    is_file = Path(src).is_file() and not src.endswith(".json")
    if is_detector_name(src) or (is_file and src.endswith(".safetensors") and read_detector_config(src)):
        return _export_detector(args, src, is_file)
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
    p = sub.add_parser("export", help="export to ONNX / OpenVINO IR / TorchScript (verified against PyTorch), optional int8")
    p.add_argument("model_or_weights", help="model name, config .json, weights file (.safetensors) or run directory; classifiers and detectors")
    p.add_argument("--format", choices=["onnx", "openvino", "torchscript"], default="onnx",
                   help="openvino: IR, OUTPUT.xml + OUTPUT.bin")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--batch", choices=["static", "dynamic"], default="static")
    p.add_argument("--resolution", type=int)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime (onnx) / NNCF (openvino) post-training quantization, needs --calibration")
    p.add_argument("--calibration", help="folder of real images for int8 calibration and parity checks")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |logit diff| allowed vs PyTorch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
