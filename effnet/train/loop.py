"""The training loop shared by every task (classification here, detection in ``effnet.detect``).

One process: ``effnet train DATA --model NAME``. Many processes or machines: the same command under
``torchrun`` (DistributedDataParallel over gloo; training runs on the CPU); rank 0 logs and writes checkpoints.
A run is resumable bit for bit: the checkpoint holds the RNG states and the position inside the epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..data import HINTS_FILE, dataset_hints
from ..errors import DataError, TrainingDiverged
from ..files import atomic_write, unique_dir
from ..models.zoo.model_files import save
from ..models.nets.layers import BATCHNORMS
from .allocator import allocator
from .checkpoint import TrainState, rng_state, seed_everything, set_rng_state
from .config import TrainConfig
from .distributed import EpochSampler, dist_info, init_distributed, sync_buffers_from_rank0
from .metrics import append_csv, read_csv, tensorboard_writer
from .precise_bn import recalibrate_bn
from .progressive import Schedule, Stage, check_progressive_task, schedule_for
from .task import EpochEnd, Task, check_task
from .recipes import (
    Recipe, bn_momentum_for_run, build_optimizer, build_scheduler, ema_decay_for_run, ema_multi_avg_fn, warmup_steps_for,
)


def rate_text(per_s: float) -> str:
    """A rate (images/s) as printed at the end of every train, eval and predict command: two significant digits at
    least -- 1234, 25.3, 0.42 -- so a model that trains below one image a second never reads "0 img/s"."""
    if not math.isfinite(per_s):
        return "n/a"
    if per_s >= 100 or per_s <= 0:
        return f"{per_s:.0f}"
    if per_s >= 1:
        return f"{per_s:.1f}"
    return f"{per_s:.2g}"


@dataclass
class Run:
    """Everything one training run holds between steps."""

    cfg: TrainConfig
    task: Task
    recipe: Recipe
    criterion: Callable  # the task's loss function for this recipe
    model: nn.Module  # the raw model (what is saved)
    train_model: nn.Module  # the model stepped: DDP and/or compiled wrapper around ``model``
    state: TrainState
    train_ds: Any
    sampler: EpochSampler
    steps_per_epoch: int
    lr: float
    bn_momentum: float
    run_dir: Path
    rank: int
    world: int
    log: Any
    tb: Any = None
    started: float = 0.0
    schedule: Schedule | None = None  # --progressive: the stage of each epoch
    stage: Stage | None = None  # the stage the current epoch trains in

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def _with_dataset_hints(cfg: TrainConfig, log) -> TrainConfig:
    hints = dataset_hints(cfg.data_dir)
    if cfg.progressive:  # progressive learning schedules RandAugment itself
        hints.pop("auto_augment", None)
    if hints:
        # the dataset's own defaults (e.g. digits are not flip-invariant); explicit settings win
        cfg = dataclasses.replace(cfg, **{k: v for k, v in hints.items() if getattr(cfg, k) is None})
        log(f"dataset defaults from {Path(cfg.data_dir) / HINTS_FILE}: {hints}")
    return cfg


def _prepare_model(model: nn.Module, cfg: TrainConfig, distributed: bool) -> nn.Module:
    if cfg.freeze_backbone:
        model.freeze_backbone()
    if cfg.memory_efficient:
        model.set_memory_efficient(True)
    if cfg.grad_checkpoint:
        model.set_grad_checkpointing(True, cfg.checkpoint_stages)
    if cfg.sync_bn and distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _setup(cfg: TrainConfig, task: Task, resume_dir: str | None) -> Run:
    """Data, model, optimizer, schedule, EMA, run directory; restores the checkpoint when resuming."""
    rank, world, _ = dist_info()
    distributed = init_distributed(world)
    log = (lambda *a: print(*a, flush=True)) if rank == 0 and not cfg.quiet else (lambda *a: None)
    if cfg.progressive:
        check_progressive_task(task)
    seed_everything(cfg.seed)
    cfg = _with_dataset_hints(cfg, log)
    recipe = cfg.resolved_recipe(task.recipes)
    if cfg.progressive:  # RandAugment at each stage's magnitude replaces the recipe's policy
        recipe = dataclasses.replace(recipe, auto_augment="randaugment")
    task.load_data(cfg, log)
    model = _prepare_model(task.build_model(cfg), cfg, distributed)
    train_ds = task.train_dataset(model.config, recipe, cfg.seed)
    sampler = EpochSampler(len(train_ds), rank, world, cfg.seed)
    if len(sampler) < cfg.batch_size:
        raise DataError(f"{cfg.data_dir}: {len(train_ds)} training images are fewer than one batch "
                        f"({cfg.batch_size} x {world} processes)")
    steps_per_epoch = len(sampler) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    bn_momentum = bn_momentum_for_run(model.config.bn_momentum, total_steps)
    for m in model.modules():
        if isinstance(m, BATCHNORMS):
            m.momentum = bn_momentum
    lr = cfg.lr if cfg.lr is not None else recipe.lr * cfg.batch_size * world / recipe.ref_batch
    optimizer = build_optimizer(recipe.optimizer, model, lr, recipe.weight_decay)
    warmup = warmup_steps_for(recipe.warmup_epochs, cfg.epochs, steps_per_epoch)
    scheduler = build_scheduler(optimizer, recipe.schedule, total_steps, steps_per_epoch, warmup)
    criterion = task.criterion(recipe)
    ema = None
    if recipe.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(ema_decay_for_run(recipe.ema_decay, total_steps)),
                            use_buffers=True)
    state = TrainState(model, optimizer, scheduler, ema, model.config.to_json())
    run_dir = _new_run_dir(cfg, model.config.name, resume_dir, distributed)
    run = Run(cfg, task, recipe, criterion, model, model, state, train_ds, sampler, steps_per_epoch, lr, bn_momentum,
              run_dir, rank, world, log)
    run.schedule = schedule_for(cfg, model.config)
    _open_run_dir(run, resume_dir)
    if distributed:
        run.train_model = nn.parallel.DistributedDataParallel(model)
    if cfg.compile:
        run.train_model = torch.compile(run.train_model)
    return run


def _open_run_dir(run: Run, resume_dir: str | None) -> None:
    """Restore the checkpoint of a resumed run (a bad one stops here, before anything is written), then
    args.json and TensorBoard."""
    if resume_dir and run.ckpt_path.exists():
        run.state.load(run.ckpt_path)
        s = run.state
        run.log(f"resumed {run.run_dir} at epoch {s.epoch}, batch {s.batch_in_epoch} (step {s.global_step})")
    elif resume_dir:
        run.log(f"no checkpoint in {run.run_dir}: starting from scratch")
    if run.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        args_json = json.dumps(dataclasses.asdict(run.cfg), indent=1)
        atomic_write(run.run_dir / "args.json", lambda tmp: Path(tmp).write_text(args_json))
        streams = rng_state()
        run.tb = tensorboard_writer(run.run_dir)
        set_rng_state(streams)  # opening TensorBoard must not move a resumed run's restored random streams


def _new_run_dir(cfg: TrainConfig, name: str, resume_dir: str | None, distributed: bool) -> Path:
    """``--resume`` / ``--out``, else a new ``runs/NAME-YYYYmmdd-HHMMSS[-N]`` that no other run holds (rank 0
    creates it; the other processes are told its name)."""
    if resume_dir or cfg.out:
        return Path(resume_dir or cfg.out)
    rank = dist_info()[0]
    chosen = [str(unique_dir(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")) if rank == 0 else None]
    if distributed:
        dist.broadcast_object_list(chosen, src=0)
    return Path(chosen[0])


def _checkpoint(run: Run, epoch: int, batch_in_epoch: int) -> None:
    if run.is_main and run.cfg.checkpoint:
        run.state.save(run.ckpt_path, epoch, batch_in_epoch)


def _enter_stage(run: Run, epoch: int) -> None:
    """With --progressive: the epoch's stage (a pure function of the epoch, so a resumed run picks up where it was),
    handed to the task before the epoch's loader is built; one line whenever the stage changes (or a run resumes)."""
    if run.schedule is None:
        return
    stage = run.schedule.at(epoch)
    run.train_ds = run.task.begin_stage(run.model, run.recipe, run.cfg.seed, stage)
    if run.stage is None or run.stage.index != stage.index:
        run.log(stage.describe())
    run.stage = stage


