"""The paper's method (section 3.3): grid-search alpha/beta/gamma at phi=1, then scale up.

Step 1 (``effnet search``): enumerate the alpha/beta/gamma grid, keep candidates with
alpha * beta^2 * gamma^2 within a tolerance of the FLOPs ratio (2), build each phi=1 model from the base,
train it on the user's data with a fixed budget (the training code of ``effnet train``), and record
top-1, params, MACs and CPU latency. Trials live in an Optuna study in an RDB (SQLite by default,
PostgreSQL for workers on several machines): a killed search resumes, workers never duplicate a trial.

Step 2 (``effnet scale``): apply the chosen coefficients for phi = 0..K and write the configs.
``effnet study``: width-only / depth-only / resolution-only / compound scaling at matched MACs (Fig. 3).
"""

from .grid import Candidate, candidate_config, enumerate_grid, parse_range
from .scaling import scale_family, scaling_study
from .settings import SearchSettings
from .worker import run_search, worker

__all__ = ["Candidate", "candidate_config", "enumerate_grid", "parse_range", "scale_family", "scaling_study",
           "SearchSettings", "run_search", "worker"]
