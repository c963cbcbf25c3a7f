"""The honest limit, per layer (issue 35): this machine's roofs, each layer's work, and each engine's time against them.

    python benchmarks/bench_infer.py --roofline [--model efficientnet_b0] [--batches 1,16] [--threads 2] [--reps 10]

What is measured, now, on the machine the command runs on (nothing comes from a data sheet):

- Memory bandwidth: a STREAM-like copy, ``dst.copy_(src)`` on the run's threads, bytes = read + write, at working
  sets (src + dst) from 256 KiB to 512 MiB so that each cache level shows; the DRAM figure is the largest size's.
  Each size's rate is its fastest single call (on shared cores most calls wait for a descheduled thread), less
  torch's per-call dispatch cost (a 16-element copy): the small sizes then give the caches' rate, not the
  dispatcher's (at most half of a call's time is taken off). The matrix roofs below are fastest calls too.
- The matrix roof per precision: fp32 and bf16 from ``torch.mm`` (oneDNN), int8 from the int8 matrix products two
  engines run -- ONNX Runtime's MatMulInteger (u8 x s8 -> s32) and OpenVINO's FullyConnected between
  FakeQuantize'd operands (its kernel name is recorded) -- each on 1024^3 and 2048^3 products; the fastest counts
  and all are recorded. Where a layer in an engine ran faster than every product measured (a conv kernel can
  block better than a square GEMM, and noise on a shared machine slows the products), the roof is raised to
  that layer's rate and the output says so: a roof some kernel beats is no limit.
- The activation roof: SiLU elements per second, torch's vectorized ``silu`` (an exp and a reciprocal per element,
  as oneDNN's fused post-op computes it) on buffers that stay in a core's cache, fastest call. Every engine here
  computes the SiLU in float, int8 included (after the int32 sums are dequantized). Where a layer implies a faster
  SiLU (its time less its matrix work at the matrix roof), the roof is raised to it, as the matrix roofs are.
- Each layer's time per engine, from the engine's own profiler, the median over repetitions: OpenVINO's
  performance counters (PERF_COUNT) on effnet's IR in fp32, bf16 and int8 (NNCF), compiled for the batch on one
  latency stream (not bench_infer's Runner, which cuts a batch into chunks across streams); ONNX Runtime's
  profiler on effnet's fp32 and int8 ONNX; torch.profiler ranges that module hooks open and close, on the eager
  fp32 model (the profiler's own cost, a few µs per op, lands in the layers).
  Each engine node goes to the layer whose module path its name carries; layout reorders and what carries no
  module (the input's conversion, a flatten) are reported as "other", never spread over the layers.

What is counted, on the model effnet exports (``effnet.deploy.optimize``: BatchNorm folded). A layer is a leaf op
of the MBConv block: the stem conv; per block the 1x1 expansion, the depthwise conv, the squeeze-excitation
(pool, reduce, expand, sigmoid, gate multiply), the 1x1 projection (with the residual add); the head conv; the
pool + classifier. Activations after a conv belong to the conv's layer.

- FLOPs: convolutions and the classifier's matrix product by ``torch.utils.flop_counter.FlopCounterMode`` (2 per
  multiply-add, grouped by module; biases not counted); cheap elementwise work counted here at one FLOP per
  element per op -- a ReLU6, the SE's pooling (one add per input element) and gate multiply (one per element), the
  residual add, the final pooling.
- SiLU and sigmoid elements ("transcendentals"): the SiLU after a conv, the SE's SiLU and sigmoid on its squeezed
  vectors. Each takes about one cycle per element on a core (an exp, a reciprocal), not one FLOP: in B0 they take
  longer than all its depthwise convs' arithmetic, and a FLOP count hides them.
- Bytes moved: the layer's input and output activations (and the residual's input) once each, plus its weights,
  all at the engine's precision (fp32 4 B, bf16 2 B, int8 1 B). An engine moves at least this: an int8 layer's
  int32 biases, a float output, the SE's second read of its input (pool, then gate) are not counted.

Why the bound is honest -- no kernel running this layer at a time over the batch beats it:
bound = max(compute, bytes / bandwidth at the layer's working set), and both terms are optimistic, with
compute = FLOPs / the matrix roof + transcendentals / the activation roof. The two add up on a CPU without AMX: the
matrix work and the SiLU issue on the same vector units. With AMX the matrix work runs on the tiles beside them, and
the larger of the two counts.
The compute peak of *every* layer, depthwise and elementwise included, is the matrix roof of its precision: on a
CPU without AMX a GEMM runs on the same AVX-512 FMA / VNNI / BF16 dot-product units a depthwise kernel can use, and
nothing issues them faster than a large GEMM does. (A roof measured with an elementwise op such as addcmul would be
lower, and so no limit: a depthwise kernel that keeps its operands in registers beats it. With AMX the bf16/int8
matrix roofs come from the tiles, which a depthwise conv cannot use: the depthwise bound is then loose, and the
JSON says so.) The bandwidth is the copy curve's at the layer's working set (the bytes it moves), read at the
largest measured size not above it, the curve first made non-increasing so that noise never lowers a rate.
The schedule is the engines': one layer at a time over the whole batch. A depth-first or chunked schedule keeps the
working sets in cache and lowers the bound (the batch-1 rows show by how much).

The activation term is checked against the engines: each OpenVINO engine runs effnet's IR and its ReLU6 twin (the
same network with every SiLU a ReLU6, exported and quantized the same way) interleaved; the difference is what the
SiLUs cost there, printed beside SiLU elements / the activation roof.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
MATRIX_SIZES = (1024, 2048)  # the roofs' matrix products are n^3 (the faster size counts)
COPY_SIZES = tuple(2**k for k in range(18, 30))  # copy working sets (src + dst): 256 KiB ... 512 MiB
LAYOUT_TYPES = {"Reorder", "ReorderInput", "ReorderOutput"}  # layout conversions: "other" even where named by a layer
ROOT = Path(__file__).resolve().parents[1]
KINDS = ("conv 1x1", "depthwise", "SE", "stem/head", "conv kxk", "other")


# ---------------------------------------------------------------------------------------------- the machine's roofs

@dataclass(frozen=True)
class Roofs:
    bandwidth: tuple[tuple[int, float], ...]  # (copy working set in bytes, GB/s read + write)
    matrix: dict  # precision -> GFLOP/s (int8: GOP/s)
    sources: dict  # precision -> what reached it
    products: dict  # precision -> {matrix product: GFLOP/s}, all that were measured
    dispatch_us: float  # torch's per-call cost subtracted from each copy
    notes: tuple[str, ...] = ()
    copy_curves: dict | None = None  # thread count -> the copy curve measured on that many threads
    activation: float | None = None  # SiLU elements per second (G/s) on the run's threads, in cache; None: no term
    activation_source: str = ""
    shared_units: bool = True  # the matrix work and the activations issue on the same vector units (no AMX)

    @property
    def dram(self) -> float:
        return self.bandwidth[-1][1]

    def bandwidth_at(self, working_set: float) -> float:
        """GB/s for a layer that moves ``working_set`` bytes: the curve made non-increasing towards small sizes
        (a noisy dip never lowers a smaller size's rate), read at the largest measured size not above it."""
        sizes = [s for s, _ in self.bandwidth]
        rates = list(itertools.accumulate(reversed([r for _, r in self.bandwidth]), max))[::-1]
        return rates[max(0, bisect.bisect_right(sizes, working_set) - 1)]


def best_call_s(fn, budget_s: float = 0.05, min_calls: int = 5) -> float:
    """The fastest single call of ``fn`` (after a warm-up call) over about ``budget_s`` and at least ``min_calls``
    calls: a roof is the best the machine does, and on shared cores many calls wait for a descheduled thread."""
    fn()
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        calls += 1
    return best


def measure_bandwidth(threads: int, sizes=COPY_SIZES) -> tuple[dict[int, tuple], float]:
    """({thread count: ((working set, GB/s) per size)}, dispatch µs): float32 ``dst.copy_(src)``, each buffer half
    the set, on one thread and on ``threads``. torch copies below 32768 elements on one thread, and where another
    process holds a core every parallel call waits for it: the roof is the better of the two counts."""
    tiny_src, tiny_dst = torch.ones(16), torch.empty(16)
    dispatch = best_call_s(lambda: tiny_dst.copy_(tiny_src))
    curves = {}
    try:
        for count in dict.fromkeys((threads, 1)):
            torch.set_num_threads(count)
            curve = []
            for size in sizes:
                src = torch.ones(size // 8)
                dst = torch.empty_like(src)
                per_call = best_call_s(lambda: dst.copy_(src), budget_s=0.03)
                curve.append((size, size / max(per_call - dispatch, per_call / 2) / 1e9))
            curves[count] = tuple(curve)
    finally:
        torch.set_num_threads(threads)
    return curves, dispatch * 1e6


ACTIVATION_SIZES = (2**14, 2**16, 2**18)  # SiLU buffers (float32 elements): 64 KiB ... 1 MiB, each in a core's cache


def measure_activation(threads: int, sizes=ACTIVATION_SIZES) -> tuple[float, str]:
    """SiLU's rate in G elements/s: torch's vectorized ``silu`` (exp and a reciprocal per element, as oneDNN's
    post-op computes it) into a preallocated output, in cache, on one thread times ``threads`` and on ``threads``
    (the better: the roof is the best the machine does), fastest call less torch's dispatch cost."""
    tiny_src, tiny_dst = torch.ones(16), torch.empty(16)
    dispatch = best_call_s(lambda: torch.ops.aten.silu.out(tiny_src, out=tiny_dst))
    found = {}
    try:
        for count in dict.fromkeys((threads, 1)):
            torch.set_num_threads(count)
            for n in sizes:
                x, out = torch.randn(n), torch.empty(n)
                per_call = best_call_s(lambda: torch.ops.aten.silu.out(x, out=out), budget_s=0.03)
                rate = n / max(per_call - dispatch, per_call / 2) / 1e9 * (threads if count == 1 else 1)
                found[f"torch silu {n} elements on {count} thread{'s' if count > 1 else ''}"
                      + (f" x {threads}" if count == 1 and threads > 1 else "")] = rate
    finally:
        torch.set_num_threads(threads)
    best = max(found, key=found.get)
    return found[best], best


def torch_mm_gflops(dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_call_s(lambda: torch.mm(a, b)) / 1e9


def ort_options(threads: int, profile_prefix: str | None = None):
    """ONNX Runtime session options as the benchmarks use them: ``threads``, never spinning; optionally profiling."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def ort_int8_gops(threads: int, n: int) -> float:
    """ONNX Runtime's MatMulInteger (u8 activations x s8 weights -> s32) on an n^3 product."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_matmul",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), ort_options(threads), providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return 2 * n**3 / best_call_s(lambda: session.run(None, {"A": a})) / 1e9


def openvino_int8_gops(threads: int, n: int) -> tuple[float, str]:
    """OpenVINO's int8 matrix product (GOP/s, its kernel): FakeQuantize'd activations x constant weights, an
    n^3 FullyConnected as NNCF's models give it. The time includes quantizing the input (~3%)."""
    import openvino as ov
    import openvino.opset13 as ops

    from effnet.deploy import openvino as ovino

    def fq(node, lo: float, hi: float):
        c = [ops.constant(np.float32(v)) for v in (lo, hi, lo, hi)]
        return ops.fake_quantize(node, *c, 256)

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32, name="x")
    w = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    y = fq(ops.matmul(fq(x, 0.0, 2.55), fq(w, -1.28, 1.27), False, True), -100.0, 100.0)
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {**ovino.cpu_config("fp32", threads),
                                                                    "PERF_COUNT": True})
    request, a = compiled.create_infer_request(), rng.uniform(0, 2.55, (n, n)).astype(np.float32)
    gops = 2 * n**3 / best_call_s(lambda: request.infer({0: a})) / 1e9
    kernel = next((i.exec_type for i in request.profiling_info if i.node_type == "FullyConnected"), "?")
    return gops, kernel


def measure_roofs(threads: int) -> Roofs:
    """Bandwidth curve and matrix roofs on ``threads`` threads (a few seconds). Each precision's roof is the
    fastest of its matrix products (sizes in MATRIX_SIZES; int8 in two engines); all are recorded."""
    from effnet.cpu import cpu_flags

    copy_curves, dispatch_us = measure_bandwidth(threads)
    bandwidth = tuple((size, max(curve[i][1] for curve in copy_curves.values()))
                      for i, (size, _) in enumerate(copy_curves[threads]))
    found: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}, "int8": {}}
    for n in MATRIX_SIZES:
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            found[precision][f"torch.mm {n}^3 (oneDNN)"] = torch_mm_gflops(dtype, n)
        found["int8"][f"ONNX Runtime MatMulInteger {n}^3"] = ort_int8_gops(threads, n)
        gops, kernel = openvino_int8_gops(threads, n)
        found["int8"][f"OpenVINO FullyConnected {n}^3 ({kernel})"] = gops
    matrix = {p: max(rates.values()) for p, rates in found.items()}
    sources = {p: max(rates, key=rates.get) for p, rates in found.items()}
    notes = ()
    amx = bool({"amx_tile", "amx_bf16", "amx_int8"} & cpu_flags())
    if amx:
        notes = ("AMX: the bf16/int8 matrix roofs come from the tiles, which depthwise convs cannot use: their "
                 "compute bound is loose here; the tiles run beside the vector units, so a layer's matrix and "
                 "activation work overlap in the bound",)
    activation, activation_source = measure_activation(threads)
    return Roofs(bandwidth, matrix, sources, found, dispatch_us, notes, copy_curves, activation, activation_source,
                 shared_units=not amx)


