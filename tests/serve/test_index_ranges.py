"""hone.serve.index_ranges: only the ranges onnxruntime itself enforces are checked at admission."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_ir as ir
import onnxruntime as ort
import pytest

from hone.serve.index_ranges import IndexRange, enforced_index_ranges

GRAPHS = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[N] ids, int64[N] other, int64[N] dead, int64[N] cmp) => (float[N, 4] y, float[N, 3] z, bool[N] hit)
   <float[10, 4] table = {0.0}, float[3, 6, 3] wide = {0.0}, int64[1] two = {2}> {
    y = Gather <axis = 0> (table, ids)
    w = Gather <axis = -2> (wide, ids)
    z = ReduceSum <keepdims = 0> (w, two)
    j = Add (other, two)
    unused = Gather <axis = 0> (table, dead)
    hit = Equal (cmp, two)
    y2 = Gather <axis = 0> (table, j)
}
"""


def test_direct_live_gathers_give_their_range_and_the_tightest_wins() -> None:
    model = ir.from_proto(onnx.parser.parse_model(GRAPHS))
    ranges = enforced_index_ranges(model)
    # ids: table has 10 rows, but wide has 6 on axis -2 -> [-6, 5]
    assert ranges["ids"] == IndexRange(-6, 5, ranges["ids"].node)
    # other feeds a Gather through an Add (computed indices), dead's Gather reaches no output,
    # cmp is only compared: none of these is a rule onnxruntime enforces
    assert set(ranges) == {"ids"}


@pytest.mark.parametrize(("ids", "fails"), [([-6, 5], False), ([6], True), ([-7], True)])
def test_the_range_is_what_onnxruntime_refuses(ids: list[int], fails: bool) -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[N] ids) => (float[N, 3] z) <float[6, 3] t = {0.0}> { z = Gather <axis = 0> (t, ids) }
    """
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.zeros((6, 3), np.float32), "t"))
    allowed = enforced_index_ranges(ir.from_proto(proto))["ids"]
    assert (allowed.low, allowed.high) == (-6, 5)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"ids": np.array(ids, dtype=np.int64)}
    if fails:
        with pytest.raises(Exception, match="out of data bounds|indices"):
            session.run(None, feeds)
    else:
        session.run(None, feeds)
