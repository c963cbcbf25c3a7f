"""The Optuna study in an RDB (SQLite, or PostgreSQL for workers on several machines): opening it with
retries (on an ``RDBStorage`` built here and returned with the study: the runner asks it, through its public
methods, for trial ids, heartbeats and failing dead trials), the sampler that returns the candidate a worker
claimed, and trial heartbeats."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path
from typing import Any

from ...errors import UsageError, redact
from ..settings import SearchSettings


def open_study(s: SearchSettings, create: bool = True):
    """(study, storage): the search's study, opened on the ``RDBStorage`` returned with it."""
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
            if s.storage.startswith("sqlite"):
                _sqlite_write_ahead_log(storage.engine)
            if create:
                study = optuna.create_study(study_name=s.study_name(), storage=storage, direction="maximize",
                                            load_if_exists=True)
            else:
                study = optuna.load_study(study_name=s.study_name(), storage=storage)
            return study, storage
        except (KeyError, ValueError, ImportError):
            raise  # no such study / bad URL / missing driver: retrying will not help
        except Exception as exc:
            if attempt == 7 or _unreachable(exc):  # one line, its password masked
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UsageError(f"--storage {redact(s.storage)}: {redact(reason)}") from None
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def find_study(s: SearchSettings) -> dict:
    """The user attributes (settings, plan) of the search's study if it exists already, else {}; creating nothing
    to find out: a SQLite file that is not there is not made (a server database without Optuna's tables gets
    them, with Optuna's schema-version row, and no study)."""
    if s.storage.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        try:
            path = make_url(s.storage).database
        except Exception:  # a malformed URL: open_study says what is wrong with it
            return {}
        if not path or path == ":memory:" or not Path(path).exists():
            return {}
    try:
        study, storage = open_study(s, create=False)
    except KeyError:  # no study of that name
        return {}
    try:
        return dict(study.user_attrs)
    finally:
        storage.engine.dispose()


# what a database server says when nobody is there or it turns us away: retrying cannot help (the schema race
# between workers starting together is an integrity/programming error, or SQLite's "locked", and is retried)
_UNREACHABLE = ("connection refused", "could not connect", "could not translate host", "name or service not known",
                "no route to host", "password authentication failed", "unable to open database")


def _unreachable(exc: Exception) -> bool:
    return any(words in str(exc).lower() for words in _UNREACHABLE)


def _sqlite_write_ahead_log(engine) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit: each trial writes
    a dozen attributes, and a full fsync per commit cost ~10 ms each on this disk; a killed process loses
    nothing (only a power cut could lose the last commits), and readers no longer block the writer."""
    from sqlalchemy import event, text

    def pragmas(dbapi_connection, _record) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", pragmas)
    with engine.connect() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
    engine.dispose()  # connections opened before the listener reconnect with it


def make_pruner(plan):
    """Successive halving with epochs as the resource: a run reports its top-1 at each rung (min_epochs *
    eta^k) and goes on only if it is in the best 1/eta of the runs that reached that rung so far."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=plan.min_epochs,
                                                  reduction_factor=plan.reduction_factor, min_early_stopping_rate=0)


def pick_sampler():
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


def heartbeat(storage, trial_id: int, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # a transient DB error must not kill the trial
            pass
