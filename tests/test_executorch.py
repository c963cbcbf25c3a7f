"""ExecuTorch + XNNPACK: real pretrained Lite0 exported to .pte (fp32 and PT2E int8), run in ExecuTorch's own runtime
and checked against PyTorch on real photos; the CLI's --format executorch and --backend executorch."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import effnet
from tests.conftest import photo_statistics, run_cli

pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed (pip install 'effnet[edge]')")

RES = 224  # the weights' own resolution: int8 agreement is measured where fp32 is at its best


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    from effnet.data.bundled import write_photos

    out = tmp_path_factory.mktemp("photos")
    write_photos(out, count=32)
    return out


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained=True).eval()


@pytest.fixture(scope="module")
def lite0_int8(photo_dir, tmp_path_factory) -> tuple[Path, dict, str]:
    """Pretrained Lite0 as an int8 program, by ``effnet export --format executorch --int8``: (path, the --json
    report, stdout). The command writes and verifies the fp32 program first (kept at NAME.fp32.pte, with its own
    config), then quantizes it: the module's one export of Lite0 (lowering is its slow step) serves the checks of
    both programs and of the command."""
    out = tmp_path_factory.mktemp("lite0") / "l0i8.pte"
    proc = run_cli("export", "efficientnet_lite0", "--pretrained", "--format", "executorch", "--int8", "--calibration",
                   str(photo_dir), "--resolution", str(RES), "--tolerance", "1e-4", "-o", str(out), "--json")
    return out, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_lite0_fp32_and_int8_programs_run_in_executorch(lite0, lite0_int8, photo_dir):
    from effnet.deploy.executorch import PteRunner
    from effnet.deploy.export import real_batch

    path, report, _ = lite0_int8
    assert report["real_images"] == 32 and report["max_abs_diff_real"] <= 1e-4  # the fp32 program vs PyTorch
    real, _ = real_batch(lite0.config.replace(resolution=RES), str(photo_dir))
    with torch.no_grad():
        want = lite0(real).numpy()
    fp32 = Path(f"{path}.fp32.pte")
    got = PteRunner(fp32)(real)  # the kept file, read back by the runtime
    assert np.abs(got - want).max() <= 1e-4
    for file, precision in ((path, "int8"), (fp32, "fp32")):
        side = json.loads(Path(f"{file}.json").read_text())
        saved = effnet.ModelConfig.from_dict(side["model"])
        assert side["effnet_export"]["precision"] == precision and side["effnet_export"]["engine"] == "executorch"
        assert saved.resolution == RES and saved.mean == lite0.config.mean and saved.name == "efficientnet_lite0"

    # measured: 1.0 of the 15 photos where fp32 is confident (ONNX Runtime's int8: 0.93), 0.84 overall (0.78);
    # 0.87 and 0.56 before conv -> ReLU6 was quantized as one op (the classifier's measure: top-1 agreement with fp32)
    assert report["int8"] and report["top1_agreement_confident"] >= 0.93 and report["top1_agreement"] >= 0.75, report
    q = PteRunner(path)(real)
    assert np.abs(q - want).max() > 1e-3  # really quantized
    assert (q.argmax(1) == want.argmax(1)).mean() == pytest.approx(report["top1_agreement"])
    assert path.stat().st_size < 0.4 * fp32.stat().st_size


def test_cli_export_and_predict_with_executorch(lite0_int8, photos, tmp_path):
    path, report, stdout = lite0_int8
    assert report["format"] == "executorch" and report["max_abs_diff_real"] < 1e-4 and path.is_file()
    assert Path(f"{path}.json").is_file() and stdout.startswith(f"wrote {path} (executorch, int8); parity vs PyTorch")
    for backend in ("executorch", "torch"):  # the first exports its own program into the cache
        pred = json.loads(run_cli("predict", "--model", "efficientnet_lite0", "--pretrained", "--backend", backend,
                                  "--json", str(photos["coffee"])).stdout)
        assert pred[0]["predictions"][0]["label"] == "espresso", (backend, pred)
    bad = run_cli("export", "efficientnet_lite0", "--format", "executorch", "--batch", "dynamic", "-o",
                  str(tmp_path / "d.pte"), check=False)
    assert bad.returncode == 2 and "batch 1" in bad.stderr and not (tmp_path / "d.pte").exists()


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A small Lite0 detector (one BiFPN cell and head layer, quarter-depth backbone, 128 px: every pyramid level an
    exact 2x of the next) with varied BatchNorm statistics and decisive class scores, saved as an effnet file."""
    from effnet.models.nets.detector_config import detector_config
    from tests.conftest import randomize_bn

    torch.manual_seed(0)
    config = detector_config("efficientdet_lite0", 3)
    config = config.replace(fpn_repeats=1, head_repeats=1, resolution=128,
                            backbone=config.backbone.replace(depth_mult=0.25))
    model = effnet.create_model(config, num_classes=3).eval()
    model.config = model.config.replace(class_names=("cat", "cup", "person"))
    randomize_bn(model)
    with torch.no_grad():
        model.class_net.predict.pw.bias.fill_(-3.0)
        model.class_net.predict.pw.weight.mul_(3)
    path = tmp_path_factory.mktemp("det") / "det.safetensors"
    effnet.save(model, path)
    return model, path