# ----------------------------------------------------------------------------------------------- per-layer work

@dataclass(frozen=True)
class Layer:
    name: str  # the module path of its main module ("blocks.1.0.dw"; "classifier" for pool + classifier)
    kind: str  # one of KINDS
    modules: tuple[str, ...]  # module paths whose engine nodes belong to it (the longest match wins)
    flops: float  # per image
    activations: int  # elements read + written per image
    weights: int  # parameters
    transcendentals: int = 0  # elements per image through a SiLU or a sigmoid (an exp and a reciprocal each)

    def flops_at(self, batch: int) -> float:
        return self.flops * batch

    def bytes_at(self, batch: int, precision: str) -> float:
        return (self.activations * batch + self.weights) * ELEMENT_BYTES[precision]


@dataclass(frozen=True)
class Network:
    name: str
    resolution: int
    layers: tuple[Layer, ...]
    modules: frozenset[str]  # every module path in the model (to read engine node names)


def _layer_kind(name: str, module: nn.Module) -> str:
    from effnet.models.nets.layers import SqueezeExcite

    if isinstance(module, SqueezeExcite):
        return "SE"
    conv = module.conv
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise"
    if name.split(".")[0] in ("stem", "head"):
        return "stem/head"
    return "conv 1x1" if conv.kernel_size == (1, 1) else "conv kxk"


