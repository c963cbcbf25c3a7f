"""Training: real runs on scikit-learn's digits (real scans) at tiny widths/resolutions."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import effnet
from tests.conftest import ROOT, config_file, digit_subset, kill_in_second_epoch, run_cli

TINY = ["--resolution", "32", "--batch-size", "16", "--workers", "0", "--quiet"]


@pytest.fixture(scope="session")
def small_digits(digits, tmp_path_factory) -> Path:
    """3 classes x 40 train / 10 val images."""
    return digit_subset(digits, tmp_path_factory.mktemp("small"), 40, 10)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    """A narrow, shallow EfficientNet (B0 table at width 0.25, depth 0.5) as a config file."""
    return config_file(tmp_path_factory.mktemp("cfg"), "tiny", width_mult=0.25, depth_mult=0.5, resolution=32,
                       dropout=0.1, drop_path_rate=0.1)


def _weights(path: Path) -> dict:
    return load_file(str(path))


def test_finetune_pretrained_lite0_on_digits_reaches_97(digits, tmp_path):
    """The issue's command: real pretrained Lite0, 3 epochs; digits declare 64 px and no flips."""
    out = tmp_path / "run"
    run_cli("train", str(digits), "--model", "efficientnet_lite0", "--pretrained", "--epochs", "3",
            "--out", str(out), "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolution"] == 64
    assert summary["val_top1"] >= 97.0, summary
    assert (out / "curves.png").stat().st_size > 5000
    header = (out / "metrics.csv").read_text().splitlines()[0]
    for col in ("train_loss", "val_top1", "val_top5", "ema_val_top1", "lr", "img_per_s"):
        assert col in header
    # the saved model knows its classes: predict prints digit names
    imgs = [str(p) for d in sorted((digits / "val").iterdir()) for p in sorted(d.glob("*.png"))[:2]]
    pred = json.loads(run_cli("predict", "--weights", str(out / "model.safetensors"), "--backend", "torch", "--json",
                              *imgs).stdout)
    right = sum(r["predictions"][0]["label"] == Path(r["path"]).parent.name for r in pred)
    assert len(pred) == 20 and right >= 18
    # shared where image-model users look: the run as a Hugging Face Hub folder that timm loads, same logits on
    # the same (real) inputs
    import timm

    from effnet.data import eval_transform, load_image

    run_cli("export", str(out), "--format", "hub", "-o", str(tmp_path / "hub"))
    theirs = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    ours = effnet.load(out).eval()
    x = torch.stack([eval_transform(ours.config)(load_image(p)) for p in imgs])
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() <= 1e-5
    assert theirs.pretrained_cfg["label_names"] == [str(i) for i in range(10)]
    # the same labelled data through the on-device path: ExecuTorch int8 (PT2E, calibrated on DATA/train; its
    # export first verifies the fp32 program against PyTorch on those images) within 0.5 points of fp32
    res = {b: json.loads(run_cli("eval", str(out), str(digits), "--backend", b, "--json").stdout)
           for b in ("torch", "executorch-int8")}
    assert abs(res["executorch-int8"]["top1"] - res["torch"]["top1"]) <= 0.5, res
    assert res["executorch-int8"]["loss"] != res["torch"]["loss"]  # really quantized


