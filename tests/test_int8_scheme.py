"""The int8 scheme follows the features of the CPU an export is made on -- signed 8-bit weights where VNNI or AMX add
int8 products into 32-bit sums, unsigned (ONNX Runtime) or 7-bit (OpenVINO) weights where AVX2's 16-bit sums
saturate -- and is recorded in the export's config; a file made for one kind of CPU loads and verifies on the
other's path. The CPU's features are faked with ``$EFFNET_CPU_FLAGS``; every engine run is real."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import effnet
from effnet.classify.export import LOGITS
from effnet.cpu import FLAGS_ENV, cpu_flags, int8_scheme, physical_cores
from effnet.deploy.export import export_model

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

KINDS = {"avx2": "u8u8", "avx2 avx512_vnni": "u8s8"}  # faked CPU flags -> the scheme made for them


def test_the_scheme_follows_the_cpu_features(monkeypatch):
    assert int8_scheme(frozenset({"avx2", "fma"})).name == "u8u8"
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        scheme = int8_scheme(frozenset({"avx2", flag}))
        assert scheme.name == "u8s8" and scheme.onnx_signed_weights and not scheme.openvino_seven_bit
        assert flag in scheme.reason
    monkeypatch.setenv(FLAGS_ENV, "avx2,fma")
    assert cpu_flags() == {"avx2", "fma"} and int8_scheme().openvino_seven_bit


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained=True).eval()


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    """scikit-image's colour photos and their mirror images and centre crops: calibration and test views."""
    import skimage.data
    from PIL import Image, ImageOps

    folder = tmp_path_factory.mktemp("calibration")
    for name in ("chelsea", "coffee", "astronaut", "rocket", "cat"):
        image = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        w, h = image.size
        views = (image, ImageOps.mirror(image), image.crop((w // 6, h // 6, w - w // 6, h - h // 6)))
        for i, view in enumerate(views):
            view.save(folder / f"{name}-{i}.png")
    return folder


def _weight_types(path: Path) -> set[int]:
    """The element types of the quantized convolution weights in an ONNX QDQ graph (INT8 or UINT8)."""
    graph = onnx.load(str(path)).graph
    weights = {i.name: i for i in graph.initializer if len(i.dims) == 4}
    return {weights[n.input[0]].data_type for n in graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in weights}


@pytest.mark.parametrize("fmt, ext", [("onnx", "onnx"), ("openvino", "xml")])
def test_each_cpu_kinds_file_is_recorded_and_runs_on_the_other_path(lite0, calibration, tmp_path, monkeypatch, capfd,
                                                                     fmt, ext):
    from effnet.data import eval_transform
    from PIL import Image

    x = torch.stack([eval_transform(lite0.config)(Image.open(p).convert("RGB")) for p in sorted(calibration.iterdir())])
    with torch.no_grad():
        want = lite0(x).argmax(1)
    for flags, scheme in KINDS.items():
        monkeypatch.setenv(FLAGS_ENV, flags)  # made as on that kind of CPU
        path = tmp_path / f"{scheme}.{ext}"
        report = export_model(lite0, path, fmt, int8=True, calibration=str(calibration), outputs=LOGITS)
        side = json.loads(Path(f"{path}.json").read_text())["effnet_export"]
        assert side["precision"] == "int8" and side["int8_scheme"] == scheme
        assert side["made_on"]["flags"] == sorted(flags.split())
        choice = side["made_on"]["choice"]  # what effnet picks to run it on that CPU (effnet.deploy.choice)
        assert choice["precision"] == "int8" and choice["int8_scheme"] == scheme
        assert choice["threads"] == (physical_cores() if fmt == "openvino" else None)  # effnet sets OpenVINO's only
        assert any(scheme in note for note in report.notes)
        if fmt == "onnx":
            assert _weight_types(path) == {onnx.TensorProto.INT8 if scheme == "u8s8" else onnx.TensorProto.UINT8}
        other = next(f for f in KINDS if f != flags)
        monkeypatch.setenv(FLAGS_ENV, other)  # ... and loaded where the other scheme is this CPU's
        capfd.readouterr()
        model = effnet.load_model(str(path))
        assert f"quantized with the {scheme} int8 scheme" in capfd.readouterr().err
        got = model(x)
        confident = torch.from_numpy(np.sort(lite0(x).softmax(1).detach().numpy(), 1))
        sure = confident[:, -1] - confident[:, -2] > 0.1
        assert sure.sum() >= 5 and torch.equal(got.argmax(1)[sure], want[sure]), (fmt, scheme, int(sure.sum()))