def layer_roots(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of each conv layer (ConvBNAct: conv + activation) and squeeze-excitation, in model order."""
    from effnet.models.nets.layers import ConvBNAct, SqueezeExcite

    roots: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, (ConvBNAct, SqueezeExcite)) and not any(name.startswith(r + ".") for r, _ in roots):
            roots.append((name, module))
    return roots


def _elementwise_flops(module: nn.Module, n_in: int, n_out: int) -> int:
    """One FLOP per element per cheap elementwise op (module docstring): the SE's pool adds and gate multiplies;
    a conv layer's ReLU6 (a SiLU or sigmoid is counted by :func:`_transcendentals` instead)."""
    from effnet.models.nets.layers import SqueezeExcite, is_silu

    if isinstance(module, SqueezeExcite):
        return 2 * n_in + (0 if is_silu(module.act) else module.reduce.out_channels)
    act = getattr(module, "act", nn.Identity())
    return n_out if not isinstance(act, nn.Identity) and not is_silu(act) else 0


def _transcendentals(module: nn.Module, n_out: int) -> int:
    """Elements through a SiLU or a sigmoid: a conv layer's SiLU output; the SE's SiLU on its reduced vector and
    the sigmoid on its expanded one."""
    from effnet.models.nets.layers import SqueezeExcite, is_silu

    if isinstance(module, SqueezeExcite):
        return (module.reduce.out_channels if is_silu(module.act) else 0) + module.expand.out_channels
    return n_out if is_silu(getattr(module, "act", nn.Identity())) else 0


def _trace_batch1(model: nn.Module, paths: list[str], resolution: int) -> tuple[dict, dict]:
    """One image through ``model``: {path: (input elements, output elements)} of those modules, and
    FlopCounterMode's FLOPs per module path (its keys without the root's class name)."""
    from torch.utils.flop_counter import FlopCounterMode

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda _m, inputs, output, p=p: sizes.__setitem__(p, (inputs[0].numel(), output.numel()))) for p in paths]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(torch.zeros(1, model.config.in_chans, resolution, resolution))
    finally:
        for h in hooks:
            h.remove()
    root = type(model).__name__ + "."
    flops = {k.removeprefix(root): sum(v.values()) for k, v in counter.get_flop_counts().items()}
    return sizes, flops


def count_layers(model: nn.Module, name: str | None = None) -> Network:
    """Each layer's FLOPs, activations and weights per image, on ``model``'s inference copy (BN folded)."""
    from effnet.deploy import optimize

    model = optimize(model.eval(), channels_last=False)
    resolution = model.config.resolution
    roots = layer_roots(model)
    tail = [p for p in ("pool", "classifier") if isinstance(getattr(model, p, None), nn.Module)]
    sizes, flops = _trace_batch1(model, [p for p, _ in roots] + tail, resolution)
    takes_residual = {}  # root path -> its block, for the last layer of each block with a residual add
    for block, module in model.named_modules():
        inside = [p for p, _ in roots if p.startswith(block + ".")]
        if getattr(module, "has_residual", False) and inside:
            takes_residual[inside[-1]] = block
    layers = []
    for path, module in roots:
        n_in, n_out = sizes[path]
        block = takes_residual.get(path)
        add = n_out if block else 0  # the residual add: one more input read, one add per element
        layers.append(Layer(path, _layer_kind(path, module), (path, block) if block else (path,),
                            flops.get(path, 0) + _elementwise_flops(module, n_in, n_out) + add,
                            n_in + n_out + add, sum(p.numel() for p in module.parameters()),
                            _transcendentals(module, n_out)))
    if tail == ["pool", "classifier"]:  # the final pooling (one add per element) + the classifier's product
        pooled, logits = sizes["pool"][0], sizes["classifier"][1]
        layers.append(Layer("classifier", "stem/head", ("pool", "classifier"), pooled + flops.get("classifier", 0),
                            pooled + logits, sum(p.numel() for p in model.classifier.parameters())))
    known = frozenset(p for p, _ in model.named_modules() if p)
    return Network(name or model.config.name, resolution, tuple(layers), known)