def _level_counts() -> list[int]:
    """Every number of pyramid levels a registered detector has (P3-P7: 5; D7x's P3-P8: 6)."""
    from effnet.detect.pipeline import level_count
    from effnet.models.nets.detector_config import DETECTOR_VARIANTS, detector_config

    return sorted({level_count(detector_config(name)) for name in DETECTOR_VARIANTS})


def _photos():
    import skimage.data
    from PIL import Image

    return [Image.fromarray(np.asarray(getattr(skimage.data, n)())) for n in ("chelsea", "coffee", "astronaut")]


def _tiny_detector(levels: int, images):
    """The first registered detector with ``levels`` pyramid levels, shrunk to seconds of lowering (quarter-width,
    quarter-depth backbone, 32-wide BiFPN, one cell and head layer; 2^max_level px: every level an exact 2x of the
    next, so XNNPACK runs the upsampling). Random weights with BatchNorm statistics measured on ``images``
    (:func:`tests.conftest.photo_statistics`)."""
    from effnet.detect.pipeline import level_count
    from effnet.models.nets.detector_config import DETECTOR_VARIANTS, detector_config

    name = next(n for n in DETECTOR_VARIANTS if level_count(detector_config(n)) == levels)
    config = detector_config(name, 3)
    config = config.replace(fpn_channels=32, fpn_repeats=1, head_repeats=1, resolution=2 ** config.max_level,
                            class_names=("cat", "cup", "person"),
                            backbone=config.backbone.replace(width_mult=0.25, depth_mult=0.25, drop_path_rate=0.0))
    torch.manual_seed(levels)
    return photo_statistics(effnet.create_model(config, num_classes=3), images)


