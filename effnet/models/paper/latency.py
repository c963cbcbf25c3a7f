"""The paper's Table 4 protocol on this CPU: batch 1, one thread, warm-up, then 20 runs, median.

Each pair (an EfficientNet and the ConvNet the paper sets against it, ``peers.LATENCY_PAIRS``) runs in the same
engine, interleaved run by run so that a busy neighbour slows both alike: PyTorch eager, and OpenVINO fp32
(the fastest fp32 engine effnet has on a CPU, ``openvino.py``). Weights are random: latency depends
on the shapes, not the values.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ...cpu import cpu_name
from .peers import LATENCY_PAIRS, TABLE4, LatencyClaim

RUNS = 20  # section 5.2: "average latency over 20 runs"; the median of 20 here, robust to a busy shared machine
WARMUP = 3
ENGINES = ("torch", "openvino")


@dataclass(frozen=True)
class PairTiming:
    claim: LatencyClaim
    engine: str
    effnet_ms: float
    peer_ms: float

    @property
    def speedup(self) -> float:
        return self.peer_ms / self.effnet_ms


def _models(claim: LatencyClaim) -> list[tuple[nn.Module, int]]:
    """(model, resolution) of the EfficientNet (its native resolution) and of the peer (224 px)."""
    import torchvision.models as tvm

    from ..zoo.registry import create_model
    from ...deploy.optimize import to_plain_ops

    ours = to_plain_ops(create_model(claim.effnet)).eval()  # plain ops: OpenVINO traces it
    return [(ours, ours.config.resolution), (getattr(tvm, claim.peer)().eval(), 224)]


def _runner(engine: str, model: nn.Module, x: torch.Tensor):
    if engine == "torch":
        def run():
            with torch.inference_mode():
                model(x)
        return run
    from ...deploy.openvino import compile_ir, convert

    compiled = compile_ir(convert(model, x, dynamic_batch=False), "fp32", threads=1)
    data = x.numpy()
    return lambda: compiled(data)


def time_pair(claim: LatencyClaim, engine: str, runs: int = RUNS, warmup: int = WARMUP) -> PairTiming:
    """Median ms per batch-1 call of both models in ``engine`` on one thread, the runs interleaved."""
    runners = [_runner(engine, m, torch.randn(1, 3, r, r)) for m, r in _models(claim)]
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for i, run in enumerate(runners):
            t = time.perf_counter()
            run()
            times[i].append(time.perf_counter() - t)
    ours, peer = (1000 * statistics.median(t) for t in times)
    return PairTiming(claim, engine, ours, peer)


def table4(engines: tuple[str, ...] = ENGINES, runs: int = RUNS, progress: bool = True) -> list[PairTiming]:
    """Every pair of ``LATENCY_PAIRS`` in every engine, on one thread (restored afterwards)."""
    jobs = [(c, e) for c in LATENCY_PAIRS for e in engines]
    if progress:
        from .accounting import progress_bar

        jobs = progress_bar(jobs, "timing", unit="pair")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [time_pair(c, e, runs) for c, e in jobs]
    finally:
        torch.set_num_threads(threads)


def format_table4(timings: list[PairTiming], runs: int = RUNS) -> str:
    lines = [f"Table 4 protocol on {cpu_name()}: batch 1, 1 thread, {WARMUP} warm-up + {runs} runs, median; "
             "each pair interleaved in one engine",
             f"{'engine':<9} {'EfficientNet':<16} {'ms':>8}   {'vs':<11} {'ms':>8}  {'speedup':>7}   paper"]
    for t in timings:
        c = t.claim
        paper = (f"{c.paper_speedup:.1f}x ({c.paper_effnet_s:g} s vs {c.paper_peer_s:g} s, Xeon E5-2690, 1 core)"
                 if c.paper_speedup else c.why)
        lines.append(f"{t.engine:<9} {c.effnet:<16} {t.effnet_ms:>8.1f}   {c.peer_label:<11} {t.peer_ms:>8.1f}  "
                     f"{t.speedup:>6.2f}x   {paper}")
    lines.append(f"(paper: {TABLE4}; speedup = peer ms / EfficientNet ms; random weights, native resolutions: "
                 "B1 240 px, B4 380 px, ResNets 224 px)")
    return "\n".join(lines)
