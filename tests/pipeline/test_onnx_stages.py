"""Blocks of an ONNX graph at single-tensor cuts, the stage models built from them, their timing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import hone.model
from hone.data import synthesize
from hone.errors import InputError, OptionError
from hone.model import Model
from hone.pipeline.onnx_stages import OnnxBlock, measure_block_ms, onnx_blocks, stage_model

Build = Callable[[str], Model]

CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
chain (float[batch, 4] x) => (float[batch, 3] y)
    <float[4] c = {0.5, -1.0, 0.25, 2.0},
     float[4, 3] w = {0.5, -0.25, 1.0, 0.75, 0.1, -0.6, -0.3, 0.2, 0.9, 0.4, -0.8, 0.05}> {
    a = Relu(x)
    b = Add(a, c)
    m = MatMul(b, w)
    y = Sigmoid(m)
}
"""

# p -> a -> (b -> c) -> Add(a, c) -> y: `a` stays live across the two nodes of the residual branch.
RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
residual (float[batch, 4] x) => (float[batch, 4] y) {
    p = Tanh(x)
    a = Relu(p)
    b = Neg(a)
    c = Abs(b)
    s = Add(a, c)
    y = Sigmoid(s)
}
"""

# The mask is read by the first node and the last: it is live across every cut beside `h`.
MASKED = """
<ir_version: 8, opset_import: ["" : 17]>
masked (float[batch, 4] x, float[batch, 4] mask) => (float[batch, 4] y) {
    m = Mul(x, mask)
    h = Relu(m)
    t = Tanh(h)
    y = Mul(t, mask)
}
"""

# One Constant node read by the first and the third compute node.
WITH_CONSTANT = """
<ir_version: 8, opset_import: ["" : 17]>
with_constant (float[batch, 4] x) => (float[batch, 4] y) {
    k = Constant <value = float[1] {2.0}> ()
    a = Mul(x, k)
    b = Relu(a)
    c = Add(b, k)
    y = Tanh(c)
}
"""

# The If node reads `a` and `c` from the outer scope only through its branches: without them, `b`
# alone would look live after Tanh.
WITH_SUBGRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
with_subgraph (float[2] x) => (float[2] y) {
    cond = Constant <value = bool[1] {1}> ()
    a = Relu(x)
    b = Tanh(a)
    c = Neg(b)
    y = If (cond) <
        then_branch = then_graph () => (float[2] t) { t = Add(a, c) },
        else_branch = else_graph () => (float[2] e) { e = Identity(c) }
    >
}
"""


@pytest.fixture
def from_text(tmp_path: Path) -> Build:
    """A hone Model of ONNX text, loaded from a file like any user model."""

    def build(text: str) -> Model:
        proto = onnx.parser.parse_model(text)
        path = tmp_path / f"{proto.graph.name}.onnx"
        onnx.save(proto, path)
        return hone.model.load_onnx_file(path)

    return build


def _run(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name: feeds[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(None, wanted), strict=True))


