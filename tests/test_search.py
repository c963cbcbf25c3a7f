"""The grid search and scaling: real Optuna studies in SQLite and PostgreSQL, real kill -9."""

import dataclasses
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import effnet
from effnet.models.nets.config import ModelConfig
from effnet.search import PAPER, Candidate, Spread, decide, enumerate_grid, parse_range
from effnet.search.plan import Plan
from effnet.search.runner.budget import Costs, choose_plan, plan_seconds
from tests.conftest import HANG_S, ROOT, config_file, digit_subset, run_cli

FAST = ["--budget-epochs", "1", "--batch-size", "16", "--base-resolution", "32", "--tolerance", "0.5", "--threads", "1",
        "--top", "1", "--repeats", "1", "--one-level"]


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory) -> Path:
    """3 digit classes x 24 train / 6 val real scans."""
    return digit_subset(digits, tmp_path_factory.mktemp("search_data"), 24, 6)


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory) -> Path:
    return config_file(tmp_path_factory.mktemp("base"), "base", width_mult=0.25, depth_mult=0.34, resolution=32)


def _trials(storage: str, study: str):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def test_parse_range_and_constraint_filtering():
    assert parse_range("1.0:1.4:0.1") == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert parse_range("1.2") == [1.2] and parse_range("1.1,1.3") == [1.1, 1.3]
    with pytest.raises(ValueError):
        parse_range("1.4:1.0:0.1")
    grid = parse_range("1.0:1.4:0.05")
    kept, dropped = enumerate_grid(grid, grid, grid, 2.0, 0.05)
    assert len(kept) + len(dropped) == 9**3
    assert Candidate(1.2, 1.1, 1.15) in kept  # the paper's choice: 1.92
    assert all(1.9 - 1e-9 <= c.ratio <= 2.1 + 1e-9 for c in kept)
    assert all(not (1.9 <= c.ratio <= 2.1) for c in dropped)
    assert len(kept) == sum(1 for a in grid for b in grid for g in grid if abs(a * b * b * g * g - 2) <= 0.1 + 1e-12)


def test_scale_reproduces_the_official_rule(tmp_path):
    out = tmp_path / "family"
    text = run_cli("scale", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "0..3", "--out", str(out)).stdout
    assert "alpha*beta^2*gamma^2 = 1.920" in text
    files = sorted(out.glob("*.json"))
    assert len(files) == 4
    cfg1 = ModelConfig.from_dict(json.loads((out / "effnet_phi1_a1.2_b1.1_g1.15.json").read_text()))
    assert cfg1.depth_mult == pytest.approx(1.2) and cfg1.width_mult == pytest.approx(1.1)
    assert cfg1.resolution == 256  # 224 * 1.15 = 257.6 -> nearest multiple of 8
    cfg3 = ModelConfig.from_dict(json.loads((out / "effnet_phi3_a1.2_b1.1_g1.15.json").read_text()))
    assert cfg3.resolution == 8 * round(224 * 1.15**3 / 8) and cfg3.depth_mult == pytest.approx(1.2**3)
    # the written configs are models: create_model and `effnet info` take them
    model = effnet.create_model(str(out / "effnet_phi1_a1.2_b1.1_g1.15.json"))
    assert model.config == cfg1
    assert "params" in run_cli("info", str(out / "effnet_phi1_a1.2_b1.1_g1.15.json")).stdout


def _jobs(trials) -> list[tuple]:
    """(phase, candidate, seed) of every finished trial that is not a claim duplicate."""
    return sorted((t.params["phase"], t.params["candidate"], t.params["seed"]) for t in trials
                  if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get("duplicate"))


