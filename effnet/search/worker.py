"""Search workers: claim a candidate, train it under the budget, record it; a pool of worker processes."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time

import torch

from ..errors import UsageError
from ..train import TrainConfig, train
from .grid import Candidate, architecture_key, candidate_config, measure_latency_ms, resolve_base, macs_of, params_of
from .report import write_report
from .settings import SearchSettings, settings_key, base_resolution_for, grid_for
from .study import heartbeat, open_study, pick_sampler

MAX_FAILURES = 3  # a candidate that failed (or whose worker died) this often is given up and reported


def _same_model(base, keys: list[str]) -> dict[str, str]:
    """Candidates whose rounded architecture and resolution coincide (e.g. alpha 1.05 and 1.1 both round the
    B0 repeats up to the same depth) are one model: map each to the first key of its model."""
    arch = {k: architecture_key(candidate_config(base, Candidate.from_key(k))) for k in keys}
    return {k: next(r for r in keys if arch[r] == arch[k]) for k in keys}


def _scan(study, keys: list[str], rep_of: dict[str, str]):
    """(todo, done, waiting): candidates to start, finished trials by candidate, and whether to wait for
    running trials (one may still die and need redoing)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    mine = [t for t in trials if not t.user_attrs.get("duplicate")]
    done = {t.params.get("candidate"): t for t in mine if t.state == TrialState.COMPLETE}
    finished = {t.params.get("candidate") for t in mine if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    running = {t.params.get("candidate") for t in trials if t.state == TrialState.RUNNING}
    fails: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            fails[t.params.get("candidate")] = fails.get(t.params.get("candidate"), 0) + 1
    given_up = {k for k, n in fails.items() if n >= MAX_FAILURES and k not in finished}
    finished |= given_up | {k for k in keys if rep_of[k] in given_up}
    todo = [k for k in keys if k not in finished and k not in running and (rep_of[k] == k or rep_of[k] in done)]
    waiting = bool(running - finished) or any(k not in finished for k in keys)
    return todo, done, waiting


def _claim(study, sampler, dist, key: str):
    """A new trial for ``key``, or None when another live or finished trial with a lower number has it."""
    from optuna.trial import TrialState

    sampler.next = {"candidate": key}
    trial = study.ask(dist)
    rivals = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE,
                                                                   TrialState.PRUNED))
              if t.params.get("candidate") == key and t.number < trial.number and not t.user_attrs.get("duplicate")]
    if rivals:
        trial.set_user_attr("duplicate", True)
        study.tell(trial, state=TrialState.PRUNED)
        return None
    return trial


def _worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _reuse(study, trial, key: str, source, log) -> None:
    """Same model as a finished candidate: record its measurements under this candidate."""
    c = Candidate.from_key(key)
    for k, v in source.user_attrs.items():
        if k not in ("alpha", "beta", "gamma", "rule_ratio", "worker"):
            trial.set_user_attr(k, v)
    for k, v in dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio, same_model_as=source.number,
                     worker=_worker_name()).items():
        trial.set_user_attr(k, v)
    study.tell(trial, source.value)
    log(f"{key}: same model as trial {source.number}: top-1 {source.value:.2f}%")


def _train_candidate(s: SearchSettings, study, trial, key: str, base, base_macs: int, log) -> bool:
    """Measure and train one candidate; False when it was skipped (over the latency budget)."""
    from optuna.trial import TrialState

    c = Candidate.from_key(key)
    cfg = candidate_config(base, c)
    macs = macs_of(cfg)
    latency = measure_latency_ms(cfg)
    attrs = dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio, macs=macs,
                 measured_ratio=macs / base_macs, params=params_of(cfg), latency_ms=latency,
                 resolution=cfg.resolution, width_mult=cfg.width_mult, depth_mult=cfg.depth_mult, worker=_worker_name())
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if s.objective == "latency" and s.latency_budget is not None and latency > s.latency_budget:
        trial.set_user_attr("over_latency_budget", True)
        study.tell(trial, state=TrialState.PRUNED)
        log(f"{key}: {latency:.1f} ms > budget {s.latency_budget} ms, skipped")
        return False
    t0 = time.time()
    # --budget-minutes: as many epochs as fit (train stops at the time limit)
    epochs = 10_000 if s.budget_minutes else max(1, math.ceil(s.budget_epochs))
    tcfg = TrainConfig(data_dir=s.data_dir, model=cfg.name, epochs=epochs, batch_size=s.batch_size,
                       resolution=cfg.resolution, out=str(s.out_dir() / "trials" / f"{trial.number:04d}"),
                       seed=s.seed, recipe=s.recipe, budget_minutes=s.budget_minutes, quiet=True,
                       precise_bn=s.precise_bn, plot=False, ema_decay=0.0)
    summary = train(tcfg, model_config=cfg)
    top1 = float(summary["val_top1"])
    trial.set_user_attr("wall_seconds", time.time() - t0)
    trial.set_user_attr("steps", summary["steps"])
    study.tell(trial, top1)
    log(f"{key}: top-1 {top1:.2f}%  MACs {macs / 1e6:.1f}M (x{macs / base_macs:.2f})  "
        f"latency {latency:.1f} ms  {time.time() - t0:.0f} s")
    return True


def worker(s: SearchSettings, worker_id: int = 0, log=print) -> int:
    """Run candidates until none is left; returns how many this worker completed."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    if s.threads:
        torch.set_num_threads(s.threads)
    study, storage = open_study(s)
    study.sampler = sampler = pick_sampler()
    keys = [c.key for c in grid_for(s)[0]]
    dist = {"candidate": CategoricalDistribution(keys)}
    base = resolve_base(s.base, base_resolution_for(s))
    base_macs = macs_of(base)
    rep_of = _same_model(base, keys)
    wlog = lambda msg: log(f"[{worker_id}] {msg}")  # noqa: E731
    completed = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # trials whose worker died (kill -9) become FAIL
        todo, done, waiting = _scan(study, keys, rep_of)
        if not todo:
            if not waiting:
                return completed
            time.sleep(max(1.0, s.heartbeat))  # wait: a running trial may still die and need redoing
            continue
        key = todo[worker_id % len(todo)]  # spread workers over the list so they rarely collide
        trial = _claim(study, sampler, dist, key)
        if trial is None:
            continue
        stop = threading.Event()
        beat = threading.Thread(target=heartbeat, args=(storage, trial._trial_id, max(0.5, s.heartbeat / 2), stop),
                                daemon=True)
        storage.record_heartbeat(trial._trial_id)
        beat.start()
        try:
            if rep_of[key] != key:
                _reuse(study, trial, key, done[rep_of[key]], wlog)
            elif _train_candidate(s, study, trial, key, base, base_macs, wlog):
                completed += 1
        except BaseException as exc:
            try:
                study.tell(trial, state=TrialState.FAIL)
            except Exception:
                pass
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            wlog(f"{key}: failed: {exc}")
        finally:
            stop.set()


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
    study, _ = open_study(s)
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings_key(s))
    elif saved != settings_key(s):
        diff = {k: (saved.get(k), v) for k, v in settings_key(s).items() if saved.get(k) != v}
        raise UsageError(f"study {s.study_name()!r} in {s.storage} was started with other settings {diff}; "
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
