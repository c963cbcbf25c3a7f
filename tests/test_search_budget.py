"""`effnet search --budget-minutes`: the whole search (start-up, rung runs, seed repeats, report) ends within
its wall-clock budget, and the candidates it had no time for are recorded as cut for time. A budget that plans
one fidelity level (no rung to compare, so the verdict could only keep the paper's coefficients) is refused before
anything is trained or written, naming the budget that plans two, unless --one-level asks for it."""

import datetime
import json
import math
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from effnet.search import PAPER
from effnet.search.plan import Plan
from effnet.search.runner.budget import Costs, choose_plan, two_levels_seconds
from effnet.search.runner.planning import TIMING_MARGIN
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
                   "--top", "1", "--repeats", "1", "--one-level")  # (one level or more: this test is about the clock)
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


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_a_budget_of_one_level_is_refused_before_anything_is_written(data, base_cfg, tmp_path):
    """3 s cannot pay for the start-up reserve, let alone two levels: refused after the timed steps, with the
    budget that plans two; no database, no study, no folder."""
    db, out = tmp_path / "r.db", tmp_path / "out"
    grid = ["--base", str(base_cfg), "--alpha", "1.0", "--beta", "1.0:1.2:0.1", "--gamma", "1.0,1.15", "--tolerance",
            "1.0", "--storage", f"sqlite:///{db}", "--study", "r", "--out", str(out), "--threads", "1",
            "--batch-size", "16", "--top", "1", "--repeats", "1"]
    proc = run_cli("search", str(data), *grid, "--budget-minutes", "0.05", check=False, timeout=600)
    assert proc.returncode == 2 and _files(tmp_path) == [], (proc.stdout, proc.stderr)
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in proc.stderr
    found = re.fullmatch(r"effnet: error: --budget-minutes 0.05 plans one fidelity level \(epochs 1\): the verdict "
                         r"needs two to compare and could only keep the paper's coefficients; two levels need about "
                         r"([0-9.]+) min on this machine: give --budget-minutes (\d+) or more, or --one-level to "
                         r"search anyway", line)
    assert found, line
    need, give = float(found[1]), int(found[2])
    assert 0.05 < need <= give <= max(1, math.ceil((need + 0.05) * TIMING_MARGIN))  # need: rounded to 0.1
    assert "measured:" in proc.stdout and "plan:" not in proc.stdout  # timed, but nothing planned to run

    # the same with --budget-epochs: nothing to time, the smallest two-level budget is one epoch more
    proc = run_cli("search", str(data), *grid, "--budget-epochs", "1", check=False, timeout=600)
    assert proc.returncode == 2 and _files(tmp_path) == []
    assert proc.stderr.strip() == ("effnet: error: --budget-epochs 1 plans one fidelity level (epochs 1): the verdict "
                                   "needs two to compare and could only keep the paper's coefficients; give "
                                   "--budget-epochs 2 or more, or --one-level to search anyway")
    proc = run_cli("search", str(data), *grid, "--min-epochs", "9", check=False, timeout=600)
    assert proc.returncode == 2 and _files(tmp_path) == []
    assert proc.stderr.startswith("effnet: error: --min-epochs 9 with the default --budget-epochs 9 plans one fidelity "
                                  "level (epochs 9): ") and "; give --budget-epochs 10 or more," in proc.stderr


