"""The paper's method (section 3.3): grid-search alpha/beta/gamma at phi=1, then scale up.

Step 1 (``effnet search``): enumerate the alpha/beta/gamma grid, keep candidates with
alpha * beta^2 * gamma^2 within a tolerance of the FLOPs ratio (2), build each phi=1 model from the base,
train it on the user's data with a fixed budget (the training code of ``effnet train``), and record
top-1, params, MACs and CPU latency. Trials live in an Optuna study in an RDB (SQLite by default,
PostgreSQL for workers on several machines): a killed search resumes, workers never duplicate a trial.

Step 2 (``effnet scale``): apply the chosen coefficients for phi = 0..K and write the configs.
``effnet study``: width-only / depth-only / resolution-only / compound scaling at matched MACs (Fig. 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, compound

MAX_FAILURES = 3  # a candidate that failed (or whose worker died) this often is given up and reported


# ---------------------------------------------------------------------------------------------- grid

def parse_range(text: str) -> list[float]:
    """``"1.0:1.4:0.05"`` -> [1.0, 1.05, ..., 1.4]; ``"1.2"`` -> [1.2]; ``"1.1,1.2"`` -> [1.1, 1.2]."""
    try:
        if "," in text:
            return [float(v) for v in text.split(",")]
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise ValueError(f"bad range {text!r}: expected START:STOP:STEP, a list a,b,c, or one value") from None
    if len(parts) == 1:
        return parts
    if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
        raise ValueError(f"bad range {text!r}: expected START:STOP:STEP with STEP > 0 and STOP >= START")
    start, stop, step = parts
    n = int(math.floor((stop - start) / step + 1e-9))
    return [round(start + i * step, 6) for i in range(n + 1)]


@dataclass(frozen=True, order=True)
class Candidate:
    alpha: float
    beta: float
    gamma: float

    @property
    def ratio(self) -> float:
        """FLOPs growth per unit of phi predicted by the rule: alpha * beta^2 * gamma^2."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def key(self) -> str:
        return f"{self.alpha:g},{self.beta:g},{self.gamma:g}"

    @staticmethod
    def from_key(key: str) -> "Candidate":
        a, b, g = (float(v) for v in key.split(","))
        return Candidate(a, b, g)


def enumerate_grid(alphas, betas, gammas, flops_ratio: float | None = 2.0, tolerance: float = 0.1):
    """(kept, dropped): with a ratio, keep alpha*beta^2*gamma^2 within ``tolerance`` (relative) of it."""
    kept, dropped = [], []
    for a, b, g in itertools.product(alphas, betas, gammas):
        c = Candidate(a, b, g)
        if flops_ratio is None or abs(c.ratio - flops_ratio) <= tolerance * flops_ratio:
            kept.append(c)
        else:
            dropped.append(c)
    return kept, dropped


def resolve_base(base: str, base_resolution: int | None) -> ModelConfig:
    from .registry import resolve_config

    cfg = resolve_config(base)
    return cfg.replace(resolution=base_resolution) if base_resolution else cfg


def candidate_config(base: ModelConfig, c: Candidate, phi: float = 1.0) -> ModelConfig:
    """The phi-scaled model of a candidate. Resolution rounds to whole pixels (a search runs at small sizes,
    where rounding to multiples of 8 would erase gamma)."""
    with warnings.catch_warnings():  # the grid decides which ratios are acceptable, not compound()
        warnings.simplefilter("ignore", UserWarning)
        return compound(phi, c.alpha, c.beta, c.gamma, base=base, resolution_divisor=1)


def architecture_key(config: ModelConfig) -> str:
    """Identity of the network a config builds: rounded stages, stem/head widths and input resolution."""
    from .config import scale

    arch = scale(config)
    return json.dumps([arch.stem_channels, arch.head_channels, config.resolution, config.dropout,
                       [dataclasses.astuple(st) for st in arch.stages]])


