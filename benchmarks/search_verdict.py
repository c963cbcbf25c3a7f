"""Does the grid search rank signal or noise? The default alpha/beta/gamma grid on the digits set, run twice
with different seeds under the same time budget (`effnet search --budget-minutes`); both reports are printed
and the two verdicts compared: they must agree (both "winner beats the paper's coefficients" with overlapping
winners, or both "keep the paper's coefficients").

    python benchmarks/search_verdict.py                 # two runs of ~9 min each (the issue's experiment)
    python benchmarks/search_verdict.py --quick         # 8 candidates, 2.5 min each: a check that it works

Writes bench-out/verdict/search_verdict.json and benchmarks/results/search_verdict.json. The CPU load
average before and after each run is recorded: timings on a shared machine are inflated.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_GRID = ["--alpha", "1.0,1.2", "--beta", "1.0,1.1,1.2", "--gamma", "1.0,1.15", "--tolerance", "0.5"]


def run_once(args, data: Path, seed: int) -> dict:
    out = Path(args.out) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    db = out / "search.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "effnet.cli", "search", str(data), "--storage", f"sqlite:///{db}",
           "--study", f"digits-verdict-seed{seed}", "--out", str(out / "result"), "--seed", str(seed),
           "--budget-minutes", str(args.minutes), "--base-resolution", str(args.base_resolution),
           "--n-jobs", str(args.n_jobs), *(QUICK_GRID if args.quick else [])]
    print("$", " ".join(cmd), flush=True)
    load_before = os.getloadavg()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    load_after = os.getloadavg()
    print(proc.stdout[-20000:], flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"search with seed {seed} failed")
    report = json.loads((out / "result" / "results.json").read_text())
    print(f"seed {seed}: {wall / 60:.1f} min wall (budget {args.minutes} min); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f} (1-min), {load_after[1]:.2f} (5-min)", flush=True)
    return dict(seed=seed, wall_seconds=wall, load_before=load_before, load_after=load_after, command=cmd,
                verdict=report["verdict"], verdict_kind=report["verdict_kind"], chosen=report["chosen"],
                plan=report["plan"], winner=_brief(report["winner"]), paper=_brief(report["paper"]),
                completed=report["completed"], pruned=report["pruned"],
                table=(out / "result" / "results.txt").read_text())


def _brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {k: row.get(k) for k in ("candidate", "alpha", "beta", "gamma", "epochs", "mean", "std", "n_seeds", "seeds")}


def agree(a: dict, b: dict) -> bool:
    """Same kind of verdict; when both say a winner beats the paper's, their winners overlap (same candidate or
    one-standard-deviation intervals that intersect)."""
    if a["verdict_kind"] != b["verdict_kind"]:
        return False
    if a["verdict_kind"] != "beats":
        return True
    wa, wb = a["winner"], b["winner"]
    return wa["candidate"] == wb["candidate"] or (
        wa["mean"] - wa["std"] <= wb["mean"] + wb["std"] and wb["mean"] - wb["std"] <= wa["mean"] + wa["std"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/verdict")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--minutes", type=float, default=None, help="budget per run (default 9; --quick 2.5)")
    ap.add_argument("--base-resolution", type=int, default=32)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.minutes = args.minutes or (2.5 if args.quick else 9.0)
    data = Path(args.out) / "digits"
    if not (data / "train").is_dir():
        subprocess.run([sys.executable, "-m", "effnet.cli", "data", "digits", str(data)], check=True, cwd=ROOT)
    runs = [run_once(args, data.resolve(), int(seed)) for seed in args.seeds.split(",")]
    print("\n==== both reports ====")
    for r in runs:
        print(f"\n-- seed {r['seed']}: {r['wall_seconds'] / 60:.1f} min, plan {r['plan']}\n{r['table']}")
    for r in runs:
        print(f"seed {r['seed']} verdict: {r['verdict']}")
    ok = all(agree(runs[0], r) for r in runs[1:])
    print(f"verdicts agree: {ok}")
    summary = dict(quick=args.quick, minutes=args.minutes, runs=runs, agree=ok)
    for path in (Path(args.out) / "search_verdict.json", ROOT / "benchmarks" / "results" / "search_verdict.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
