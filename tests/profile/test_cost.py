"""The cost model against hand-computed MACs, flops and bytes, and against published zoo figures."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.parser
import pytest

import hone
from hone.profile import cost as cost_module
from hone.profile.cost import ModelCost, NodeCost, model_cost

FLOAT_BYTES = 4


def parse(graph_text: str, opset: int = 17, extra_opsets: str = "") -> onnx.ModelProto:
    header = f'<ir_version: 10, opset_import: ["" : {opset}{extra_opsets}]>'
    return onnx.parser.parse_model(header + "\n" + graph_text)


def only_node(cost: ModelCost) -> NodeCost:
    assert len(cost.nodes) == 1
    return cost.nodes[0]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attributes", "output_elements", "macs_per_output"),
    [
        # pads 1 keep 8x8; each output sees 3 channels x 3x3
        pytest.param("1, 3, 8, 8", "4, 3, 3, 3", "pads = [1, 1, 1, 1]", 4 * 8 * 8, 3 * 9, id="same-size"),
        # groups 2, stride 2, no pad: out = (9 - 3) // 2 + 1 = 4; each output sees Cin/groups = 2
        pytest.param("1, 4, 9, 9", "6, 2, 3, 3", "group = 2, strides = [2, 2]", 6 * 4 * 4, 2 * 9,
                     id="groups-strides"),
        # dilation 2 makes the 3x3 kernel span 5; pads 2 keep 10x10; batch 2
        pytest.param("2, 2, 10, 10", "3, 2, 3, 3", "dilations = [2, 2], pads = [2, 2, 2, 2]",
                     2 * 3 * 10 * 10, 2 * 9, id="dilation-pads"),
        # SAME_UPPER with stride 2: out = ceil(7 / 2) = 4
        pytest.param("1, 1, 7, 7", "1, 1, 3, 3", 'auto_pad = "SAME_UPPER", strides = [2, 2]', 4 * 4, 9,
                     id="auto-pad"),
        # depthwise: groups = channels, one input channel per output
        pytest.param("1, 8, 5, 5", "8, 1, 3, 3", "group = 8", 8 * 3 * 3, 9, id="depthwise"),
        # 1-D with asymmetric pads: out = 10 + 1 + 0 - 3 + 1 = 9
        pytest.param("1, 2, 10", "5, 2, 3", "pads = [1, 0]", 5 * 9, 2 * 3, id="conv1d"),
    ],
)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_conv_macs_follow_groups_strides_dilations_and_pads(
    x_shape: str, w_shape: str, attributes: str, output_elements: int, macs_per_output: int, with_bias: bool
) -> None:
    out_channels = w_shape.split(",")[0]
    bias_decl, bias_input = (f", float[{out_channels}] b", ", b") if with_bias else ("", "")
    model = parse(f"""
        g (float[{x_shape}] x, float[{w_shape}] w{bias_decl}) => (float y) {{
            y = Conv <{attributes}> (x, w{bias_input})
        }}""")
    node = only_node(model_cost(model))
    assert node.known
    assert node.macs == output_elements * macs_per_output
    assert node.flops == 2 * node.macs + (output_elements if with_bias else 0)
    assert node.bytes_written == output_elements * FLOAT_BYTES


@pytest.mark.parametrize(
    ("w_shape", "group", "expected_macs"),
    [
        # every input element scatters into Cout/groups * prod(kernel) outputs: 4*5*5 * 2*3*3
        ("4, 2, 3, 3", 1, 4 * 5 * 5 * 2 * 9),
        ("4, 1, 3, 3", 2, 4 * 5 * 5 * 1 * 9),
    ],
)
def test_conv_transpose_macs_count_per_input_element(w_shape: str, group: int, expected_macs: int) -> None:
    model = parse(f"""
        g (float[1, 4, 5, 5] x, float[{w_shape}] w) => (float y) {{
            y = ConvTranspose <strides = [2, 2], group = {group}> (x, w)
        }}""")
    node = only_node(model_cost(model))
    assert (node.macs, node.flops) == (expected_macs, 2 * expected_macs)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "expected_macs"),
    [
        ("2, 1, 4, 5", "3, 5, 6", 2 * 3 * 4 * 5 * 6),  # batch dims (2, 1) and (3,) broadcast to (2, 3)
        ("8, 4, 5", "5, 6", 8 * 4 * 5 * 6),  # a 2-D B is shared across A's batch
        ("5", "5, 6", 5 * 6),  # a 1-D A is one row
        ("3, 4, 5", "5", 3 * 4 * 5),  # a 1-D B is one column
    ],
)
def test_matmul_macs_broadcast_batch_dims(a_shape: str, b_shape: str, expected_macs: int) -> None:
    model = parse(f"""
        g (float[{a_shape}] a, float[{b_shape}] b) => (float y) {{
            y = MatMul(a, b)
        }}""")
    node = only_node(model_cost(model))
    assert (node.macs, node.flops) == (expected_macs, 2 * expected_macs)


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "attributes"),
    [
        ("4, 5", "6, 5", "transB = 1"),
        ("5, 4", "5, 6", "transA = 1"),
        ("5, 4", "6, 5", "transA = 1, transB = 1"),
    ],
)
def test_gemm_macs_respect_transposes_and_bias_adds_m_times_n(
    a_shape: str, b_shape: str, attributes: str
) -> None:
    model = parse(f"""
        g (float[{a_shape}] a, float[{b_shape}] b, float[6] c) => (float[4, 6] y) {{
            y = Gemm <{attributes}> (a, b, c)
        }}""")
    node = only_node(model_cost(model))
    m, k, n = 4, 5, 6
    assert node.macs == m * k * n
    assert node.flops == 2 * m * k * n + m * n


def test_elementwise_add_costs_one_flop_per_output_and_reads_each_input_once() -> None:
    model = parse("""
        g (float[2, 3, 4] a, float[4] b) => (float[2, 3, 4] y) {
            y = Add(a, b)
        }""")
    node = only_node(model_cost(model))
    assert (node.macs, node.flops) == (0, 24)
    assert node.bytes_read == (24 + 4) * FLOAT_BYTES
    assert node.bytes_written == 24 * FLOAT_BYTES
    assert node.bytes == node.bytes_read + node.bytes_written
    assert node.arithmetic_intensity == pytest.approx(24 / ((24 + 4 + 24) * FLOAT_BYTES))


def test_a_tensor_used_twice_by_one_node_is_read_once() -> None:
    model = parse("""
        g (float[10] x) => (float[10] y) {
            y = Mul(x, x)
        }""")
    assert only_node(model_cost(model)).bytes_read == 10 * FLOAT_BYTES


@pytest.mark.parametrize(
    ("body", "expected_flops"),
    [
        ("y = Softmax <axis = -1> (x)", 5 * 2 * 10),
        ("y = Relu(x)", 1 * 20),
        ("y = Sigmoid(x)", 4 * 20),
        ("y = Erf(x)", 4 * 20),
        ("y = Clip(x)", 2 * 20),
        ("y = ReduceMean <axes = [1], keepdims = 0> (x)", 20 + 2),
        ("y = ReduceSum <keepdims = 0> (x)", 20),
    ],
)
def test_per_element_ops_cost_their_documented_constant(body: str, expected_flops: int) -> None:
    model = parse(f"""
        g (float[2, 10] x) => (float y) {{
            {body}
        }}""")
    node = only_node(model_cost(model))
    assert node.known
    assert (node.macs, node.flops) == (0, expected_flops)


def test_layer_normalization_costs_eight_flops_per_element() -> None:
    model = parse("""
        g (float[2, 5, 8] x, float[8] scale, float[8] bias) => (float[2, 5, 8] y) {
            y = LayerNormalization <axis = -1> (x, scale, bias)
        }""")
    assert only_node(model_cost(model)).flops == 8 * 2 * 5 * 8


def test_batch_normalization_costs_a_scale_and_a_shift_per_element_and_its_parameters_are_weights() -> None:
    model = parse("""
        g (float[1, 3, 4, 4] x) => (float[1, 3, 4, 4] y)
        <float[3] s = {1.0, 1.0, 1.0}, float[3] b = {0.0, 0.0, 0.0},
         float[3] m = {0.0, 0.0, 0.0}, float[3] v = {1.0, 1.0, 1.0}> {
            y = BatchNormalization(x, s, b, m, v)
        }""")
    node = only_node(model_cost(model))
    assert node.flops == 2 * 3 * 4 * 4
    assert node.weight_bytes == 4 * 3 * FLOAT_BYTES
    assert node.bytes_read == (48 + 12) * FLOAT_BYTES


@pytest.mark.parametrize(
    ("attributes", "output_elements", "kernel_elements"),
    [
        ("kernel_shape = [2, 2], strides = [2, 2]", 2 * 3 * 3, 4),
        ("kernel_shape = [3, 3], pads = [1, 1, 1, 1]", 2 * 6 * 6, 9),
    ],
)
def test_max_pool_costs_kernel_size_per_output_element(
    attributes: str, output_elements: int, kernel_elements: int
) -> None:
    model = parse(f"""
        g (float[1, 2, 6, 6] x) => (float y) {{
            y = MaxPool <{attributes}> (x)
        }}""")
    node = only_node(model_cost(model))
    assert node.flops == output_elements * kernel_elements
    assert node.bytes_written == output_elements * FLOAT_BYTES


@pytest.mark.parametrize(
    ("body", "expected_read", "expected_written"),
    [
        # the data and the 2-element int64 shape are read, the data written again
        ("y = Reshape(x, shape)", 24 * 4 + 2 * 8, 24 * 4),
        ("y = Transpose <perm = [1, 0, 2]> (x)", 24 * 4, 24 * 4),
        ("y = Concat <axis = 0> (x, x)", 24 * 4, 48 * 4),
        # Shape reads only metadata and writes three int64
        ("y = Shape(x)", 0, 3 * 8),
        # Slice reads only the rows it keeps: x[0:1] is 12 floats, plus starts/ends/axes
        ("y = Slice(x, start, end, axis)", 12 * 4 + 3 * 8, 12 * 4),
    ],
)
def test_data_movement_ops_cost_no_flops_but_count_their_bytes(
    body: str, expected_read: int, expected_written: int
) -> None:
    model = parse(f"""
        g (float[2, 3, 4] x) => (y) <int64[2] shape = {{6, 4}}, int64[1] start = {{0}},
                                     int64[1] end = {{1}}, int64[1] axis = {{0}}> {{
            {body}
        }}""")
    node = only_node(model_cost(model))
    assert node.known
    assert (node.macs, node.flops) == (0, 0)
    assert (node.bytes_read, node.bytes_written) == (expected_read, expected_written)


def test_gather_from_an_embedding_table_reads_only_the_gathered_rows() -> None:
    model = parse("""
        g (int64[1, 5] ids) => (float[1, 5, 16] y) <float[1000, 16] table = {0.0}> {
            y = Gather(table, ids)
        }""")
    model.graph.initializer[0].ClearField("float_data")
    model.graph.initializer[0].raw_data = bytes(1000 * 16 * FLOAT_BYTES)
    node = only_node(model_cost(model))
    gathered = 5 * 16 * FLOAT_BYTES
    assert node.weight_bytes == gathered
    assert node.bytes_read == gathered + 5 * 8


def test_an_unknown_op_is_marked_unknown_and_listed_never_silently_zero() -> None:
    model = parse(
        """
        g (float[2, 4] x) => (float[2, 4] y) {
            h = my.ops.Frob(x)
            y = Relu(h)
        }""",
        extra_opsets=', "my.ops" : 1',
    )
    cost = model_cost(model)
    frob, relu = cost.nodes
    assert not frob.known
    assert frob.domain == "my.ops"
    assert "unknown op" in frob.note
    assert frob.bytes_read == 8 * FLOAT_BYTES  # what it reads is still counted
    # its output has no inferred shape, so the Relu after it says so instead of costing zero
    assert not relu.known
    assert "shape unknown" in relu.note
    assert cost.unknown_ops == {"Frob": 1, "Relu": 1}


def test_a_node_holding_subgraphs_is_unknown_with_a_note() -> None:
    model = parse("""
        g (bool c, float[3] x) => (float[3] y) {
            y = If (c) <
                then_branch = then_g () => (float[3] t) { t = Relu(x) },
                else_branch = else_g () => (float[3] e) { e = Neg(x) }
            >
        }""")
    node = only_node(model_cost(model))
    assert not node.known
    assert "subgraphs" in node.note
    assert model_cost(model).unknown_ops == {"If": 1}


@pytest.mark.parametrize(("op", "with_bias", "flops_per_element"), [
    ("SkipLayerNormalization", False, 8 + 1),
    ("SkipLayerNormalization", True, 8 + 2),
    ("SkipSimplifiedLayerNormalization", False, 6 + 1),
    ("SkipSimplifiedLayerNormalization", True, 6 + 2),
])
def test_skip_layer_norms_add_the_skip_and_bias_to_the_norm(
    op: str, with_bias: bool, flops_per_element: int
) -> None:
    beta = ", beta" if op == "SkipLayerNormalization" else ""
    bias = ", bias" if with_bias else ""
    model = parse(
        f"""
        g (float[2, 5, 8] x, float[2, 5, 8] skip, float[8] gamma, float[8] beta, float[8] bias)
          => (float[2, 5, 8] y) {{
            y = com.microsoft.{op} (x, skip, gamma{beta}{bias})
        }}""",
        extra_opsets=', "com.microsoft" : 1',
    )
    node = only_node(model_cost(model))
    assert node.known
    assert node.flops == flops_per_element * 2 * 5 * 8


def test_an_initializer_input_counts_as_weight_bytes() -> None:
    model = parse("""
        g (float[2, 4] x) => (float[2, 3] y)
        <float[4, 3] w = {0.5, -0.25, 1.0, 0.75, 0.1, -0.6, -0.3, 0.2, 0.9, 0.4, -0.8, 0.05}> {
            y = MatMul(x, w)
        }""")
    node = only_node(model_cost(model))
    assert node.weight_bytes == 12 * FLOAT_BYTES
    assert node.bytes_read == (8 + 12) * FLOAT_BYTES


def test_quantized_int4_inputs_take_half_a_byte_per_element() -> None:
    model = parse(
        """
        g (int4[4, 6] x, float s) => (float[4, 6] y) {
            y = DequantizeLinear(x, s)
        }""",
        opset=21,
    )
    node = only_node(model_cost(model))
    assert node.bytes_read == 24 // 2 + FLOAT_BYTES
    assert node.flops == 2 * 24


def test_integer_matmul_counts_integer_macs_with_the_same_shape_maths() -> None:
    model = parse("""
        g (uint8[3, 4, 5] a, int8[5, 6] b) => (int32[3, 4, 6] y) {
            y = MatMulInteger(a, b)
        }""")
    node = only_node(model_cost(model))
    assert node.macs == 3 * 4 * 5 * 6
    assert node.bytes_read == 3 * 4 * 5 + 5 * 6


def test_contrib_attention_counts_projection_scores_and_weighted_sum() -> None:
    batch, seq, hidden, heads = 1, 4, 8, 2
    model = parse(
        f"""
        g (float[{batch}, {seq}, {hidden}] x, float[{hidden}, {3 * hidden}] w, float[{3 * hidden}] b)
          => (float[{batch}, {seq}, {hidden}] y) {{
            y = com.microsoft.Attention <num_heads = {heads}> (x, w, b)
        }}""",
        extra_opsets=', "com.microsoft" : 1',
    )
    node = only_node(model_cost(model))
    projection = batch * seq * hidden * 3 * hidden
    scores = weighted_sum = batch * seq * seq * hidden
    assert node.known
    assert node.macs == projection + scores + weighted_sum
    assert node.flops == 2 * node.macs + batch * seq * 3 * hidden + 6 * batch * heads * seq * seq


def test_multi_head_attention_counts_the_two_batched_matmuls() -> None:
    model = parse(
        """
        g (float[2, 4, 8] q, float[2, 6, 8] k, float[2, 6, 8] v) => (float[2, 4, 8] y) {
            y = com.microsoft.MultiHeadAttention <num_heads = 2> (q, k, v)
        }""",
        extra_opsets=', "com.microsoft" : 1',
    )
    node = only_node(model_cost(model))
    assert node.macs == 2 * (2 * 4 * 6 * 8)
    assert node.flops == 2 * node.macs + 6 * 2 * 2 * 4 * 6


CONV_WITH_DYNAMIC_BATCH = """
    g (float[batch, 3, 8, 8] x) => (float[batch, 4, 8, 8] y)
    <float[4, 3, 1, 1] w = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}> {
        h = Conv(x, w)
        y = Relu(h)
    }"""


@pytest.mark.parametrize("batch", [2, 8])
def test_symbolic_batch_is_resolved_and_work_scales_linearly_with_it(batch: int) -> None:
    model = parse(CONV_WITH_DYNAMIC_BATCH)
    one, many = model_cost(model, batch=1), model_cost(model, batch=batch)
    assert one.total_macs == 4 * 8 * 8 * 3
    assert many.total_macs == batch * one.total_macs
    assert many.total_flops == batch * one.total_flops
    weights = one.nodes[0].weight_bytes
    assert many.total_bytes - weights == batch * (one.total_bytes - weights)
    assert many.batch == batch


def test_named_dims_take_the_given_values_and_are_reported() -> None:
    model = parse("""
        g (float[batch, seq, 8] x, float[8, 16] w) => (float y) {
            y = MatMul(x, w)
        }""")
    cost = model_cost(model, batch=2, dims={"seq": 10})
    assert cost.total_macs == 2 * 10 * 8 * 16
    assert cost.dims == {"seq": 10}


def test_a_hone_model_and_its_onnx_proto_cost_the_same(tmp_path: Path) -> None:
    path = tmp_path / "conv.onnx"
    onnx.save(parse(CONV_WITH_DYNAMIC_BATCH), path)
    from_model = model_cost(hone.load(path), batch=3)
    from_proto = model_cost(onnx.load(path), batch=3)
    assert from_model.total_macs == from_proto.total_macs == 3 * 4 * 8 * 8 * 3
    assert [n.bytes for n in from_model.nodes] == [n.bytes for n in from_proto.nodes]


def test_onnx_shape_inference_takes_over_when_the_symbolic_engine_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(proto: onnx.ModelProto) -> None:
        raise RuntimeError("engine failed")

    monkeypatch.setattr(cost_module, "_symbolic_infer", broken)
    cost = model_cost(parse(CONV_WITH_DYNAMIC_BATCH), batch=2)
    assert cost.shape_inference == "onnx"
    assert cost.total_macs == 2 * 4 * 8 * 8 * 3


def test_nodes_without_names_are_named_after_their_op_and_position() -> None:
    cost = model_cost(parse(CONV_WITH_DYNAMIC_BATCH))
    assert [n.name for n in cost.nodes] == ["Conv_0", "Relu_1"]


def test_totals_are_the_sums_over_nodes() -> None:
    cost = model_cost(parse(CONV_WITH_DYNAMIC_BATCH), batch=2)
    assert cost.total_macs == sum(n.macs for n in cost.nodes)
    assert cost.total_flops == sum(n.flops for n in cost.nodes)
    assert cost.total_bytes == sum(n.bytes for n in cost.nodes)
    assert cost.unknown_ops == {}


# --- the zoo, against published figures (torchvision / fvcore count conv + fc MACs) ---------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "published_macs"), [("resnet18", 1.82e9), ("resnet50", 4.11e9)])
def test_zoo_resnet_macs_match_the_published_figure_within_two_percent(
    name: str, published_macs: float
) -> None:
    cost = model_cost(hone.load(name), batch=1)
    assert cost.total_macs == pytest.approx(published_macs, rel=0.02)
    assert cost.unknown_ops == {}
    assert cost.total_macs == sum(n.macs for n in cost.nodes if n.op_type in ("Conv", "Gemm"))


@pytest.mark.slow
def test_zoo_minilm_macs_are_its_projections_ffn_and_attention_matmuls() -> None:
    layers, seq, hidden = 6, 128, 384
    per_layer = 4 * seq * hidden * hidden + 2 * seq * hidden * 4 * hidden + 2 * seq * seq * hidden
    cost = model_cost(hone.load("minilm"), batch=1)
    assert cost.dims == {"sequence": 128}
    assert cost.unknown_ops == {}
    assert cost.total_macs == layers * per_layer
    assert cost.total_flops == pytest.approx(2 * cost.total_macs, rel=0.02)


# --- shapes a run saw: fed inputs and values inference cannot follow ------------------------------

# x2's shape depends on the data (which If branch runs), so no shape inference can know Conv's.
CONV_AFTER_DATA_DEPENDENT_IF = """
    g (float[N, C, H, W] x, float[4, 3, 3, 3] w) => (float[N, K, P, Q] y)
    <float zero = {0.0}, int64[1] starts = {0}, int64[1] ends = {4}, int64[1] axes = {3}> {
        total = ReduceSum <keepdims = 0> (x)
        positive = Greater (total, zero)
        x2 = If (positive) <then_branch = then_g () => (float[N, C, H, W] t) { t = Identity (x) },
                            else_branch = else_g () => (float[N, C, H, S] e) { e = Slice (x, starts, ends, axes) }>
        y = Conv (x2, w)
    }"""


def test_values_inference_cannot_follow_are_listed_and_leave_the_conv_unknown() -> None:
    cost = model_cost(parse(CONV_AFTER_DATA_DEPENDENT_IF), dims={"C": 3, "H": 8, "W": 8})
    conv = next(n for n in cost.nodes if n.op_type == "Conv")
    assert not conv.known and "shape unknown for input 'x2'" in conv.note
    assert cost.unknown_values == ["x2", "y"]


def test_shapes_from_a_run_cost_what_inference_could_not() -> None:
    run = {"x2": (onnx.TensorProto.FLOAT, (1, 3, 8, 4)), "y": (onnx.TensorProto.FLOAT, (1, 4, 6, 2))}
    cost = model_cost(parse(CONV_AFTER_DATA_DEPENDENT_IF), dims={"C": 3, "H": 8, "W": 8}, run_shapes=run)
    conv = next(n for n in cost.nodes if n.op_type == "Conv")
    assert conv.known and conv.macs == 4 * 6 * 2 * 3 * 9  # numel(Y) * Cin * prod(k), at the run's shapes
    assert conv.bytes_read == (3 * 8 * 4 + 4 * 3 * 9) * FLOAT_BYTES
    assert cost.unknown_values == [] and cost.shape_inference.endswith("+run")


def test_fed_input_shapes_replace_the_resolved_ones_for_every_symbolic_dim() -> None:
    model = parse("""
        g (float[N, C, H, W] x, float[4, 3, 3, 3] w) => (float y) {
            y = Conv <pads = [1, 1, 1, 1]> (x, w)
        }""")
    cost = model_cost(model, batch=1, input_shapes={"x": (2, 3, 10, 6)})
    assert only_node(cost).macs == 2 * 4 * 10 * 6 * 3 * 9
    assert cost.dims == {"C": 3, "H": 10, "W": 6}
