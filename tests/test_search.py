"""The grid search and scaling: real Optuna studies in SQLite and PostgreSQL, real kill -9."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import effnet
from effnet.models.config import ModelConfig
from effnet.search import Candidate, enumerate_grid, parse_range
from tests.conftest import ROOT, config_file, digit_subset, run_cli

FAST = ["--budget-epochs", "1", "--batch-size", "16", "--base-resolution", "32", "--tolerance", "0.5"]


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory) -> Path:
    """3 digit classes x 24 train / 6 val real scans."""
    return digit_subset(digits, tmp_path_factory.mktemp("search_data"), 24, 6)


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory) -> Path:
    return config_file(tmp_path_factory.mktemp("base"), "base", width_mult=0.25, depth_mult=0.34, resolution=32)


def _trials(storage: str, study: str):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _completed_keys(storage: str, study: str) -> list[str]:
    return sorted(t.params["candidate"] for t in _trials(storage, study) if t.state == TrialState.COMPLETE)


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


def test_search_reports_both_ratios_and_writes_outputs(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "out"
    proc = run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0,1.2", "--beta", "1.1",
                   "--gamma", "1.15", "--storage", db, "--study", "one", "--out", str(out), *FAST)
    assert "2 kept" in proc.stdout and "0 dropped" in proc.stdout
    report = json.loads((out / "results.json").read_text())
    assert report["completed"] == 2 and report["best"]["top1"] == max(r["top1"] for r in report["results"])
    for row in report["results"]:
        assert row["rule_ratio"] == pytest.approx(row["alpha"] * row["beta"] ** 2 * row["gamma"] ** 2)
        assert row["measured_ratio"] > 1 and row["latency_ms"] > 0 and row["params"] > 0
    # at this tiny depth alpha 1.0 and 1.2 round to the same repeats: one model, trained once, reported twice
    copies = [r for r in report["results"] if "same_model_as" in r]
    assert len(copies) == 1 and copies[0]["top1"] == report["results"][0]["top1"] == report["results"][1]["top1"]
    assert (out / "top1_vs_macs.png").stat().st_size > 5000 and (out / "heatmap.png").stat().st_size > 5000
    # step 2 from the study
    text = run_cli("scale", "--from-search", "one", "--storage", db, "--phi", "0..1", "--out", str(tmp_path / "f")).stdout
    best = report["best"]
    assert f"alpha={best['alpha']:g} beta={best['beta']:g}" in text


def test_kill_9_then_rerun_keeps_finished_trials(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    args = ["search", str(data), "--base", str(base_cfg), "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.0,1.15,1.3",
            "--storage", db, "--study", "k", "--out", str(tmp_path / "out"), "--heartbeat", "1", "--grace", "2", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
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
    before = {t.number: (t.params["candidate"], t.value) for t in _trials(db, "k") if t.state == TrialState.COMPLETE}
    killed = [t.params["candidate"] for t in _trials(db, "k") if t.state == TrialState.RUNNING]
    assert len(before) >= 1 and len(killed) == 1

    run_cli(*args)
    after = _trials(db, "k")
    done = {t.number: (t.params["candidate"], t.value) for t in after if t.state == TrialState.COMPLETE}
    assert all(done[n] == v for n, v in before.items())  # finished trials kept as they were
    assert sorted(c for c, _ in done.values()) == ["1.2,1.1,1", "1.2,1.1,1.15", "1.2,1.1,1.3"]  # once each
    assert killed[0] in {c for c, _ in done.values()}  # the interrupted one was redone
    assert not [t for t in after if t.state == TrialState.RUNNING]


def test_two_parallel_workers_share_sqlite_without_duplicates(data, base_cfg, tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0,1.2", "--beta", "1.0,1.1", "--gamma",
            "1.15", "--storage", db, "--study", "p", "--n-jobs", "2", "--out", str(tmp_path / "out"), *FAST)
    trials = _trials(db, "p")
    keys = _completed_keys(db, "p")
    assert keys == sorted({"1,1,1.15", "1,1.1,1.15", "1.2,1,1.15", "1.2,1.1,1.15"})  # each exactly once
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(workers) == 2


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


def test_two_workers_share_a_postgres_study(data, base_cfg, tmp_path, postgres_url):
    args = ["search", str(data), "--base", str(base_cfg), "--alpha", "1.0,1.2", "--beta", "1.0,1.1", "--gamma", "1.15",
            "--storage", postgres_url, "--study", "pg", "--out", str(tmp_path / "out"), "--threads", "1", *FAST]
    procs = [subprocess.Popen([sys.executable, "-m", "effnet.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-4000:] for _, err in outs]
    keys = _completed_keys(postgres_url, "pg")
    assert keys == sorted({"1,1,1.15", "1,1.1,1.15", "1.2,1,1.15", "1.2,1.1,1.15"})
    workers = {t.user_attrs["worker"] for t in _trials(postgres_url, "pg") if t.state == TrialState.COMPLETE}
    assert len(workers) == 2  # both processes did real work
