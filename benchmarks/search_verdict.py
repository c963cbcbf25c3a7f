"""Does the grid search rank signal or noise? The default alpha/beta/gamma grid on the digits set, run twice
with different seeds under the same time budget (`effnet search --budget-minutes`); both reports are printed
and the two verdicts compared: they must agree (both "winner beats the paper's coefficients" with overlapping
winners, both "keep the paper's coefficients", or both "low-fidelity ranking not trustworthy").

Rungs are in optimizer steps (`--min-steps`, default 8 of the ~40 an epoch has here): a 9-minute budget pays for
about one epoch per candidate, so rungs in epochs would leave successive halving nothing to halve at. After each
rung the report gives Spearman's rho between that rung's and the previous one's top-1 over the candidates that
reached both; the verdict names a winner only when those rankings agree.

    python benchmarks/search_verdict.py                 # two runs of ~9 min each (the issue's experiment)
    python benchmarks/search_verdict.py --quick         # 12 candidates, 4 min each: a check that it works
    python benchmarks/search_verdict.py --min-steps 0   # rungs in epochs, as before

Writes bench-out/verdict/search_verdict.json and benchmarks/results/search_verdict.json (--quick:
search_verdict_quick.json). `uptime` before and after each run is printed and recorded: timings on a shared
machine are inflated. The budget is for each run's whole `effnet search` process (start-up, planning, every
trial, the seed repeats and the report); the script checks each run's wall time against it.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effnet.cpu import machine  # noqa: E402
QUICK_GRID = ["--alpha", "1.0,1.2", "--beta", "1.0,1.1,1.2", "--gamma", "1.0,1.15", "--tolerance", "0.5"]


def run_once(args, data: Path, seed: int) -> dict:
    out = Path(args.out) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    db = out / "search.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "effnet.cli", "search", str(data), "--storage", f"sqlite:///{db}",
           "--study", f"digits-verdict-seed{seed}", "--out", str(out / "result"), "--seed", str(seed),
           "--budget-minutes", str(args.minutes), "--base-resolution", str(args.base_resolution),
           "--n-jobs", str(args.n_jobs), "--one-level", *(QUICK_GRID if args.quick else []),
           *(["--min-steps", str(args.min_steps)] if args.min_steps else [])]
    print("$", " ".join(cmd), flush=True)
    uptime_before = _uptime()
    load_before = os.getloadavg()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    load_after = os.getloadavg()
    uptime_after = _uptime()
    print(proc.stdout[-20000:], flush=True)
    print(f"uptime before: {uptime_before}\nuptime after:  {uptime_after}", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"search with seed {seed} failed")
    report = json.loads((out / "result" / "results.json").read_text())
    print(f"seed {seed}: {wall / 60:.1f} min wall (budget {args.minutes} min); load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f} (1-min), {load_after[1]:.2f} (5-min)", flush=True)
    return dict(seed=seed, wall_seconds=wall, within_budget=wall <= args.minutes * 60, load_before=load_before,
                load_after=load_after, uptime_before=uptime_before, uptime_after=uptime_after, command=cmd,
                cut_for_time=len(report["cut_for_time"]), repeats_cut_for_time=report["repeats_cut_for_time"],
                verdict=report["verdict"], verdict_kind=report["verdict_kind"], chosen=report["chosen"],
                plan=report["plan"], winner=_brief(report["winner"]), paper=_brief(report["paper"]),
                completed=report["completed"], pruned=report["pruned"], rank_agreement=report["rank_agreement"],
                table=(out / "result" / "results.txt").read_text(encoding="utf-8"))


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


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


def overall(runs: list[dict]) -> str:
    """One verdict over the runs: a winner only when every run named it (or overlapping ones) with the rungs'
    rankings agreeing in each; otherwise the paper's coefficients stay and the search is not trustworthy here."""
    if all(r["verdict_kind"] == "beats" for r in runs) and all(agree(runs[0], r) for r in runs[1:]):
        w = runs[0]["winner"]
        return (f"winner alpha={w['alpha']:g} beta={w['beta']:g} gamma={w['gamma']:g}: its lead held across the "
                f"rungs and the {len(runs)} seeds")
    kinds = ", ".join(f"seed {r['seed']}: {r['verdict_kind']}" for r in runs)
    return f"not trustworthy at this budget ({kinds}): keep the paper's coefficients"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/verdict")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--minutes", type=float, default=None, help="budget per run (default 9; --quick 4)")
    ap.add_argument("--base-resolution", type=int, default=32)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--min-steps", type=int, default=8, help="rungs in optimizer steps (0: in epochs)")
    ap.add_argument("--tag", default="", help="suffix of the result file's name (keeps other runs' files)")
    args = ap.parse_args()
    args.minutes = args.minutes or (4.0 if args.quick else 9.0)
    data = Path(args.out) / "digits"
    if not (data / "train").is_dir():
        subprocess.run([sys.executable, "-m", "effnet.cli", "data", "digits", str(data)], check=True, cwd=ROOT)
    runs = [run_once(args, data.resolve(), int(seed)) for seed in args.seeds.split(",")]
    print("\n==== both reports ====")
    for r in runs:
        print(f"\n-- seed {r['seed']}: {r['wall_seconds'] / 60:.2f} min wall of the {args.minutes:g} min budget "
              f"(uptime before: {r['uptime_before']}; after: {r['uptime_after']})\nplan {r['plan']}; "
              f"{r['completed']} candidates trained, {r['pruned']} pruned, {r['cut_for_time']} cut for time\n"
              f"{r['table']}")
    for r in runs:
        rhos = "; ".join(f"{a['lower_fidelity']}->{a['upper_fidelity']} {a['unit']}: "
                         + ("n/a" if a["rho"] is None else f"{a['rho']:.2f}") + f" (n={a['n']})"
                         for a in r["rank_agreement"]) or "one level only"
        print(f"seed {r['seed']} rank agreement per rung (Spearman rho): {rhos}")
        print(f"seed {r['seed']} verdict: {r['verdict']}")
    ok = all(agree(runs[0], r) for r in runs[1:])
    in_budget = all(r["within_budget"] for r in runs)
    walls = ", ".join(f"{r['wall_seconds'] / 60:.2f}" for r in runs)
    print(f"verdicts agree: {ok}; every run within its {args.minutes:g} min budget: {in_budget} ({walls} min)")
    verdict = overall(runs)
    print(f"overall: {verdict}")
    summary = dict(machine=machine(), quick=args.quick, minutes=args.minutes, min_steps=args.min_steps, runs=runs, agree=ok,
                   within_budget=in_budget, verdict=verdict)
    name = f"search_verdict{'_quick' if args.quick else ''}{'_' + args.tag if args.tag else ''}.json"
    for path in (Path(args.out) / name, ROOT / "benchmarks" / "results" / name):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
    if not (ok and in_budget):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
