"""The paper's method (section 3.3): grid-search alpha/beta/gamma at phi=1, then scale up.

Step 1 (``effnet search``): enumerate the alpha/beta/gamma grid, keep candidates with
alpha * beta^2 * gamma^2 within a tolerance of the FLOPs ratio (2), build each phi=1 model from the base and
train it on the user's data (the training code of ``effnet train``) under successive halving: every candidate
gets a short run, the best third go on to several times more epochs. The finalists and the paper's
coefficients are re-trained with other seeds, and the verdict says whether the winner beats the paper's
coefficients beyond the seed spread. With ``--budget-minutes`` the whole search (start-up, rungs, repeats,
report) ends within that wall time: a clock (``runner/clock.py``) re-estimates every job's cost from the finished
trials and starts only what can end in time; candidates it cannot pay for are cut and listed. A budget that plans
one fidelity level (no rung to compare, so the verdict could only keep the paper's coefficients) is refused before
anything is trained or written, naming the smallest budget that plans two (``--one-level`` searches anyway). Trials live in an
Optuna study in an RDB (SQLite by default, PostgreSQL for workers on several machines): a killed search
resumes, workers never duplicate a trial.

Step 2 (``effnet scale``): apply the chosen coefficients for phi = 0..K and write the configs.
``effnet study``: width-only / depth-only / resolution-only / compound scaling at matched MACs (Fig. 3).

The method lives here: the grid (``grid``), the settings and the paper's coefficients (``settings``), the plan of
successive halving (``plan``), the verdict, the report, the plots and step 2 (``scaling``). The job runner on
Optuna that trains the grid (workers, schedule, clock, budget, planning, study, trial, with one context object)
is ``runner/``; it imports the method, never the other way round.
"""

from .grid import Candidate, candidate_config, enumerate_grid, parse_range
from .plan import Plan
from .runner import SearchContext, run_search
from .runner.worker import worker
from .scaling import StudySettings, scale_family, scaling_study
from .settings import PAPER, SearchSettings
from .verdict import Spread, decide

__all__ = ["Candidate", "candidate_config", "enumerate_grid", "parse_range", "scale_family", "scaling_study",
           "StudySettings", "SearchSettings", "PAPER", "Plan", "Spread", "decide", "run_search", "worker",
           "SearchContext"]
