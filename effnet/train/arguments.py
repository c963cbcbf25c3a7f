"""The flags every ``train`` command shares (``effnet train``, ``effnet detect train``) and the run config they give.

Not a ``commands`` module: each task's commands module builds its own ``train`` parser from these, so that no
commands module imports another's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import UsageError
from .config import TrainConfig


def config_for(args: argparse.Namespace, config_type=TrainConfig):
    """The run's config: flags, or the saved args.json of ``--resume RUN_DIR`` (DATA_DIR may be moved)."""
    if args.resume:
        path = Path(args.resume) / "args.json"
        if not path.is_file():
            raise UsageError(f"{args.resume}: not a run directory (no args.json)")
        saved = json.loads(path.read_text())
        if args.data_dir:
            saved["data_dir"] = args.data_dir
        return config_type(**saved)
    if not args.data_dir:
        raise UsageError("give DATA_DIR (or --resume RUN_DIR)")
    fields = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``effnet train`` after DATA_DIR (shared with ``effnet detect train``)."""
    p.add_argument("--model", default=None, help="model name or config .json (default efficientnet_b0)")
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
    p.add_argument("--recipe", choices=["auto", "paper", "finetune", "detect"])
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
