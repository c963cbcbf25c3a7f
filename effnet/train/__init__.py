"""Training, shared by every task: the loop (``loop``), what it asks of a task (``task.Task``), its state and resume
(``checkpoint``), DDP (``distributed``), recipes (``recipes``), metrics files and curves (``metrics``), precise BN,
and the flags every ``train`` command shares (``arguments``). The tasks themselves live in ``effnet.classify`` and
``effnet.detect``."""

from .config import TrainConfig
from .loop import train
from .metrics import plot_curves
from .precise_bn import recalibrate_bn
from .recipes import RECIPES, Recipe
from .task import EpochEnd, StepResult, Task

__all__ = ["TrainConfig", "train", "Task", "EpochEnd", "StepResult", "recalibrate_bn", "plot_curves", "RECIPES",
           "Recipe"]
