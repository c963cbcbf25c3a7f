"""Progressive learning (EfficientNetV2, Algorithm 1; effnet.train.progressive): the schedule of image size and
regularization per epoch, the paper's Table 6 defaults by model, the classification task's stages (crop size,
RandAugment, dropout, mixup with soft targets), and real runs on digits: logged as configured, resumable bit for
bit after a kill -9 in the middle of a stage."""

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effnet.errors import UsageError
from effnet.models.nets.families import classifier_config
from effnet.train import TrainConfig
from effnet.train.arguments import add_train_arguments, config_for
from effnet.train.progressive import TABLE_6, Schedule, check_progressive_task, default_progression, schedule_for
from tests.conftest import digit_subset, kill_in_second_epoch, run_cli

FAST = ["--batch-size", "8", "--workers", "0"]


def _schedule(model: str, epochs: int = 350, **flags) -> Schedule:
    return schedule_for(TrainConfig(data_dir="x", epochs=epochs, progressive=True, **flags), classifier_config(model))


def _per_epoch(schedule: Schedule, field: str) -> list:
    return [getattr(schedule.at(e), field) for e in range(schedule.epochs)]


def test_table_6_row_is_chosen_by_model():
    """V2-M trains with M's row, V2-L and XL with L's; every other model with S's row ending at its own training
    size (V2-S: 300 as the table; V2-B0: 192; B0: 224), from min(128, that size)."""
    assert default_progression(classifier_config("efficientnetv2_m")) == ("M", TABLE_6["M"])
    assert default_progression(classifier_config("efficientnetv2_l")) == ("L", TABLE_6["L"])
    assert default_progression(classifier_config("efficientnetv2_xl")) == ("L", TABLE_6["L"])
    assert default_progression(classifier_config("efficientnetv2_s")) == ("S", TABLE_6["S"])
    for name, end in (("efficientnetv2_b0", 192), ("efficientnet_b0", 224), ("efficientnetv2_rw_m", 320)):
        row, p = default_progression(classifier_config(name))
        assert row == "S" and p.size == (128, end) and p.randaug == (5, 15) and p.dropout == (0.1, 0.3)
    tiny = classifier_config("efficientnetv2_b0").replace(resolution=48, train_resolution=None)
    assert default_progression(tiny)[1].size == (48, 48)
    # the run's own resolution (--resolution, a dataset's hint) is where any row ends
    assert default_progression(classifier_config("efficientnetv2_m"), 64)[1].size == (64, 64)
    assert default_progression(classifier_config("efficientnetv2_m"), 256)[1].size == (128, 256)


def test_schedule_per_epoch_follows_algorithm_1():
    # the paper's V2-M run: 350 epochs in 4 stages of about 87, everything linear in i / (M - 1)
    m = _schedule("efficientnetv2_m")
    assert [m.epoch_range(i) for i in range(4)] == [(0, 87), (87, 175), (175, 262), (262, 350)]
    first, second, last = m.at(0), m.at(100), m.at(349)
    assert (first.index, first.size, first.randaug, first.mixup, first.dropout) == (0, 128, 5, 0.0, 0.1)
    assert (second.index, second.size, second.randaug, second.mixup, second.dropout) == (1, 212, 10, 0.066667, 0.2)
    assert (last.index, last.size, last.randaug, last.mixup, last.dropout) == (3, 380, 20, 0.2, 0.4)
    assert (m.at(87).first_epoch, m.at(87).last_epoch) == (87, 174)
    large = _schedule("efficientnetv2_xl")
    end = large.at(349)
    assert (end.size, end.randaug, end.mixup, end.dropout) == (380, 25, 0.4, 0.5)
    # 10 epochs in 4 stages: the remainder spread as the official code's int(i / M * E) boundaries do
    s = _schedule("efficientnetv2_b0", 10, progressive_size=(32, 64), progressive_mixup=(0.0, 0.3))
    assert _per_epoch(s, "index") == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert _per_epoch(s, "size") == [32, 32, 43, 43, 43, 53, 53, 64, 64, 64]
    assert _per_epoch(s, "randaug") == [5, 5, 8, 8, 8, 12, 12, 15, 15, 15]
    assert _per_epoch(s, "mixup") == [0.0, 0.0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3]
    assert _per_epoch(s, "dropout") == [0.1, 0.1, 0.166667, 0.166667, 0.166667, 0.233333, 0.233333, 0.3, 0.3, 0.3]
    assert s.at(4).metrics() == dict(stage=2, image_size=43, randaug=8, mixup=0.1, dropout=0.166667)
    assert "stage 2/4 (epochs 3-5): image size 43px" in s.at(4).describe()
    # fewer epochs than stages: one stage per epoch, still from start to end; one stage: the end values
    short = _schedule("efficientnetv2_b0", 3, progressive_size=(32, 64))
    assert short.stages == 3 and _per_epoch(short, "size") == [32, 48, 64]
    one = _schedule("efficientnetv2_b0", 5, progressive_stages=1, progressive_dropout=(0.0, 0.5))
    assert set(_per_epoch(one, "dropout")) == {0.5} and set(_per_epoch(one, "size")) == {192}
    assert schedule_for(TrainConfig(data_dir="x"), classifier_config("efficientnetv2_b0")) is None