# ------------------------------------------------------------------------------------ engine nodes -> layers

def _known_prefix(path: str, known: frozenset[str]) -> str | None:
    while path and path not in known:
        path = path.rpartition(".")[0]
    return path or None


def module_path(node: str, known: frozenset[str]) -> str | None:
    """The module path an engine node's name carries, or None (a reorder, the input's conversion, a flatten, ...).

    OpenVINO (converted from torch): ``__module.blocks.1.0.dw.conv/aten::_convolution/GroupConvolution``;
    ONNX Runtime (the ONNX exporter's scopes): ``/blocks.1/blocks.1.0/dw/conv/Conv_output_0_nchwc``, or
    ``stem.conv.bias_DequantizeLinear``; torch ranges here: the path itself.
    """
    path = None
    for part in node.split("/"):
        part = part.removeprefix("__module.")
        if not part:
            continue
        full = part if path is None or part.startswith(path + ".") else f"{path}.{part}"
        found = _known_prefix(full, known)
        if found is None or found == path:
            break
        path = found
    return path


def layer_of(node: str, node_type: str, network: Network, index: dict[str, str]) -> str | None:
    """The layer an engine node belongs to (``index``: module path -> layer name), None for "other"."""
    if node_type in LAYOUT_TYPES:
        return None
    path = module_path(node, network.modules)
    while path:
        if path in index:
            return index[path]
        path = path.rpartition(".")[0]
    return None


# ------------------------------------------------------------------------------------- per-node times per engine

@dataclass(frozen=True)
class Engine:
    label: str
    precision: str  # the bytes and the roof its layers are held to
    runtime: str  # "openvino", "onnxruntime" or "torch"
    file: str | None = None  # in the workdir, as bench_infer.build_engines writes it
    builder: str | None = None  # the build_engines engine whose build writes ``file``


ENGINES = (
    Engine("openvino fp32", "fp32", "openvino", "effnet_ov.xml", "effnet openvino fp32"),
    Engine("openvino bf16", "bf16", "openvino", "effnet_ov.xml", "effnet openvino fp32"),
    Engine("openvino int8", "int8", "openvino", "effnet_ov_int8.xml", "effnet openvino int8"),
    Engine("onnxruntime fp32", "fp32", "onnxruntime", "effnet.onnx", "effnet onnxruntime fp32"),
    Engine("onnxruntime int8", "int8", "onnxruntime", "effnet_int8.onnx", "effnet onnxruntime int8"),
    Engine("torch eager fp32", "fp32", "torch"),
)


@dataclass(frozen=True)
class Profile:
    nodes: dict  # node name -> median µs per call
    types: dict  # node name -> node type (op)
    wall_us: float  # median µs per call, profiler on


def _medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}


def openvino_request(xml: Path, precision: str, batch: int, threads: int, counters: bool = False):
    """(infer request, input): the IR compiled for a static ``batch`` on one latency stream
    (``effnet.deploy.openvino.cpu_config``; an int8 IR runs with the fp32 hint, as effnet's Runner runs it), one
    warm-up call done (weights repacked, memory allocated); ``counters``: OpenVINO's per-node PERF_COUNT on."""
    import openvino as ov

    from effnet.deploy import openvino as ovino

    core = ov.Core()
    model = core.read_model(str(xml))
    shape = model.input(0).get_partial_shape()
    shape[0] = batch
    model.reshape({model.input(0): shape})
    config = {**ovino.cpu_config("bf16" if precision == "bf16" else "fp32", threads), "PERF_COUNT": counters}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(0).standard_normal([batch, *list(shape.to_shape())[1:]], dtype=np.float32)
    request.infer({0: x})
    return request, x


def openvino_profile(xml: Path, precision: str, batch: int, threads: int, reps: int) -> Profile:
    """OpenVINO's per-node performance counters on :func:`openvino_request`'s compiled IR."""
    request, x = openvino_request(xml, precision, batch, threads, counters=True)
    times, types, walls = collections.defaultdict(list), {}, []
    for _ in range(reps):
        t = time.perf_counter()
        request.infer({0: x})
        walls.append((time.perf_counter() - t) * 1e6)
        for info in request.profiling_info:
            times[info.node_name].append(info.real_time.total_seconds() * 1e6)
            types[info.node_name] = info.node_type
    return Profile(_medians(times), types, statistics.median(walls))