def measure_latency_ms(config: ModelConfig, repeats: int = 15) -> float:
    """Median batch-1 CPU latency (ms) of the model at its resolution, in eval mode."""
    from .model import EfficientNet

    model = EfficientNet(config).eval()
    x = torch.randn(1, config.in_chans, config.resolution, config.resolution)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000.0 * times[len(times) // 2]


# ---------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class SearchSettings:
    data_dir: str
    base: str = "b0"
    alpha: str = "1.0:1.4:0.05"
    beta: str = "1.0:1.4:0.05"
    gamma: str = "1.0:1.4:0.05"
    flops_ratio: float = 2.0
    tolerance: float = 0.05
    budget_epochs: float = 1.0
    budget_minutes: float | None = None
    base_resolution: int | None = None
    storage: str = "sqlite:///search.db"
    study: str | None = None
    n_jobs: int = 1
    objective: str = "flops"  # or "latency"
    latency_budget: float | None = None  # ms, with objective latency
    out: str | None = None
    seed: int = 0
    batch_size: int = 32
    recipe: str = "finetune"  # AdamW + cosine learns in a short budget; "paper" needs hundreds of epochs
    precise_bn: int = 20  # recompute BN statistics before evaluating a short-budget candidate
    heartbeat: float = 5.0  # seconds; a trial silent for `grace` is taken as dead and redone
    grace: float = 20.0
    threads: int | None = None

    def study_name(self) -> str:
        if self.study:
            return self.study
        return f"effnet-search-{Path(self.data_dir).name}-{Path(self.base).stem}-{self.objective}"

    def out_dir(self) -> Path:
        return Path(self.out or f"search-{self.study_name()}")


def _settings_key(s: SearchSettings) -> dict:
    """The settings a study must keep: re-running with other ones would mix incomparable trials."""
    keep = ("base", "alpha", "beta", "gamma", "flops_ratio", "tolerance", "budget_epochs", "budget_minutes",
            "base_resolution", "objective", "latency_budget", "seed", "batch_size", "recipe", "precise_bn")
    return {k: getattr(s, k) for k in keep}


def grid_for(s: SearchSettings) -> tuple[list[Candidate], list[Candidate]]:
    ratio = s.flops_ratio if s.objective == "flops" else None
    return enumerate_grid(parse_range(s.alpha), parse_range(s.beta), parse_range(s.gamma), ratio, s.tolerance)


def base_resolution_for(s: SearchSettings) -> int | None:
    if s.base_resolution:
        return s.base_resolution
    from .train import dataset_hints

    return dataset_hints(s.data_dir).get("resolution")


# ---------------------------------------------------------------------------------------------- study

def _open_study(s: SearchSettings, create: bool = True):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats with ask/tell and fail_stale_trials are "experimental" in Optuna; we rely on them knowingly
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    engine_kwargs = {"connect_args": {"timeout": 120}} if s.storage.startswith("sqlite") else {}
    for attempt in range(8):
        try:
            # RDBStorage creates the schema: workers starting together race there (and on the study row);
            # the loser gets an integrity/programming error and simply retries
            storage = optuna.storages.RDBStorage(s.storage, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=int(max(1, s.heartbeat)),
                                                 grace_period=int(max(2, s.grace)))
            if create:
                study = optuna.create_study(study_name=s.study_name(), storage=storage, direction="maximize",
                                            load_if_exists=True)
            else:
                study = optuna.load_study(study_name=s.study_name(), storage=storage)
            return study, storage
        except (KeyError, ValueError, ImportError):
            raise  # no such study / bad URL / missing driver: retrying will not help
        except Exception:
            if attempt == 7:
                raise
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def _pick_sampler():
    """An Optuna sampler that returns the candidate this worker chose: the grid is walked here, not by
    Optuna, so that the claim protocol can keep parallel workers from running the same candidate."""
    import optuna

    class PickSampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.next: dict[str, Any] = {}

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return self.next[name]

    return PickSampler()


def _heartbeat(storage, trial_id: int, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # a transient DB error must not kill the trial
            pass


def worker(s: SearchSettings, worker_id: int = 0, log=print) -> int:
    """Run candidates until none is left; returns how many this worker completed."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from .train import TrainConfig, train

    if s.threads:
        torch.set_num_threads(s.threads)
    study, storage = _open_study(s)
    sampler = _pick_sampler()
    study.sampler = sampler
    kept, _ = grid_for(s)
    keys = [c.key for c in kept]
    dist = {"candidate": CategoricalDistribution(keys)}
    base = resolve_base(s.base, base_resolution_for(s))
    base_macs = _macs(base)
    out_dir = s.out_dir()
    # Candidates whose rounded architecture and resolution coincide (e.g. alpha 1.05 and 1.1 both round the
    # B0 repeats up to the same depth) are one model: train it once, record its result for each of them.
    same_model = {k: architecture_key(candidate_config(base, Candidate.from_key(k))) for k in keys}
    rep_of = {}
    for k in keys:
        rep_of[k] = next(r for r in keys if same_model[r] == same_model[k])
    completed = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # trials whose worker died (kill -9) become FAIL
        trials = study.get_trials(deepcopy=False)
        done = {t.params.get("candidate"): t for t in trials if t.state == TrialState.COMPLETE
                and not t.user_attrs.get("duplicate")}
        finished = {t.params.get("candidate") for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    and not t.user_attrs.get("duplicate")}
        running = {t.params.get("candidate") for t in trials if t.state == TrialState.RUNNING}
        fails: dict[str, int] = {}
        for t in trials:
            if t.state == TrialState.FAIL:
                fails[t.params.get("candidate")] = fails.get(t.params.get("candidate"), 0) + 1
        given_up = {k for k, n in fails.items() if n >= MAX_FAILURES and k not in finished}
        finished |= given_up | {k for k in keys if rep_of[k] in given_up}
        todo = [k for k in keys if k not in finished and k not in running and (rep_of[k] == k or rep_of[k] in done)]
        if not todo:
            if running - finished or any(k not in finished for k in keys):
                time.sleep(max(1.0, s.heartbeat))  # wait: a running trial may still die and need redoing
                continue
            return completed
        # spread workers over the list so they rarely collide; collisions are resolved below
        key = todo[worker_id % len(todo)]
        sampler.next = {"candidate": key}
        trial = study.ask(dist)
        # claim: if another live or finished trial of this candidate has a lower number, it wins
        rivals = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE,
                                                                       TrialState.PRUNED))
                  if t.params.get("candidate") == key and t.number < trial.number and not t.user_attrs.get("duplicate")]
        if rivals:
            trial.set_user_attr("duplicate", True)
            study.tell(trial, state=TrialState.PRUNED)
            continue
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(storage, trial._trial_id, max(0.5, s.heartbeat / 2), stop),
                                daemon=True)
        storage.record_heartbeat(trial._trial_id)
        beat.start()
        try:
            if rep_of[key] != key:  # same model as a finished candidate: reuse its measurements
                source = done[rep_of[key]]
                c = Candidate.from_key(key)
                for k, v in source.user_attrs.items():
                    if k not in ("alpha", "beta", "gamma", "rule_ratio", "worker"):
                        trial.set_user_attr(k, v)
                for k, v in dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio, same_model_as=source.number,
                                 worker=f"{os.uname().nodename}:{os.getpid()}").items():
                    trial.set_user_attr(k, v)
                study.tell(trial, source.value)
                log(f"[{worker_id}] {key}: same model as {rep_of[key]} (trial {source.number}): top-1 {source.value:.2f}%")
                continue
            c = Candidate.from_key(key)
            cfg = candidate_config(base, c)
            macs = _macs(cfg)
            latency = measure_latency_ms(cfg)
            attrs = dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio, macs=macs,
                         measured_ratio=macs / base_macs, params=_params(cfg), latency_ms=latency,
                         resolution=cfg.resolution, width_mult=cfg.width_mult, depth_mult=cfg.depth_mult,
                         worker=f"{os.uname().nodename}:{os.getpid()}")
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            if s.objective == "latency" and s.latency_budget is not None and latency > s.latency_budget:
                trial.set_user_attr("over_latency_budget", True)
                study.tell(trial, state=TrialState.PRUNED)
                log(f"[{worker_id}] {key}: {latency:.1f} ms > budget {s.latency_budget} ms, skipped")
                continue
            t0 = time.time()
            # --budget-minutes: as many epochs as fit (train stops at the time limit)
            epochs = 10_000 if s.budget_minutes else max(1, math.ceil(s.budget_epochs))
            tcfg = TrainConfig(data_dir=s.data_dir, model=cfg.name, epochs=epochs, batch_size=s.batch_size,
                               resolution=cfg.resolution, out=str(out_dir / "trials" / f"{trial.number:04d}"),
                               seed=s.seed, recipe=s.recipe, budget_minutes=s.budget_minutes, quiet=True,
                               precise_bn=s.precise_bn, plot=False,
                               ema_decay=0.0)
            summary = train(tcfg, model_config=cfg)
            top1 = float(summary["val_top1"])
            trial.set_user_attr("wall_seconds", time.time() - t0)
            trial.set_user_attr("steps", summary["steps"])
            study.tell(trial, top1)
            completed += 1
            log(f"[{worker_id}] {key}: top-1 {top1:.2f}%  MACs {macs / 1e6:.1f}M (x{macs / base_macs:.2f})  "
                f"latency {latency:.1f} ms  {time.time() - t0:.0f} s")
        except BaseException as exc:
            if trial.number is not None:
                try:
                    study.tell(trial, state=TrialState.FAIL)
                except Exception:
                    pass
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log(f"[{worker_id}] {key}: failed: {exc}")
        finally:
            stop.set()


def _macs(cfg: ModelConfig) -> int:
    from .accounting import profile

    return profile(cfg).macs


def _params(cfg: ModelConfig) -> int:
    from .accounting import profile

    return profile(cfg).params


def _worker_process(settings_dict: dict, worker_id: int) -> int:
    _die_with_parent()
    return worker(SearchSettings(**settings_dict), worker_id)


def _die_with_parent() -> None:
    """Linux: end this worker when the `effnet search` process dies (kill -9 included), instead of leaving an
    orphan training on; its unfinished trial is then redone by the next run."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_search(s: SearchSettings, log=print) -> dict:
    """Step 1. Workers (``n_jobs`` processes here; more on other machines against the same storage)."""
    kept, dropped = grid_for(s)
    study, _ = _open_study(s)
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", _settings_key(s))
    elif saved != _settings_key(s):
        diff = {k: (saved.get(k), v) for k, v in _settings_key(s).items() if saved.get(k) != v}
        raise ValueError(f"study {s.study_name()!r} in {s.storage} was started with other settings {diff}; "
                         "use another --study name")
    grid_total = len(kept) + len(dropped)
    if s.objective == "flops":
        log(f"grid: {grid_total} candidates, {len(kept)} kept with alpha*beta^2*gamma^2 within "
            f"{s.tolerance:.0%} of {s.flops_ratio:g}, {len(dropped)} dropped")
    else:
        log(f"grid: {grid_total} candidates; latency budget {s.latency_budget} ms replaces the FLOPs constraint")
    started = time.time()
    if s.n_jobs > 1:
        import multiprocessing as mp

        threads = s.threads or max(1, (os.cpu_count() or 2) // s.n_jobs)
        settings = dataclasses.asdict(dataclasses.replace(s, threads=threads))
        ctx = mp.get_context("spawn")
        with ctx.Pool(s.n_jobs) as pool:
            pool.starmap(_worker_process, [(settings, i) for i in range(s.n_jobs)])
    else:
        worker(s, 0, log)
    report = write_report(s, kept, dropped, log)
    report["wall_seconds_this_run"] = time.time() - started
    return report


# ---------------------------------------------------------------------------------------------- report

def collect_results(s: SearchSettings) -> list[dict]:
    from optuna.trial import TrialState

    study, _ = _open_study(s, create=False)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rows.append(dict(trial=t.number, candidate=t.params["candidate"], top1=t.value, **t.user_attrs))
    rows.sort(key=lambda r: (-r["top1"], r["macs"]))
    return rows


def write_report(s: SearchSettings, kept, dropped, log=print) -> dict:
    from .weights import atomic_write

    rows = collect_results(s)
    out = s.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    best = rows[0] if rows else None
    header = (f"{'':1} {'alpha':>5} {'beta':>5} {'gamma':>5} {'a*b2*g2':>7} {'MACs x':>6} {'MACs(M)':>8} "
              f"{'params':>10} {'res':>4} {'lat ms':>7} {'top-1 %':>7} {'time s':>6}")
    lines = [header]
    for r in rows:
        mark = "*" if r is best else " "
        lines.append(f"{mark:1} {r['alpha']:>5.2f} {r['beta']:>5.2f} {r['gamma']:>5.2f} {r['rule_ratio']:>7.3f} "
                     f"{r['measured_ratio']:>6.2f} {r['macs'] / 1e6:>8.1f} {r['params']:>10,} {r['resolution']:>4} "
                     f"{r['latency_ms']:>7.1f} {r['top1']:>7.2f} {r.get('wall_seconds', 0):>6.0f}")
    table = "\n".join(lines)
    log(table)
    if best:
        log(f"best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
            f"(top-1 {best['top1']:.2f}%); scale it with: effnet scale --from-search {s.study_name()} "
            f"--storage {s.storage} --phi 0..7")
    report = dict(study=s.study_name(), storage=s.storage, settings=_settings_key(s), grid_kept=len(kept),
                  grid_dropped=len(dropped), completed=len(rows), best=best, results=rows)
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    atomic_write(out / "results.txt", lambda tmp: Path(tmp).write_text(table + "\n"))
    if rows:
        try:
            plot_search(rows, s, out)
        except Exception as exc:  # plots must not lose results
            log(f"warning: could not plot: {exc}")
    return report


def plot_search(rows: list[dict], s: SearchSettings, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .weights import atomic_write

    base_macs = rows[0]["macs"] / rows[0]["measured_ratio"]
    fig, ax = plt.subplots(figsize=(7, 5))
    macs = np.array([r["macs"] for r in rows]) / 1e6
    top1 = np.array([r["top1"] for r in rows])
    ax.scatter(macs, top1, c=[r["rule_ratio"] for r in rows], cmap="viridis", edgecolors="k")
    if s.objective == "flops":
        lo, hi = (s.flops_ratio * (1 - s.tolerance)) * base_macs / 1e6, (s.flops_ratio * (1 + s.tolerance)) * base_macs / 1e6
        ax.axvspan(lo, hi, color="orange", alpha=0.15, label=f"{s.flops_ratio:g}x base MACs +/-{s.tolerance:.0%}")
        ax.legend()
    best = rows[0]
    ax.annotate(f"best a={best['alpha']:g} b={best['beta']:g} g={best['gamma']:g}", (best["macs"] / 1e6, best["top1"]),
                xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("MACs (M, measured, phi=1)")
    ax.set_ylabel("val top-1 %")
    ax.set_title("grid search: top-1 vs MACs")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(out / "top1_vs_macs.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)

    # heat map over (alpha, beta): best top-1 across gamma, gamma of that best written in the cell
    alphas = sorted({r["alpha"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    grid = np.full((len(betas), len(alphas)), np.nan)
    gam = {}
    for r in rows:
        i, j = betas.index(r["beta"]), alphas.index(r["alpha"])
        if np.isnan(grid[i, j]) or r["top1"] > grid[i, j]:
            grid[i, j] = r["top1"]
            gam[(i, j)] = r["gamma"]
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.imshow(grid, origin="lower", cmap="magma", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
    for (i, j), g in gam.items():
        ax.text(j, i, f"g{g:g}", ha="center", va="center", color="cyan", fontsize=7)
    ax.set_xlabel("alpha (depth)")
    ax.set_ylabel("beta (width)")
    ax.set_title("top-1 % (best over gamma; cell label = gamma)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    atomic_write(out / "heatmap.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- scale

def parse_phis(text: str) -> list[float]:
    if ".." in text:
        lo, hi = text.split("..")
        return [float(v) for v in range(int(lo), int(hi) + 1)]
    return [float(v) for v in text.split(",")]


def scale_family(alpha: float, beta: float, gamma: float, phis: list[float], base: str = "b0",
                 base_resolution: int | None = None, resolution_divisor: int = 8) -> list[tuple[float, ModelConfig]]:
    from .registry import resolve_config

    base_cfg = resolve_config(base)
    if base_resolution:
        base_cfg = base_cfg.replace(resolution=base_resolution)
    out = []
    for phi in phis:
        cfg = compound(phi, alpha, beta, gamma, base=base_cfg, resolution_divisor=resolution_divisor)
        out.append((phi, cfg.replace(name=f"effnet_phi{phi:g}_a{alpha:g}_b{beta:g}_g{gamma:g}")))
    return out


# ---------------------------------------------------------------------------------------------- study

def matched_config(base: ModelConfig, dimension: str, target_macs: int) -> ModelConfig:
    """Scale one dimension of ``base`` alone until its MACs reach ``target_macs`` (bisection)."""
    lo, hi = 1.0, 8.0

    def build(m: float) -> ModelConfig:
        if dimension == "width":
            return base.replace(width_mult=base.width_mult * m)
        if dimension == "depth":
            return base.replace(depth_mult=base.depth_mult * m)
        if dimension == "resolution":
            return base.replace(resolution=max(8, int(round(base.resolution * m))))
        raise ValueError(dimension)

    for _ in range(25):
        mid = (lo + hi) / 2
        if _macs(build(mid)) < target_macs:
            lo = mid
        else:
            hi = mid
    best = min((build(lo), build(hi)), key=lambda c: abs(_macs(c) - target_macs))
    return best.replace(name=f"{base.name}-{dimension}-x{(lo + hi) / 2:.3f}")


def scaling_study(data_dir: str, max_phi: int, alpha: float, beta: float, gamma: float, base: str = "b0",
                  base_resolution: int | None = None, epochs: int = 3, batch_size: int = 32,
                  out: str = "scaling-study", recipe: str = "finetune", seed: int = 0, log=print) -> list[dict]:
    """Train width-only, depth-only, resolution-only and compound models at matched MACs (paper Fig. 3)."""
    from .train import TrainConfig, dataset_hints, train
    from .weights import atomic_write

    base_resolution = base_resolution or dataset_hints(data_dir).get("resolution")
    base_cfg = resolve_base(base, base_resolution)
    out_dir = Path(out)
    rows = []

    def run(kind: str, phi: float, cfg: ModelConfig) -> None:
        t0 = time.time()
        tcfg = TrainConfig(data_dir=data_dir, model=cfg.name, epochs=epochs, batch_size=batch_size,
                           resolution=cfg.resolution, out=str(out_dir / "runs" / f"{kind}-phi{phi:g}"), seed=seed,
                           recipe=recipe, quiet=True, ema_decay=0.0, precise_bn=20)
        summary = train(tcfg, model_config=cfg)
        row = dict(kind=kind, phi=phi, macs=_macs(cfg), params=_params(cfg), width_mult=cfg.width_mult,
                   depth_mult=cfg.depth_mult, resolution=cfg.resolution, top1=summary["val_top1"],
                   seconds=time.time() - t0)
        rows.append(row)
        log(f"{kind:<10} phi={phi:g}: top-1 {row['top1']:.2f}%  MACs {row['macs'] / 1e6:.1f}M  "
            f"(w {cfg.width_mult:.2f}, d {cfg.depth_mult:.2f}, r {cfg.resolution})  {row['seconds']:.0f} s")

    run("base", 0, base_cfg)
    for phi in range(1, max_phi + 1):
        comp = compound(phi, alpha, beta, gamma, base=base_cfg, resolution_divisor=1)
        target = _macs(comp)
        run("compound", phi, comp)
        for dim in ("width", "depth", "resolution"):
            run(dim, phi, matched_config(base_cfg, dim, target))
    atomic_write(out_dir / "study.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    _plot_study(rows, out_dir / "scaling_study.png")
    lines = [f"{'kind':<10} {'phi':>3} {'MACs(M)':>8} {'params':>10} {'width':>5} {'depth':>5} {'res':>4} {'top-1 %':>7}"]
    for r in sorted(rows, key=lambda r: (r["kind"], r["phi"])):
        lines.append(f"{r['kind']:<10} {r['phi']:>3g} {r['macs'] / 1e6:>8.1f} {r['params']:>10,} {r['width_mult']:>5.2f} "
                     f"{r['depth_mult']:>5.2f} {r['resolution']:>4} {r['top1']:>7.2f}")
    table = "\n".join(lines)
    atomic_write(out_dir / "study.txt", lambda tmp: Path(tmp).write_text(table + "\n"))
    log(table)
    return rows


def _plot_study(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .weights import atomic_write

    base = [r for r in rows if r["kind"] == "base"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, style in (("width", "s--"), ("depth", "^--"), ("resolution", "v--"), ("compound", "o-")):
        pts = base + sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["phi"])
        ax.plot([p["macs"] / 1e6 for p in pts], [p["top1"] for p in pts], style, label=f"scale {kind}")
    ax.set_xlabel("MACs (M, measured)")
    ax.set_ylabel("val top-1 %")
    ax.set_title("Scaling study at matched MACs (paper Fig. 3 / Table 3, on your data)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI

def cmd_search(args: argparse.Namespace) -> int:
    from .cli import _fail
    from .data import DataError

    fields = {f.name for f in dataclasses.fields(SearchSettings)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    s = SearchSettings(**values)
    if s.objective == "latency" and s.latency_budget is None:
        return _fail("--objective latency needs --latency-budget MS")
    try:
        report = run_search(s)
    except (ValueError, DataError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    print(f"{report['completed']} candidates done; results in {s.out_dir()} "
          f"(results.json, results.txt, top1_vs_macs.png, heatmap.png); "
          f"{report['wall_seconds_this_run']:.0f} s this run")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from .accounting import profile
    from .cli import _fail
    from .weights import atomic_write

    alpha, beta, gamma = args.alpha, args.beta, args.gamma
    if args.from_search:
        try:
            s = SearchSettings(data_dir=".", storage=args.storage, study=args.from_search)
            rows = collect_results(s)
        except Exception as exc:
            return _fail(f"study {args.from_search!r} in {args.storage}: {exc}")
        if not rows:
            return _fail(f"study {args.from_search!r} has no completed candidates")
        alpha, beta, gamma = rows[0]["alpha"], rows[0]["beta"], rows[0]["gamma"]
        saved, _ = _open_study(s, create=False)
        settings = saved.user_attrs.get("settings", {})
        # scale the base the search ran on, unless told otherwise
        args.base = args.base or settings.get("base") or "b0"
        print(f"from search {args.from_search}: alpha={alpha:g} beta={beta:g} gamma={gamma:g} "
              f"(top-1 {rows[0]['top1']:.2f}%)")
    if None in (alpha, beta, gamma):
        return _fail("give --alpha, --beta and --gamma, or --from-search STUDY")
    args.base = args.base or "b0"
    try:
        family = scale_family(alpha, beta, gamma, parse_phis(args.phi), args.base, args.base_resolution,
                              args.resolution_divisor)
    except ValueError as exc:
        return _fail(str(exc))
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
    scaling_study(args.data_dir, args.max_phi, args.alpha, args.beta, args.gamma, args.base, args.base_resolution,
                  args.epochs, args.batch_size, args.out, args.recipe, args.seed)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("search", help="step 1: grid search of alpha/beta/gamma at phi=1 (Optuna, resumable)")
    p.add_argument("data_dir")
    p.add_argument("--base", help="base model name (b0) or config .json")
    p.add_argument("--alpha", help="depth grid START:STOP:STEP (default 1.0:1.4:0.05)")
    p.add_argument("--beta", help="width grid")
    p.add_argument("--gamma", help="resolution grid")
    p.add_argument("--flops-ratio", type=float)
    p.add_argument("--tolerance", type=float, help="relative, default 0.05")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-epochs", type=float)
    g.add_argument("--budget-minutes", type=float)
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
    p.add_argument("--precise-bn", type=int, help="train batches for BN recalibration before evaluation (default 20)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("scale", help="step 2: compound-scale the base to phi = 0..K and write configs")
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

    p = sub.add_parser("study", help="width/depth/resolution/compound scaling at matched MACs (Fig. 3)")
    p.add_argument("data_dir")
    p.add_argument("--max-phi", type=int, default=2)
    p.add_argument("--alpha", type=float, default=1.2)
    p.add_argument("--beta", type=float, default=1.1)
    p.add_argument("--gamma", type=float, default=1.15)
    p.add_argument("--base", default="b0")
    p.add_argument("--base-resolution", type=int)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--recipe", default="finetune", choices=["paper", "finetune"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="scaling-study")
    p.set_defaults(func=cmd_study)
