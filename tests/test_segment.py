"""The segment task: segmenters laid out as smp's, the loss and scores against their references (smp, torchmetrics),
the Predictor on images of any size, and `effnet segment train|eval|predict` end to end on segment-digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.data.masks import IGNORE_INDEX, load_segmentation, read_mask
from effnet.errors import UsageError
from effnet.models.nets.families import CLASSIFIERS
from effnet.models.nets.segmenter import Segmenter
from effnet.models.nets.segmenter_config import segmenter_config, segmenter_names
from effnet.models.zoo.registry import create_model, load_model, task_of
from effnet.segment import Predictor
from effnet.segment.loss import dice_loss
from effnet.segment.metrics import confusion, scores
from tests.conftest import kill_in_second_epoch, run_cli

smp = pytest.importorskip("segmentation_models_pytorch")

FAST = ["--batch-size", "4", "--workers", "0", "--resolution", "64", "--seed", "1", "--quiet"]


@pytest.fixture(scope="module")
def segment_digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segd") / "data"
    proc = run_cli("data", "segment-digits", str(out), "--count", "16")
    assert "16 train images" in proc.stdout
    return out


# ------------------------------------------------------------------------------------------------ the networks

SMP_TIMM_ENCODERS = {f"efficientnet_b{i}": f"timm-efficientnet-b{i}" for i in range(8)} | {
    f"efficientnet_lite{i}": f"timm-tf_efficientnet_lite{i}" for i in range(5)}


@pytest.mark.parametrize("ours,theirs", sorted(SMP_TIMM_ENCODERS.items()))
def test_encoder_features_are_smps(ours, theirs):
    """The five feature maps' channels equal smp's encoder table for every B and Lite (strides 2..32)."""
    from segmentation_models_pytorch.encoders import encoders

    with torch.device("meta"):
        model = Segmenter(segmenter_config(f"unet_{ours}"))
    assert model.encoder.out_channels == tuple(encoders[theirs]["params"]["out_channels"][1:])


@pytest.mark.parametrize("decoder", ["Unet", "FPN"])
@pytest.mark.parametrize("encoder", ["efficientnet_b0", "efficientnet_lite0", "efficientnet_b3"])
def test_parameter_counts_equal_smps(decoder, encoder):
    """Same modules, same parameter count, name for name outside the encoder (smp's decoder keys load unchanged)."""
    with torch.device("meta"):
        ref = getattr(smp, decoder)(SMP_TIMM_ENCODERS[encoder], encoder_weights=None, classes=7)
        ours = create_model(f"{decoder.lower()}_{encoder}", num_classes=7)
    count = lambda m, prefix="": sum(p.numel() for n, p in m.named_parameters() if n.startswith(prefix))
    assert count(ours, "encoder.") == count(ref, "encoder.") - count(ref, "encoder.conv_head") - count(ref, "encoder.bn2")
    theirs = {n: tuple(p.shape) for n, p in ref.state_dict().items() if not n.startswith("encoder.")}
    mine = {n: tuple(p.shape) for n, p in ours.state_dict().items() if not n.startswith("encoder.")}
    assert mine == theirs


def test_names_tasks_and_refusals():
    assert len(segmenter_names()) == 2 * len(CLASSIFIERS)
    assert task_of("unet_efficientnet_b0") == task_of("fpn_v2_s") == "segment"
    assert create_model("unet_b0", num_classes=3).config.name == "unet_efficientnet_b0"
    with pytest.raises(UsageError, match="no segmenter weights are published"):
        create_model("unet_efficientnet_b0", pretrained=True)
    with pytest.raises(UsageError, match="multiples of 32"):
        create_model("fpn_efficientnet_lite0", num_classes=2)(torch.zeros(1, 3, 100, 96))
    with pytest.raises(Exception, match="unknown segmenter"):
        create_model("unet_resnet50")


def test_pretrained_backbone_is_the_classifiers(photos):
    """--pretrained-backbone: the encoder holds Lite0's installed ImageNet weights, and its stride-32 features on a
    real photo equal the classifier's own last-stage features."""
    seg = create_model("unet_efficientnet_lite0", num_classes=3, pretrained_backbone=True).eval()
    cls = create_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.from_numpy(np.asarray(Image.open(photos["chelsea"]).convert("RGB").resize((224, 224)))).permute(2, 0, 1)
    x = ((x.float() / 255 - torch.tensor(seg.config.mean).view(3, 1, 1)) / torch.tensor(seg.config.std).view(3, 1, 1))[None]
    with torch.no_grad():
        ours = seg.encoder(x)[-1]
        theirs = cls.blocks(cls.stem(x))
    assert seg.config.backbone.tf_padding == cls.config.tf_padding and torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("name", ["unet_efficientnet_b0", "fpn_efficientnetv2_b0"])
def test_lean_training_gives_the_plain_gradients(name, photos):
    """--memory-efficient and --grad-checkpoint on a segmenter: the encoder's lean kernels and per-block
    recomputation give the plain model's loss and gradients on a real photo. In float64, where they must agree to
    rounding: in float32 the decoder amplifies the kernels' different rounding to ~3e-3 of a gradient's norm."""
    from effnet.segment.loss import segmentation_loss

    x = torch.from_numpy(np.asarray(Image.open(photos["astronaut"]).convert("RGB").resize((64, 64)))).permute(2, 0, 1)
    x = (x.double() / 255 - 0.5)[None].repeat(2, 1, 1, 1)
    target = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(0))
    grads = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, drop_path_rate=0.0).train().double()
        if lean:
            model.set_memory_efficient(True).set_grad_checkpointing(True)
        loss = segmentation_loss(model(x), target)[0]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (plain, g0), (lean, g1) = grads
    assert torch.allclose(plain, lean, rtol=1e-10)
    for n in g0:  # a projection BatchNorm's bias has a ~0 true gradient (1e-17): rounding noise on both paths
        assert (g0[n] - g1[n]).norm() <= 1e-8 * g0[n].norm() + 1e-12, n


