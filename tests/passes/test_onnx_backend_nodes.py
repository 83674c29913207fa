"""The ONNX backend node test suite through ``hone optimize --target generic``: every case that
onnxruntime itself passes must still produce the expected outputs after hone's passes.

The cases (about 1,765: one ONNX op, or an op's function expansion, with inputs and expected
outputs) come from the onnx 1.22.0 wheel, fetched by ``make node-data`` into
``.cache/onnx-node-data/``. See ``onnx_node_cases.py`` for how each case runs and compares; the
benchmark script ``benchmarks/onnx_node_suite.py`` runs the same code and writes the counts.
Cases are grouped by the first letter of their op so that a failure names a small group; the
message lists each failing case, the stage it failed at and the passes that had been applied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_node_cases import FAIL, NODE_DATA_DIR, ORT_FAIL, CaseResult, SuiteResult, case_dirs, run_case

pytestmark = pytest.mark.slow  # about 45 s for all the cases on one core

CASES = case_dirs()
# onnx 1.22.0 ships 1,765 node cases; onnxruntime 1.32 passes about 1,680 of them.
MIN_CASES = 1700
MIN_ORT_PASS = 1600


def _group(case_dir: Path) -> str:
    return case_dir.name.removeprefix("test_")[:1]


GROUPS = sorted({_group(d) for d in CASES})
_results: dict[str, CaseResult] = {}


def _run(dirs: list[Path]) -> list[CaseResult]:
    for case_dir in dirs:
        if case_dir.name not in _results:
            _results[case_dir.name] = run_case(case_dir)
    return [_results[d.name] for d in dirs]


def test_the_onnx_node_test_data_is_fetched() -> None:
    assert len(CASES) >= MIN_CASES, (
        f"{len(CASES)} node test cases in {NODE_DATA_DIR}; run `make node-data` to fetch them"
    )


@pytest.mark.parametrize("group", GROUPS)
def test_hone_optimize_keeps_the_expected_outputs_of_every_case_onnxruntime_passes(group: str) -> None:
    results = _run([d for d in CASES if _group(d) == group])
    failures = [r for r in results if r.status == FAIL]
    assert not failures, f"{len(failures)} of {len(results)} cases broken by hone optimize:\n" + "\n".join(
        r.line() for r in failures
    )


@pytest.mark.parametrize("group", GROUPS)
def test_no_pass_raises_on_a_case_onnxruntime_passes(group: str) -> None:
    # The pipeline skips a pass that raises (and the case may still pass): a pass bug all the same.
    results = _run([d for d in CASES if _group(d) == group])
    errors = [f"{r.case}: {error}" for r in results if r.status != ORT_FAIL for error in r.pass_errors]
    assert not errors, "passes raised:\n" + "\n".join(errors)


def test_onnxruntime_passes_most_cases_so_the_suite_checks_hone_on_them() -> None:
    # Guards the harness: if loading or comparing broke, every case would count as ORT's failure.
    suite = SuiteResult.of(_run(CASES))
    print(f"onnx node suite: {suite.cases_total} cases, {suite.ort_pass} pass on onnxruntime, "
          f"{suite.hone_pass} of those pass after hone optimize --target generic")
    assert suite.cases_total >= MIN_CASES
    assert suite.ort_pass >= MIN_ORT_PASS, f"onnxruntime failures by stage: {suite.ort_fail_by_stage}"