def ort_profile(onnx: Path, batch: int, threads: int, reps: int, workdir: Path) -> Profile:
    """ONNX Runtime's profiler: each node's kernel time (after its graph optimizations and layout changes)."""
    import onnxruntime as ort

    opts = ort_options(threads, str(workdir / "roofline_ort_profile"))
    session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
        [batch, *session.get_inputs()[0].shape[1:]], dtype=np.float32)}
    session.run(None, feed)  # warm-up (its events are dropped below)
    walls = []
    for _ in range(reps):
        t = time.perf_counter()
        session.run(None, feed)
        walls.append((time.perf_counter() - t) * 1e6)
    trace = Path(session.end_profiling())
    times, types = collections.defaultdict(list), {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            times[name].append(event["dur"])
            types[name] = event["args"].get("op_name", "")
    trace.unlink()
    return Profile(_medians({n: ts[1:] or ts for n, ts in times.items()}), types, statistics.median(walls))


def _self_times(totals: dict[str, float]) -> dict[str, float]:
    """Nested ranges' totals -> each range's own time (less the ranges directly inside it), never below 0."""
    own = dict(totals)
    for name, total in totals.items():
        parents = [p for p in totals if p != name and (p == "forward" or name.startswith(p + "."))]
        if parents:
            parent = max(parents, key=lambda p: (p != "forward", len(p)))
            own[parent] -= total
    return {name: max(t, 0.0) for name, t in own.items()}


def torch_profile(model: nn.Module, network: Network, batch: int, threads: int, reps: int) -> Profile:
    """torch.profiler on the eager fp32 inference copy (BN folded, channels_last): module hooks open and close a
    ``record_function`` range per layer module; "forward" holds the rest (Python glue, flatten -> "other")."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from effnet.deploy import optimize

    m = optimize(model.eval())
    paths = sorted({p for layer in network.layers for p in layer.modules})
    wanted, active, hooks = set(paths), {}, []
    for path in paths:
        def enter(_m, _i, p=path):
            active[p] = record_function(p)
            active[p].__enter__()

        def leave(_m, _i, _o, p=path):
            active.pop(p).__exit__(None, None, None)

        module = m.get_submodule(path)
        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    x = torch.randn(batch, m.config.in_chans, network.resolution, network.resolution)
    x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            m(x)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(reps):
                    with record_function("forward"):
                        m(x)
    finally:
        for h in hooks:
            h.remove()
    times = collections.defaultdict(list)
    for event in prof.events():
        if event.name == "forward" or event.name in wanted:
            times[event.name].append(event.cpu_time_total)
    medians = _medians(times)
    return Profile(_self_times(medians), {n: "module" for n in medians}, medians["forward"])


# ------------------------------------------------------------------------- what the SiLU costs in OpenVINO

def silu_elements(model: nn.Module) -> int:
    """Elements per image through the model's SiLUs (a hook on each; one image at the model's resolution)."""
    from effnet.models.nets.layers import is_silu

    seen = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.__setitem__(0, seen[0] + out.numel()))
             for m in model.modules() if is_silu(m)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.config.in_chans, model.config.resolution, model.config.resolution))
    finally:
        for h in hooks:
            h.remove()
    return seen[0]


def relu6_twin_files(model: nn.Module, workdir: Path, precisions=("fp32", "int8")) -> dict[str, Path]:
    """The same network with every SiLU a ReLU6 (the Lite models' activation, a clamp OpenVINO fuses into the
    conv for next to nothing), exported as effnet exports the real one: fp32 IR and NNCF int8 IR, both calibrated
    on the same photos. Not a model to run (random weights, another activation): a counterfactual for timing."""
    import effnet
    from benchmarks.bench_infer import calibration_photos
    from effnet.deploy import export_model

    twin = effnet.create_model(model.config.replace(activation="relu6")).eval()
    files = {p: workdir / f"effnet_ov_relu6{'_int8' if p == 'int8' else ''}.xml" for p in precisions}
    for precision, path in files.items():
        if not path.exists():
            print(f"exporting the ReLU6 twin ({precision}) ...", flush=True)
            export_model(twin, path, "openvino", batch="dynamic", int8=precision == "int8",
                         calibration=str(calibration_photos(workdir)) if precision == "int8" else None)
    return files


def _latency_call(xml: Path, precision: str, batch: int, threads: int):
    """One OpenVINO call on ``xml`` compiled as :func:`openvino_profile` compiles it, without the counters."""
    request, x = openvino_request(xml, precision, batch, threads)
    return lambda: request.infer({0: x})


def _twin_precision(engine: Engine) -> str:
    """The twin IR an engine runs: int8's own, else the fp32 IR (bf16 is a compile hint on it)."""
    return "int8" if engine.precision == "int8" else "fp32"


def activation_check(model: nn.Module, engines: list[Engine], roofs: Roofs, batches: list[int], threads: int,
                     reps: int, workdir: Path) -> list[dict]:
    """Each OpenVINO engine's whole-network time on effnet's IR and on its ReLU6 twin, interleaved (median of
    ``reps``): the difference is what the SiLUs cost in that engine, set beside the activation roof's prediction
    (SiLU elements / the activation rate). The check that the bound's activation term is real."""
    ov_engines = [e for e in engines if e.runtime == "openvino"]
    twin = relu6_twin_files(model, workdir, {_twin_precision(e) for e in ov_engines})
    per_image = silu_elements(model)
    calls = {}
    for batch in batches:
        for engine in ov_engines:
            twin_file = twin[_twin_precision(engine)]
            calls[engine.label, batch] = (_latency_call(workdir / engine.file, engine.precision, batch, threads),
                                          _latency_call(twin_file, engine.precision, batch, threads))
    times = collections.defaultdict(lambda: ([], []))
    for _ in range(reps):
        for key, pair in calls.items():
            for i, call in enumerate(pair):
                t = time.perf_counter()
                call()
                times[key][i].append((time.perf_counter() - t) * 1e6)
    rows = []
    for (engine, batch), (silu, relu6) in times.items():
        silu_us, relu6_us = statistics.median(silu), statistics.median(relu6)
        predicted = per_image * batch / roofs.activation / 1e3
        cost = silu_us - relu6_us
        rows.append(dict(engine=engine, batch=batch, silu_us=silu_us, relu6_us=relu6_us, silu_cost_us=cost,
                         share=cost / silu_us, silu_elements=per_image * batch, predicted_us=predicted,
                         measured_over_predicted=cost / predicted))
    return rows


def print_activation_check(rows: list[dict]) -> None:
    print("\nwhat the SiLUs cost (effnet's IR against its ReLU6 twin, interleaved) beside the activation roof's "
          "prediction:")
    print(f"  {'engine':<16} {'batch':>5} {'SiLU ms':>8} {'ReLU6 ms':>9} {'SiLU cost ms':>12} {'share':>6} "
          f"{'predicted ms':>12} {'meas/pred':>9}")
    for r in rows:
        print(f"  {r['engine']:<16} {r['batch']:>5} {r['silu_us'] / 1e3:>8.2f} {r['relu6_us'] / 1e3:>9.2f} "
              f"{r['silu_cost_us'] / 1e3:>12.2f} {r['share']:>6.0%} {r['predicted_us'] / 1e3:>12.2f} "
              f"{r['measured_over_predicted']:>9.2f}")


# ------------------------------------------------------------------------------------------ layers against bounds

@dataclass(frozen=True)
class Row:
    layer: str
    kind: str
    flops: float
    bytes: float
    transcendentals: float
    bound_us: float
    measured_us: float

    @property
    def lost_us(self) -> float:
        return self.measured_us - self.bound_us


