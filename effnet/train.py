"""Training, transfer learning and evaluation: the paper's recipe on an ImageFolder, resumable, DDP-ready.

One process: ``effnet train DATA --model NAME``. Many processes or machines: the same command under
``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU); rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .config import ModelConfig
from .data import DataError, ImageSamples, eval_transform, scan_image_folder, train_transform
from .optim import bn_momentum_for_run, build_optimizer, build_scheduler, ema_decay_for_run, ema_multi_avg_fn, warmup_steps_for
from .weights import atomic_write, save

CKPT_FORMAT = "effnet-train-checkpoint-v1"


@dataclass(frozen=True)
class Recipe:
    """Optimisation + regularisation defaults. ``lr`` is for a global batch of ``ref_batch`` (linear scaling)."""

    optimizer: str
    lr: float
    ref_batch: int
    weight_decay: float
    schedule: str
    warmup_epochs: float
    label_smoothing: float
    auto_augment: str
    rrc_scale_min: float
    hflip: float
    ema_decay: float


RECIPES: dict[str, Recipe] = {
    # Paper section 5.2: RMSProp (decay 0.9, momentum 0.9), lr 0.256 per 4096 images, warmup 5 epochs, decay
    # 0.97 every 2.4 epochs, weight decay 1e-5, AutoAugment, label smoothing 0.1, EMA 0.9999.
    "paper": Recipe("rmsprop", 0.256, 4096, 1e-5, "exp", 5.0, 0.1, "autoaugment", 0.08, 0.5, 0.9999),
    # Fine-tuning pretrained weights: AdamW + cosine, milder crops, no AutoAugment.
    "finetune": Recipe("adamw", 2e-3, 32, 1e-5, "cosine", 1.0, 0.1, "none", 0.35, 0.5, 0.9999),
}


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    model: str = "efficientnet_b0"
    pretrained: bool = False
    weights: str | None = None
    epochs: int = 10
    batch_size: int = 32  # per process
    resolution: int | None = None
    lr: float | None = None  # absolute; None = recipe lr scaled by global batch
    freeze_backbone: bool = False
    out: str | None = None
    val_split: float = 0.1  # used when DATA_DIR has no val/ folder
    seed: int = 0
    recipe: str = "auto"  # auto = finetune when starting from weights, else paper
    optimizer: str | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    auto_augment: str | None = None
    rrc_scale_min: float | None = None
    hflip: float | None = None
    ema_decay: float | None = None  # 0 disables EMA
    drop_path_rate: float | None = None
    dropout: float | None = None
    crop_pct: float | None = None
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends
    sync_bn: bool = False
    memory_efficient: bool = False  # SiLU / SE gating that recompute instead of storing
    grad_checkpoint: bool = False  # per-stage gradient checkpointing
    budget_minutes: float | None = None  # stop training after this long (grid search budgets)
    plot: bool = True  # write curves.png at the end
    precise_bn: int = 0  # batches to recompute BatchNorm statistics with before the final evaluation
    dump_rank_weights: bool = False  # every rank writes its final weights (tests of DDP sync)
    quiet: bool = False

    def resolved_recipe(self) -> Recipe:
        name = self.recipe
        if name == "auto":
            name = "finetune" if (self.pretrained or self.weights) else "paper"
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r} (paper, finetune)")
        base = RECIPES[name]
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(Recipe)
                     if hasattr(self, f.name) and getattr(self, f.name) is not None}
        overrides.pop("lr", None)
        return dataclasses.replace(base, **overrides)


class TrainingDiverged(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- helpers

def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class EpochSampler(torch.utils.data.Sampler):
    """DistributedSampler order for (epoch), minus the batches already done; yields ``epoch * n + i``."""

    def __init__(self, n: int, rank: int, world: int, seed: int) -> None:
        self.n = n
        self.inner = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                                         seed=seed, drop_last=True)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch)

    def __iter__(self):
        for i in list(self.inner)[self.skip:]:
            yield self.epoch * self.n + i

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def split_samples(samples, val_split: float, seed: int):
    rng = random.Random(seed)
    order = list(range(len(samples)))
    rng.shuffle(order)
    n_val = max(1, int(round(len(samples) * val_split)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [samples[i] for i in train], [samples[i] for i in val]


def load_splits(data_dir: str, val_split: float, seed: int, log=print):
    """(train samples, val samples, class names, skipped files) from DATA_DIR/{train,val} or one folder."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{data_dir}: not a directory")
    if (root / "train").is_dir():
        train, classes, skipped = scan_image_folder(root / "train")
        if (root / "val").is_dir():
            val, _, skipped_val = scan_image_folder(root / "val", classes)
            skipped += skipped_val
        else:
            train, val = split_samples(train, val_split, seed)
    else:
        samples, classes, skipped = scan_image_folder(root)
        train, val = split_samples(samples, val_split, seed)
    for path, reason in skipped:
        log(f"warning: skipping {path}: {reason}")
    return train, val, classes, skipped


