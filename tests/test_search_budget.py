"""`effnet search --budget-minutes`: the whole search (start-up, rung runs, seed repeats, report) ends within
its wall-clock budget, and the candidates it had no time for are recorded as cut for time."""

import datetime
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import config_file, digit_subset, run_cli

BUDGET_S = 36.0  # the imports and the plan take ~8 s of it here, the report's reserve 12-16 s (twice the start-up);
# 45 tiny candidates need ~40 s more


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory) -> Path:
    return digit_subset(digits, tmp_path_factory.mktemp("budget_data"), 24, 6)


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory) -> Path:
    return config_file(tmp_path_factory.mktemp("budget_base"), "base", width_mult=0.25, depth_mult=0.34,
                       resolution=32)


def test_whole_search_ends_within_its_budget_and_lists_what_was_cut(data, base_cfg, tmp_path):
    db, out = f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "out"
    # 45 candidates, nearly all distinct models (every gamma is another resolution): more than the budget trains
    proc = run_cli("search", str(data), "--base", str(base_cfg), "--alpha", "1.0", "--beta", "1.0:1.4:0.1",
                   "--gamma", "1.0:1.4:0.05", "--tolerance", "1.0", "--budget-minutes", str(BUDGET_S / 60),
                   "--storage", db, "--study", "b", "--out", str(out), "--threads", "1", "--batch-size", "16",
                   "--top", "1", "--repeats", "1")
    report = json.loads((out / "results.json").read_text())
    # the whole search, its report included, is over by the deadline it set itself (BUDGET_S from its start): the
    # search measures its own costs as it goes, so this holds on a loaded machine too; no speed is assumed
    deadline = report["budget"]["deadline"]
    written = {p.name: p.stat().st_mtime for p in out.iterdir() if p.is_file()}
    assert "results.json" in written and max(written.values()) <= deadline, (written, deadline, proc.stdout[-3000:])
    rows = {r["candidate"]: r for r in report["results"] if r["status"] != "reference"}
    assert report["grid_kept"] == 45 and len(rows) == 45
    cut = set(report["cut_for_time"])
    trained = {k for k, r in rows.items() if r["epochs"] >= 1}
    assert cut and trained and not cut & trained and cut | trained == set(rows)
    assert all(rows[k]["status"] == "time" and rows[k]["top1"] is None for k in cut)
    assert f"{len(cut)} of 45 candidates" in proc.stdout and "cut for time" in proc.stdout
    assert report["paper"]["n_seeds"] == 2  # the reference (not in this grid) was trained with both seeds

    # nothing ran past the deadline; the repeats were paid from the budget, not after it
    deadline = datetime.datetime.fromtimestamp(deadline)
    trials = optuna.load_study(study_name="b", storage=db).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert finished and all(t.datetime_complete <= deadline for t in finished)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    repeats = [t for t in finished if t.params["phase"] == "repeat"]
    assert repeats and all(t.user_attrs["epochs"] == report["plan"]["max_epochs"] for t in repeats
                           if t.state == TrialState.COMPLETE)
    assert report["verdict"]
