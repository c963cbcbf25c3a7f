"""The job runner of the search, on Optuna: workers claim jobs from a study in an RDB (``worker``), the schedule
says what runs next from the study alone (``schedule``), a clock keeps a time budget (``clock``), the plan is
chosen from timed steps (``budget``, ``planning``), the study is opened with heartbeats (``study``), and one run
trains a candidate (``trial``). Every step reads one :class:`SearchContext` (``context``). The method it runs
(the grid, the settings, the verdict, the report) is ``effnet.search``'s; nothing there imports the runner."""

from .context import SearchContext
from .worker import run_search  # (not `worker`: it would hide the module runner.worker)

__all__ = ["SearchContext", "run_search"]