HINTS_FILE = "effnet_dataset.json"
HINT_FIELDS = ("hflip", "resolution", "rrc_scale_min", "auto_augment")


def dataset_hints(data_dir: str) -> dict[str, Any]:
    """Training defaults a dataset declares in DATA_DIR/effnet_dataset.json (written by `effnet data`)."""
    path = Path(data_dir) / HINTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    return {k: v for k, v in data.get("train_defaults", {}).items() if k in HINT_FIELDS}


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[float(v) for v in np_state[2:]]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _initial_model(cfg: TrainConfig, num_classes: int, class_names: tuple[str, ...]) -> nn.Module:
    """The model to train: architecture, starting weights, new head for the user's classes."""
    from .model import EfficientNet
    from .registry import create_model
    from .weights import is_effnet_file, load, load_weights

    overrides = {k: v for k, v in (("drop_path_rate", cfg.drop_path_rate), ("dropout", cfg.dropout)) if v is not None}
    if cfg.weights and is_effnet_file(cfg.weights):  # our file carries its architecture
        source = load(cfg.weights)
        model = EfficientNet(source.config.replace(**overrides))
        model.load_state_dict(source.state_dict())
    else:
        model = create_model(cfg.model, pretrained=cfg.pretrained, **overrides)
        if cfg.weights:
            load_weights(model, cfg.weights)
    if model.config.num_classes != num_classes or model.config.class_names != class_names:
        if cfg.pretrained or cfg.weights:
            model.reset_classifier(num_classes, class_names)  # transfer learning: new head
        else:
            model = EfficientNet(model.config.replace(num_classes=num_classes, class_names=class_names))
    return model


