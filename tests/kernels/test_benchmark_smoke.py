"""benchmarks/kernels.py runs end to end on the CPU (Triton's interpreter, tiny sizes): every kernel
checked against torch, every table row written. Its rates mean nothing here; the GPU run does."""

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