def test_progressive_flags_and_their_mistakes():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", nargs="?")
    add_train_arguments(p)
    args = p.parse_args(["d", "--progressive", "--progressive-size", "32:64", "--progressive-mixup", "0.2",
                         "--progressive-stages", "3"])
    cfg = config_for(args)
    assert (cfg.progressive_size, cfg.progressive_mixup, cfg.progressive_stages) == ((32, 64), (0.2, 0.2), 3)
    # args.json holds ranges as lists; a resumed config reads them back as the same tuples
    saved = json.loads(json.dumps({k: getattr(cfg, k) for k in ("data_dir", "progressive", "progressive_size")}))
    assert TrainConfig(**saved).progressive_size == (32, 64)
    with pytest.raises(SystemExit):
        p.parse_args(["d", "--progressive-size", "32:big"])
    for flags, message in (
            (dict(progressive_size=(32, 64)), "--progressive-size needs --progressive"),
            (dict(progressive=True, progressive_size=(2, 64)), "--progressive-size START and END must each be 4 to"),
            (dict(progressive=True, progressive_randaug=(5, 31)), "--progressive-randaug START and END must each"),
            (dict(progressive=True, progressive_mixup=(0.0,)), "--progressive-mixup must be START:END"),
            (dict(progressive=True, progressive_stages=0), "--progressive-stages must be 1 to"),
            (dict(progressive=True, dropout=0.2), "give --progressive-dropout START:END instead"),
            (dict(progressive=True, auto_augment="none"), "give --progressive-randaug START:END instead")):
        with pytest.raises(UsageError, match=message):
            TrainConfig(data_dir="x", **flags)


def test_a_task_without_stages_or_a_flag_without_progressive_is_one_line(tmp_path, capsys, monkeypatch):
    from effnet.cli import main
    from effnet.detect import DetectionTask

    with pytest.raises(UsageError, match="detection training cannot change its image size"):
        check_progressive_task(DetectionTask())
    monkeypatch.chdir(tmp_path)  # a run without --out would land in ./runs
    for argv, expected in ((["detect", "train", str(tmp_path), "--progressive"], "detection training cannot"),
                           (["train", str(tmp_path), "--progressive-mixup", "0:0.2"], "needs --progressive")):
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.strip().splitlines() == [err.strip()] and expected in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="session")
def small_digits(digits, tmp_path_factory) -> Path:
    """3 classes x 40 train / 10 val images."""
    return digit_subset(digits, tmp_path_factory.mktemp("progressive_digits"), 40, 10)


@pytest.fixture(scope="session")
def tiny_v2(tmp_path_factory) -> Path:
    """EfficientNetV2-B0's table (Fused-MBConv and MBConv stages) at width 0.25, depth 0.25, evaluated at 48 px."""
    config = classifier_config("efficientnetv2_b0").replace(width_mult=0.25, depth_mult=0.25, resolution=48,
                                                           train_resolution=None, dropout=0.1, drop_path_rate=0.1)
    path = tmp_path_factory.mktemp("v2cfg") / "tiny_v2_b0.json"
    path.write_text(config.to_json())
    return path


def test_the_papers_randaugment_magnitudes_on_torchvisions_scale():
    """Table 6 speaks TensorFlow's RandAugment (10 = each operation's strongest), torchvision's bins go to 30;
    past the strongest torchvision's operations stay there."""
    from effnet.data import torchvision_magnitude

    assert [torchvision_magnitude(m) for m in (0, 5, 8, 10, 15, 25)] == [0, 15, 24, 30, 30, 30]


def _randaugment(dataset) -> list:
    from torchvision.transforms import v2

    return [t for t in dataset.transform.transforms if isinstance(t, v2.RandAugment)]


