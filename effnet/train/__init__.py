"""Training: the shared loop (``loop``), its state and resume (``checkpoint``), DDP (``distributed``),
recipes (``recipes``), classification as a task (``classification``) and its metrics (``evaluate``)."""

from .classification import ClassificationTask
from .config import TrainConfig
from .evaluate import EvalResult, evaluate, recalibrate_bn
from .loop import train
from .metrics import plot_run
from .recipes import RECIPES, Recipe

__all__ = ["ClassificationTask", "TrainConfig", "EvalResult", "evaluate", "recalibrate_bn", "train", "plot_run",
           "RECIPES", "Recipe"]