def test_search_prunes_repeats_seeds_and_gives_a_verdict(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "out"
    proc = run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0", "--beta", "1.0,1.1,1.2",
                   "--gamma", "1.0,1.15", "--storage", db, "--study", "one", "--out", str(out), *FAST,
                   "--budget-epochs", "3")
    assert "6 kept" in proc.stdout and "epochs 1 -> 3" in proc.stdout
    trials = _trials(db, "one")
    rungs = sorted((t for t in trials if t.params["phase"] == "rungs"), key=lambda t: t.number)
    assert len(rungs) == 6 and all(t.user_attrs["measured_ratio"] > 0 for t in rungs)
    # the pruner's decisions are in the study: asynchronous successive halving (eta 3) replayed on the
    # recorded rung-1 top-1 values gives exactly the recorded states (one worker: trials ran in number order)
    seen = []
    for t in rungs:
        v = t.intermediate_values[1]
        assert t.system_attrs["completed_rung_0"] == v
        seen.append(v)
        promoted = v >= sorted(seen)[-(max(len(seen) // 3 - 1, 0) + 1)]
        if promoted:
            assert t.state == TrialState.COMPLETE and set(t.intermediate_values) == {1, 3}
            assert t.value == t.intermediate_values[3] and t.user_attrs["epochs"] == 3
        else:
            assert t.state == TrialState.PRUNED and t.user_attrs["pruned_by"] == "pruner"
            assert set(t.intermediate_values) == {1} and t.user_attrs["epochs"] == 1
    assert any(t.state == TrialState.PRUNED for t in rungs) and rungs[0].state == TrialState.COMPLETE
    # finalists: the best completed candidate and the paper's coefficients (not in this grid: its own seed
    # too), each trained at 3 epochs with seed 0 and seed 1
    best = max((t for t in rungs if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.user_attrs["macs"]))
    repeats = [t for t in trials if t.params["phase"] == "repeat"]
    assert sorted((t.params["candidate"], t.params["seed"]) for t in repeats) == sorted(
        [(best.params["candidate"], 1), ("1.2,1.1,1.15", 0), ("1.2,1.1,1.15", 1)])
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["epochs"] == 3 for t in repeats)

    report = json.loads((out / "results.json").read_text())
    assert report["completed"] == 6 and report["pruned"] == sum(t.state == TrialState.PRUNED for t in rungs)
    rows = {r["candidate"]: r for r in report["results"]}
    for t in rungs:
        assert rows[t.params["candidate"]]["epochs"] == t.user_attrs["epochs"]
        assert rows[t.params["candidate"]]["top1"] == pytest.approx(t.intermediate_values[t.user_attrs["epochs"]])
    # the spread comes from the real repeated runs in the study
    runs = {"1.2,1.1,1.15": {t.params["seed"]: t.value for t in repeats if t.params["candidate"] == "1.2,1.1,1.15"},
            best.params["candidate"]: {0: best.value, 1: next(t.value for t in repeats
                                                               if t.params["candidate"] == best.params["candidate"])}}
    for key, by_seed in runs.items():
        row = rows[key]
        assert row["seeds"] == {str(k): v for k, v in by_seed.items()} and row["n_seeds"] == 2
        assert row["mean"] == pytest.approx(statistics.fmean(by_seed.values()))
        assert row["std"] == pytest.approx(statistics.stdev(by_seed.values()))
    assert all(r["std"] is None for k, r in rows.items() if k not in runs)
    winner, paper = report["winner"], report["paper"]
    assert winner["mean"] == max(r["mean"] for r in rows.values() if r["mean"] is not None)
    beats = winner["candidate"] != "1.2,1.1,1.15" and winner["mean"] - winner["std"] > paper["mean"] + paper["std"]
    # rank agreement after the rung (1 -> 3 epochs) over the candidates that reached both, from the study's curves
    reached = [t for t in rungs if {1, 3} <= set(t.intermediate_values) and "same_model_as" not in t.user_attrs]
    (agreement,) = report["rank_agreement"]
    assert (agreement["lower"], agreement["upper"], agreement["n"], agreement["unit"]) == (1, 3, len(reached), "epoch(s)")
    if len(reached) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr([t.intermediate_values[1] for t in reached], [t.intermediate_values[3] for t in reached])
        assert agreement["rho"] == pytest.approx(rho.statistic)
    trusted = agreement["rho"] is not None and agreement["rho"] >= 0.5
    expected = ("beats" if trusted else "not-trustworthy") if beats else "keep-paper"
    assert report["verdict_kind"] == expected
    assert {"beats": "winner beats", "not-trustworthy": "low-fidelity ranking not trustworthy (\u03c1",
            "keep-paper": ""}[expected] in report["verdict"]
    assert "keep the paper's coefficients" in report["verdict"] or expected == "beats"
    # different seeds really trained different networks
    from safetensors.torch import load_file

    dirs = sorted((out / "trials").glob("*-repeat-1.2,1.1,1.15-seed*"))
    assert len(dirs) == 2
    w0, w1 = (load_file(str(d / "model.safetensors")) for d in dirs)
    assert any(not (w0[k] == w1[k]).all() for k in w0)
    assert not list((out / "trials").glob("*/checkpoint.pt"))  # trials are redone, never resumed
    for png in ("top1_vs_macs.png", "heatmap.png", "halving.png", "rank_agreement.png"):
        assert (out / png).stat().st_size > 5000
    # step 2 follows the verdict
    text = run_cli("scale", "--from-search", "one", "--storage", db, "--phi", "0..1", "--out", str(tmp_path / "f")).stdout
    c = report["chosen"]
    assert f"alpha={c['alpha']:g} beta={c['beta']:g} gamma={c['gamma']:g}" in text and "verdict:" in text


def test_verdict_needs_a_gap_beyond_the_seed_spread():
    paper = Spread("1.2,1.1,1.15", (0, 1, 2), (90.0, 91.0, 92.0))
    close = Spread("1,1.4,1", (0, 1, 2), (91.0, 93.0, 95.0))  # 93 +/- 2 vs 91 +/- 1: intervals touch
    far = Spread("1,1.4,1", (0, 1, 2), (94.0, 95.0, 96.0))  # 95 +/- 1 vs 91 +/- 1
    kind, line, chosen = decide([paper, close], 9)
    assert kind == "keep-paper" and line.startswith("indistinguishable at this budget") and chosen == PAPER.key
    kind, line, chosen = decide([paper, far], 9)
    assert kind == "beats" and line.startswith("winner beats") and chosen == "1,1.4,1"
    assert "95.00 +/- 1.00% (3 seeds)" in line
    kind, line, _ = decide([Spread(PAPER.key, (0, 1), (97.0, 97.5)), far], 9)
    assert kind == "keep-paper" and "paper's coefficients are the best" in line
    kind, _, chosen = decide([Spread(PAPER.key, (0,), (90.0,)), Spread("1,1.4,1", (0,), (99.0,))], 9)
    assert kind == "no-verdict" and chosen == PAPER.key  # one seed: no spread, no claim


def test_plan_spends_the_budget():
    costs = Costs(epoch_s=[4.0 + i / 10 for i in range(40)], eval_s=[1.0] * 40, paper=(5.0, 1.0), overhead_s=1.0,
                  workers=2)
    base = Plan(max_epochs=1, min_epochs=1, reduction_factor=3, repeats=2, top=3)
    for minutes in (5, 10, 30):
        plan = choose_plan(base, minutes * 60, costs)
        used = plan_seconds(plan, costs)
        assert used <= minutes * 60 and plan.repeats >= 2
        longer = dataclasses.replace(plan, max_epochs=plan.max_epochs + 1)
        assert plan_seconds(longer, costs) > minutes * 60 or plan.max_epochs == 81
    small = choose_plan(base, 10 * 60, costs)
    large = choose_plan(base, 30 * 60, costs)
    assert large.max_epochs > small.max_epochs >= 2 and large.rungs()[:2] == [1, 3]
    # a budget too small for one epoch each: the smallest plan, and its estimate says it runs over
    tiny = choose_plan(base, 30, costs)
    assert tiny.max_epochs == 1 and tiny.estimate_minutes > 0.5


def test_kill_9_then_rerun_keeps_finished_trials(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    args = ["search", str(data), "--base", str(base_cfg), "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.0,1.15,1.3",
            "--storage", db, "--study", "k", "--out", str(tmp_path / "out"), "--heartbeat", "1", "--grace", "2", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + HANG_S
    while time.time() < deadline:
        try:
            trials = _trials(db, "k")
        except Exception:
            trials = []
        states = [t.state for t in trials]
        if states.count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.params["candidate"], t.state, t.value, t.datetime_complete) for t in _trials(db, "k")
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    killed = [(t.params["phase"], t.params["candidate"], t.params["seed"]) for t in _trials(db, "k")
              if t.state == TrialState.RUNNING]
    assert len(before) >= 1 and len(killed) == 1

    run_cli(*args)
    after = _trials(db, "k")
    done = {t.number: (t.params["candidate"], t.state, t.value, t.datetime_complete) for t in after
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert all(done[n] == v for n, v in before.items())  # finished trials kept as they were, not retrained
    jobs = _jobs(after)
    assert len(jobs) == len(set(jobs))  # every job finished exactly once
    assert [j for j in jobs if j[0] == "rungs"] == [("rungs", k, 0) for k in ("1.2,1.1,1", "1.2,1.1,1.15", "1.2,1.1,1.3")]
    assert ("repeat", "1.2,1.1,1.15", 1) in jobs
    assert killed[0] in jobs  # the interrupted one was redone
    assert not [t for t in after if t.state == TrialState.RUNNING]
    json.loads((tmp_path / "out" / "results.json").read_text())["verdict"]


def test_two_parallel_workers_share_sqlite_without_duplicates(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0,1.2", "--beta", "1.0,1.1,1.2", "--gamma",
            "1.15", "--storage", db, "--study", "p", "--n-jobs", "2", "--out", str(tmp_path / "out"), *FAST,
            "--budget-epochs", "2")
    trials = _trials(db, "p")
    jobs = _jobs(trials)
    assert len(jobs) == len(set(jobs))  # each exactly once
    assert {j[1] for j in jobs if j[0] == "rungs"} == {f"{a},{b},1.15" for a in ("1", "1.2") for b in ("1", "1.1", "1.2")}
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE and "wall_seconds" in t.user_attrs}
    assert len(workers) == 2
    # at this tiny depth alpha 1.0 and 1.2 round to the same repeats: one model, trained once, reported twice
    copies = [t for t in trials if "same_model_as" in t.user_attrs]
    assert len(copies) == 3 and all("wall_seconds" in t.user_attrs for t in copies)  # (copied from the twin)
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["candidate"]: r for r in report["results"]}
    assert rows["1,1.1,1.15"]["top1"] == rows["1.2,1.1,1.15"]["top1"]


def _find_pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    bindir = _find_pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (Debian package 'postgresql'); `make test` installs it as root")
    pytest.importorskip("psycopg")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    tmp = tempfile.mkdtemp(prefix="effnet-pg-")
    os.chmod(tmp, 0o777)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    data_dir = os.path.join(tmp, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", data_dir, "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", data_dir, "-l", os.path.join(tmp, "log"), "-w", "-o",
                    f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE effnet")
        yield f"postgresql://postgres@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", data_dir, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _held_until_both_wait(postgres_url: str, procs: list[subprocess.Popen]) -> None:
    """Lock Optuna's ``trials`` table as soon as a worker has created it, until both workers wait on it, then let
    them go together. Started side by side on busy cores, one worker could otherwise finish the whole grid while
    the other still imports. (The workers still race to create the tables: ``open_study``'s retry is exercised.)"""
    import psycopg

    deadline = time.monotonic() + HANG_S

    def waiting(sql: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as probe:
            while not probe.execute(sql).fetchone()[0]:
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    for p in procs:
                        p.kill()
                    raise AssertionError(f"the workers never got to: {sql}\n"
                                         + "\n".join(p.communicate()[1][-2000:] for p in procs))
                time.sleep(0.02)

    waiting("SELECT to_regclass('trials') IS NOT NULL")
    with psycopg.connect(postgres_url) as conn:
        conn.execute("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")
        waiting("SELECT count(DISTINCT pid) >= 2 FROM pg_locks WHERE NOT granted")
        conn.rollback()


def test_two_workers_share_a_postgres_study(data, base_cfg, tmp_path, postgres_url):
    args = ["search", str(data), "--base", str(base_cfg), "--alpha", "1.0,1.2", "--beta", "1.0,1.1", "--gamma", "1.15",
            "--storage", postgres_url, "--study", "pg", "--out", str(tmp_path / "out"), *FAST]
    procs = [subprocess.Popen([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    _held_until_both_wait(postgres_url, procs)
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-4000:] for _, err in outs]
    trials = _trials(postgres_url, "pg")
    jobs = _jobs(trials)
    assert len(jobs) == len(set(jobs))
    assert {j[1] for j in jobs if j[0] == "rungs"} == {"1,1,1.15", "1,1.1,1.15", "1.2,1,1.15", "1.2,1.1,1.15"}
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2  # both processes did real work


def test_verdict_names_a_winner_only_when_the_rungs_rank_alike():
    from effnet.search.verdict import judge, rank_agreement

    paper = Spread(PAPER.key, (0, 1, 2), (90.0, 91.0, 92.0))
    far = Spread("1,1.4,1", (0, 1, 2), (94.0, 95.0, 96.0))  # beyond the seed spread at the final fidelity
    plan = Plan(max_epochs=9, min_epochs=1, reduction_factor=3, unit_steps=20)
    agree = [{1: 10.0 * i, 3: 12.0 * i, 9: 13.0 * i} for i in range(1, 7)]
    reversed_ = [{1: 10.0 * i, 3: 80.0 - 12.0 * i} for i in range(1, 7)]
    a = rank_agreement(agree, plan.levels())
    assert [(x.lower, x.upper, x.n) for x in a] == [(1, 3, 6), (3, 9, 6)] and a[0].rho == pytest.approx(1.0)
    kind, line, chosen = judge([paper, far], plan, a, {"1,1.4,1": agree[5], PAPER.key: agree[0]})
    assert kind == "beats" and chosen == "1,1.4,1" and "at 180 steps" in line and "\u03c1 = 1.00" in line
    b = rank_agreement(reversed_, plan.levels())
    assert b[0].rho == pytest.approx(-1.0) and b[1].rho is None and b[1].n == 0
    kind, line, chosen = judge([paper, far], plan, b, {})
    assert kind == "not-trustworthy" and chosen == PAPER.key
    assert line.startswith("low-fidelity ranking not trustworthy (\u03c1 = -1.00 from 20 steps to 60 steps over 6")
    # the winner's lead must hold at the rungs: behind the paper's at 20 steps -> no winner
    kind, line, _ = judge([paper, far], plan, a, {"1,1.4,1": agree[0], PAPER.key: agree[5]})
    assert kind == "not-trustworthy" and "behind the paper's coefficients at 20 steps" in line
    # one level only (a budget for one epoch each): nothing shows that the ranking holds
    kind, line, _ = judge([paper, far], Plan(max_epochs=1), rank_agreement(agree, [1]), {})
    assert kind == "not-trustworthy" and "not measurable" in line


def test_rungs_in_optimizer_steps(data, base_cfg, tmp_path):
    """72 training images at batch 16 = 4 steps an epoch; rungs at 1 and 3 steps fall inside the first epoch."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "out"
    assert FAST[:2] == ["--budget-epochs", "1"]
    proc = run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0", "--beta", "1.0,1.2",
                   "--gamma", "1.0,1.15", "--storage", db, "--study", "steps", "--out", str(out), *FAST[2:],
                   "--min-steps", "1", "--repeats", "0")
    assert "plan: steps 1 -> 3 -> 9" in proc.stdout and "rank agreement between rungs" in proc.stdout
    rungs = [t for t in _trials(db, "steps") if t.params["phase"] == "rungs" and t.state != TrialState.FAIL]
    assert len(rungs) == 4
    for t in rungs:  # the loop's "epochs" are units of one optimizer step; the pruner reads each rung
        assert t.user_attrs["steps"] == t.user_attrs["epochs"] and set(t.intermediate_values) <= {1, 3, 9}
        assert 1 in t.intermediate_values
    assert any(t.user_attrs["epochs"] == 9 for t in rungs)
    report = json.loads((out / "results.json").read_text())
    assert report["plan"]["unit_steps"] == 1
    assert [(a["lower_fidelity"], a["upper_fidelity"], a["unit"]) for a in report["rank_agreement"]] == \
        [(1, 3, "steps"), (3, 9, "steps")]
    assert report["rank_agreement"][0]["n"] == sum(1 for t in rungs if 3 in t.intermediate_values)
    assert "steps" in (out / "results.txt").read_text(encoding="utf-8").splitlines()[0]
    bad = run_cli("search", str(data), "--min-steps", "2", "--budget-epochs", "3", "--storage", db, check=False)
    assert bad.returncode == 2 and "--min-steps" in bad.stderr


def test_step_units_walk_through_the_whole_training_set():
    from effnet.search.runner.trial import Window

    w = Window(list(range(10)), 4, seed=0)
    seen = []
    for index in range(5):  # 5 units of 4 images: twice round the 10 images, each unit a new stretch
        w.index = index
        seen.append([w[i] for i in range(len(w))])
    assert sorted(seen[0] + seen[1] + seen[2][:2]) == list(range(10)) and seen[0] != seen[1]
    assert seen[2][2:] + seen[3] + seen[4] == seen[0] + seen[1] + seen[2][:2]  # then the same order again
