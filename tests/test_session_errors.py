"""Session's boundary with onnxruntime: a failed run is one ExecutionError line that names the failing
node, and onnxruntime's own log lines do not reach stderr before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import hone
from hone.errors import ExecutionError
from hone.runtime import Session

LOOKUP = """
<ir_version: 8, opset_import: ["" : 17]>
lookup (int64[N] ids) => (float[N, 4] rows) <float[3, 4] table = {0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11.}> {
    picked = Gather (table, ids)
    rows = Relu (picked)
}
"""


@pytest.fixture
def lookup(tmp_path: Path) -> Session:
    proto = onnx.parser.parse_model(LOOKUP)
    proto.graph.node[0].name = "embedding/lookup"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, tmp_path / "lookup.onnx")
    return Session(hone.load(tmp_path / "lookup.onnx"))


def test_an_out_of_range_gather_index_is_one_execution_error_line_that_names_the_node(
        lookup: Session, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ExecutionError) as failed:
        lookup.run({"ids": np.array([0, 7], dtype=np.int64)})
    message = str(failed.value)
    assert message.startswith("onnxruntime failed running lookup at Gather node 'embedding/lookup': ")
    assert "idx=7" in message and "\n" not in message
    assert failed.value.context == {"model": "lookup", "node": "embedding/lookup", "op_type": "Gather"}
    assert isinstance(failed.value.__cause__, Exception)
    captured = capfd.readouterr()
    assert "onnxruntime" not in captured.err and "sequential_executor" not in captured.err, captured.err
    assert captured.err == ""


def test_the_session_still_answers_after_a_failed_run(lookup: Session) -> None:
    with pytest.raises(ExecutionError):
        lookup.run({"ids": np.array([-9], dtype=np.int64)})
    rows = lookup.run({"ids": np.array([2, 0], dtype=np.int64)})[0]
    np.testing.assert_array_equal(rows, [[8, 9, 10, 11], [0, 1, 2, 3]])


def test_a_failure_without_a_node_keeps_onnxruntimes_first_line(lookup: Session) -> None:
    with pytest.raises(ExecutionError, match=r"^onnxruntime failed running lookup: .*ids") as failed:
        lookup.run({"ids": np.array([[0]], dtype=np.int64)})  # rank 2 for a rank-1 input: refused before any node
    assert "node" not in failed.value.context