# ---------------------------------------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    images: int
    seconds: float
    per_class: list[dict[str, Any]]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int, channels_last: bool = False) -> None:
    """"Precise BN": replace BatchNorm running statistics by their plain average over ``batches`` training
    batches. After a short run the exponential running averages still carry early-training statistics, and
    eval-mode accuracy can sit at chance while train accuracy climbs (as NAS methods do before evaluating)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    model.train(was_training)


@torch.inference_mode()
def evaluate(model: nn.Module, loader, class_names: list[str], amp: bool = False,
             channels_last: bool = False) -> EvalResult:
    """Top-1/top-5 (%), mean cross-entropy and per-class top-1 over ``loader``."""
    model.eval()
    n_cls = len(class_names)
    correct = torch.zeros(n_cls, dtype=torch.long)
    total = torch.zeros(n_cls, dtype=torch.long)
    top5 = 0
    loss_sum = 0.0
    start = time.perf_counter()
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hit1 = topk[:, 0] == y
        top5 += (topk == y[:, None]).any(dim=1).sum().item()
        total += torch.bincount(y, minlength=n_cls)
        correct += torch.bincount(y[hit1], minlength=n_cls)
    seconds = time.perf_counter() - start
    n = int(total.sum())
    if n == 0:
        raise DataError("evaluation set is empty")
    per_class = [dict(name=name, images=int(t), top1=100.0 * int(c) / int(t) if t else float("nan"))
                 for name, c, t in zip(class_names, correct.tolist(), total.tolist())]
    return EvalResult(100.0 * int(correct.sum()) / n, 100.0 * top5 / n, loss_sum / n, n, seconds, per_class)


def eval_loader(samples, config: ModelConfig, resolution: int, crop_pct: float, batch_size: int, workers: int):
    tf = eval_transform(config.replace(crop_pct=crop_pct), resolution)
    ds = ImageSamples(samples, tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       generator=torch.Generator())


# ---------------------------------------------------------------------------------------------- training

def train(cfg: TrainConfig, resume_dir: str | None = None, model_config: ModelConfig | None = None) -> dict:
    """Train (or resume) a run; returns the summary dict (also written to RUN_DIR/summary.json).

    ``model_config`` (in-process use, e.g. the grid search) replaces ``cfg.model``.
    """
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    is_main = rank == 0
    log = (lambda *a: print(*a, flush=True)) if is_main and not cfg.quiet else (lambda *a: None)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    hints = dataset_hints(cfg.data_dir)
    if hints:
        # the dataset's own defaults (e.g. digits are not flip-invariant); explicit settings win
        cfg = dataclasses.replace(cfg, **{k: v for k, v in hints.items() if getattr(cfg, k) is None})
        log(f"dataset defaults from {Path(cfg.data_dir) / HINTS_FILE}: {hints}")
    recipe = cfg.resolved_recipe()
    train_samples, val_samples, classes, skipped = load_splits(cfg.data_dir, cfg.val_split, cfg.seed,
                                                               log if is_main else (lambda *a: None))
    class_names = tuple(classes)
    if model_config is not None:
        from .model import EfficientNet

        model = EfficientNet(model_config.replace(num_classes=len(classes), class_names=class_names))
    else:
        model = _initial_model(cfg, len(classes), class_names)
    mcfg: ModelConfig = model.config
    resolution = cfg.resolution or mcfg.resolution
    crop_pct = cfg.crop_pct or (mcfg.crop_pct if cfg.resolution is None else 0.875)
    # the saved model carries the preprocessing it was trained with (predict/eval/export use it)
    model.config = mcfg = mcfg.replace(resolution=resolution, crop_pct=crop_pct)
    if cfg.freeze_backbone:
        model.freeze_backbone()
    if cfg.memory_efficient or cfg.grad_checkpoint:
        from .deploy import set_grad_checkpointing, set_memory_efficient

        set_memory_efficient(model, cfg.memory_efficient)
        set_grad_checkpointing(model, cfg.grad_checkpoint)
    if cfg.sync_bn and distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # data
    tf = train_transform(mcfg, resolution, recipe.auto_augment, recipe.rrc_scale_min, recipe.hflip)
    train_ds = ImageSamples(train_samples, tf, seed=cfg.seed)
    sampler = EpochSampler(len(train_ds), rank, world, cfg.seed)
    if len(sampler) < cfg.batch_size:
        raise DataError(f"{cfg.data_dir}: {len(train_samples)} training images are fewer than one batch "
                        f"({cfg.batch_size} x {world} processes)")
    loader_kw = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, drop_last=True,
                     persistent_workers=False)
    val_loader = eval_loader(val_samples, mcfg, resolution, crop_pct, max(cfg.batch_size, 64), cfg.workers)
    steps_per_epoch = len(sampler) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs

    bn_momentum = bn_momentum_for_run(mcfg.bn_momentum, total_steps)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = bn_momentum

    # optimisation
    global_batch = cfg.batch_size * world
    lr = cfg.lr if cfg.lr is not None else recipe.lr * global_batch / recipe.ref_batch
    optimizer = build_optimizer(recipe.optimizer, model, lr, recipe.weight_decay)
    warmup = warmup_steps_for(recipe.warmup_epochs, cfg.epochs, steps_per_epoch)
    scheduler = build_scheduler(optimizer, recipe.schedule, total_steps, steps_per_epoch, warmup)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    ema = None
    if recipe.ema_decay > 0:
        decay = ema_decay_for_run(recipe.ema_decay, total_steps)
        ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay), use_buffers=True)

    # run directory and resume
    run_dir = Path(resume_dir or cfg.out or f"runs/{mcfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    ckpt_path = run_dir / "checkpoint.pt"
    start_epoch, start_batch, global_step = 0, 0, 0
    epoch_acc = dict(loss=0.0, correct=0, seen=0, seconds=0.0)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        args_json = json.dumps(dataclasses.asdict(cfg), indent=1)
        atomic_write(run_dir / "args.json", lambda tmp: Path(tmp).write_text(args_json))
    if resume_dir and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CKPT_FORMAT:
            raise DataError(f"{ckpt_path}: not an effnet training checkpoint")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, start_batch, global_step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["global_step"]
        epoch_acc = dict(ckpt["epoch_acc"])
        _set_rng_state(ckpt["rng"])
        log(f"resumed {run_dir} at epoch {start_epoch}, batch {start_batch} (step {global_step})")
    elif resume_dir:
        log(f"no checkpoint in {run_dir}: starting from scratch")

    raw_model = model
    train_model: nn.Module = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(model)
    if cfg.compile:
        train_model = torch.compile(train_model)

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        if not is_main:
            return
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            # a finite loss can still leave inf/NaN weights behind: never overwrite the last good checkpoint
            raise TrainingDiverged(f"weights became non-finite at step {global_step}: training diverged (try a "
                                   f"lower --lr); last good checkpoint kept in {ckpt_path}")
        state = {
            "format": CKPT_FORMAT, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_step": global_step,
            "epoch_acc": dict(epoch_acc), "rng": _rng_state(), "model_config": mcfg.to_json(),
        }
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))

    metrics_path = run_dir / "metrics.csv"
    tb = _tensorboard(run_dir) if is_main else None
    log(f"training {mcfg.name} on {len(train_samples)} images / {len(classes)} classes at {resolution}px; "
        f"val {len(val_samples)}; recipe {recipe}; lr {lr:.3g}; {steps_per_epoch} steps/epoch x {cfg.epochs}; "
        f"{world} process(es); BN momentum {bn_momentum:.3g}")
    started = time.time()
    stopped_early = False
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs):
        skip = start_batch if epoch == start_epoch else 0
        if skip == 0:
            epoch_acc = dict(loss=0.0, correct=0, seen=0, seconds=0.0)
        sampler.set_epoch(epoch, skip * cfg.batch_size)
        # own generator: creating a loader iterator must not consume the global RNG (dropout, drop-path),
        # or a resumed run would draw different masks
        loader = torch.utils.data.DataLoader(train_ds, sampler=sampler, generator=torch.Generator().manual_seed(epoch),
                                             **loader_kw)
        train_model.train()
        if cfg.freeze_backbone:  # frozen backbone: keep its BatchNorm statistics too
            for name, module in raw_model.named_children():
                if name != "classifier":
                    module.eval()
        bar = tqdm(loader, total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not is_main or cfg.quiet or not sys.stderr.isatty(), leave=False)
        t_epoch = time.perf_counter()
        for batch_idx, (x, y) in enumerate(bar, start=skip):
            t0 = time.perf_counter()
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp):
                logits = train_model(x)
                loss = criterion(logits.float(), y)
            loss_value = loss.detach().clone()
            if distributed:
                dist.all_reduce(loss_value)
                loss_value /= world
            if not torch.isfinite(loss_value):
                msg = (f"loss is {loss_value.item()} at epoch {epoch + 1}, step {global_step + 1}: training "
                       f"diverged (try a lower --lr); last good checkpoint kept in {ckpt_path}")
                raise TrainingDiverged(msg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(raw_model)
            global_step += 1
            epoch_acc["loss"] += loss_value.item() * x.shape[0]
            epoch_acc["correct"] += int((logits.argmax(1) == y).sum())
            epoch_acc["seen"] += x.shape[0]
            epoch_acc["seconds"] += time.perf_counter() - t0
            if is_main and not cfg.quiet:
                bar.set_postfix(loss=f"{loss_value.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{x.shape[0] * world / (time.perf_counter() - t0):.0f}")
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                save_checkpoint(epoch, batch_idx + 1)
            if cfg.budget_minutes is not None and time.time() - started > cfg.budget_minutes * 60:
                stopped_early = True
                break
        bar.close()
        last_epoch = stopped_early or epoch == cfg.epochs - 1
        if last_epoch and cfg.precise_bn > 0:
            recalibrate_bn(raw_model, eval_loader(train_samples, mcfg, resolution, crop_pct, cfg.batch_size, cfg.workers),
                           cfg.precise_bn, cfg.channels_last)
        # evaluation (rank 0 on the full val set), CSV, checkpoint
        row: dict[str, Any] = dict(epoch=epoch + 1, step=global_step,
                                   train_loss=epoch_acc["loss"] / max(1, epoch_acc["seen"]),
                                   train_top1=100.0 * epoch_acc["correct"] / max(1, epoch_acc["seen"]),
                                   lr=optimizer.param_groups[0]["lr"],
                                   img_per_s=epoch_acc["seen"] * world / max(1e-9, epoch_acc["seconds"]),
                                   epoch_seconds=time.perf_counter() - t_epoch)
        if is_main:
            res = evaluate(raw_model, val_loader, classes, cfg.amp, cfg.channels_last)
            row.update(val_loss=res.loss, val_top1=res.top1, val_top5=res.top5)
            if ema is not None:
                res_ema = evaluate(ema.module, val_loader, classes, cfg.amp, cfg.channels_last)
                row.update(ema_val_loss=res_ema.loss, ema_val_top1=res_ema.top1, ema_val_top5=res_ema.top5)
            _append_csv(metrics_path, row)
            if tb is not None:
                for key, value in row.items():
                    tb.add_scalar(key, value, epoch + 1)
            ema_txt = f", EMA top-1 {row['ema_val_top1']:.2f}%" if ema is not None else ""
            log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.1f}%, val loss {row['val_loss']:.4f}, "
                f"top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%{ema_txt}, "
                f"{row['img_per_s']:.0f} img/s, {row['epoch_seconds']:.1f} s")
        if stopped_early:
            log(f"budget of {cfg.budget_minutes} min reached after {global_step} steps")
            break
        save_checkpoint(epoch + 1, 0)
        if distributed:
            dist.barrier()

    if distributed:
        # DDP keeps parameters in sync; BatchNorm statistics from each rank's last forward differ: take rank 0's
        for buf in raw_model.buffers():
            dist.broadcast(buf, src=0)
    summary: dict[str, Any] = {}
    if is_main:
        save(raw_model, run_dir / "model.safetensors")
        if ema is not None:
            save(ema.module, run_dir / "model_ema.safetensors")
        rows = _read_csv(metrics_path)
        last = rows[-1] if rows else {}
        summary = dict(run_dir=str(run_dir), model=mcfg.name, epochs=cfg.epochs, steps=global_step,
                       images_train=len(train_samples), images_val=len(val_samples), classes=len(classes),
                       skipped_files=len(skipped), resolution=resolution, lr=lr,
                       val_top1=last.get("val_top1"), val_top5=last.get("val_top5"),
                       ema_val_top1=last.get("ema_val_top1"), wall_seconds=time.time() - started,
                       stopped_early=stopped_early)
        atomic_write(run_dir / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
        if cfg.plot:
            try:
                plot_run(run_dir)
            except Exception as exc:  # plotting must never lose a finished run
                log(f"warning: could not plot curves: {exc}")
        log(f"done: {run_dir} (val top-1 {summary['val_top1']:.2f}%"
            + (f", EMA {summary['ema_val_top1']:.2f}%" if ema is not None else "")
            + f"; {len(skipped)} file(s) skipped; {summary['wall_seconds']:.0f} s)")
    if cfg.dump_rank_weights:
        save(raw_model, run_dir / f"rank{rank}.safetensors")
    if tb is not None:
        tb.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _append_csv(path: Path, row: dict) -> None:
    rows = _read_csv(path) if path.exists() else []
    rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row]
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _number(text: str | None) -> int | float | None:
    if text in ("", None):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def plot_run(run_dir: str | os.PathLike) -> Path:
    """Write RUN_DIR/curves.png: loss, top-1 and learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = _read_csv(run_dir / "metrics.csv")
    if not rows:
        raise DataError(f"{run_dir}: no metrics.csv to plot")
    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot(ep, [r["train_top1"] for r in rows], "o-", label="train")
    axes[1].plot(ep, [r["val_top1"] for r in rows], "o-", label="val")
    if rows[0].get("ema_val_top1") is not None:
        axes[1].plot(ep, [r["ema_val_top1"] for r in rows], "o-", label="val (EMA)")
    axes[1].set_title("top-1 %")
    axes[2].plot(ep, [r["lr"] for r in rows], "o-")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    out = run_dir / "curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- CLI

