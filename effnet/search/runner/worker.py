"""Search workers: claim a job, run it (a candidate's successive-halving run under the pruner, or a finalist's
repeat with another seed), record it in the study; a pool of worker processes; the whole search. Every step
reads what it needs from the worker's :class:`SearchContext`."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import threading
import time
from typing import Callable

import torch

from ...errors import UsageError, redact
from ..grid import Candidate, candidate_config, measure_latency_ms, profile_of
from ..report import write_report
from ..settings import SearchSettings, grid_for, settings_key
from .context import SearchContext
from .planning import check_levels, keep_plan, make_plan
from .schedule import Job, distributions, next_jobs, paper_repeats, read_progress, repeats_left, stale_cut
from .study import find_study, heartbeat, open_study
from .trial import RunSpec, reuse_decoded_images, train_run


def _worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _claim(ctx: SearchContext, job: Job):
    """A new trial for ``job``, or None when another live or finished trial with a lower number has it."""
    from optuna.trial import TrialState

    study, session = ctx.study, ctx.settings.deadline
    ctx.sampler.next = job.params()
    trial = study.ask(distributions(ctx.keys))
    states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    for _ in range(100):  # a rival may be between creating its trial and writing its parameters: wait for them
        earlier = [t for t in study.get_trials(deepcopy=False, states=states)
                   if t.number < trial.number and not t.user_attrs.get("duplicate") and not stale_cut(t, session)]
        if all(Job.of(t) is not None for t in earlier):
            break
        time.sleep(0.05)
    if any(Job.of(t) == job for t in earlier):
        trial.set_user_attr("duplicate", True)
        trial.set_user_attr("pruned_by", "duplicate")
        study.tell(trial, state=TrialState.PRUNED)
        return None
    return trial


def _fail_unclaimed(ctx: SearchContext) -> None:
    """A worker killed between creating its trial and its first heartbeat leaves a RUNNING trial that Optuna's
    ``fail_stale_trials`` never fails (it has no heartbeat): fail it once it is older than the grace period
    (live workers name themselves in the trial right after the heartbeat)."""
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" not in t.user_attrs and t.datetime_start and \
                (now - t.datetime_start).total_seconds() > ctx.settings.grace:
            try:
                ctx.storage.set_trial_state_values(ctx.trial_id(t.number), TrialState.FAIL)
            except Exception:  # another worker failed it first, or it finished after all
                pass


_MEASURED: dict = {}  # model config -> (MACs, params, latency ms): a finalist's repeats measure it once


def _measure(ctx: SearchContext, trial, c: Candidate, cfg) -> None:
    if cfg not in _MEASURED:
        p = profile_of(cfg)
        _MEASURED[cfg] = (p.macs, p.params, measure_latency_ms(cfg))
    macs, params, latency = _MEASURED[cfg]
    attrs = dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio, macs=macs,
                 measured_ratio=macs / ctx.base_macs, params=params, latency_ms=latency,
                 resolution=cfg.resolution, width_mult=cfg.width_mult, depth_mult=cfg.depth_mult)
    for k, v in attrs.items():
        trial.set_user_attr(k, v)


def _copy(ctx: SearchContext, trial, job: Job, source) -> None:
    """Same model as a finished candidate: record its measurements and outcome under this candidate."""
    from optuna.trial import TrialState

    c = Candidate.from_key(job.candidate)
    for k, v in source.user_attrs.items():
        if k not in ("alpha", "beta", "gamma", "rule_ratio", "worker"):
            trial.set_user_attr(k, v)
    for k, v in dict(alpha=c.alpha, beta=c.beta, gamma=c.gamma, rule_ratio=c.ratio,
                     same_model_as=source.number).items():
        trial.set_user_attr(k, v)
    if source.state == TrialState.COMPLETE:
        ctx.study.tell(trial, source.value)
    else:  # the pruner (or the latency budget) stopped its twin: same decision, no intermediate values that
        ctx.study.tell(trial, state=TrialState.PRUNED)  # would count twice in the rung statistics
    ctx.log(f"{job.candidate}: same model as trial {source.number} ({source.state.name.lower()})")


def _promotion_check(ctx: SearchContext, trial, job: Job):
    """At a rung: the pruner's decision, then (with a time budget) whether going on to the next rung still
    ends before the rung deadline. Returns why to stop ("pruner", "time") or None."""
    clock, plan = ctx.clock, ctx.plan

    def at_rung(epoch: int, top1: float) -> str | None:
        trial.report(top1, epoch)
        if trial.should_prune():
            return "pruner"
        if clock.deadline is None:
            return None
        nxt = next(level for level in plan.levels() if level > epoch)
        prog = read_progress(ctx.study.get_trials(deepcopy=False), clock.deadline)
        paper = paper_repeats(ctx, prog)
        rung_end = clock.rung_end(repeats_left(ctx, prog, paper, plan.top), plan.max_epochs)
        return None if clock.fits(clock.more(ctx.same[job.candidate], nxt - epoch), rung_end) else "time"

    return at_rung


def _run(ctx: SearchContext, trial, job: Job) -> None:
    """Train the job's model: a rung run answers to the pruner (and the clock) at every rung, a repeat runs to
    the end; with a time budget either stops at the deadline."""
    from optuna.trial import TrialState

    s, study, clock, log = ctx.settings, ctx.study, ctx.clock, ctx.log
    t0 = time.time()
    c = Candidate.from_key(job.candidate)
    cfg = candidate_config(ctx.base, c)
    _measure(ctx, trial, c, cfg)
    if s.objective == "latency" and s.latency_budget is not None and job.phase == "rungs" \
            and trial.user_attrs["latency_ms"] > s.latency_budget:
        for k, v in dict(over_latency_budget=True, pruned_by="latency_budget", epochs=0).items():
            trial.set_user_attr(k, v)
        study.tell(trial, state=TrialState.PRUNED)
        log(f"{job.candidate}: {trial.user_attrs['latency_ms']:.1f} ms > budget {s.latency_budget} ms, skipped")
        return
    out = s.out_dir() / "trials" / f"{trial.number:04d}-{job.phase}-{job.candidate}-seed{job.seed}"
    spec = RunSpec(cfg, out, job.seed, ctx.plan.max_epochs, ctx.plan.rungs() if job.phase == "rungs" else [],
                   None if clock.deadline is None else clock.end(), clock.evaluation(ctx.same[job.candidate]))
    res = train_run(s, spec, _promotion_check(ctx, trial, job))
    wall = time.time() - t0
    attrs = dict(epochs=res.epochs, epochs_trained=res.epochs, top1=res.top1, steps=res.summary["steps"],
                 wall_seconds=wall, train_seconds=res.train_seconds)
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if job.phase == "rungs" and res.stopped_by is None:
        trial.report(res.top1, res.epochs)  # the end of the curve (no rung: nothing to decide there)
    if res.stopped_by is not None:
        trial.set_user_attr("pruned_by", res.stopped_by)
        trial.set_user_attr("session", clock.deadline)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, res.top1)
    top1 = "-" if res.top1 is None else f"{res.top1:.2f}%"
    why = {"pruner": " (pruned)", "time": " (cut for time)"}.get(res.stopped_by or "", "")
    done = f"{ctx.plan.fidelity(res.epochs)} {ctx.plan.unit()}"
    log(f"{job.phase} {job.candidate} seed {job.seed}: top-1 {top1} after {done}{why}, {wall:.0f} s")


def _run_claimed(ctx: SearchContext, trial, job: Job, finished: dict) -> bool:
    """Run a claimed trial under heartbeats; a failure is recorded (and the job redone later). True if trained.
    ``finished``: the finished trial of every finished job (a copy takes its twin's)."""
    from optuna.trial import TrialState

    stop = threading.Event()
    trial_id = ctx.trial_id(trial.number)
    ctx.storage.record_heartbeat(trial_id)
    trial.set_user_attr("worker", _worker_name())
    beat = threading.Thread(target=heartbeat, args=(ctx.storage, trial_id, max(0.5, ctx.settings.heartbeat / 2), stop),
                            daemon=True)
    beat.start()
    try:
        twin = Job(job.phase, ctx.same[job.candidate], job.seed)
        if job.phase == "rungs" and twin != job:
            _copy(ctx, trial, job, finished[twin])
            return False
        _run(ctx, trial, job)
        return True
    except BaseException as exc:
        try:
            ctx.study.tell(trial, state=TrialState.FAIL)
        except Exception:
            pass
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        ctx.log(f"{job.phase} {job.candidate} seed {job.seed}: failed: {exc}")
        return False
    finally:
        stop.set()


def _next(ctx: SearchContext):
    """Read the study, re-estimate the costs from the finished trials, and decide what can run now."""
    study, clock = ctx.study, ctx.clock
    trials = study.get_trials(deepcopy=False)
    prog = read_progress(trials, clock.deadline)
    clock.calibrate(trials, ctx.same)
    closed = clock.deadline is not None and study.user_attrs.get("rungs_closed") == clock.deadline
    nxt = next_jobs(ctx, prog, closed)
    if nxt.close:
        study.set_user_attr("rungs_closed", clock.deadline)
        cut = sum(j.phase == "rungs" for j in nxt.cut)
        ctx.log(f"time: {clock.left():.0f} s left, the next candidate no longer fits with the seed repeats; "
                f"{cut} candidate(s) not started are cut for time (epoch cost x{clock.factor:.2f} the estimate, "
                f"{clock.overhead_s:.1f} s per run besides its epochs)")
    return prog, nxt


def worker(s: SearchSettings, worker_id: int = 0, log=print, ready: Callable[[], None] | None = None) -> int:
    """Run jobs until none is left (or none fits the time left); returns how many this worker trained.
    ``ready`` is called once the worker could claim a job (imports done, study and plan read)."""
    import optuna

    if s.threads:
        torch.set_num_threads(s.threads)
    reuse_decoded_images()
    ctx = SearchContext.open(s, lambda msg: log(f"[{worker_id}] {msg}"))
    trained = 0
    if ready is not None:
        ready()
    while True:
        optuna.storages.fail_stale_trials(ctx.study)  # trials whose worker died (kill -9) become FAIL
        _fail_unclaimed(ctx)
        prog, nxt = _next(ctx)
        if not nxt.todo:
            if not nxt.left:
                return trained
            time.sleep(max(0.5, min(s.heartbeat, 2.0)))  # a running trial may still die and need redoing
            continue
        job = nxt.todo[worker_id % len(nxt.todo)]  # spread workers over the list so they rarely collide
        trial = _claim(ctx, job)
        if trial is not None:
            trained += _run_claimed(ctx, trial, job, prog.finished)


_READY = None  # in a spawned worker: the count of workers ready to claim jobs, shared with the main process


def _init_worker(ready_count) -> None:
    global _READY
    _READY = ready_count


def _signal_ready() -> None:
    with _READY.get_lock():
        _READY.value += 1


def _worker_process(settings_dict: dict, worker_id: int) -> int:
    _die_with_parent()
    return worker(SearchSettings(**settings_dict), worker_id, ready=_signal_ready)


def _wait_for_workers(ready_count, n: int, others, timeout: float = 120.0) -> None:
    """Let the spawned workers finish importing before this process claims jobs: on small searches it would
    otherwise have trained everything by the time they can start (a few seconds), leaving them idle."""
    t0 = time.time()
    while ready_count.value < n and not others.ready() and time.time() - t0 < timeout:
        time.sleep(0.05)


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


def _check_settings(s: SearchSettings, saved: dict | None) -> None:
    """A study keeps the settings it was started with (``saved``: those it recorded, if any)."""
    if saved is not None and saved != settings_key(s):
        diff = {k: (saved.get(k), v) for k, v in settings_key(s).items() if saved.get(k) != v}
        raise UsageError(f"study {s.study_name()!r} in {redact(s.storage)} was started with other settings {diff}; "
                         "use another --study name")


def run_search(s: SearchSettings, log=print) -> dict:
    """The whole search: plan it (once per study), then workers (this process and ``n_jobs - 1`` more here;
    more on other machines against the same storage), then the report. With ``budget_minutes`` the whole of it
    ends by ``s.deadline`` (default: that long from now; the command line counts from the process's start).

    Nothing is written before the plan is made and checked: a plan of one fidelity level is refused
    (``planning.check_levels``) with no study created and no folder made."""
    importlib.import_module("optuna")  # not installed: its one line now, not after the timed steps

    kept, dropped = grid_for(s)
    if s.budget_minutes and s.deadline is None:
        s = dataclasses.replace(s, deadline=time.time() + s.budget_minutes * 60)
    started = s.deadline - s.budget_minutes * 60 if s.budget_minutes else time.time()
    existing = find_study(s)  # a rerun (or another worker machine) follows the study's settings and plan
    _check_settings(s, existing.get("settings"))
    grid_total = len(kept) + len(dropped)
    if s.objective == "flops":
        log(f"grid: {grid_total} candidates, {len(kept)} kept with alpha*beta^2*gamma^2 within "
            f"{s.tolerance:.0%} of {s.flops_ratio:g}, {len(dropped)} dropped")
    else:
        log(f"grid: {grid_total} candidates; latency budget {s.latency_budget} ms replaces the FLOPs constraint")
    threads = s.threads or max(1, (os.cpu_count() or 2) // max(1, s.n_jobs))
    saved_threads = torch.get_num_threads()
    pool = None
    if s.n_jobs > 1:  # started before planning: their imports overlap it (they get their jobs once it is kept)
        import multiprocessing as mp

        settings = dataclasses.asdict(dataclasses.replace(s, threads=threads))
        spawn = mp.get_context("spawn")
        ready_count = spawn.Value("i", 0)
        pool = spawn.Pool(s.n_jobs - 1, initializer=_init_worker, initargs=(ready_count,))
    try:
        planned = make_plan(s, existing.get("plan"), threads, log)
        check_levels(s, planned)
        study, _ = open_study(s)  # (the first write of this search)
        recorded = study.user_attrs.get("settings")
        _check_settings(s, recorded)  # (another process may have started the study since)
        if recorded is None:
            study.set_user_attr("settings", settings_key(s))
        keep_plan(s, study, planned, log)
        if pool is not None:
            others = pool.starmap_async(_worker_process, [(settings, i) for i in range(1, s.n_jobs)])
            _wait_for_workers(ready_count, s.n_jobs - 1, others)
            if others.ready():  # a worker failed before it was ready: its error, not a silent wait
                others.get()
        worker(dataclasses.replace(s, threads=threads) if s.n_jobs > 1 else s, 0, log)
        if pool is not None:
            others.get()
    finally:
        torch.set_num_threads(saved_threads)
        if pool is not None:
            pool.terminate()
            pool.join()
    report = write_report(study, s, log, started)
    report["wall_seconds_this_run"] = time.time() - started
    return report
