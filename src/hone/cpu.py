"""What this CPU's INT8 kernels can do, read from its feature flags (not guessed from its name).

One fact matters to quantization: on x86 CPUs without a VNNI instruction (``avx512_vnni``,
``avx_vnni`` or AMX), onnxruntime's u8 x s8 kernels multiply with ``vpmaddubsw``, which adds two
u8*s8 products into a *saturating* int16: 255 * 127 * 2 exceeds 32767, so layers with large
activations and weights near the ends of their range lose their sums (onnxruntime's
quantization docs; its remedy is ``reduce_range``, 7-bit weights). On efficientnet_lite0's 96
held-out crops (benchmarks/efficientnet.py), static INT8 agreed with float on 0.990 of top-1
answers on this project's earlier machines (which showed avx512_vnni), and on 0.885 on an AMD
EPYC with AVX2 and no VNNI, where 7-bit weights gave 0.958.

ARM and other CPUs are reported as not saturating: their int8 dot products (``sdot``/``udot``,
or widening multiplies) accumulate in 32 bits.
"""

from __future__ import annotations

import platform
from functools import cache

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@cache
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_saturates(flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """Whether onnxruntime's u8s8 kernels may saturate here: an x86 CPU whose flags are known and
    show AVX2 or AVX-512 but no VNNI. Unknown flags (no /proc/cpuinfo) count as not saturating,
    since the accuracy gate judges every candidate on this machine anyway."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine not in _X86 or not flags:
        return False
    return bool(flags & {"avx2", "avx512bw"}) and not flags & VNNI_FLAGS


SATURATION_NOTE = (
    "this CPU has no VNNI (its flags show AVX2 without avx512_vnni/avx_vnni), so onnxruntime's "
    "u8s8 kernels add products in saturating int16: candidates with u8u8 kernels "
    "(session.x64quantprecision, recorded in the model) and with 7-bit weights were tried too"
)
