"""The full default alpha/beta/gamma grid (1.0:1.4:0.05 each, |a*b^2*g^2 - 2| <= 5%) on the digits set.

Runs the real `effnet search` command (two worker processes on this machine) within a time budget and reports
the wall time, the results table, the verdict and the chosen coefficients; then scales them with
`effnet scale`. Writes JSON.

    python benchmarks/search_digits.py [--out bench-out/search] [--budget-minutes 9] [--base-resolution 32]
    python benchmarks/search_digits.py --epoch-cost     # what a search trial costs per epoch, before/after

Why 32 px: the digits are 8x8 scans, so 32 px loses nothing, and a 32 px B0 trains ~3x faster than 64 px.

--epoch-cost trains the same candidates (3 epochs, one thread, one process, as a search worker) two ways,
alternating so that both see the same machine load: "before" = a trial as the search ran it before issue 13
(plain `train()`: images decoded at every access, contiguous tensors, checkpoint.pt every epoch, an
evaluation every epoch, precise BN from the first 20 training batches) and "after" = `effnet.search.runner.trial`
(decoded images kept in the worker, channels-last, no checkpoint, evaluation with precise BN on 10 random
batches only at the epochs the pruner reads; here 1 and the last). Also "start-up": a trial's wall time minus its
epochs. (One fix helps both: seeding the CPU generator alone per image, not every accelerator backend.)
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effnet.cpu import machine  # noqa: E402


def epoch_cost(data: Path, out: Path, trials: int = 3, epochs: int = 3) -> dict:
    import torch

    torch.set_num_threads(1)
    from effnet.search import SearchSettings
    from effnet.search.grid import Candidate, candidate_config, resolve_base
    from effnet.search.runner.trial import RunSpec, reuse_decoded_images, train_run
    from effnet.classify import train
    from effnet.train import TrainConfig

    base = resolve_base("b0", 32)
    s = SearchSettings(data_dir=str(data), out=str(out))
    rows = []
    candidates = [Candidate(1.2, 1.1, 1.15), Candidate(1.0, 1.4, 1.0), Candidate(1.2, 1.1, 1.15)][:trials]
    for i, c in enumerate(candidates):
        cfg = candidate_config(base, c)
        for way in ("before", "after"):
            run_dir = out / "epoch-cost" / f"{way}-{i}"
            t0 = time.time()
            if way == "before":
                from effnet.data.folders import keep_decoded_images

                keep_decoded_images(0)
                tcfg = TrainConfig(data_dir=str(data), model=cfg.name, epochs=epochs, batch_size=32, out=str(run_dir),
                                   resolution=cfg.resolution, seed=0, recipe="finetune", quiet=True, precise_bn=20,
                                   plot=False, ema_decay=0.0)
                summary = train(tcfg, model_config=cfg)
            else:
                reuse_decoded_images()
                summary = train_run(s, RunSpec(cfg, run_dir, seed=0, epochs=epochs, rungs=[1])).summary
            wall = time.time() - t0
            with open(run_dir / "metrics.csv") as fh:
                epochs = [float(r["epoch_seconds"]) for r in csv.DictReader(fh)]
            rows.append(dict(way=way, candidate=c.key, trial=i, wall_seconds=wall, epoch_seconds=epochs,
                             start_up_seconds=wall - sum(epochs), top1=summary["val_top1"]))
            print(f"{way:>6} {c.key:<14} trial {i}: wall {wall:5.1f} s, epochs {[round(e, 1) for e in epochs]} s, "
                  f"start-up {wall - sum(epochs):4.1f} s, top-1 {summary['val_top1']:.1f}%", flush=True)
    for way in ("before", "after"):
        mine = [r for r in rows if r["way"] == way and r["trial"] > 0]  # trial 0 pays the one-off imports
        per_epoch = sum(sum(r["epoch_seconds"]) for r in mine) / sum(len(r["epoch_seconds"]) for r in mine)
        start = sum(r["start_up_seconds"] for r in mine) / len(mine)
        print(f"{way}: {per_epoch:.1f} s per epoch, {start:.1f} s start-up per trial (trials after the first)")
    return dict(rows=rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/search")
    ap.add_argument("--budget-minutes", default="9")
    ap.add_argument("--base-resolution", default="32")
    ap.add_argument("--n-jobs", default="2")
    ap.add_argument("--epoch-cost", action="store_true")
    ap.add_argument("--cost-trials", type=int, default=3, help="--epoch-cost: trials per way (the first pays imports)")
    ap.add_argument("--cost-epochs", type=int, default=3)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "digits"
    cli = [sys.executable, "-m", "effnet.cli"]
    if not (data / "train").is_dir():
        subprocess.run([*cli, "data", "digits", str(data)], check=True)
    if args.epoch_cost:
        result = epoch_cost(data, out, args.cost_trials, args.cost_epochs)
        (out / "epoch_cost.json").write_text(json.dumps(result, indent=1))
        return
    db = f"sqlite:///{out / 'search.db'}"
    cmd = [*cli, "search", str(data), "--storage", db, "--study", "digits-default-grid", "--out", str(out / "result"),
           "--budget-minutes", args.budget_minutes, "--base-resolution", args.base_resolution, "--n-jobs", args.n_jobs, "--one-level",
           *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    report = json.loads((out / "result" / "results.json").read_text())
    scale = subprocess.run([*cli, "scale", "--from-search", "digits-default-grid", "--storage", db, "--phi", "0..7",
                            "--out", str(out / "family")], check=True, capture_output=True, text=True)
    print(scale.stdout)
    summary = dict(machine=machine(), wall_seconds=wall, kept=report["grid_kept"], dropped=report["grid_dropped"],
                   completed=report["completed"], pruned=report["pruned"], plan=report["plan"],
                   verdict=report["verdict"], chosen=report["chosen"], command=cmd)
    (out / "search_digits.json").write_text(json.dumps(summary, indent=1))
    print(f"default grid: {report['grid_kept']} candidates kept, {report['grid_dropped']} dropped; "
          f"{report['completed']} done ({report['pruned']} pruned) in {wall / 60:.1f} min; verdict: {report['verdict']}")


if __name__ == "__main__":
    main()