def _train_epoch(run: Run, epoch: int, skip: int) -> tuple[int, bool]:
    """Train one epoch from batch ``skip``: (batches of the epoch done, whether the time budget stopped it)."""
    from tqdm import tqdm

    cfg, state = run.cfg, run.state
    run.sampler.set_epoch(epoch, skip * cfg.batch_size)
    # own generator: creating a loader iterator must not consume the global RNG (dropout, drop-path),
    # or a resumed run would draw different masks
    loader = torch.utils.data.DataLoader(run.train_ds, sampler=run.sampler, batch_size=cfg.batch_size,
                                         num_workers=cfg.workers, drop_last=True, persistent_workers=False,
                                         collate_fn=run.task.collate_fn, generator=torch.Generator().manual_seed(epoch))
    run.train_model.train()
    if cfg.freeze_backbone:  # frozen backbone: keep its BatchNorm statistics too
        for name, module in run.model.named_children():
            if name not in run.task.frozen_children:
                module.eval()
    bar = tqdm(loader, total=run.steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not run.is_main or cfg.quiet or not sys.stderr.isatty(), leave=False)
    done = skip
    for batch_idx, batch in enumerate(bar, start=skip):
        t0 = time.perf_counter()
        loss_value, n = _step(run, batch, epoch)
        acc = state.epoch_acc
        acc["loss"] += loss_value * n
        acc["seen"] += n
        acc["seconds"] += time.perf_counter() - t0
        done = batch_idx + 1
        if run.is_main and not cfg.quiet:
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{state.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=rate_text(n * run.world / (time.perf_counter() - t0)))
        if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
            _checkpoint(run, epoch, batch_idx + 1)
        if cfg.budget_minutes is not None and time.time() - run.started > cfg.budget_minutes * 60:
            bar.close()
            return done, True
    bar.close()
    return done, False