def test_kill_9_then_resume_is_bit_exact(small_digits, tiny_config, tmp_path):
    args = ["train", str(small_digits), "--model", str(tiny_config), "--epochs", "3", "--checkpoint-every", "2",
            "--seed", "3", *TINY, "--batch-size", "8"]
    straight = tmp_path / "straight"
    run_cli(*args, "--out", str(straight))

    killed = tmp_path / "killed"
    state = kill_in_second_epoch(args, killed)  # mid-way through the second epoch
    assert state is not None and state["epoch"] == 1 and 0 < state["batch_in_epoch"] < 15, "not killed mid-epoch"
    assert not (killed / "model.safetensors").exists()

    run_cli("train", "--resume", str(killed))
    a, b = _weights(straight / "model.safetensors"), _weights(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea, eb = _weights(straight / "model_ema.safetensors"), _weights(killed / "model_ema.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    rows_a = (straight / "metrics.csv").read_text().splitlines()
    rows_b = (killed / "metrics.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 4


def test_torchrun_two_processes_end_identical(small_digits, tiny_config, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "effnet.cli",
           "train", str(small_digits), "--model", str(tiny_config), "--epochs", "1", "--out", str(out),
           "--dump-rank-weights", *TINY, "--batch-size", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = _weights(out / "rank0.safetensors"), _weights(out / "rank1.safetensors")
    init = effnet.create_model(str(tiny_config), num_classes=3).state_dict()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert not torch.equal(r0["stem.conv.weight"], init["stem.conv.weight"])  # it did train
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 120 // (8 * 2)  # each rank saw half of the data


def test_train_runs_under_tcmalloc_and_learns_the_same(small_digits, tiny_config, tmp_path):
    """`effnet train` re-executes itself under tcmalloc when it is installed; the lean flags (memory-efficient
    layers, checkpointing of the first stages, bf16, channels_last) train to the same weights under either
    allocator: the allocator changes where memory comes from, not the arithmetic."""
    from effnet.train.allocator import tcmalloc_library

    if tcmalloc_library() is None:
        pytest.skip("libtcmalloc-minimal4 is not installed (make test installs it when run as root)")
    lean = ["--memory-efficient", "--grad-checkpoint", "--checkpoint-stages", "2", "--amp", "--channels-last"]
    logs = {}
    for malloc in ("tcmalloc", "system"):
        out = tmp_path / malloc
        cmd = [sys.executable, "-m", "effnet.cli", "train", str(small_digits), "--model", str(tiny_config), "--epochs",
               "1", "--out", str(out), *lean, *TINY[:-1]]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, EFFNET_MALLOC=malloc))
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[malloc] = proc.stdout
    assert "memory allocator tcmalloc" in logs["tcmalloc"] and "memory allocator system" in logs["system"]
    a, b = _weights(tmp_path / "tcmalloc" / "model.safetensors"), _weights(tmp_path / "system" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _make_messy_folder(small_digits: Path, dest: Path) -> None:
    shutil.copytree(small_digits, dest)
    cls = dest / "train" / "1"
    good = next(cls.glob("*.png"))
    data = good.read_bytes()
    (cls / "truncated.png").write_bytes(data[: len(data) // 2])
    (cls / "zero.png").write_bytes(b"")
    (cls / "notes.txt").write_text("not an image")
    rgb = np.asarray(Image.open(good).convert("RGB"))
    Image.fromarray(rgb).convert("CMYK").save(cls / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(cls / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(cls / "sixteen.png")


def test_corrupt_files_are_skipped_and_counted(small_digits, tiny_config, tmp_path):
    data = tmp_path / "messy"
    _make_messy_folder(small_digits, data)
    out = tmp_path / "run"
    proc = run_cli("train", str(data), "--model", str(tiny_config), "--epochs", "1", "--out", str(out),
                   "--resolution", "32", "--batch-size", "16")
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 3
    assert {Path(w.split()[2].rstrip(":")).name for w in warnings} == {"truncated.png", "zero.png", "notes.txt"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_files"] == 3 and summary["images_train"] == 123  # 120 + CMYK, RGBA, 16-bit


def test_empty_class_or_empty_dir_is_one_clear_error(small_digits, tiny_config, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_digits, data)
    (data / "train" / "9").mkdir()
    proc = run_cli("train", str(data), "--model", str(tiny_config), "--epochs", "1", *TINY, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"effnet: error: {data / 'train' / '9'}: class folder has no readable images"]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("train", str(empty), "--model", str(tiny_config), *TINY, check=False)
    assert proc.returncode == 2 and "no class folders" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small_digits, tiny_config, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", str(small_digits), "--model", str(tiny_config), "--epochs", "2", "--out", str(out),
                   "--optimizer", "adamw", "--lr", "1e30", "--warmup-epochs", "0", "--checkpoint-every", "1",
                   *TINY, "--batch-size", "8", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "diverged" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "model.safetensors").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["global_step"] >= 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_eval_matches_hand_computation(small_digits, tiny_config, tmp_path):
    from effnet.data import eval_transform, load_image

    out = tmp_path / "run"
    run_cli("train", str(small_digits), "--model", str(tiny_config), "--epochs", "1", "--out", str(out), *TINY)
    res = json.loads(run_cli("eval", str(out), str(small_digits), "--json").stdout)

    model = effnet.load(out / "model.safetensors").eval()
    names = list(model.config.class_names)
    tf = eval_transform(model.config.replace(crop_pct=0.875), 32)
    hits1 = hits5 = 0
    nll = []
    per_class = {n: [0, 0] for n in names}
    for cls in names:
        for f in sorted((small_digits / "val" / cls).glob("*.png")):
            with torch.no_grad():
                logits = model(tf(load_image(f))[None])[0].double()
            label = names.index(cls)
            probs = torch.softmax(logits, 0)
            nll.append(-float(torch.log(probs[label])))
            ranked = sorted(range(len(names)), key=lambda i: -float(logits[i]))
            hits1 += ranked[0] == label
            hits5 += label in ranked[:5]
            per_class[cls][0] += ranked[0] == label
            per_class[cls][1] += 1
    n = 30
    assert res["images"] == n
    assert res["top1"] == pytest.approx(100 * hits1 / n)
    assert res["top5"] == pytest.approx(100 * hits5 / n)  # 3 classes: always 100
    assert res["loss"] == pytest.approx(sum(nll) / n, rel=1e-4)
    for row in res["per_class"]:
        assert row["top1"] == pytest.approx(100 * per_class[row["name"]][0] / per_class[row["name"]][1])
    text = run_cli("eval", str(out), str(small_digits)).stdout
    assert "top-1" in text and "images/s" in text and len(text.splitlines()) == 2 + 3


def test_loop_tells_the_epoch_and_why_it_stopped(small_digits, tiny_config, tmp_path):
    """The loop hands each epoch's end to the caller (epoch, steps, the metrics row) and the task's evaluate gets
    the epoch; the summary says why the run ended and how many whole epochs it trained."""
    from effnet.classify import ClassificationTask
    from effnet.train import EpochEnd, Task, TrainConfig, train

    class Recording(ClassificationTask):
        evaluated: list = []

        def evaluate(self, model, amp, channels_last, prefix="val", epoch=None):
            self.evaluated.append((prefix, epoch))
            return super().evaluate(model, amp, channels_last, prefix, epoch)

    ends: list[EpochEnd] = []
    cfg = TrainConfig(data_dir=str(small_digits), model=str(tiny_config), epochs=4, batch_size=16, resolution=32,
                      out=str(tmp_path / "run"), quiet=True, plot=False, ema_decay=0.0)
    task = Recording()
    assert isinstance(task, Task)
    summary = train(cfg, task=task, on_epoch_end=lambda end: ends.append(end) or end.epoch == 2)
    assert [(e.epoch, e.epochs, e.complete) for e in ends] == [(1, 4, True), (2, 4, True)]
    assert ends[1].steps_per_epoch == 120 // 16 and ends[1].global_step == 2 * (120 // 16)
    assert ends[1].row["val_top1"] == pytest.approx(summary["val_top1"])
    assert task.evaluated == [("val", 1), ("val", 2)]
    assert summary["stop_reason"] == "caller" and summary["epochs_run"] == 2 and summary["stopped_early"]


def test_loop_refuses_what_is_not_a_task(small_digits):
    from effnet.errors import UsageError
    from effnet.train import TrainConfig, train

    class Half:
        name = "half"

        def load_data(self, cfg, log):
            raise AssertionError("the loop must check the task before using it")

    with pytest.raises(UsageError, match="lacks collate_fn, frozen_children, recipes, build_model"):
        train(TrainConfig(data_dir=str(small_digits)), task=Half())
    with pytest.raises(UsageError, match="needs a task"):
        train(TrainConfig(data_dir=str(small_digits)))
