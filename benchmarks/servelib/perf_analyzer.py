"""Run Triton's ``perf_analyzer`` against a KServe v2 server and return its numbers as a dict.

perf_analyzer is the load generator Triton users already trust, so measuring ``hone serve`` and a
Triton baseline with it (rather than with hone's own load test) keeps the comparison honest and
shows hone speaks the protocol well enough for it: it reads ``/v2/models/NAME/config`` and
``/stats`` and sends binary tensors over HTTP or gRPC.

It lives in ``.cache/perf-venv`` (``make perf-analyzer``, i.e. ``scripts/setup-perf-analyzer.sh``),
called through the wrapper ``hone-perf-analyzer`` that puts its libraries on LD_LIBRARY_PATH.

One call measures one concurrency in ``time_windows`` mode: by default exactly ``max_trials``
windows of ``window_ms`` each with the stability gate off (a huge ``stability_percentage``), so
the run time is bounded and predictable; pass ``stability_percentage=10`` and more trials to get
perf_analyzer's usual "three stable windows" behaviour. Latencies in perf_analyzer's CSV are in
microseconds; this returns milliseconds.
"""

from __future__ import annotations

import csv
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PERF_ANALYZER = ROOT / ".cache" / "perf-venv" / "bin" / "hone-perf-analyzer"

# CSV column (microseconds) -> key of the result (milliseconds). "Avg latency" needs --verbose-csv.
_LATENCY_COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Avg latency": "avg_ms",
}
# The client's "Request count" of the measured windows is only printed, not written to the CSV.
_REQUEST_COUNT = re.compile(r"^\s*Client:\s*\n\s*Request count: (\d+)", re.MULTILINE)


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, failed, timed out or wrote no result."""


def perf_analyzer_path() -> Path:
    """The wrapper ``hone-perf-analyzer``; raises with what to do when it is not installed."""
    if not PERF_ANALYZER.exists():
        raise PerfAnalyzerError(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`")
    return PERF_ANALYZER


def run_perf_analyzer(
    model: str,
    url: str,
    protocol: str,
    concurrency: int,
    *,
    batch: int = 1,
    shape: dict[str, list[int]] | None = None,
    window_ms: int = 3000,
    timeout_s: float = 120,
    max_trials: int = 3,
    stability_percentage: float = 1000.0,
    input_data: str = "random",
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure ``model`` at ``url`` (``host:port``, a scheme is dropped) over ``protocol``
    (``http`` or ``grpc``) at one ``concurrency``.

    ``shape`` gives the per-request shape (without the batch dimension) of inputs whose dims are
    dynamic beyond the batch, e.g. ``{"input_ids": [128]}``. Returns ``throughput_infer_per_s``,
    ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``, ``avg_ms``, ``requests`` (client requests in
    the measured windows, or None if not printed), ``concurrency``, ``raw`` (the CSV row) and
    ``stdout``.
    """
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
    counts = {"concurrency": concurrency, "batch": batch, "window_ms": window_ms, "max_trials": max_trials}
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    url = re.sub(r"^[a-z]+://", "", url).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="hone-perf-") as folder:
        csv_path = Path(folder) / "perf.csv"
        command = [
            str(perf_analyzer_path()),
            "-m", model,
            "-u", url,
            "-i", protocol,
            "-b", str(batch),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-mode", "time_windows",
            "--measurement-interval", str(window_ms),
            "--max-trials", str(max_trials),
            "--stability-percentage", str(stability_percentage),
            "--input-data", input_data,
            "-f", str(csv_path),
            "--verbose-csv",
        ]  # fmt: skip
        for input_name, dims in (shape or {}).items():
            command += ["--shape", f"{input_name}:{','.join(str(d) for d in dims)}"]
        command += list(extra_args)
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise PerfAnalyzerError(
                f"perf_analyzer ran past {timeout_s:g} s on {model} at {url}: lower window_ms or raise timeout_s"
            ) from error
        output = completed.stdout + completed.stderr
        if completed.returncode != 0:
            raise PerfAnalyzerError(
                f"perf_analyzer exited with {completed.returncode} on {model} at {url} ({protocol}): "
                f"{_last_lines(output)}"
            )
        rows: list[dict[str, str]] = []
        if csv_path.exists():
            with csv_path.open(newline="") as file:
                rows = list(csv.DictReader(file))
    if len(rows) != 1:
        raise PerfAnalyzerError(f"perf_analyzer wrote {len(rows)} CSV rows, expected 1: {_last_lines(output)}")
    return parse_row(rows[0], completed.stdout)


def parse_row(row: dict[str, str], stdout: str = "") -> dict[str, Any]:
    """One row of perf_analyzer's ``-f`` CSV (and its stdout, for the request count) as a result."""
    result: dict[str, Any] = {
        "concurrency": int(row["Concurrency"]),
        "throughput_infer_per_s": float(row["Inferences/Second"]),
    }
    for column, key in _LATENCY_COLUMNS.items():
        value = row.get(column)
        result[key] = float(value) / 1000 if value not in (None, "") else None
    counts = _REQUEST_COUNT.findall(stdout)
    result["requests"] = int(counts[-1]) if counts else None
    result["raw"] = dict(row)
    result["stdout"] = stdout
    return result


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(no output)"