# ------------------------------------------------------------------------------------------------ loss and scores

def _real_masks(segment_digits: Path) -> torch.Tensor:
    _, val = load_segmentation(segment_digits, log=lambda *a: None)
    masks = [torch.from_numpy(read_mask(m).astype(np.int64)) for _, m in val.samples]
    h = min(m.shape[0] for m in masks)
    w = min(m.shape[1] for m in masks)
    return torch.stack([m[:h, :w] for m in masks])


def test_scores_equal_torchmetrics(segment_digits):
    """mIoU, per-class IoU and pixel accuracy from the confusion matrix equal torchmetrics' on real masks against a
    corrupted copy (some pixels ignored, some classes missed)."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    target = _real_masks(segment_digits)
    g = torch.Generator().manual_seed(0)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.2, torch.randint(0, 11, target.shape, generator=g),
                       target)
    pred[pred == 3] = 0  # a class never predicted
    target[:, :5] = IGNORE_INDEX
    ours = scores(confusion(pred, target, 11), tuple(map(str, range(11))))
    jaccard = MulticlassJaccardIndex(11, average=None, ignore_index=IGNORE_INDEX)(pred, target)
    acc = MulticlassAccuracy(11, average="micro", ignore_index=IGNORE_INDEX)(pred, target)
    present = [v is not None for v in ours["per_class_iou"].values()]
    assert np.allclose([v for v in ours["per_class_iou"].values() if v is not None], jaccard[present].numpy(), atol=1e-6)
    assert ours["mIoU"] == pytest.approx(float(jaccard[present].mean()), abs=1e-6)
    assert ours["pixel_accuracy"] == pytest.approx(float(acc), abs=1e-6)
    assert ours["per_class_iou"]["3"] == 0.0


def test_dice_equals_smps(segment_digits):
    from segmentation_models_pytorch.losses import DiceLoss

    target = _real_masks(segment_digits)[:, :64, :64].clone()
    target[:, -4:] = IGNORE_INDEX
    logits = torch.randn(target.shape[0], 11, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)(logits, target)
    assert float(dice_loss(logits, target)) == pytest.approx(float(ref), abs=1e-6)


# ------------------------------------------------------------------------------------------------ Predictor

def test_predictor_masks_are_in_each_images_pixels(photos):
    model = create_model("fpn_efficientnet_lite0", num_classes=4, pretrained_backbone=True)
    model.config = model.config.replace(resolution=96)
    images = [Image.open(photos[n]).convert("RGB") for n in ("chelsea", "coffee")]
    images.append(images[0].resize((96, 96)))
    out = Predictor(model)(images)
    assert [r["mask"].shape for r in out] == [(im.height, im.width) for im in images]
    # an image already at the input size: the mask is the model's argmax, pixel for pixel
    x = torch.from_numpy(np.asarray(images[2])).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(model.config.mean).view(3, 1, 1)) / torch.tensor(model.config.std).view(3, 1, 1)
    with torch.no_grad():
        direct = model.eval()(x[None])[0].argmax(0).numpy()
    assert (out[2]["mask"] == direct).mean() > 0.999
    assert sum(out[0]["pixels"]) == images[0].width * images[0].height


def test_predictor_sees_what_evaluation_scores(segment_digits):
    """A file's letterboxed input in the Predictor equals evaluation's, so a predicted mask is the scored one."""
    from effnet.data.masks import SegmentationSamples
    from effnet.segment.predictor import preprocess

    model = create_model("unet_efficientnet_lite0", num_classes=11)
    _, val = load_segmentation(segment_digits, log=lambda *a: None)
    for i, (image, _) in enumerate(val.samples[:2]):
        x, _ = SegmentationSamples(val, model.config.mean, model.config.std, 96, train=False)[i]
        batch, sizes, regions = preprocess(model.config, [Image.open(image)], resolution=96)
        assert torch.equal(batch[0], x) and sizes[0] == Image.open(image).size[::-1]


# ------------------------------------------------------------------------------------------------ the commands

def test_train_eval_predict_through_the_cli(segment_digits, tmp_path, photos):
    run = tmp_path / "run"
    run_cli("segment", "train", str(segment_digits), "--model", "unet_efficientnet_lite0", "--pretrained-backbone",
            "--epochs", "1", "--fp32", *FAST, "--out", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == 11 and 0.0 <= summary["val_mIoU"] <= 1.0
    model = load_model(run, task="segment")
    assert model.config.class_names[0] == "background" and model.config.resolution == 64
    res = json.loads(run_cli("segment", "eval", str(run), str(segment_digits), "--json").stdout)
    assert res["mIoU"] == pytest.approx(summary["val_mIoU"], abs=1e-6) and len(res["confusion"]) == 11

    out = tmp_path / "masks"
    images = [str(p) for p in sorted((segment_digits / "val" / "images").iterdir())[:3]]
    run_cli("segment", "predict", str(run), *images, "--output", str(out), "--overlays")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == images
    for r in rows:
        mask = read_mask(r["mask"])
        assert mask.shape == (r["height"], r["width"]) == Image.open(r["path"]).size[::-1]
        assert Path(r["overlay"]).is_file() and sum(c["pixels"] for c in r["classes"]) == mask.size
    # a second run on more images continues: the three done are not redone
    more = [str(p) for p in sorted((segment_digits / "val" / "images").iterdir())[:4]]
    proc = run_cli("segment", "predict", str(run), *more, "--output", str(out), "--resume")
    assert "1 images segmented" in proc.stderr and "3 already in" in proc.stderr
    # without --resume the folder is refused before the model loads
    proc = run_cli("segment", "predict", str(run), *more, "--output", str(out), check=False)
    assert proc.returncode == 2 and "--resume continues it" in proc.stderr and "Traceback" not in proc.stderr
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    proc = run_cli("segment", "predict", str(run), *more, "--output", str(a_file), check=False)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr


def test_kill_9_then_resume_is_bit_exact(segment_digits, tmp_path):
    from safetensors.torch import load_file

    args = ["segment", "train", str(segment_digits), "--model", "unet_efficientnet_lite0", "--epochs", "2",
            "--checkpoint-every", "1", *FAST]
    straight = tmp_path / "straight"
    run_cli(*args, "--out", str(straight))
    killed = tmp_path / "killed"
    state = kill_in_second_epoch(args, killed)
    assert state is not None and state["epoch"] == 1 and state["batch_in_epoch"] > 0, "not killed mid-epoch"
    run_cli("segment", "train", "--resume", str(killed))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda d: [line.split(",")[:4] for line in (d / "metrics.csv").read_text().splitlines()]
    assert rows(straight) == rows(killed)


def test_torchrun_two_processes_end_identical(segment_digits, tmp_path):
    """DDP through the shared loop: two processes each see half of segment-digits and end with the same weights."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "effnet.cli",
           "segment", "train", str(segment_digits), "--model", "unet_efficientnet_lite0", "--epochs", "1",
           "--out", str(out), "--dump-rank-weights", *FAST]
    proc = subprocess.run(cmd, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 16 // (4 * 2)  # each rank saw half of the data
