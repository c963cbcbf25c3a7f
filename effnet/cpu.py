"""What CPU this program runs on: its model name (printed beside every number we measure) and the instruction-set
features choices depend on, read from the operating system when the program runs -- never assumed from the machine
a number was measured on. Linux's /proc/cpuinfo; elsewhere the name from ``platform`` and no flags."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough: every core of a machine has the same features
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


FLAGS_ENV = "EFFNET_CPU_FLAGS"  # decide as if on a CPU with these flags (comma- or space-separated): tests, fleets


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports (``avx2``, ``avx512_vnni``, ``amx_bf16``, ...), or those
    ``$EFFNET_CPU_FLAGS`` names: every choice made by CPU features then follows that CPU instead (an export made for
    another kind of machine, or a test of the other path)."""
    faked = os.environ.get(FLAGS_ENV)
    if faked is not None:
        return frozenset(faked.replace(",", " ").split())
    return frozenset(_cpuinfo().get("flags", "").split())


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 / AMX): then bf16 autocast trains ~1.3x faster."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def physical_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity (a container's or ``taskset``'s limit),
    hyperthread siblings counted once -- two siblings share one core's vector units, so engines run one thread per
    physical core (OpenVINO's and ONNX Runtime's own default). From /proc/cpuinfo's (physical id, core id) pairs;
    elsewhere the affinity's count."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores, cpu, package = set(), None, "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    package = value
                elif key == "core id" and cpu in allowed:
                    cores.add((package, value))
    except (OSError, ValueError):  # unreadable or unexpected: the affinity's count, never a partial one
        return len(allowed)
    return len(cores) or len(allowed)


# the flags that decide engines, int8 schemes and bf16 (what a reader of a number needs to know of its machine)
DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def deciding_flags() -> list[str]:
    """Those of :data:`DECIDING_FLAGS` this CPU has (or ``$EFFNET_CPU_FLAGS`` names), sorted."""
    return sorted(set(DECIDING_FLAGS) & cpu_flags())


def machine() -> dict:
    """This machine as every benchmark records it beside its numbers: CPU model, cores, the deciding flags, load."""
    return dict(cpu=cpu_name(), cores=os.cpu_count(), flags=deciding_flags(),
                load=os.getloadavg() if hasattr(os, "getloadavg") else None)


# the flags with int8 dot products that add u8 x s8 products straight into 32-bit sums (VNNI: vpdpbusd; AMX tiles)
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class Int8Scheme:
    """How int8 weights are stored for the CPU an export is made on (recorded in the export's config).

    Without VNNI (AVX2 only) x86 int8 convolutions multiply u8 x s8 pairs with VPMADDUBSW, which adds each pair into
    a *saturating* 16-bit sum: ONNX Runtime's int8 weights (U8S8) and OpenVINO's full 8-bit weights overflow there.
    Measured on such a CPU (pretrained Lite0, 48 photo views, top-1 agreement with fp32 where fp32 is confident):
    ONNX Runtime U8S8 0.70, U8U8 0.96; OpenVINO with NNCF's default 0.74, with 7-bit weights in every layer 1.0.
    With VNNI or AMX the products go straight into 32-bit sums: nothing saturates, so the full 8-bit signed
    weights ONNX Runtime and NNCF default to keep their precision (and ONNX Runtime's U8S8 kernels are its fast
    path there: 1.13-1.15x U8U8 on timm's B0, measured on an AVX-512 VNNI + AMX Xeon)."""

    name: str  # "u8s8" (signed 8-bit weights) or "u8u8" (unsigned weights, 7-bit in OpenVINO)
    onnx_signed_weights: bool  # ONNX Runtime: QInt8 weights (else QUInt8)
    openvino_seven_bit: bool  # NNCF's overflow fix in every layer: 7-bit weights
    reason: str


def int8_scheme(flags: frozenset[str] | None = None) -> Int8Scheme:
    """The int8 scheme for a CPU with ``flags`` (default: this one's, :func:`cpu_flags`)."""
    found = sorted((cpu_flags() if flags is None else flags) & INT8_DOT_FLAGS)
    if found:
        return Int8Scheme("u8s8", True, False, f"{', '.join(found)}: 32-bit int8 dot products, signed 8-bit weights")
    return Int8Scheme("u8u8", False, True, "no VNNI/AMX: 16-bit saturating int8 products, unsigned (ONNX Runtime) "
                                            "or 7-bit (OpenVINO) weights")