@dataclass(frozen=True)
class Run:
    engine: str
    precision: str
    batch: int
    wall_us: float  # one call, profiler on
    rows: tuple[Row, ...]
    other_us: float  # engine nodes that map to no layer
    other_nodes: tuple[tuple[str, str, float], ...]  # the largest of them: (name, type, µs)

    @property
    def measured_us(self) -> float:
        return sum(r.measured_us for r in self.rows) + self.other_us

    @property
    def bound_us(self) -> float:
        return sum(r.bound_us for r in self.rows)

    @property
    def fraction(self) -> float:
        """The whole network's fraction of its limit: sum of the layers' bounds / measured total."""
        return self.bound_us / self.measured_us

    def by_kind(self) -> dict[str, tuple[float, float]]:
        """kind -> (bound µs, measured µs); "other" holds the unmapped nodes."""
        kinds = collections.defaultdict(lambda: [0.0, 0.0])
        for r in self.rows:
            kinds[r.kind][0] += r.bound_us
            kinds[r.kind][1] += r.measured_us
        kinds["other"][1] += self.other_us
        return {k: tuple(kinds[k]) for k in KINDS if k in kinds}


def bound_us(layer: Layer, roofs: Roofs, precision: str, batch: int) -> float:
    """max(compute, bytes / bandwidth at the layer's working set), in µs. compute = FLOPs / the precision's matrix
    roof and SiLU/sigmoid elements / the activation roof, added where both issue on the same vector units (no
    AMX), the larger of the two where the matrix work runs on AMX tiles beside them."""
    nbytes = layer.bytes_at(batch, precision)
    matrix_s = layer.flops_at(batch) / roofs.matrix[precision] / 1e9
    activation_s = layer.transcendentals * batch / roofs.activation / 1e9 if roofs.activation else 0.0
    compute_s = matrix_s + activation_s if roofs.shared_units else max(matrix_s, activation_s)
    return max(compute_s, nbytes / roofs.bandwidth_at(nbytes) / 1e9) * 1e6


def network_bound_us(network: Network, roofs: Roofs, precision: str, batch: int) -> float:
    """The whole network's bound per image (µs): its layers' bounds summed, one layer at a time over ``batch``."""
    return sum(bound_us(layer, roofs, precision, batch) for layer in network.layers) / batch


def compare(engine: Engine, batch: int, profile: Profile, network: Network, roofs: Roofs) -> Run:
    """Each layer's measured time (its engine nodes summed) beside its bound; the rest as "other"."""
    index = {path: layer.name for layer in network.layers for path in layer.modules}
    per_layer, other = collections.Counter(), []
    for node, us in profile.nodes.items():
        layer = layer_of(node, profile.types.get(node, ""), network, index)
        if layer is None:
            other.append((node, profile.types.get(node, ""), us))
        else:
            per_layer[layer] += us
    rows = tuple(Row(layer.name, layer.kind, layer.flops_at(batch), layer.bytes_at(batch, engine.precision),
                     layer.transcendentals * batch,
                     bound_us(layer, roofs, engine.precision, batch), per_layer[layer.name])
                 for layer in network.layers)
    other.sort(key=lambda o: -o[2])
    return Run(engine.label, engine.precision, batch, profile.wall_us, rows, sum(o[2] for o in other),
               tuple(o for o in other[:12] if o[2] > 0))


def raised(roofs: Roofs, runs: list[Run]) -> Roofs:
    """The roofs raised to what a layer reached in an engine, where one did better: a roof some kernel beats is
    no limit (noise on a shared machine can slow every product measured; an engine's SiLU may beat torch's).
    First each matrix roof, to the layer's FLOPs / its time; then the activation roof, to the SiLU rate a layer
    implies once its matrix work is taken out at the raised roof (all its time, with AMX's separate units)."""
    matrix, sources, notes = dict(roofs.matrix), dict(roofs.sources), list(roofs.notes)
    for run in runs:
        for row in run.rows:
            rate = row.flops / row.measured_us / 1e3 if row.measured_us > 0 else 0.0
            if rate > matrix[run.precision]:
                matrix[run.precision] = rate
                sources[run.precision] = f"{run.engine} {row.layer} at batch {run.batch}"
    for precision, rate in matrix.items():
        if rate > roofs.matrix[precision]:
            notes.append(f"{precision} roof raised from {roofs.matrix[precision]:.0f} to {rate:.0f}: "
                         f"{sources[precision]} beat every matrix product measured")
    activation, activation_source = roofs.activation, roofs.activation_source
    for run in runs:
        for row in run.rows:
            left_us = row.measured_us - (row.flops / matrix[run.precision] / 1e3 if roofs.shared_units else 0.0)
            rate = row.transcendentals / left_us / 1e3 if row.transcendentals and left_us > 0 else 0.0
            if activation and rate > activation:
                activation, activation_source = rate, f"{run.engine} {row.layer} at batch {run.batch}"
    if activation != roofs.activation:
        notes.append(f"activation roof raised from {roofs.activation:.2f} to {activation:.2f} G/s: "
                     f"{activation_source} computed its SiLU faster than torch's")
    return dataclasses.replace(roofs, matrix=matrix, sources=sources, notes=tuple(notes), activation=activation,
                               activation_source=activation_source)


# ---------------------------------------------------------------------------------------------------- the report

def print_roofs(roofs: Roofs) -> None:
    curve = ", ".join(f"{s / 2**20:g} MiB {gbs:.0f}" for s, gbs in roofs.bandwidth)
    counts = " and ".join(map(str, roofs.copy_curves or {}))
    print(f"copy bandwidth (GB/s, read + write; on {counts} threads, the better) by working set: {curve}; "
          f"DRAM {roofs.dram:.1f} GB/s (torch dispatch {roofs.dispatch_us:.2f} µs/call subtracted)")
    for precision, gflops in roofs.matrix.items():
        products = ", ".join(f"{k} {v:.0f}" for k, v in roofs.products[precision].items())
        print(f"matrix roof {precision}: {gflops:.0f} G{'OP' if precision == 'int8' else 'FLOP'}/s "
              f"({roofs.sources[precision]}; measured: {products})")
    print(f"activation roof: {roofs.activation:.2f} G SiLU elements/s ({roofs.activation_source}); added to the "
          f"matrix work in each layer's compute bound" + ("" if roofs.shared_units else " only where larger (AMX)"))
    for note in roofs.notes:
        print(f"note: {note}")


