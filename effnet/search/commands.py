"""``effnet search``, ``effnet scale`` and ``effnet study``: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import UsageError
from ..files import atomic_write, check_output_path
from ..models.paper.accounting import profile
from .grid import Candidate
from .report import collect
from .runner.clock import process_started
from .runner.study import open_study
from .runner.worker import run_search
from .scaling import StudySettings, parse_phis, scale_family, scaling_study
from .settings import PAPER, SearchSettings


def cmd_search(args: argparse.Namespace) -> int:
    if args.out:
        check_output_path(args.out, "folder", "--out", "results.json, results.txt and the plots go in it")
    fields = {f.name for f in dataclasses.fields(SearchSettings)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    s = SearchSettings(**values)
    if s.objective == "latency" and s.latency_budget is None:
        raise UsageError("--objective latency needs --latency-budget MS")
    if s.min_steps is not None and (s.min_steps < 1 or s.min_steps > 100_000):
        raise UsageError("--min-steps must be between 1 and 100000")
    if s.min_steps and s.budget_epochs is not None:
        raise UsageError("--min-steps plans its rungs in steps: give --budget-minutes (or nothing: 9 units), "
                         "not --budget-epochs")
    if s.min_epochs < 1 or s.reduction_factor < 2 or s.top < 1 or s.repeats < 0 or s.seed < 0:
        raise UsageError("need --min-epochs >= 1, --reduction-factor >= 2, --top >= 1, --repeats >= 0, --seed >= 0")
    if (s.budget_minutes is not None and s.budget_minutes <= 0) or (s.budget_epochs is not None and s.budget_epochs <= 0):
        raise UsageError("--budget-minutes and --budget-epochs must be positive")
    if s.budget_minutes:  # the whole command counts: the interpreter's start and the imports too
        s = dataclasses.replace(s, deadline=process_started() + s.budget_minutes * 60)
    report = run_search(s)
    cut = f", {len(report['cut_for_time'])} cut for time" if report.get("cut_for_time") else ""
    print(f"{report['completed']} candidates done ({report['pruned']} stopped by the pruner{cut}); results in "
          f"{s.out_dir()} (results.json, results.txt, top1_vs_macs.png, heatmap.png, halving.png, rank_agreement.png); "
          f"{report['wall_seconds_this_run']:.0f} s this run")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    check_output_path(args.out, "folder", "--out", "a config .json per phi goes in it")
    alpha, beta, gamma = args.alpha, args.beta, args.gamma
    if args.from_search:
        try:
            s = SearchSettings(data_dir=".", storage=args.storage, study=args.from_search)
            saved, _ = open_study(s, create=False)
            found = collect(saved, s)
        except UsageError:
            raise  # names the storage already (password masked)
        except Exception as exc:
            raise UsageError(f"study {args.from_search!r} in {args.storage}: {exc}") from None
        if not found["rows"]:
            raise UsageError(f"study {args.from_search!r} has no finished candidates")
        chosen = Candidate.from_key(found["chosen"])
        alpha, beta, gamma = chosen.alpha, chosen.beta, chosen.gamma
        settings = saved.user_attrs.get("settings", {})
        # scale the base the search ran on, unless told otherwise
        args.base = args.base or settings.get("base") or "b0"
        print(f"from search {args.from_search}: alpha={alpha:g} beta={beta:g} gamma={gamma:g}")
        print(f"verdict: {found['verdict']}")
    if None in (alpha, beta, gamma):
        raise UsageError("give --alpha, --beta and --gamma, or --from-search STUDY")
    args.base = args.base or "b0"
    family = scale_family(Candidate(alpha, beta, gamma), parse_phis(args.phi), args.base, args.base_resolution,
                          args.resolution_divisor)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"alpha*beta^2*gamma^2 = {alpha * beta**2 * gamma**2:.3f}")
    print(f"{'phi':>4} {'width':>6} {'depth':>6} {'res':>5} {'params':>12} {'MACs(G)':>8}  config")
    for phi, cfg in family:
        p = profile(cfg)
        path = out / f"{cfg.name}.json"
        atomic_write(path, lambda tmp, c=cfg: Path(tmp).write_text(json.dumps(c.to_dict(), indent=1)))
        print(f"{phi:>4g} {cfg.width_mult:>6.3f} {cfg.depth_mult:>6.3f} {cfg.resolution:>5} {p.params:>12,} "
              f"{p.macs / 1e9:>8.3f}  {path}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    check_output_path(args.out, "folder", "--out", "the study's runs and plots go in it")
    study = StudySettings(data_dir=args.data_dir, max_phi=args.max_phi, base=args.base,
                          base_resolution=args.base_resolution, epochs=args.epochs, batch_size=args.batch_size,
                          out=args.out, recipe=args.recipe, seed=args.seed)
    scaling_study(study, Candidate(args.alpha, args.beta, args.gamma))
    return 0


def add_commands(sub) -> None:
    _add_search(sub)
    _add_scale(sub)
    _add_study(sub)


def _add_search(sub) -> None:
    p = sub.add_parser("search")
    p.add_argument("data_dir")
    p.add_argument("--base", help="base model name (b0) or config .json")
    p.add_argument("--alpha", help="depth grid START:STOP:STEP (default 1.0:1.4:0.05)")
    p.add_argument("--beta", help="width grid")
    p.add_argument("--gamma", help="resolution grid")
    p.add_argument("--flops-ratio", type=float)
    p.add_argument("--tolerance", type=float, help="relative, default 0.05")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-epochs", type=float, help="epochs the finalists reach (default 9)")
    g.add_argument("--budget-minutes", type=float,
                   help="wall time for the whole search (start-up, rungs, seed repeats, report): jobs start only "
                        "if they can end in time; candidates that cannot are cut for time and listed")
    p.add_argument("--one-level", action="store_true",
                   help="search even when the budget plans one fidelity level: with no rung to compare the verdict "
                        "can only keep the paper's coefficients (without it such a search is refused before it "
                        "starts, naming the budget that plans two)")
    p.add_argument("--min-epochs", type=int, help="first rung: epochs every candidate trains (default 1)")
    p.add_argument("--min-steps", type=int,
                   help="rungs in optimizer steps: every candidate trains this many steps, the best 1/N go on to N "
                        "times more, ... (for budgets that pay for about one epoch per candidate)")
    p.add_argument("--reduction-factor", type=int, help="successive halving: the best 1/N of a rung go on (3)")
    p.add_argument("--top", type=int, help="finalists re-trained with other seeds, besides the paper's (3)")
    p.add_argument("--repeats", type=int, help="extra seeds per finalist (2; more if --budget-minutes allows)")
    p.add_argument("--base-resolution", type=int, help="default: the dataset's declared resolution, else the base's")
    p.add_argument("--storage", help="Optuna RDB URL (default sqlite:///search.db; postgresql://... for many machines)")
    p.add_argument("--study")
    p.add_argument("--n-jobs", type=int)
    p.add_argument("--objective", choices=["flops", "latency"])
    p.add_argument("--latency-budget", type=float, help="ms at batch 1 on this machine")
    p.add_argument("--out")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--recipe", choices=["paper", "finetune"])
    p.add_argument("--heartbeat", type=float, help=argparse.SUPPRESS)
    p.add_argument("--grace", type=float, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int)
    p.add_argument("--precise-bn", type=int, help="train batches for BN recalibration before each evaluation (default 10)")
    p.set_defaults(func=cmd_search)


def _add_scale(sub) -> None:
    p = sub.add_parser("scale")
    p.add_argument("--alpha", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--gamma", type=float)
    p.add_argument("--phi", default="0..7", help="0..7 or a list 0,0.5,1")
    p.add_argument("--from-search", metavar="STUDY")
    p.add_argument("--storage", default="sqlite:///search.db")
    p.add_argument("--base", help="base model (default b0, or the base of --from-search)")
    p.add_argument("--base-resolution", type=int, help="default: the base's native resolution")
    p.add_argument("--resolution-divisor", type=int, default=8, help="round resolutions to this multiple")
    p.add_argument("--out", default="scaled")
    p.set_defaults(func=cmd_scale)


def _add_study(sub) -> None:
    p = sub.add_parser("study")
    p.add_argument("data_dir")
    p.add_argument("--max-phi", type=int, default=2)
    p.add_argument("--alpha", type=float, default=PAPER.alpha)
    p.add_argument("--beta", type=float, default=PAPER.beta)
    p.add_argument("--gamma", type=float, default=PAPER.gamma)
    p.add_argument("--base", default="b0")
    p.add_argument("--base-resolution", type=int)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--recipe", default="finetune", choices=["paper", "finetune"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="scaling-study")
    p.set_defaults(func=cmd_study)
