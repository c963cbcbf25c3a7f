"""COCO detectors on demand, offline: effdet's own random-initialised detectors (BatchNorm statistics randomised)
saved in effdet's naming, served from a loopback server under the published file name with the file's real sha256
prefix (test-only registry entries), downloaded, converted and run through ``effnet.detect.Predictor`` -- the final
boxes and scores are effdet's ``DetBenchPredict``'s on real photos. Small input sizes keep it cheap."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.detect import Predictor
from effnet.detect.boxes import has_area
from effnet.models.zoo import downloads
from effnet.models.zoo.detector_weights import COCO_CLASSES, DetectorWeights, detector_entries
from effnet.models.zoo.classifier_weights import find_weights, list_weights, register_weights, unregister_weights
from effnet.models.zoo.registry import load_model
from tests.conftest import randomize_bn, run_cli
from tests.test_pretrained_download import home, server  # noqa: F401  (the loopback server and cache fixtures)

effdet = pytest.importorskip("effdet")

# (effnet model, effdet name, settings of its published row, input size for the test)
CASES = {"d0": ("efficientdet_d0", "tf_efficientdet_d0", 256), "lite0": ("efficientdet_lite0", "tf_efficientdet_lite0", 192)}


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(np.asarray(getattr(skimage.data, n)())).convert("RGB") for n in ("chelsea", "coffee",
                                                                                              "astronaut")]


def _published(model: str, effdet_name: str) -> DetectorWeights:
    return next(e for e in detector_entries() if e.model == model and e.effdet_name == effdet_name)


def _serve_effdet(server, effdet_name: str, size: int, seed: int = 0):
    """effdet's random-init detector with randomised BatchNorm statistics, written under its published file name
    with the real sha256 prefix of the bytes written; returns (effdet model, file name, full sha256)."""
    torch.manual_seed(seed)
    theirs = effdet.create_model(effdet_name, pretrained=False, pretrained_backbone=False, image_size=(size, size))
    randomize_bn(theirs, seed)
    tmp = server.root / "staging.pth"
    torch.save(theirs.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    stem = _published("efficientdet_d0" if "d0" in effdet_name else "efficientdet_lite0", effdet_name).file_name
    name = f"{stem.rsplit('-', 1)[0]}-{digest[:8]}.pth"
    tmp.rename(server.root / name)
    return theirs.eval(), name, digest


@pytest.fixture
def test_entry():
    added = []

    def make(model: str, effdet_name: str, file: str, sha: str, size: int) -> DetectorWeights:
        base = _published(model, effdet_name)
        entry = DetectorWeights(**{**base.__dict__, "tag": "test_coco", "url": f"https://example.invalid/{file}",
                                   "sha256": sha, "file": file, "resolution": size})
        register_weights(entry)
        added.append(entry.name)
        return entry

    yield make
    for name in added:
        unregister_weights(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_downloaded_detector_gives_effdets_boxes(case, server, home, test_entry, monkeypatch):
    model_name, effdet_name, size = CASES[case]
    theirs, file, digest = _serve_effdet(server, effdet_name, size)
    entry = test_entry(model_name, effdet_name, file, digest[:8], size)
    monkeypatch.setenv("EFFNET_MIRROR", server.url)

    ours = effnet.create_model(model_name, pretrained="test_coco")
    assert server.hits == [f"/{file}"] and downloads.cache_path(entry).is_file()
    assert ours.config.class_names == COCO_CLASSES and ours.config.resolution == size
    assert (ours.config.tf_padding, ours.config.mean) == (True, entry.mean)
    again = effnet.create_model(model_name, pretrained="test_coco")  # converted once: the cache answers
    assert len(server.hits) == 1 and again.config == ours.config

    predictor = Predictor(ours, score_threshold=0.0)
    images = _photos()
    found = predictor(images)
    bench = effdet.DetBenchPredict(theirs).eval()
    x, scales, _ = predictor.preprocess(images)
    with torch.no_grad():  # effdet's img_info: its scale (input -> image) and each image's (width, height)
        want = bench(x, dict(img_scale=torch.tensor([1 / s for s in scales]),
                             img_size=torch.tensor([[im.width, im.height] for im in images], dtype=torch.float32)))
    lines = 0  # effdet keeps boxes the clip squeezed to a line (all outside the photo); effnet drops them before
    for got, w in zip(found, want):  # NMS, where they suppress nothing: its first boxes are effdet's less those
        lines += int((~has_area(w[:, :4])).sum())
        w = w[has_area(w[:, :4])]
        assert len(got["boxes"]) == 100 and len(w) >= 20 and has_area(got["boxes"]).all()
        got = {k: v[: len(w)] for k, v in got.items()}
        assert (got["labels"] + 1 == w[:, 5].long()).all()  # effdet numbers classes from 1 (COCO ids)
        assert float((got["scores"] - w[:, 4]).abs().max()) <= 1e-5
        assert float((got["boxes"] - w[:, :4]).abs().max()) <= 1e-3
        assert got["names"] == [COCO_CLASSES[i] for i in got["labels"].tolist()]
    assert lines > 0  # the case is real: random weights at threshold 0 score boxes in the letterbox padding
    chelsea = found[0]["boxes"]
    assert float(chelsea[:, 2].max()) <= images[0].width and float(chelsea[:, 3].max()) <= images[0].height


def test_corrupt_and_truncated_files_are_refused_and_leave_nothing(server, home, test_entry, monkeypatch):
    _, file, digest = _serve_effdet(server, "tf_efficientdet_lite0", 128)
    data = (server.root / file).read_bytes()
    entry = test_entry("efficientdet_lite0", "tf_efficientdet_lite0", file, digest[:8], 128)
    monkeypatch.setenv("EFFNET_MIRROR", server.url)
    weights_dir = downloads.cache_path(entry).parent
    for bad in (data[: len(data) // 2], data[:100] + bytes(reversed(data[100:]))):  # truncated, corrupt
        (server.root / file).write_bytes(bad)
        with pytest.raises(downloads.DownloadError, match="sha256 mismatch .*nothing was kept"):
            effnet.create_model("efficientdet_lite0", pretrained="test_coco")
        assert not weights_dir.exists() or not any(weights_dir.iterdir())
    monkeypatch.setenv("EFFNET_MIRROR", f"{server.url}/cut")  # the server hangs up halfway
    (server.root / file).write_bytes(data)
    with pytest.raises(downloads.DownloadError, match="cut short"):
        effnet.create_model("efficientdet_lite0", pretrained="test_coco")
    assert not weights_dir.exists() or not any(weights_dir.iterdir())


def test_fine_tuning_keeps_every_tensor_but_the_class_output_layer(server, home, test_entry, monkeypatch):
    _, file, digest = _serve_effdet(server, "tf_efficientdet_lite0", 128, seed=1)
    entry = test_entry("efficientdet_lite0", "tf_efficientdet_lite0", file, digest[:8], 128)
    monkeypatch.setenv("EFFNET_MIRROR", server.url)
    coco = effnet.create_model("efficientdet_lite0", pretrained="test_coco").state_dict()
    tuned = effnet.create_model("efficientdet_lite0", pretrained="test_coco", num_classes=10)
    state = tuned.state_dict()
    new = {k for k in state if k.startswith("class_net.predict.")}
    assert new == {"class_net.predict.dw.weight", "class_net.predict.pw.weight", "class_net.predict.pw.bias"}
    assert set(state) == set(coco)
    for key in set(state) - new:
        assert torch.equal(state[key], coco[key]), key
    assert state["class_net.predict.pw.weight"].shape[0] == 10 * 9
    assert torch.allclose(state["class_net.predict.pw.bias"], torch.tensor(-np.log(99.0), dtype=torch.float32))
    assert not torch.equal(state["class_net.predict.dw.weight"], coco["class_net.predict.dw.weight"])
    assert tuned.config.num_classes == 10 and tuned.config.resolution == 128 == entry.resolution


def test_every_published_detector_is_a_registry_row_with_an_architecture():
    rows = [e for e in list_weights("efficientdet") if e.tag != "test_coco"]
    effdet_names = {e.effdet_name for e in rows}
    published = {n for n, c in effdet.config.model_config.efficientdet_model_param_dict.items()
                 if c.get("url") and ("efficientdet_d" in n or "efficientdet_lite" in n) and "v2" not in n}
    assert effdet_names == published and len(rows) == 23
    for e in rows:
        cfg = effdet.get_efficientdet_config(e.effdet_name)
        assert e.url == cfg.url and e.file_name.rsplit("-", 1)[1].startswith(e.sha256)
        assert (e.resolution, e.tf_padding, e.redundant_bias) == (cfg.image_size[0], cfg.pad_type == "same",
                                                                  cfg.redundant_bias)
        assert e.mean == tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        ours = e.config()
        assert (ours.fpn_channels, ours.fpn_repeats, ours.head_repeats, ours.anchor_scale, ours.max_level) == (
            cfg.fpn_channels, cfg.fpn_cell_repeats, cfg.box_class_repeats, cfg.anchor_scale, cfg.max_level)
        assert ours.fusion == ("sum" if cfg.get("fpn_name") == "bifpn_sum" else "fast")
        assert len(ours.class_names) == 90 and len(set(ours.class_names) - {"N/A"}) == 80
        assert find_weights(e.model).tag == "tf_coco" and 27 <= e.ap <= 55


def test_offline_error_line_names_the_url_and_the_way_out(home, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_MIRROR", "http://127.0.0.1:9")  # nothing listens: offline, whatever this machine has
    proc = run_cli("detect", "predict", "--model", "efficientdet_d0", "--pretrained", str(tmp_path / "x.png"),
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "tf_efficientdet_d0_34-f153e0cf.pth" in line and "effnet convert" in line


def test_load_model_names_a_pretrained_detector(server, home, test_entry, monkeypatch):
    _, file, digest = _serve_effdet(server, "tf_efficientdet_lite0", 128)
    test_entry("efficientdet_lite0", "tf_efficientdet_lite0", file, digest[:8], 128)
    monkeypatch.setenv("EFFNET_MIRROR", server.url)
    model = load_model("efficientdet_lite0", pretrained="test_coco", task="detect")
    assert model.config.class_names[0] == "person" and not model.training
