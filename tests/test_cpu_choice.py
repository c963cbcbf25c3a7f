"""What effnet picks on a CPU follows that CPU's features (faked with ``$EFFNET_CPU_FLAGS``): the int8 scheme, bf16 only
where it is native, OpenVINO's f32 asked for explicitly where its plugin would take bf16, one thread per physical
core; ``effnet cpu`` says so, line by line, in a real subprocess."""

import os
import subprocess
import sys

import pytest

from effnet.cpu import FLAGS_ENV, physical_cores
from effnet.deploy.choice import BACKENDS, CHUNK, choose
from tests.conftest import HANG_S, ROOT, run_cli

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

AVX2, VNNI_BF16, AMX = "avx2 fma", "avx2 avx512f avx512_vnni avx512_bf16", "avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16"


def test_choices_follow_the_faked_features(monkeypatch):
    monkeypatch.setenv(FLAGS_ENV, AVX2)
    bf16, int8 = choose("openvino-bf16"), choose("openvino-int8")
    assert bf16.precision == "fp32" and any("no native bf16" in r for r in bf16.reasons)
    assert int8.int8_scheme == "u8u8" and int8.chunk == CHUNK["int8"] and int8.flags == ("avx2",)
    assert not any("f32 asked" in r for r in choose("openvino").reasons)  # nothing to ask where bf16 isn't native
    for flags in (VNNI_BF16, AMX):
        monkeypatch.setenv(FLAGS_ENV, flags)
        assert choose("openvino-bf16").precision == "bf16" and choose("onnx-int8").int8_scheme == "u8s8"
        assert any("f32 asked" in r for r in choose("openvino").reasons)
    assert choose("openvino", threads=1).threads == 1 and choose("onnx").threads is None  # ORT's own default
    # OpenVINO when an engine has the cores to itself, ONNX Runtime when engines share them (a fixed thread count)
    assert choose("auto").backend == "openvino" and choose("auto", threads=1).backend == "onnx"


def test_physical_cores_follow_the_affinity():
    """A process held to one CPU (``taskset``'s, a container's limit) gets one OpenVINO thread."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from effnet.cpu import physical_cores; from effnet.deploy.choice import choose; "
            "print(physical_cores(), choose('openvino').threads)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, cwd=ROOT)
    assert out.stdout.split() == ["1", "1"], out.stderr
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


def test_effnet_cpu_names_every_backend_and_its_reasons(monkeypatch):
    monkeypatch.setenv(FLAGS_ENV, AVX2)
    plain = run_cli("cpu").stdout
    monkeypatch.setenv(FLAGS_ENV, AMX)
    rich = run_cli("cpu").stdout
    assert f"flags avx2 (from ${FLAGS_ENV})" in plain
    for backend in ("auto", *BACKENDS):
        assert f"\n  {backend} " in plain and f"\n  {backend} " in rich
    assert "no native bf16" in plain and "no native bf16" not in rich
    assert "int8 scheme u8u8" in plain and "int8 scheme u8s8: amx_int8" in rich
