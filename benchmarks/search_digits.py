"""The full default alpha/beta/gamma grid (1.0:1.4:0.05 each, |a*b^2*g^2 - 2| <= 5%) on the digits set.

Runs the real `effnet search` command (two worker processes on this machine) and reports the wall time,
the results table and the chosen coefficients; then scales them with `effnet scale`. Writes JSON.

    python benchmarks/search_digits.py [--out bench-out/search] [--budget-epochs 2] [--base-resolution 32]

Why 32 px: the digits are 8x8 scans, so 32 px loses nothing, and a 32 px B0 trains ~3x faster than 64 px.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/search")
    ap.add_argument("--budget-epochs", default="2")
    ap.add_argument("--base-resolution", default="32")
    ap.add_argument("--n-jobs", default="2")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "digits"
    cli = [sys.executable, "-m", "effnet.cli"]
    if not (data / "train").is_dir():
        subprocess.run([*cli, "data", "digits", str(data)], check=True)
    db = f"sqlite:///{out / 'search.db'}"
    cmd = [*cli, "search", str(data), "--storage", db, "--study", "digits-default-grid", "--out", str(out / "result"),
           "--budget-epochs", args.budget_epochs, "--base-resolution", args.base_resolution, "--n-jobs", args.n_jobs,
           *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t0
    report = json.loads((out / "result" / "results.json").read_text())
    best = report["best"]
    scale = subprocess.run([*cli, "scale", "--from-search", "digits-default-grid", "--storage", db, "--phi", "0..7",
                            "--out", str(out / "family")], check=True, capture_output=True, text=True)
    print(scale.stdout)
    summary = dict(wall_seconds=wall, kept=report["grid_kept"], dropped=report["grid_dropped"],
                   completed=report["completed"], best=dict(alpha=best["alpha"], beta=best["beta"], gamma=best["gamma"],
                                                             top1=best["top1"]), command=cmd)
    (out / "search_digits.json").write_text(json.dumps(summary, indent=1))
    print(f"default grid: {report['grid_kept']} candidates kept, {report['grid_dropped']} dropped; "
          f"{report['completed']} trained in {wall / 60:.1f} min; best alpha={best['alpha']:g} beta={best['beta']:g} "
          f"gamma={best['gamma']:g} (top-1 {best['top1']:.2f}%)")


if __name__ == "__main__":
    main()