def print_run(run: Run, top: int = 15) -> None:
    """The layers that lose the most time against their bound, the totals, and the totals per layer kind."""
    ms = lambda us: f"{us / 1e3:.2f}"
    print(f"\n{run.engine}, batch {run.batch}: {ms(run.measured_us)} ms per call by its profiler "
          f"({ms(run.wall_us)} ms wall, profiler on); sum of bounds {ms(run.bound_us)} ms: fraction "
          f"{run.fraction:.2f}; other (no layer) {run.other_us / run.measured_us:.0%}")
    print(f"  {'layer':<20} {'kind':<10} {'MFLOP':>8} {'KiB':>8} {'bound µs':>9} {'meas. µs':>9} {'meas/bound':>10}")
    for r in sorted(run.rows, key=lambda r: -r.lost_us)[:top]:
        print(f"  {r.layer:<20} {r.kind:<10} {r.flops / 1e6:>8.1f} {r.bytes / 1024:>8.0f} {r.bound_us:>9.0f} "
              f"{r.measured_us:>9.0f} {r.measured_us / r.bound_us:>10.1f}")
    print(f"  {'all ' + str(len(run.rows)) + ' layers':<20} {'':<10} {sum(r.flops for r in run.rows) / 1e6:>8.0f} "
          f"{sum(r.bytes for r in run.rows) / 1024:>8.0f} {run.bound_us:>9.0f} "
          f"{run.measured_us - run.other_us:>9.0f} {(run.measured_us - run.other_us) / run.bound_us:>10.1f}")
    print(f"  {'other':<20} {'':<10} {'':>8} {'':>8} {'':>9} {run.other_us:>9.0f}   "
          + ", ".join(f"{name[:40]} [{kind}] {us:.0f}" for name, kind, us in run.other_nodes[:3]))
    kinds = "; ".join(f"{kind} {ms(b)} / {ms(m)} ms ({m / run.measured_us:.0%} of the time)"
                      for kind, (b, m) in run.by_kind().items())
    print(f"  by kind, bound / measured: {kinds}")


def report_json(runs: list[Run], network: Network, roofs: Roofs, settings: dict, activation: list[dict]) -> dict:
    from effnet.cpu import machine

    def run_dict(run: Run) -> dict:
        return dict(engine=run.engine, precision=run.precision, batch=run.batch, wall_us=run.wall_us,
                    measured_us=run.measured_us, bound_us=run.bound_us, fraction=run.fraction,
                    other_us=run.other_us, other_nodes=[dict(name=n, type=t, us=us) for n, t, us in run.other_nodes],
                    by_kind={k: dict(bound_us=b, measured_us=m) for k, (b, m) in run.by_kind().items()},
                    layers=[asdict(r) for r in run.rows])

    return dict(machine=machine(), model=network.name, resolution=network.resolution, **settings,
                roofs=dict(bandwidth=[dict(working_set_bytes=s, gb_per_s=g) for s, g in roofs.bandwidth],
                           dram_gb_per_s=roofs.dram, matrix_gflops=roofs.matrix, sources=roofs.sources,
                           matrix_products_gflops=roofs.products,
                           copy_by_threads={n: [dict(working_set_bytes=s, gb_per_s=g) for s, g in curve]
                                            for n, curve in (roofs.copy_curves or {}).items()},
                           dispatch_us=roofs.dispatch_us, notes=list(roofs.notes),
                           activation_gelems_per_s=roofs.activation, activation_source=roofs.activation_source,
                           matrix_and_activation_share_units=roofs.shared_units),
                layers=[asdict(layer) for layer in network.layers], runs=[run_dict(r) for r in runs],
                activation_check=activation, method=__doc__)


KIND_COLOURS = dict(zip(KINDS, ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:gray")))
PRECISION_STYLES = {"fp32": "-", "bf16": "--", "int8": ":"}
ENGINE_MARKERS = dict(zip((e.label for e in ENGINES), "os^vDx"))


def _roofline_panel(ax, runs: list[Run], roofs: Roofs) -> None:
    """log-log arithmetic intensity vs achieved GFLOP/s: the roofs (DRAM slope, and the fastest cache's dotted),
    one point per layer per engine, coloured by layer kind."""
    x = np.logspace(-1, 3, 200)
    fastest = max(g for _, g in roofs.bandwidth)
    for precision, peak in roofs.matrix.items():
        style = PRECISION_STYLES[precision]
        ax.plot(x, np.minimum(peak, x * roofs.dram), "k" + style, lw=1.2, label=f"{precision} roof {peak:.0f}")
        ax.plot(x, np.minimum(peak, x * fastest), "k" + style, lw=0.6, alpha=0.4)
    for run in runs:
        rows = [r for r in run.rows if r.measured_us > 0]
        ax.scatter([r.flops / r.bytes for r in rows], [r.flops / r.measured_us / 1e3 for r in rows], s=14,
                   c=[KIND_COLOURS[r.kind] for r in rows], marker=ENGINE_MARKERS.get(run.engine, "o"), alpha=0.7,
                   linewidths=0.5)
    for engine, marker in ENGINE_MARKERS.items():
        if any(r.engine == engine for r in runs):
            ax.scatter([], [], marker=marker, c="k", label=engine)
    for kind, colour in KIND_COLOURS.items():
        if kind != "other" and any(r.kind == kind for run in runs for r in run.rows):
            ax.scatter([], [], marker="o", c=colour, label=kind)
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP / byte at the engine's precision)",
           ylabel="achieved GFLOP/s (int8: GOP/s)", title=f"batch {runs[0].batch}: roofline "
           f"(DRAM {roofs.dram:.0f} GB/s solid, caches {fastest:.0f} GB/s faint)")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)