def test_one_level_searches_only_when_asked_and_a_rerun_keeps_to_it(data, base_cfg, tmp_path):
    """--one-level: the search runs and says that its verdict keeps the paper's coefficients; a rerun of that study
    without the flag is refused (nothing written), one with the suggested budget plans two levels and says so."""
    db = f"sqlite:///{tmp_path / 'o.db'}"
    grid = ["--base", str(base_cfg), "--alpha", "1.0", "--beta", "1.0,1.2", "--gamma", "1.0", "--tolerance", "1.0",
            "--storage", db, "--threads", "1", "--batch-size", "16", "--top", "1", "--repeats", "1"]
    one = run_cli("search", str(data), *grid, "--study", "o", "--out", str(tmp_path / "o"), "--budget-epochs", "1",
                  "--one-level")
    assert ("plan: epochs 1 (one fidelity level, as --one-level allows: no rung to compare, so the verdict will keep "
            "the paper's coefficients; --budget-epochs 2 or more would plan two)") in one.stdout
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["plan"]["max_epochs"] == 1
    assert report["chosen"] == dict(alpha=PAPER.alpha, beta=PAPER.beta, gamma=PAPER.gamma)
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="o", storage=db).get_trials()]
    written = {p: p.stat().st_mtime_ns for p in _files(tmp_path / "o")}

    again = run_cli("search", str(data), *grid, "--study", "o", "--out", str(tmp_path / "o"), "--budget-epochs", "1",
                    check=False)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"effnet: error: study 'o' in {db} plans one fidelity level (epochs 1): the verdict needs two to compare and "
        "could only keep the paper's coefficients; give --one-level to go on with it, or another --study with a "
        "larger budget")
    assert [(t.number, t.state, t.value) for t in optuna.load_study(study_name="o", storage=db).get_trials()] == before
    assert {p: p.stat().st_mtime_ns for p in _files(tmp_path / "o")} == written

    two = run_cli("search", str(data), *grid, "--study", "t", "--out", str(tmp_path / "t"), "--budget-epochs", "2")
    assert "plan: epochs 1 -> 2 (2 fidelity levels to compare; the best 1/3 of each rung go on)" in two.stdout
    report = json.loads((tmp_path / "t" / "results.json").read_text())
    assert [(a["lower"], a["upper"]) for a in report["rank_agreement"]] == [(1, 2)]


def test_the_two_level_budget_is_where_the_planner_starts_planning_two_levels():
    """The budget a refusal names is the planner's own boundary: a second less plans one level, that much two."""
    costs = Costs(epoch_s=[4.0 + i / 10 for i in range(40)], eval_s=[1.0] * 40, paper=(5.0, 1.0), overhead_s=1.0,
                  workers=2)
    for base in (Plan(max_epochs=1, repeats=2, top=3), Plan(max_epochs=3, min_epochs=3, reduction_factor=2, repeats=0,
                                                          top=1), Plan(max_epochs=1, unit_steps=8)):
        need = two_levels_seconds(base, costs)
        assert len(choose_plan(base, need, costs).levels()) >= 2
        assert choose_plan(base, need - 1, costs).levels() == [base.min_epochs]


def test_the_clock_calibrates_on_finished_trials_only():
    """A trial another worker is still writing (here a copy, its twin's attributes half recorded: train_seconds
    without wall_seconds) does not count -- it once ended a two-worker search with "error: wall_seconds"."""
    from effnet.search.runner.clock import Clock

    clock = Clock(epoch_s={"m": 2.0})
    finished = optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=50.0, params={"candidate": "a"},
        distributions={"candidate": optuna.distributions.CategoricalDistribution(["a", "b"])},
        user_attrs={"train_seconds": 8.0, "wall_seconds": 11.0, "epochs_trained": 2})
    half = optuna.trial.create_trial(
        state=TrialState.RUNNING, params={"candidate": "b"},
        distributions={"candidate": optuna.distributions.CategoricalDistribution(["a", "b"])},
        user_attrs={"train_seconds": 8.0, "epochs_trained": 2})
    clock.calibrate([finished, half], {"a": "m", "b": "m"})
    assert clock.measured == 1 and clock.factor == pytest.approx(2.0)  # 8 s for 2 epochs predicted at 2 s each
    assert clock.overhead_s == pytest.approx(3.0 * 1.1 + 0.2)


def test_the_reports_reserve_grows_with_the_slowdown_up_to_a_third_of_the_budget():
    """The reserve after the last job is the planned report time scaled by the measured slowdown, but never more
    than a third of the budget (or the planned time, if that is more): a tiny model's first epochs, 3.35x the timed
    steps' prediction, once reserved more than a 36 s budget for a report written in half a second, and cut
    every job."""
    from effnet.search.runner.clock import Clock

    def reserve(budget_s: float, factor: float, report_s: float = 12.0) -> float:
        clock = Clock(deadline=1000.0 + budget_s, start=1000.0, report_s=report_s, factor=factor)
        return clock.deadline - clock.end()

    assert reserve(36, 3.35) == pytest.approx(12.0)  # a third of 36 s is 12 s: the planned time, unscaled
    assert reserve(36, 3.35, report_s=16.0) == pytest.approx(16.0)  # the planned time is never cut
    assert reserve(600, 3.0) == pytest.approx(36.0)  # a long search under load still grows its reserve
    assert reserve(600, 30.0) == pytest.approx(200.0)  # ... up to a third
    assert reserve(600, 0.5) == pytest.approx(12.0)  # and never shrinks it below the planned time