def _chained(
    model: Model, runs: Sequence[Sequence[OnnxBlock]], feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Outputs of running the stage models of ``runs`` one after another."""
    current = dict(feeds)
    for blocks in runs:
        current = _run(stage_model(model, blocks), current)
    return current


def _whole(model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return _run(onnx.load_model(str(model.path)), feeds)


def _feeds(model: Model, batch: int = 2) -> dict[str, np.ndarray]:
    return synthesize(model.inputs, batch=batch, dims=model.default_dims, seed=3)


def test_a_chain_has_one_block_per_node_with_their_boundaries_and_params(from_text: Build) -> None:
    blocks = onnx_blocks(from_text(CHAIN))
    assert [b.node_indices for b in blocks] == [(0,), (1,), (2,), (3,)]
    assert [b.input_names for b in blocks] == [("x",), ("a",), ("b",), ("m",)]
    assert [b.output_names for b in blocks] == [("a",), ("b",), ("m",), ("y",)]
    assert [b.params for b in blocks] == [0, 4, 12, 0]
    assert [b.name for b in blocks] == [
        "node 0 (Relu)", "node 1 (Add)", "node 2 (MatMul)", "node 3 (Sigmoid)"
    ]


def test_every_contiguous_run_of_a_chain_is_a_checked_stage_and_chaining_gives_the_same_outputs(
    from_text: Build,
) -> None:
    model = from_text(CHAIN)
    blocks = onnx_blocks(model)
    feeds = _feeds(model)
    expected = _whole(model, feeds)["y"]
    for start in range(len(blocks)):
        for stop in range(start + 1, len(blocks) + 1):
            stage = stage_model(model, blocks[start:stop])
            onnx.checker.check_model(stage, full_check=True)
            assert [i.name for i in stage.graph.input] == list(blocks[start].input_names)
            assert [o.name for o in stage.graph.output] == list(blocks[stop - 1].output_names)
            assert len(stage.graph.node) == stop - start
            runs = [blocks[:start], blocks[start:stop], blocks[stop:]]
            chained = _chained(model, [r for r in runs if r], feeds)
            np.testing.assert_array_equal(chained["y"], expected)


def test_a_stage_keeps_only_its_initializers_and_the_symbolic_batch_dim(from_text: Build) -> None:
    model = from_text(CHAIN)
    stage = stage_model(model, onnx_blocks(model)[2:3])
    assert [t.name for t in stage.graph.initializer] == ["w"]
    boundary_dims = stage.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in boundary_dims] == ["batch", 4]
    assert [(o.domain, o.version) for o in stage.opset_import] == [("", 17)]


def test_no_cut_falls_inside_a_residual_branch(from_text: Build) -> None:
    model = from_text(RESIDUAL)
    blocks = onnx_blocks(model)
    assert [b.node_indices for b in blocks] == [(0,), (1,), (2, 3, 4), (5,)]
    assert [b.output_names for b in blocks] == [("p",), ("a",), ("s",), ("y",)]
    feeds = _feeds(model)
    np.testing.assert_array_equal(
        _chained(model, [[b] for b in blocks], feeds)["y"], _whole(model, feeds)["y"]
    )


def test_a_graph_input_read_at_the_start_and_the_end_leaves_one_block(from_text: Build) -> None:
    model = from_text(MASKED)
    [block] = onnx_blocks(model)
    assert block.node_indices == (0, 1, 2, 3)
    assert block.input_names == ("x", "mask")
    assert block.output_names == ("y",)
    assert block.name == "nodes 0-3 (Mul..Mul)"


def test_constant_nodes_are_copied_into_each_block_that_reads_them(from_text: Build) -> None:
    model = from_text(WITH_CONSTANT)
    blocks = onnx_blocks(model)
    assert [b.node_indices for b in blocks] == [(0, 1), (2,), (0, 3), (4,)]
    assert [b.params for b in blocks] == [0, 0, 0, 0]
    whole_stage = stage_model(model, blocks)
    assert [n.op_type for n in whole_stage.graph.node] == ["Constant", "Mul", "Relu", "Add", "Tanh"]
    feeds = _feeds(model)
    expected = _whole(model, feeds)["y"]
    np.testing.assert_array_equal(_chained(model, [[b] for b in blocks], feeds)["y"], expected)
    np.testing.assert_array_equal(_chained(model, [blocks[:1], blocks[1:]], feeds)["y"], expected)


def test_outer_scope_values_read_by_a_subgraph_stay_live_until_its_node(from_text: Build) -> None:
    model = from_text(WITH_SUBGRAPH)
    blocks = onnx_blocks(model)
    assert [b.node_indices for b in blocks] == [(1,), (0, 2, 3, 4)]
    assert blocks[1].input_names == ("a",)
    feeds = {"x": np.array([-1.0, 2.0], dtype=np.float32)}
    np.testing.assert_array_equal(
        _chained(model, [[b] for b in blocks], feeds)["y"], _whole(model, feeds)["y"]
    )


def test_params_count_each_initializer_once_per_block(from_text: Build) -> None:
    model = from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        shared (float[batch, 3] x) => (float[batch, 3] y)
            <float[3, 3] w = {1, 0, 0, 0, 1, 0, 0, 0, 1}, float[3] b = {1, 2, 3}> {
            h = MatMul(x, w)
            g = MatMul(h, w)
            r = Relu(g)
            y = Add(r, b)
        }
    """)
    assert [b.params for b in onnx_blocks(model)] == [9, 9, 0, 3]
    whole = stage_model(model, onnx_blocks(model))
    assert sorted(t.name for t in whole.graph.initializer) == ["b", "w"]