@pytest.mark.parametrize("levels", _level_counts())
def test_detector_program_of_every_level_count_gives_the_torch_predictors_boxes(levels, monkeypatch, tmp_path):
    """The raw outputs (class levels, then box levels) as an ExecuTorch program, split at the config's level count
    and decoded + NMS'd in Python: PyTorch's detections on real photos, for D7x's six levels as for the others' five."""
    from effnet.deploy.executorch import PteRunner
    from effnet.deploy.optimize import optimize
    from effnet.detect import Predictor
    from effnet.detect.executorch import output_convs
    from effnet.detect.spec import TASK
    from tests.test_detect_pipeline import assert_served_like

    monkeypatch.setenv("EFFNET_HOME", str(tmp_path / "home"))
    images = _photos()
    model = _tiny_detector(levels, images)
    assert model.config.max_level - model.config.min_level + 1 == levels
    want = Predictor(model, score_threshold=0.2)(images)
    assert sum(len(w["scores"]) for w in want) >= 6
    assert len({len(w["scores"]) for w in want}) > 1  # the photos get different detections
    got = Predictor(model, backend="executorch", score_threshold=0.2)(images)
    for g, w in zip(got, want):
        assert torch.equal(g["labels"], w["labels"]) and g["names"] == w["names"]
        assert torch.allclose(g["scores"], w["scores"], rtol=0, atol=1e-4)
        assert torch.allclose(g["boxes"], w["boxes"], rtol=0, atol=1e-2)  # pixels of the photo (up to 600 px)
    (program,) = (tmp_path / "home").rglob("*.pte")  # exported once into the cache
    assert_served_like(TASK.served(model, "executorch"), images, want, threshold=0.2)  # effnet serve, from the cache
    assert len(list((tmp_path / "home").rglob("*.pte"))) == 1
    res = model.config.resolution
    assert len(PteRunner(program).outputs(torch.zeros(1, 3, res, res))) == 2 * levels
    names = output_convs(optimize(model, channels_last=False))  # int8 keeps these float: 2 heads x the levels
    assert len(names) == 2 * levels and names[0] == "class_net.folded.0.1"
    assert names[-1] == f"box_net.folded.{levels - 1}.1"


def test_detector_int8_export_from_the_cli(detector, photos, tmp_path):
    _, path = detector
    calib = tmp_path / "calib"
    calib.mkdir()
    for src in photos.values():
        (calib / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "det.pte"
    proc = run_cli("export", str(path), "--format", "executorch", "--int8", "--calibration", str(calib), "-o",
                   str(out), "--json")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["max_output_diff"] < 1e-3 and report["same_detections"]  # the fp32 program, vs PyTorch
    assert report["fp32_detections"] > 0 and report["fp32_kept_by_int8"] >= 0.5, report
    assert "int8 (PT2E)" in proc.stdout and "decoding + NMS in Python" in proc.stdout
    assert out.is_file() and (tmp_path / "det.pte.fp32.pte").is_file()
    assert out.stat().st_size < 0.5 * (tmp_path / "det.pte.fp32.pte").stat().st_size
    saved = json.loads((tmp_path / "det.pte.json").read_text())["model"]
    assert saved["class_names"] == ["cat", "cup", "person"] and saved["resolution"] == 128
    bad = run_cli("export", str(path), "--format", "executorch", "--raw", "-o", str(tmp_path / "r.pte"), check=False)
    assert bad.returncode == 2 and "executorch" in bad.stderr and not (tmp_path / "r.pte").exists()


class _FixedBatch(torch.nn.Module):
    """A graph with a batch of its own (a constant of batch 2 added: the input's must be 1 or 2), which torch.export
    refuses a free batch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) + torch.ones(2, 1, 1, 1)


def test_int8_calibration_runs_in_chunks_through_a_free_batch_graph():
    """PT2E observes a copy of the graph with a free batch: many images a call (as many pixels as 32 at 224 px), the
    same outputs as the model on a batch it was not exported at; one image, or a graph that fixes its batch, one
    image a call."""
    from effnet.deploy.executorch import calibration_graph

    model = effnet.create_model(effnet.ModelConfig(name="tiny", width_mult=0.25, depth_mult=0.25, num_classes=3))
    model.eval()
    x = torch.randn(5, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        graph, chunk = calibration_graph(model, x[:1], 256)
        assert chunk == 256 and torch.allclose(graph(x), model(x), atol=1e-5)  # 256 <= 32 x 224^2 / 56^2 a call
        assert calibration_graph(model, x[:1], 5000)[1] == 32 * 224 * 224 // (56 * 56)
        assert calibration_graph(model, torch.zeros(1, 3, 1300, 1300), 8)[1] == 1  # past 32 x 224^2 pixels
        assert calibration_graph(model, x[:1], 1)[1] == 1
        graph, chunk = calibration_graph(_FixedBatch().eval(), x[:1], 256)
        assert chunk == 1 and graph(x[:1]).shape == (2, 4, 54, 54)