def _along_network_panel(ax, runs: list[Run]) -> None:
    """Measured time per layer along the network for each engine, and the bound per precision (dashed)."""
    names = [r.layer for r in runs[0].rows]
    for i, run in enumerate(runs):
        ax.plot([r.measured_us for r in run.rows], color=f"C{i}", lw=1, label=f"{run.engine} ({run.fraction:.2f})")
    for precision in dict.fromkeys(run.precision for run in runs):
        run = next(r for r in runs if r.precision == precision)
        ax.plot([r.bound_us for r in run.rows], "k" + PRECISION_STYLES[precision], lw=1.2,
                label=f"bound {precision}")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
    ax.set(yscale="log", ylabel="µs per call", title=f"batch {runs[0].batch}: measured vs bound per layer "
           "(legend: whole-network fraction)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.2)


def plot(runs: list[Run], roofs: Roofs, network: Network, threads: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from effnet.cpu import machine

    batches = sorted({r.batch for r in runs}, reverse=True)
    fig, axes = plt.subplots(len(batches), 2, figsize=(20, 7.5 * len(batches)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6]})
    for row, batch in zip(axes, batches):
        same = [r for r in runs if r.batch == batch]
        _roofline_panel(row[0], same, roofs)
        _along_network_panel(row[1], same)
    cpu = machine()
    fig.suptitle(f"{network.name} {network.resolution} px, {threads} threads -- {cpu['cpu']}, {cpu['cores']} cores, "
                 f"flags {' '.join(cpu['flags']) or 'none'}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- the command

def chosen_engines(keep: str | None) -> list[Engine]:
    """ENGINES, those whose label contains one of ``keep``'s comma-separated substrings; bf16 only where the CPU
    runs it natively (else OpenVINO would emulate it)."""
    from effnet.deploy import openvino as ovino

    engines = [e for e in ENGINES if keep is None or any(k in e.label for k in keep.split(","))]
    if any(e.precision == "bf16" for e in engines) and not ovino.cpu_has_bf16():
        print("openvino bf16 left out: this CPU has no native bf16")
        engines = [e for e in engines if e.precision != "bf16"]
    return engines


def build_files(model_name: str, resolution: int, workdir: Path, engines: list[Engine]) -> None:
    """effnet's exports (``effnet.deploy.export_model``, int8 calibrated on real photos) through bench_infer's
    ``build_engines``, which writes each file into ``workdir`` unless it is there."""
    from benchmarks.bench_infer import build_engines

    for builder in dict.fromkeys(e.builder for e in engines if e.builder):
        if not (workdir / next(e.file for e in engines if e.builder == builder)).exists():
            print(f"exporting for {builder} ...", flush=True)
            build_engines(model_name, resolution, workdir, only=builder)


def profile_engine(engine: Engine, model: nn.Module, network: Network, batch: int, threads: int, reps: int,
                   workdir: Path) -> Profile:
    if engine.runtime == "openvino":
        return openvino_profile(workdir / engine.file, engine.precision, batch, threads, reps)
    if engine.runtime == "onnxruntime":
        return ort_profile(workdir / engine.file, batch, threads, reps, workdir)
    return torch_profile(model, network, batch, threads, reps)


def profiled_runs(engines: list[Engine], model: nn.Module, network: Network, batches: list[int], threads: int,
                  reps: int, workdir: Path, roofs: Roofs) -> tuple[Roofs, list[Run]]:
    """Each engine profiled at each batch; the roofs raised to what its layers reached (:func:`raised`, each raise
    printed), and each run against the raised roofs."""
    profiles = [(engine, batch, profile_engine(engine, model, network, batch, threads, reps, workdir))
                for batch in batches for engine in engines]
    up = raised(roofs, [compare(e, b, p, network, roofs) for e, b, p in profiles])
    for note in up.notes[len(roofs.notes):]:
        print(f"note: {note}")
    return up, [compare(e, b, p, network, up) for e, b, p in profiles]


def network_bounds(network: Network, roofs: Roofs, batches: list[int]) -> dict[tuple[str, int], float]:
    """(precision, batch) -> the network's bound per image (µs) at every precision with a matrix roof."""
    return {(p, b): network_bound_us(network, roofs, p, b) for p in roofs.matrix for b in batches}


def main(args) -> None:
    """``bench_infer.py --roofline``: args.model, batches, threads, reps, engines, roofline_json / _png / _workdir."""
    import effnet

    load_at_start = os.getloadavg()
    model = effnet.create_model(args.model).eval()
    network = count_layers(model, args.model)
    workdir = Path(args.roofline_workdir or tempfile.mkdtemp(prefix="effnet-roofline-"))
    engines = chosen_engines(args.engines)
    build_files(args.model, network.resolution, workdir, engines)
    t = time.perf_counter()
    roofs = measure_roofs(args.threads)
    print(f"{args.model} @ {network.resolution} px, {args.threads} threads, {len(network.layers)} layers; "
          f"roofs measured in {time.perf_counter() - t:.1f} s")
    print_roofs(roofs)
    batches = [int(b) for b in args.batches.split(",")]
    roofs, runs = profiled_runs(engines, model, network, batches, args.threads, args.reps, workdir, roofs)
    for run in runs:
        print_run(run)
    # after the raises only the memory term can be beaten: then the copy curve was measured low (a disturbed run)
    beaten = [f"{run.engine} batch {run.batch} {r.layer} {r.measured_us:.0f} < {r.bound_us:.0f} µs" for run in runs
              for r in run.rows if 0 < r.measured_us < r.bound_us]
    if beaten:
        print(f"\nwarning: {len(beaten)} layers ran faster than their bound (the bandwidth was measured low: "
              f"rerun on quiet cores): {'; '.join(beaten[:5])}")
    fractions = ", ".join(f"{r.engine} b{r.batch} {r.fraction:.2f}" for r in runs)
    print(f"\nwhole-network fraction (sum of bounds / measured): {fractions}")
    activation = activation_check(model, engines, roofs, batches, args.threads, args.reps, workdir)
    print_activation_check(activation)
    suffix = args.model.replace("/", "_")
    out_json = Path(args.roofline_json or ROOT / "benchmarks" / "results" / f"roofline_{suffix}.json")
    out_png = Path(args.roofline_png or out_json.with_suffix(".png"))
    settings = dict(threads=args.threads, reps=args.reps, batches=args.batches, workdir=str(workdir),
                    load_at_start=load_at_start, faster_than_bound=beaten)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report_json(runs, network, roofs, settings, activation), indent=1))
    plot(runs, roofs, network, args.threads, out_png)
    print(f"wrote {out_json} and {out_png}")