def _train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from .cli import _fail

    try:
        if args.resume:
            saved = json.loads((Path(args.resume) / "args.json").read_text())
            if args.data_dir:
                saved["data_dir"] = args.data_dir
            cfg = TrainConfig(**saved)
        else:
            if not args.data_dir:
                return _fail("give DATA_DIR (or --resume RUN_DIR)")
            cfg = _train_config_from_args(args)
        train(cfg, resume_dir=args.resume)
    except FileNotFoundError as exc:
        return _fail(f"{exc.filename}: no such file")
    except (DataError, TrainingDiverged, ValueError, KeyError, RuntimeError) as exc:
        return _fail(str(exc).strip("'\""), 1 if isinstance(exc, TrainingDiverged) else 2)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .cli import _fail
    from .weights import CheckpointError, load

    source = Path(args.run_or_weights)
    weights = source
    if source.is_dir():
        weights = source / ("model_ema.safetensors" if args.ema else "model.safetensors")
    try:
        model = load(weights)
        config = model.config
        names = list(config.class_names or [])
        root = Path(args.data_dir)
        folder = root / "val" if (root / "val").is_dir() else root
        samples, classes, skipped = scan_image_folder(folder, names or None)
        for path, reason in skipped:
            print(f"warning: skipping {path}: {reason}", file=sys.stderr)
        resolution = args.resolution or config.resolution
        crop_pct = args.crop_pct or (0.875 if resolution != config.resolution else config.crop_pct)
        loader = eval_loader(samples, config, resolution, crop_pct, args.batch_size, args.workers)
        res = evaluate(model, loader, classes)
    except (CheckpointError, DataError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(dict(weights=str(weights), top1=res.top1, top5=res.top5, loss=res.loss, images=res.images,
                              images_per_s=res.images_per_s, skipped=len(skipped), per_class=res.per_class)))
        return 0
    print(f"{weights}: {res.images} images, top-1 {res.top1:.2f}%, top-5 {res.top5:.2f}%, loss {res.loss:.4f}, "
          f"{res.images_per_s:.1f} images/s" + (f", {len(skipped)} skipped" if skipped else ""))
    print(f"{'class':<24} {'images':>6} {'top-1 %':>8}")
    for row in res.per_class:
        print(f"{row['name']:<24} {row['images']:>6} {row['top1']:>8.2f}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import write_digits, write_photos

    if args.dataset == "photos":
        n = write_photos(args.out_dir, count=args.count, seed=args.seed)
        print(f"wrote {n} views of scikit-image's bundled photos to {args.out_dir}")
        return 0
    counts = write_digits(args.out_dir, seed=args.seed)
    print(f"wrote scikit-learn digits to {args.out_dir}: {counts['train']} train, {counts['val']} val, 10 classes")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    print(f"wrote {plot_run(args.run_dir)}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train / fine-tune on an ImageFolder (torchrun for many processes)")
    p.add_argument("data_dir", nargs="?", help="ImageFolder with train/ and val/ (or one folder + --val-split)")
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
    p.add_argument("--recipe", choices=["auto", "paper", "finetune"])
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
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="per-stage gradient checkpointing")
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--precise-bn", type=int, help="recompute BN statistics over N train batches before the final eval")
    p.add_argument("--dump-rank-weights", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5/loss/per-class accuracy of a run or weights file")
    p.add_argument("run_or_weights")
    p.add_argument("data_dir")
    p.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    p.add_argument("--resolution", type=int)
    p.add_argument("--crop-pct", type=float)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="write a bundled real dataset as an ImageFolder")
    p.add_argument("dataset", choices=["digits", "photos"],
                   help="digits: scikit-learn's handwritten digits (ImageFolder); photos: skimage.data views (unlabelled)")
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=100, help="photos: how many views")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("plot", help="write RUN_DIR/curves.png")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_plot)
