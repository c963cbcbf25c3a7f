"""What CPU this program runs on: its model name (printed beside every number we measure) and the instruction-set
features choices depend on, read from the operating system when the program runs -- never assumed from the machine
a number was measured on. Linux's /proc/cpuinfo; elsewhere the name from ``platform`` and no flags."""

from __future__ import annotations

import functools
import platform


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


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports (``avx2``, ``avx512_vnni``, ``amx_bf16``, ...)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 / AMX): then bf16 autocast trains ~1.3x faster."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


# the flags that decide engines, int8 schemes and bf16 (what a reader of a number needs to know of its machine)
DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> dict:
    """This machine as every benchmark records it beside its numbers: CPU model, cores, the deciding flags, load."""
    import os

    return dict(cpu=cpu_name(), cores=os.cpu_count(), flags=sorted(set(DECIDING_FLAGS) & cpu_flags()),
                load=os.getloadavg() if hasattr(os, "getloadavg") else None)
