"""The ONNX backend node test suite through hone optimize --target generic: how many cases pass.

Run: make node-data && .venv/bin/python benchmarks/onnx_node_suite.py [--out PATH]
Runs every case of the onnx 1.22.0 node test data (fetched into .cache/onnx-node-data/) the way
tests/passes/test_onnx_backend_nodes.py does (same code: tests/passes/onnx_node_cases.py): the
original on onnxruntime, then hone's output for the cases onnxruntime passes. Prints the counts
and the failures, and writes benchmarks/results/onnx-node-suite.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime
from rich.console import Console
from rich.table import Table

import hone
from hone.results import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "passes"))
from onnx_node_cases import NODE_DATA_DIR, ORT_FAIL, CaseResult, SuiteResult, case_dirs, run_cases  # noqa: E402


@dataclass
class NodeSuiteReport:
    date: str
    onnx_test_data: str  # the onnx release the cases come from
    onnxruntime: str
    hone: str
    target: str
    seconds: float
    cases_total: int
    ort_pass: int
    hone_pass: int
    failures: list[CaseResult]
    pass_errors: dict[str, list[str]]
    ort_fail_by_stage: dict[str, int]
    ort_fail: list[CaseResult] = field(default_factory=list)  # excluded: onnxruntime itself fails


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=NODE_DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "onnx-node-suite.json")
    args = parser.parse_args()
    dirs = case_dirs(args.data)
    if not dirs:
        raise SystemExit(f"no node test cases in {args.data}; run `make node-data` first")
    began = time.perf_counter()
    results = run_cases(dirs)
    seconds = time.perf_counter() - began
    suite = SuiteResult.of(results)
    stamp = args.data.parent / ".fetched"
    report = NodeSuiteReport(
        date=str(dt.date.today()),
        onnx_test_data=stamp.read_text().strip() if stamp.is_file() else "unknown",
        onnxruntime=onnxruntime.__version__,
        hone=hone.__version__,
        target="generic",
        seconds=round(seconds, 1),
        cases_total=suite.cases_total,
        ort_pass=suite.ort_pass,
        hone_pass=suite.hone_pass,
        failures=suite.failures,
        pass_errors=suite.pass_errors,
        ort_fail_by_stage=suite.ort_fail_by_stage,
        ort_fail=[r for r in results if r.status == ORT_FAIL],
    )
    console = Console(width=160)
    table = Table(title=f"onnx {report.onnx_test_data} node tests, hone optimize --target generic ({seconds:.0f} s)")
    for column in ("cases", "pass on onnxruntime", "pass after hone", "broken by hone", "passes that raised"):
        table.add_column(column, justify="right")
    table.add_row(str(suite.cases_total), str(suite.ort_pass), str(suite.hone_pass), str(len(suite.failures)),
                  str(len(suite.pass_errors)))
    console.print(table)
    console.print(f"onnxruntime {report.onnxruntime} itself fails, by stage: {suite.ort_fail_by_stage}")
    for failure in suite.failures:
        console.print(f"[red]broken[/red] {failure.line()}", highlight=False)
    for case, errors in suite.pass_errors.items():
        console.print(f"[yellow]pass raised[/yellow] {case}: {'; '.join(errors)}", highlight=False)
    write_json(report, args.out, force=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