def test_measured_blocks_have_positive_times_and_their_output_bytes(from_text: Build) -> None:
    model = from_text(CHAIN)
    measured = measure_block_ms(model, onnx_blocks(model), _feeds(model, batch=2), runs=3)
    assert [size for _, size in measured] == [2 * 4 * 4, 2 * 4 * 4, 2 * 3 * 4, 2 * 3 * 4]
    assert all(ms > 0 for ms, _ in measured)


def test_a_run_of_blocks_that_skips_one_is_refused(from_text: Build) -> None:
    model = from_text(CHAIN)
    blocks = onnx_blocks(model)
    with pytest.raises(OptionError, match="contiguous"):
        stage_model(model, [blocks[0], blocks[2]])
    with pytest.raises(OptionError, match="no blocks"):
        stage_model(model, [])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [({"runs": 0}, OptionError, "runs must be"), ({"threads": 0}, OptionError, "threads must be")],
)
def test_measuring_refuses_bad_options(
    from_text: Build, kwargs: dict[str, int], error: type[Exception], message: str
) -> None:
    model = from_text(CHAIN)
    with pytest.raises(error, match=message):
        measure_block_ms(model, onnx_blocks(model), _feeds(model), **kwargs)


def test_measuring_without_the_first_blocks_inputs_says_which_are_missing(from_text: Build) -> None:
    model = from_text(CHAIN)
    blocks = onnx_blocks(model)
    with pytest.raises(InputError, match="'a'|: a"):
        measure_block_ms(model, blocks[1:], _feeds(model))


def test_resnet18_splits_into_many_blocks_whose_stages_chain_to_the_whole_model() -> None:
    model = hone.load("resnet18")
    blocks = onnx_blocks(model)
    assert len(blocks) > 8
    assert all(len(b.output_names) == 1 for b in blocks)
    assert sum(b.params for b in blocks) == sum(
        int(np.prod(v.shape.dims)) for v in model.ir.graph.initializers.values()
    )
    feeds = _feeds(model, batch=1)
    expected = _run(onnx.load_model(str(model.path)), feeds)
    chained = _chained(model, [[b] for b in blocks], feeds)
    name = model.outputs[0].name
    np.testing.assert_allclose(chained[name], expected[name], atol=1e-5, rtol=1e-5)
    onnx.checker.check_model(stage_model(model, blocks[2:5]), full_check=True)


def test_stages_of_a_model_with_external_data_carry_the_weights_inline(external_data_model: Path) -> None:
    model = hone.model.load_onnx_file(external_data_model)
    blocks = onnx_blocks(model)
    stage = stage_model(model, blocks[:1])
    assert [t.name for t in stage.graph.initializer] == ["w1"]
    assert stage.graph.initializer[0].data_location == onnx.TensorProto.DEFAULT
    feeds = _feeds(model)
    expected = _run(onnx.load_model(str(external_data_model)), feeds)["y"]
    np.testing.assert_array_equal(_chained(model, [[b] for b in blocks], feeds)["y"], expected)
