"""Transfer vs scratch at equal steps on scikit-learn's digits (real scans), and B0 from scratch.

Runs `effnet train` three times in this process and prints a table; writes JSON next to the runs.
    python benchmarks/transfer_vs_scratch.py [--out bench-out] [--scratch-epochs 15]
"""

import argparse
import json
import time
from pathlib import Path

from effnet.data.bundled import write_digits
from effnet.classify import train
from effnet.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/transfer")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "digits"
    if not (data / "train").is_dir():
        write_digits(data)
    runs = [
        ("lite0 pretrained (transfer)", TrainConfig(str(data), "efficientnet_lite0", pretrained=True, epochs=args.epochs,
                                                    out=str(out / "lite0_pretrained"), quiet=True)),
        ("lite0 scratch, same recipe/steps", TrainConfig(str(data), "efficientnet_lite0", epochs=args.epochs,
                                                         recipe="finetune", out=str(out / "lite0_scratch"), quiet=True)),
        ("b0 scratch (finetune recipe)", TrainConfig(str(data), "efficientnet_b0", epochs=args.scratch_epochs,
                                                     recipe="finetune", out=str(out / "b0_scratch"), quiet=True)),
    ]
    rows = []
    for label, cfg in runs:
        t0 = time.time()
        s = train(cfg)
        rows.append(dict(run=label, epochs=cfg.epochs, steps=s["steps"], val_top1=s["val_top1"],
                         ema_val_top1=s["ema_val_top1"], seconds=time.time() - t0))
    print(f"{'run':<34} {'epochs':>6} {'steps':>6} {'top-1 %':>8} {'EMA %':>7} {'time s':>7}")
    for r in rows:
        print(f"{r['run']:<34} {r['epochs']:>6} {r['steps']:>6} {r['val_top1']:>8.2f} {r['ema_val_top1']:>7.2f} "
              f"{r['seconds']:>7.0f}")
    (out / "transfer_vs_scratch.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
