"""The EfficientNetV2 paper's training claim on this machine: V2-S against B4, with and without progressive learning.

The papers put EfficientNetV2-S (83.9% ImageNet top-1, 22 M parameters, 8.8 B FLOPs, trained at 300 px) beside
EfficientNet-B4 (82.9%, 19 M, 4.2 B, trained at 380 px), and report V2 training 5x-11x faster (Tan & Le 2021,
abstract and Table 7), thanks to Fused-MBConv in the early stages, the smaller training
size and progressive learning (Algorithm 1). ImageNet is out of reach of a 2-core CPU, so this runs the same two
architectures -- full width and depth, each at its own training size times ``--scale`` -- from scratch on the
bundled digits (``effnet data digits``), for the same number of epochs, with and without ``--progressive``:

- training: per configuration, one ``effnet train`` process (round-robin over ``--rounds`` so machine noise is
  shared), reporting wall time, mean step time, images/s, the process's peak resident memory and the top-1
  reached (validation split of the digits, at each model's evaluation size). The fixed-size runs train with
  effnet's default recipe for the data; the progressive ones with Table 6's S row on top of it (sizes scaled
  like the rest, RandAugment 5 -> 15, dropout 0.1 -> 0.3), as the paper compares them;
- inference: images/s of V2-S and B4 (random weights, each at its evaluation size, 384 and 380 px, times
  ``--infer-scale``) through every effnet backend, batch 1, medians of interleaved repetitions.

    python benchmarks/bench_v2.py [--scale 0.15] [--epochs 5] [--rounds 1] [--json bench-out/bench_v2.json]

The CPU model and flags go beside every number (``effnet.cpu``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def models() -> tuple[tuple[str, str, int, int], ...]:
    """(label, effnet architecture, training size, evaluation size), as the papers train and evaluate them."""
    from effnet.models.nets.config import VARIANTS
    from effnet.models.nets.efficientnet_v2 import V2_VARIANTS

    v2s, b4 = V2_VARIANTS["efficientnetv2_s"], VARIANTS["efficientnet_b4"][2]
    return ("V2-S", "efficientnetv2_s", v2s.train_size, v2s.eval_size), ("B4", "efficientnet_b4", b4, b4)


def paper() -> dict:
    """The papers' ImageNet numbers for the two (effnet.models.paper.peers), and the V2 paper's training claim."""
    from effnet.models.paper.peers import TABLE2_ROWS, V2_ROWS

    v2s = next(r for r in V2_ROWS if r.effnet == "efficientnetv2_s")
    b4 = next(r for r in TABLE2_ROWS if r.effnet == "efficientnet_b4")
    return {"V2-S": dict(top1=v2s.top1, params_m=v2s.params_m, flops_b=v2s.flops_b, source=v2s.source),
            "B4": dict(top1=b4.top1, params_m=b4.params_m, flops_b=b4.flops_b, source="arXiv:1905.11946v5 Table 2"),
            "claim": "EfficientNetV2 trains 5x-11x faster (arXiv:2104.00298 abstract; TPUv3, ImageNet, progressive)"}


def _size(pixels: float) -> int:
    return max(32, int(round(pixels / 8)) * 8)


def train_configs(scale: float) -> dict[str, dict]:
    """Label -> what one training run needs: architecture, sizes and whether progressive."""
    out = {}
    for label, arch, train_px, eval_px in models():
        for progressive in (False, True):
            out[f"{label}{' progressive' if progressive else ''}"] = dict(
                arch=arch, train=_size(train_px * scale), eval=_size(eval_px * scale), progressive=progressive,
                start=_size(128 * scale))
    return out


def write_config(cfg: dict, num_classes: int, path: Path) -> Path:
    from effnet.models.nets.families import classifier_config  # no torch (the peak RSS of wait4 stays the child's)

    config = classifier_config(cfg["arch"]).replace(resolution=cfg["eval"], train_resolution=cfg["train"],
                                                    num_classes=num_classes, crop_pct=1.0)
    path.write_text(config.to_json())
    return path


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def train_once(label: str, cfg: dict, data: Path, workdir: Path, epochs: int, batch: int) -> dict:
    """One ``effnet train`` process; its wall time, peak RSS (wait4 of that child alone) and summary."""
    config = write_config(cfg, 10, workdir / f"{label.replace(' ', '_')}.json")
    run = workdir / f"run_{label.replace(' ', '_')}_{time.time_ns()}"
    cmd = [sys.executable, "-m", "effnet.cli", "train", str(data), "--model", str(config), "--epochs", str(epochs),
           "--batch-size", str(batch), "--out", str(run), "--seed", "0", "--workers", "0", "--quiet",
           "--resolution", str(cfg["train"])]  # trained and evaluated there (not at the digits' hint, 64 px)
    if cfg["progressive"]:  # Table 6's S row (both models), its 128 px start scaled like every other size
        cmd += ["--progressive", "--progressive-size", f"{cfg['start']}:{cfg['train']}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{label}: effnet train failed:\n{out[-3000:]}")
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:  # csv, not effnet's reader: this process stays without torch
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return dict(label=label, **cfg, wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024, summary=summary,
                epochs=rows, log_tail=out.splitlines()[-3:])


def inference(scale: float, reps: int, workdir: Path) -> list[dict]:
    """img/s at batch 1 of V2-S and B4 through every effnet engine, interleaved."""
    import torch

    from benchmarks.bench_infer import build_engines

    engines = {}
    for label, arch, _, eval_px in models():
        res = max(32, int(round(eval_px * scale)))  # 380 stays 380 (B4 evaluates there)
        wanted = ("effnet eager (folded, CL)", "effnet bf16 (folded, CL)", "effnet onnxruntime fp32",
                  "effnet onnxruntime int8", "effnet openvino fp32", "effnet openvino int8", "effnet executorch fp32",
                  "effnet executorch int8")
        sub = workdir / label
        sub.mkdir(exist_ok=True)
        for name in wanted:
            built = build_engines(arch, res, sub, only=name)
            for engine, fn in built.items():
                engines[(label, engine, res)] = fn
    times: dict = {k: [] for k in engines}
    with torch.inference_mode():
        xs = {res: torch.randn(1, 3, res, res) for (_, _, res) in engines}
        for key, fn in engines.items():
            fn(xs[key[2]])
        for _ in range(reps):
            for key, fn in engines.items():
                t = time.perf_counter()
                fn(xs[key[2]])
                times[key].append(time.perf_counter() - t)
    return [dict(model=label, engine=engine, resolution=res, img_per_s=1 / statistics.median(ts))
            for (label, engine, res), ts in times.items()]


def print_training(results: list[dict]) -> None:
    print(f"{'configuration':<20} {'train px':>8} {'epochs':>6} {'wall s':>7} {'step ms':>7} {'img/s':>6} "
          f"{'peak MiB':>8} {'val top-1':>9} {'x B4 wall':>9}")
    b4 = statistics.median(r["wall_s"] for r in results if r["label"] == "B4")
    for r in results:
        s, rows = r["summary"], r["epochs"]
        top1 = s.get("val_top1", s.get("ema_val_top1", float("nan")))
        seconds = sum(e["epoch_seconds"] for e in rows)
        step_ms = 1000 * seconds / max(1, rows[-1]["step"]) if rows else float("nan")
        imgs = sum(e["img_per_s"] * e["epoch_seconds"] for e in rows) / seconds if rows else float("nan")
        px = f"{r['start']}..{r['train']}" if r["progressive"] else f"{r['train']}"
        print(f"{r['label']:<20} {px:>8} {s.get('epochs_run', 0):>6} {r['wall_s']:>7.0f} {step_ms:>7.0f} "
              f"{imgs:>6.1f} {r['peak_rss_mib']:>8.0f} {top1:>9.2f} {b4 / r['wall_s']:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.15, help="training image sizes as a fraction of the papers'")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10, help="inference repetitions")
    ap.add_argument("--infer-scale", type=float, default=1.0, help="inference image sizes as a fraction of the "
                    "papers' evaluation sizes (1.0: V2-S at 384 px, B4 at 380 px)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--json", default="bench-out/bench_v2.json")
    args = ap.parse_args()
    from effnet.cpu import cpu_flags, cpu_name  # no torch

    workdir = Path(tempfile.mkdtemp(prefix="effnet-bench-v2-"))
    machine = dict(cpu=cpu_name(), flags=sorted(cpu_flags()), cores=os.cpu_count())
    print(f"{machine['cpu']}, {machine['cores']} CPUs, flags: {' '.join(machine['flags'])}")
    out: dict = dict(machine=machine, scale=args.scale, epochs=args.epochs, paper=paper())
    if not args.skip_train:
        data = workdir / "digits"
        subprocess.run([sys.executable, "-m", "effnet.cli", "data", "digits", str(data)], cwd=ROOT, check=True,
                       capture_output=True)
        results = []
        for _ in range(args.rounds):
            for label, cfg in train_configs(args.scale).items():
                results.append(train_once(label, cfg, data, workdir, args.epochs, args.batch))
                print(f"  {label}: {results[-1]['wall_s']:.0f} s", flush=True)
        out["training"] = results
        save(out, args.json)  # before anything else can fail
        print_training(results)
    if not args.skip_infer:
        rows = inference(args.infer_scale, args.reps, workdir)
        print(f"{'model':<6} {'engine':<28} {'px':>4} {'img/s':>8} {'x B4':>6}")
        for r in rows:
            b4 = next((o["img_per_s"] for o in rows if o["model"] == "B4" and o["engine"] == r["engine"]), None)
            print(f"{r['model']:<6} {r['engine']:<28} {r['resolution']:>4} {r['img_per_s']:>8.1f} "
                  f"{(r['img_per_s'] / b4 if b4 else float('nan')):>6.2f}")
        out["inference"] = rows
    out["load_average"] = os.getloadavg()
    save(out, args.json)
    print(f"wrote {args.json}")


def save(out: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
