"""hone.cpu: whether onnxruntime's u8s8 kernels saturate here, read from the CPU's flags."""

from __future__ import annotations

import pytest

from hone.cpu import cpu_flags, int8_saturates

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.mark.parametrize(("flags", "machine", "saturates"), [
    (AVX2, "x86_64", True),  # AMD EPYC (Zen 2/3) or Intel before Cascade Lake: vpmaddubsw into int16
    (AVX2 | {"avx512f", "avx512bw"}, "x86_64", True),  # Skylake-SP: AVX-512 but no VNNI
    (AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}, "x86_64", False),
    (AVX2 | {"avx_vnni"}, "AMD64", False),  # Alder Lake's AVX-VNNI
    (frozenset({"fp", "asimd", "asimddp"}), "aarch64", False),  # ARM dot products accumulate in 32 bits
    (frozenset(), "x86_64", False),  # no /proc/cpuinfo: unknown, and the gate judges anyway
    (frozenset({"sse4_2"}), "x86_64", False),  # no AVX2: onnxruntime's SSE path widens to 32 bits
])
def test_int8_saturation_follows_the_vnni_flags(flags: frozenset[str], machine: str, saturates: bool) -> None:
    assert int8_saturates(flags, machine) is saturates


def test_cpu_flags_are_read_from_this_machine() -> None:
    flags = cpu_flags()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        assert flags == frozenset()
        return
    assert flags and all(flag in text for flag in flags)