def test_classification_stage_sets_crop_randaugment_dropout_and_mixup(small_digits, tiny_v2):
    """One stage of the real task: its training images come at the stage's size with RandAugment at its magnitude,
    the head's dropout is the stage's, and with mixup the loss is cross-entropy against the mixed targets."""
    from effnet.classify import ClassificationTask

    cfg = TrainConfig(data_dir=str(small_digits), model=str(tiny_v2), progressive=True, epochs=4,
                      progressive_size=(24, 40), progressive_mixup=(0.0, 0.6), progressive_randaug=(0, 8))
    task = ClassificationTask()
    task.load_data(cfg, lambda *a: None)
    model = task.build_model(cfg)
    recipe = cfg.resolved_recipe()
    schedule = schedule_for(cfg, model.config)
    first = task.begin_stage(model, recipe, 0, schedule.at(0))
    assert first[0][0].shape == (3, 24, 24) and task.mixup is None and model.dropout.p == 0.1
    assert not _randaugment(first)  # magnitude 0: none
    last = task.begin_stage(model, recipe, 0, schedule.at(3))
    assert last[0][0].shape == (3, 40, 40) and model.dropout.p == 0.3
    assert [(r.num_ops, r.magnitude) for r in _randaugment(last)] == [(2, 24)]  # TF's 8: torchvision's 24
    assert first[5][0].shape != last[5][0].shape and torch.equal(last[5][0], last[5][0])  # seeded per sample
    x = torch.stack([last[i][0] for i in range(0, 120, 15)])
    y = torch.tensor([last[i][1] for i in range(0, 120, 15)])
    model.eval()  # dropout off: the hand computation below sees the same logits
    criterion = task.criterion(recipe)
    torch.manual_seed(7)
    result = task.loss(model, (x, y), criterion, amp=False, channels_last=False)
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(torch.tensor([0.6]), torch.tensor([0.6])).sample())
    mixed_x = lam * x + (1 - lam) * x.roll(1, 0)
    onehot = torch.nn.functional.one_hot(y, 3).float()
    soft = lam * onehot + (1 - lam) * onehot.roll(1, 0)
    soft = soft * 0.9 + 0.1 / 3  # the recipe's label smoothing, applied to the mixed targets
    with torch.no_grad():
        logits = model(mixed_x)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert 0 < lam < 1 and result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.stats["correct"] == int((logits.argmax(1) == y).sum())


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_progressive_fine_tune_logs_each_epochs_stage(small_digits, tiny_v2, tmp_path):
    """`effnet train --progressive` on digits: each epoch of metrics.csv holds the configured stage, image size and
    regularization; one line per stage change; validation stays at the model's 48 px."""
    out = tmp_path / "run"
    proc = run_cli("train", str(small_digits), "--model", str(tiny_v2), "--epochs", "5", "--progressive",
                   "--progressive-size", "32:64", "--progressive-mixup", "0:0.3", "--progressive-dropout", "0:0.3",
                   "--out", str(out), "--seed", "1", *FAST)
    rows = _rows(out)
    assert [r["stage"] for r in rows] == ["1", "2", "3", "4", "4"]  # stage i from epoch int(i * 5 / 4)
    assert [r["image_size"] for r in rows] == ["32", "43", "53", "64", "64"]
    assert [r["randaug"] for r in rows] == ["5", "8", "12", "15", "15"]  # Table 6's S row
    assert [float(r["mixup"]) for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.3]
    assert [float(r["dropout"]) for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.3]
    assert all(float(r["train_loss"]) > 0 for r in rows)  # soft targets trained without complaint
    stage_lines = [line for line in proc.stdout.splitlines() if line.startswith("stage ")]
    assert stage_lines == [
        "stage 1/4 (epoch 1): image size 32px, RandAugment magnitude 5, mixup alpha 0, dropout 0",
        "stage 2/4 (epoch 2): image size 43px, RandAugment magnitude 8, mixup alpha 0.1, dropout 0.1",
        "stage 3/4 (epoch 3): image size 53px, RandAugment magnitude 12, mixup alpha 0.2, dropout 0.2",
        "stage 4/4 (epochs 4-5): image size 64px, RandAugment magnitude 15, mixup alpha 0.3, dropout 0.3"]
    assert "progressive learning (EfficientNetV2 Algorithm 1): 4 stages over 5 epochs" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolution"] == 48 and summary["stop_reason"] == "completed"


def test_kill_9_in_the_middle_of_a_stage_then_resume_is_bit_exact(small_digits, tiny_v2, tmp_path):
    """Killed inside stage 1 (epochs 1-2 of 4), resumed: it finishes that stage at its size, RandAugment and mixup,
    changes stage, and ends with the uninterrupted run's weights, bit for bit."""
    args = ["train", str(small_digits), "--model", str(tiny_v2), "--epochs", "4", "--progressive",
            "--progressive-stages", "2", "--progressive-size", "32:48", "--progressive-mixup", "0.2:0.4",
            "--checkpoint-every", "2", "--seed", "3", "--quiet", *FAST]
    straight = tmp_path / "straight"
    run_cli(*args, "--out", str(straight))
    killed = tmp_path / "killed"
    state = kill_in_second_epoch(args, killed)  # the middle of stage 1 of 2
    assert state is not None and state["epoch"] == 1 and 0 < state["batch_in_epoch"] < 15, "not killed mid-stage"
    assert not (killed / "model.safetensors").exists()
    run_cli("train", "--resume", str(killed))
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    columns = ("epoch", "step", "train_loss", "stage", "image_size", "randaug", "mixup", "dropout", "val_loss")
    rows_a, rows_b = _rows(straight), _rows(killed)
    assert [[r[c] for c in columns] for r in rows_a] == [[r[c] for c in columns] for r in rows_b]
    assert [r["image_size"] for r in rows_a] == ["32", "32", "48", "48"]
