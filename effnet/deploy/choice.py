"""How effnet runs a model on the CPU it is running on: the engine ``--backend auto`` picks, the precision a
backend really computes in, the int8 scheme ``-int8`` backends quantize with, and OpenVINO's threads, streams and
chunk size. Decided when the program runs, from the features of *this* CPU (:mod:`effnet.cpu`; ``EFFNET_CPU_FLAGS``
fakes another's) and the engines installed -- never from the machine a number was measured on -- and recorded in
every export's config (``NAME.json``: ``made_on.choice``), so a file says what it was made and checked for.

One home for these decisions: :class:`effnet.deploy.openvino.Runner` takes its chunk size, precision and thread
count from here, :mod:`effnet.deploy.predictors` its backend list, ``auto`` and the bf16 note; :func:`choose` puts
them together for ``effnet cpu``, the export configs and ``benchmarks/bench_infer.py``. The measurements each rule
rests on are in the README's table "What effnet picks on your CPU"."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass

from ..cpu import FLAGS_ENV, bf16_native, cpu_name, deciding_flags, int8_scheme, physical_cores

# every --backend a model runs on (besides "auto"): PyTorch, ONNX Runtime, OpenVINO (bf16 arithmetic, NNCF int8),
# ExecuTorch + XNNPACK (batch 1; PT2E int8)
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8", "executorch",
            "executorch-int8")

# the fp32 engines `auto` may pick, fastest first when one engine has the cores to itself: OpenVINO through
# effnet's Runner 1.23x / 1.20x ONNX Runtime on a timm export (B0 224 px, 2 threads, batch 1 / 16,
# benchmarks/results/bench_infer_ort_ov.json), 1.05x / 1.08x on an AVX2-only CPU
# (bench_infer_int8_no_vnni.json); ONNX Runtime on effnet's graph 0.95x / 1.01x. With engines sharing the cores
# (`effnet serve`: a fixed thread count per engine) ONNX Runtime served more (Lite0: 136 vs 107 requests/s,
# benchmarks/bench_serve.py), so there the order turns round.
AUTO_ORDER = (("openvino", "openvino"), ("onnx", "onnxruntime"))

# OpenVINO Runner: images per stream call for a batch (B0 224 px, 2 cores, x ONNX Runtime on a timm export):
# fp32 chunks of 2 1.20x, 1 1.16x, 4 1.08x, 8 1.00x -- a B0 activation at batch 2 stays in a core's cache;
# int8 (FakeQuantize) gains from larger chunks, its int8 matrix products fill up: 4 2.11x, 2 1.97x, 1 1.80x
# (machine not recorded). Re-tried on an AVX-512 VNNI + BF16 EPYC: fp32 again fastest in 2s; bf16 and int8 within
# a few percent from 2 to 16.
CHUNK = {"fp32": 2, "bf16": 2, "int8": 4}


@dataclass(frozen=True)
class EngineChoice:
    """What runs a model here: ``backend`` (a ``--backend`` name), the ``precision`` it computes in, its
    ``threads`` (OpenVINO's default: this process's physical cores, :func:`effnet.cpu.physical_cores`), OpenVINO's
    ``streams`` for a batch (one per thread) and ``chunk`` (images per stream call), this CPU's ``int8_scheme``
    (what an ``-int8`` backend quantizes with), the deciding ``flags``, and one line per rule applied."""

    backend: str
    precision: str
    threads: int | None  # None: the engine's own default (ONNX Runtime and PyTorch: one per physical core too)
    streams: int
    chunk: int
    int8_scheme: str
    flags: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def auto_backend(threads: int | None = None) -> str:
    """The fastest installed backend that keeps fp32 results (bf16 and int8 change logits, so they are opt-in):
    OpenVINO first when an engine has the cores to itself, ONNX Runtime first when engines share them (a fixed
    ``threads`` per engine, ``effnet serve``); torch when neither is installed. See :data:`AUTO_ORDER`."""
    for backend, module in AUTO_ORDER if threads is None else AUTO_ORDER[::-1]:
        if importlib.util.find_spec(module):
            return backend
    return "torch"


# why a bf16 request computes in f32 on a CPU without native bf16 (OpenVINO's docs: emulated bf16 is slower)
NO_NATIVE_BF16 = "no native bf16 (avx512_bf16 / amx_bf16): emulated bf16 is slower than f32, so f32 runs"


def computed_precision(precision: str) -> str:
    """The precision an engine asked for ``precision`` computes in here: bf16 only where the CPU has it natively
    (emulated bf16 runs slower than f32, OpenVINO's docs), else f32."""
    return "fp32" if precision == "bf16" and not bf16_native() else precision


def choose(backend: str = "auto", threads: int | None = None) -> EngineChoice:
    """The engine, precision and settings ``backend`` means on this CPU (``auto``: :func:`auto_backend`)."""
    reasons = []
    if backend == "auto":
        backend = auto_backend(threads)
        reasons.append(f"auto: {backend}, the fastest fp32 engine installed"
                       + (" for engines sharing the cores" if threads is not None else ""))
    precision = "int8" if backend.endswith("-int8") else "bf16" if backend.endswith("-bf16") else "fp32"
    if computed_precision(precision) != precision:
        precision = computed_precision(precision)
        reasons.append(NO_NATIVE_BF16)
    scheme = int8_scheme()
    if precision == "int8" and not backend.startswith("executorch"):  # XNNPACK's quantizer has one scheme
        reasons.append(f"int8 scheme {scheme.name}: {scheme.reason}")
    if precision == "fp32" and backend.startswith("openvino") and bf16_native():
        reasons.append("f32 asked of OpenVINO explicitly: its CPU plugin would compute in bf16 on this CPU")
    if backend.startswith("openvino"):  # effnet sets OpenVINO's threads; the other engines keep their own default
        threads = threads or physical_cores()
    return EngineChoice(backend, precision, threads, streams=threads or 1, chunk=CHUNK[precision],
                        int8_scheme=scheme.name, flags=tuple(deciding_flags()), reasons=tuple(reasons))


def describe(choice: EngineChoice) -> str:
    """One line: what a backend runs as here (``effnet cpu``, ``bench_infer.py``)."""
    streams = f", {choice.streams} streams x chunks of {choice.chunk}" if choice.backend.startswith("openvino") else ""
    threads = f"{choice.threads} threads" if choice.threads else "the engine's default threads"
    return f"{choice.backend}: {choice.precision}, {threads}{streams}"


def cpu_report() -> str:
    """``effnet cpu``: this CPU, its deciding flags, and what each backend (and ``auto``) runs as here, with why."""
    lines = [f"{cpu_name()}: {physical_cores()} physical cores, flags {' '.join(deciding_flags()) or '(none)'}"
             + (f" (from ${FLAGS_ENV})" if os.environ.get(FLAGS_ENV) is not None else ""),
             "  (auto as classifiers and segmenters take it: a detector's auto is torch, an exported file runs on "
             "its own engine)"]
    for backend in ("auto", *BACKENDS):
        choice = choose(backend)
        lines.append(f"  {backend:<16} {describe(choice)}" + "".join(f"\n  {'':<16}   - {r}" for r in choice.reasons))
    return "\n".join(lines)