def _step(run: Run, batch, epoch: int) -> tuple[float, int]:
    """One optimisation step; returns (mean loss over all processes, examples in this process's batch)."""
    state = run.state
    result = run.task.loss(run.train_model, batch, run.criterion, run.cfg.amp, run.cfg.channels_last)
    loss, n = result.loss, result.examples
    loss_value = loss.detach().clone()
    if run.world > 1:
        dist.all_reduce(loss_value)
        loss_value /= run.world
    if not torch.isfinite(loss_value):
        raise TrainingDiverged(f"loss is {loss_value.item()} at epoch {epoch + 1}, step {state.global_step + 1}: "
                               f"training diverged (try a lower --lr); last good checkpoint kept in {run.ckpt_path}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update_parameters(run.model)
    state.global_step += 1
    for key, value in result.stats.items():
        state.epoch_acc[key] = state.epoch_acc.get(key, 0) + value
    return loss_value.item(), n


def _end_of_epoch(run: Run, epoch: int, last: bool, t_epoch: float) -> dict | None:
    """Precise BN on the last epoch, evaluation (rank 0 on the full val set), metrics.csv, TensorBoard, log."""
    cfg, state, acc = run.cfg, run.state, run.state.epoch_acc
    if last and cfg.precise_bn > 0:
        recalibrate_bn(run.model, run.task.bn_loader(run.model, cfg.batch_size), cfg.precise_bn, cfg.channels_last)
    row: dict[str, Any] = dict(epoch=epoch + 1, step=state.global_step,
                               train_loss=acc["loss"] / max(1, acc["seen"]), **run.task.train_metrics(acc),
                               lr=state.optimizer.param_groups[0]["lr"],
                               img_per_s=acc["seen"] * run.world / max(1e-9, acc["seconds"]),
                               epoch_seconds=time.perf_counter() - t_epoch,
                               **(run.stage.metrics() if run.stage is not None else {}))
    if not run.is_main:
        return None
    row.update(run.task.evaluate(run.model, cfg.amp, cfg.channels_last, epoch=epoch + 1))
    if state.ema is not None:
        row.update(run.task.evaluate(state.ema.module, cfg.amp, cfg.channels_last, prefix="ema_val", epoch=epoch + 1))
    append_csv(run.run_dir / "metrics.csv", row)
    if run.tb is not None:
        for key, value in row.items():
            run.tb.add_scalar(key, value, epoch + 1)
    stage = f", stage {run.stage.index + 1}/{run.stage.stages} at {run.stage.size}px" if run.stage is not None else ""
    run.log(f"epoch {epoch + 1}/{cfg.epochs}: {run.task.log_line(row, state.ema is not None)}, "
            f"{rate_text(row['img_per_s'])} img/s, {row['epoch_seconds']:.1f} s{stage}")
    return row


@dataclass
class Stop:
    """Why the run ended: ``completed`` (all epochs), ``budget`` (--budget-minutes) or ``caller`` (on_epoch_end), and
    how many whole epochs it trained."""

    reason: str = "completed"
    epochs_run: int = 0


def _finish(run: Run, stop: Stop) -> dict:
    """Final weights (+ EMA), summary.json and curves.png on rank 0."""
    cfg, state = run.cfg, run.state
    if run.world > 1:
        sync_buffers_from_rank0(run.model)
    summary: dict[str, Any] = {}
    if run.is_main:
        save(run.model, run.run_dir / "model.safetensors")
        if state.ema is not None:
            save(state.ema.module, run.run_dir / "model_ema.safetensors")
        rows = read_csv(run.run_dir / "metrics.csv")
        summary = dict(run_dir=str(run.run_dir), model=run.model.config.name, epochs=cfg.epochs,
                       steps=state.global_step, resolution=run.model.config.resolution, lr=run.lr,
                       **run.task.summary(rows[-1] if rows else {}),
                       wall_seconds=time.time() - run.started, stopped_early=stop.reason != "completed",
                       stop_reason=stop.reason, epochs_run=stop.epochs_run)
        atomic_write(run.run_dir / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
        if cfg.plot:
            try:
                run.task.plot(run.run_dir)
            except Exception as exc:  # plotting must never lose a finished run
                run.log(f"warning: could not plot curves: {exc}")
        run.log(f"done: {run.run_dir} ({run.task.done_line(summary, state.ema is not None)}; "
                f"{summary['wall_seconds']:.0f} s)")
    if cfg.dump_rank_weights:
        save(run.model, run.run_dir / f"rank{run.rank}.safetensors")
    return summary


def _run_epochs(run: Run, on_epoch_end: Callable[[EpochEnd], bool] | None) -> Stop:
    cfg, state = run.cfg, run.state
    start_epoch, start_batch = state.epoch, state.batch_in_epoch
    stop = Stop(epochs_run=start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        skip = start_batch if epoch == start_epoch else 0
        if skip == 0 or not state.epoch_acc:
            state.epoch_acc = dict(loss=0.0, seen=0, seconds=0.0)
        t_epoch = time.perf_counter()
        _enter_stage(run, epoch)
        done, out_of_time = _train_epoch(run, epoch, skip)
        last = epoch == cfg.epochs - 1
        row = _end_of_epoch(run, epoch, out_of_time or last, t_epoch)
        complete = done >= run.steps_per_epoch  # the budget may strike in an epoch's last step
        if complete:
            stop.epochs_run = epoch + 1
        report = EpochEnd(epoch + 1, cfg.epochs, complete, state.global_step, run.steps_per_epoch, row or {})
        if out_of_time and not (complete and last):
            run.log(f"budget of {cfg.budget_minutes} min reached after {state.global_step} steps")
            stop.reason = "budget"
        if on_epoch_end is not None and row is not None and on_epoch_end(report) and stop.reason == "completed":
            run.log(f"stopped after epoch {epoch + 1} by the caller")
            stop.reason = "caller"
        if complete:  # a resume starts after the last whole epoch, however the run ended
            _checkpoint(run, epoch + 1, 0)
        if stop.reason != "completed":
            break
        if run.world > 1:
            dist.barrier()
    return stop


def train(cfg: TrainConfig, resume_dir: str | None = None, task: Task | None = None,
          on_epoch_end: Callable[[EpochEnd], bool] | None = None) -> dict:
    """Train (or resume) a run of ``task``; returns the summary dict (also written to RUN_DIR/summary.json), whose
    ``stop_reason`` says why it ended (``completed``, ``budget``, ``caller``) and ``epochs_run`` how many whole
    epochs it trained.

    ``on_epoch_end(EpochEnd)`` is called on rank 0 after each epoch's evaluation; returning True stops the run
    there (e.g. an Optuna pruner's decision). ``effnet.classify.train`` is this loop with classification.
    """
    called = time.time()  # --budget-minutes counts from here: setup included, so a caller's deadline holds
    run = _setup(cfg, check_task(task), resume_dir)
    run.log(f"training {run.model.config.name} on {run.task.describe()}; recipe {run.recipe}; lr {run.lr:.3g}; "
            f"{run.steps_per_epoch} steps/epoch x {run.cfg.epochs}; {run.world} process(es); "
            f"BN momentum {run.bn_momentum:.3g}; memory allocator {allocator()}")
    if run.schedule is not None:
        run.log(run.schedule.describe())
    run.started = called
    summary = _finish(run, _run_epochs(run, on_epoch_end))
    if run.tb is not None:
        run.tb.close()
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
