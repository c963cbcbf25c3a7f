"""The flags every ``train`` command shares (``effnet train``, ``effnet detect train``) and the run config they give.

Not a ``commands`` module: each task's commands module builds its own ``train`` parser from these, so that no
commands module imports another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError
from .config import TrainConfig
from .recipes import RECIPES


# what a resume may change: where the data now lives and how it is read or logged; every other setting shapes the
# run (schedule, model, data order), so a resumed run keeps its saved ones
RESUME_MAY_CHANGE = ("data_dir", "workers", "quiet")


def config_for(args: argparse.Namespace, config_type=TrainConfig):
    """The run's config: flags, or the saved args.json of ``--resume RUN_DIR`` (DATA_DIR may be moved)."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    if args.resume:
        return _resumed_config(args, config_type, fields)
    if not args.data_dir:
        raise UsageError("give DATA_DIR (or --resume RUN_DIR)")
    return config_type(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def read_run_args(run_dir: str | Path, config_type=TrainConfig) -> dict:
    """A run directory's saved settings (``args.json``), checked: a JSON object of known settings."""
    path = Path(run_dir) / "args.json"
    if not path.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no args.json)")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"{path}: expected a JSON object of settings, got {type(saved).__name__}")
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(config_type)})
    if unknown:
        raise UsageError(f"{path}: unknown settings {', '.join(map(str, unknown[:5]))} (written by another version?)")
    return saved


def _given(args: argparse.Namespace, name: str):
    """The value of flag ``name`` when the user gave it (differs from the parser's default), else None."""
    parser = getattr(args, "train_parser", None)
    value = getattr(args, name, None)
    default = parser.get_default(name) if parser is not None else None
    return None if value is None or value == default else value


def _same(saved, value) -> bool:
    """A saved setting equals a flag's value: args.json holds a START:END range as a list, the flag a tuple."""
    return saved == value or (isinstance(value, tuple) and saved == list(value))


def span(kind: type):
    """The argparse type of a ``START:END`` flag: two numbers of ``kind`` (one number N: N:N, a constant)."""

    def parse(text: str) -> tuple:
        parts = text.split(":")
        try:
            if len(parts) in (1, 2):
                values = tuple(kind(p) for p in parts)
                return values * 2 if len(values) == 1 else values
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"expected START:END ({'whole numbers' if kind is int else 'numbers'}), "
                                         f"got {text!r}")

    parse.__name__ = f"{kind.__name__} START:END"
    return parse


def _resumed_config(args: argparse.Namespace, config_type, fields: set[str]):
    saved = read_run_args(args.resume, config_type)
    differ = []
    for name in sorted(fields):
        value = _given(args, name)
        if value is None or name == "resume":
            continue
        if name in RESUME_MAY_CHANGE:
            saved[name] = value
        elif not _same(saved.get(name), value):
            differ.append(f"--{name.replace('_', '-')} {value} (run has {saved.get(name)})")
    if differ:
        raise UsageError(f"--resume {args.resume} continues the run with its saved settings; these flags differ: "
                         f"{'; '.join(differ)} (start a new run with --out to change them)")
    try:
        return config_type(**saved)
    except UsageError as exc:
        raise UsageError(f"{Path(args.resume) / 'args.json'}: {exc}") from None
    except TypeError as exc:  # a required setting missing
        raise UsageError(f"{Path(args.resume) / 'args.json'}: {exc}") from None


def add_train_arguments(p: argparse.ArgumentParser, task_recipes: Iterable[str] = ()) -> None:
    """The flags of ``effnet train`` after DATA_DIR (shared with ``effnet detect train``); ``task_recipes``: the
    names of the task's own recipes, offered by ``--recipe`` beside the shared ones."""
    p.add_argument("--model", default=TrainConfig.model, help="model name or config .json (default %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretrained", action="store_true", default=None)
    g.add_argument("--weights", help="start from these weights (effnet .safetensors or a foreign checkpoint)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--resolution", type=int)
    p.add_argument("--lr", type=float, help="absolute learning rate (default: recipe lr x global batch / ref batch)")
    p.add_argument("--freeze-backbone", action="store_true", default=None)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--val-split", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--recipe", choices=["auto", *RECIPES, *task_recipes])
    p.add_argument("--optimizer", choices=["rmsprop", "adamw", "sgd"])
    p.add_argument("--schedule", choices=["exp", "cosine", "constant"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--auto-augment", choices=["none", "autoaugment", "randaugment"])
    p.add_argument("--rrc-scale-min", type=float, help="RandomResizedCrop minimum area fraction")
    p.add_argument("--hflip", type=float, help="horizontal flip probability")
    p.add_argument("--ema-decay", type=float, help="0 disables EMA")
    p.add_argument("--drop-path-rate", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument("--workers", type=int)
    p.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    p.add_argument("--sync-bn", action="store_true", default=None)
    p.add_argument("--memory-efficient", action="store_true", default=None,
                   help="SiLU/SE that recompute in backward instead of storing activations")
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="per-block gradient checkpointing")
    p.add_argument("--checkpoint-stages", type=int,
                   help="with --grad-checkpoint: only the blocks of the first N stages (the high-resolution ones)")
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--precise-bn", type=int, help="recompute BN statistics over N train batches before the final eval")
    p.add_argument("--dump-rank-weights", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", default=None)
    add_progressive_arguments(p)
    p.set_defaults(train_parser=p)  # config_for tells flags given from defaults (also those set after this)


def add_progressive_arguments(p: argparse.ArgumentParser) -> None:
    """EfficientNetV2's progressive learning (effnet.train.progressive); each range defaults to the model's row of
    the paper's Table 6."""
    g = p.add_argument_group("progressive learning (EfficientNetV2, Algorithm 1)")
    g.add_argument("--progressive", action="store_true", default=None,
                   help="grow the image size and the regularization (dropout, RandAugment, mixup) over the stages")
    g.add_argument("--progressive-stages", type=int, metavar="M", help="number of stages (default 4)")
    g.add_argument("--progressive-size", type=span(int), metavar="START:END", help="training image size")
    g.add_argument("--progressive-randaug", type=span(int), metavar="START:END",
                   help="RandAugment magnitude on the paper's (TensorFlow's) scale, 10 = strongest; 0: none")
    g.add_argument("--progressive-mixup", type=span(float), metavar="START:END", help="mixup alpha (0: none)")
    g.add_argument("--progressive-dropout", type=span(float), metavar="START:END", help="classifier dropout rate")
