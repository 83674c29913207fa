"""benchmarks/kernels.py runs end to end on the CPU (Triton's interpreter, tiny sizes): every kernel
checked against torch, every table row written. Its rates mean nothing here; the GPU run does.
benchmarks/wgsl_kernels.py runs on whatever WebGPU adapter is found (lavapipe here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_kernel_benchmark_runs_and_checks_every_kernel_in_the_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"].startswith("interpreter smoke")
    systems = {(row["system"], row["dtype"]) for row in result["matmul"]}
    for variant in ("torch.matmul", "hone naive", "hone tiled", "hone tensorcore"):
        assert {(variant, "fp32"), (variant, "fp16")} <= systems
    kernels = {(row["kernel"], row["dtype"]) for row in result["fused"]}
    assert ("batchnorm_relu nhwc", "float16") in kernels and ("bias_act_scale", "float32") in kernels
    rows = result["matmul"] + result["fused"]
    assert all(row["correct"] for row in rows), [row for row in rows if not row["correct"]]
    assert all(row.get("ms", row.get("fused_ms", 0)) > 0 for row in rows)


def test_the_wgsl_benchmark_checks_each_kernel_against_numpy_and_names_the_adapter(tmp_path: Path) -> None:
    out = tmp_path / "wgsl.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wgsl_kernels.py"), "--sizes", "17,40", "--repeats", "1",
         "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["adapter"]["device"] and isinstance(result["adapter"]["is_cpu"], bool)
    kernels = {(row["kernel"], row["size"]) for row in result["rows"]}
    assert kernels == {(k, s) for k in ("matmul naive", "matmul tiled", "bias_act_scale relu") for s in (17, 40)}
    assert all(row["max_abs_error"] < 1e-4 and row["ms"] > 0 for row in result["rows"])
