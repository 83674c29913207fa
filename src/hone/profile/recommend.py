"""Recommendations tied to what hone can do, drawn from a profile and the user's graph.

Each rule looks at measured shares and classes (never at guesses) and names the hone step that
addresses it (passes by their ``name``, so that a renamed pass cannot leave a recommendation
behind); a rule that does not fire says nothing. The rules:

- standalone BatchNormalization after Conv/ConvTranspose/Gemm -> fold it (pass fuse_conv_bn);
- separate elementwise/activation nodes (overhead- or memory-bound) holding time -> the fusions
  hone has (fuse_activation, fuse_transformer);
- shape computations (Shape/Gather/Unsqueeze/Concat...) holding time -> shape simplification and
  constant folding;
- GELU spelled out (Erf) -> fuse_transformer;
- LayerNormalization spelled out (ReduceMean/Pow/Sqrt/Div) -> fuse_transformer;
- attention spelled out (MatMul -> Softmax -> MatMul) -> fuse_attention;
- Memcpy (transfer-bound) time -> keep the work on one provider (each node's provider is listed);
- time outside every node -> batch requests (serve's dynamic batching);
- compute-bound MatMul/Conv/Gemm holding most of the time -> INT8 quantization;
- memory-bound nodes holding most of the time -> fuse, or shrink bytes with fp16/INT8;
- ops the cost model does not know -> say their FLOPs are not counted.
"""

from __future__ import annotations

from collections import Counter

import onnx

from hone.passes.fold_constants import FoldConstantsPass
from hone.passes.fuse_activation import FuseActivationPass
from hone.passes.fuse_attention import FuseAttentionPass
from hone.passes.fuse_conv_bn import FuseConvBnPass
from hone.passes.fuse_transformer import FuseTransformerPass
from hone.passes.infer_shapes import InferShapesPass
from hone.passes.simplify_shapes import SimplifyShapesPass
from hone.profile.types import ProfileResult, Recommendation

_ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Clip",
    "LeakyRelu",
    "HardSwish",
    "HardSigmoid",
    "Gelu",
    "Pow",
    "Sqrt",
    "Exp",
    "Neg",
    "Max",
    "Min",
    "Where",
    "Cast",
    "BiasGelu",
    "FastGelu",
}
_SHAPE_OPS = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Reshape",
    "Slice",
    "Range",
    "ConstantOfShape",
    "Expand",
    "Equal",
}
_DENSE = {"Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "ConvTranspose"}
_MIN_SHARE = 0.02


def recommend(result: ProfileResult, graph: onnx.ModelProto) -> list[Recommendation]:
    found: list[Recommendation] = []
    producer = {out: node for node in graph.graph.node for out in node.output}
    ops = Counter(node.op_type for node in graph.graph.node)

    bn_after_dense = [
        node
        for node in graph.graph.node
        if node.op_type == "BatchNormalization"
        and node.input
        and node.input[0] in producer
        and producer[node.input[0]].op_type in ("Conv", "ConvTranspose", "Gemm")
    ]
    if bn_after_dense:
        bn_share = sum(n.share for n in result.nodes if n.op_type == "BatchNormalization")
        bn_bound = next((n.bound for n in result.nodes if n.op_type == "BatchNormalization"), "")
        if bn_share >= _MIN_SHARE:
            finding = (
                f"BatchNormalization {100 * bn_share:.0f}% {bn_bound}-bound ({len(bn_after_dense)} after"
                " Conv/Gemm)"
            )
        else:
            finding = (
                f"{len(bn_after_dense)} BatchNormalization after Conv/Gemm (fused by onnxruntime "
                "at run time here, not in the file)"
            )
        found.append(
            Recommendation(
                finding,
                f"fold into the Conv/Gemm weights: `hone optimize` pass {FuseConvBnPass.name} "
                "(permanent for every runtime: web, edge, other providers)",
                bn_share,
            )
        )

    elementwise = [n for n in result.nodes if n.op_type in _ELEMENTWISE and n.bound in ("overhead", "memory")]
    share = sum(n.share for n in elementwise)
    if share >= _MIN_SHARE and len(elementwise) >= 3:
        bounds = "/".join(sorted({n.bound for n in elementwise}))
        found.append(
            Recommendation(
                f"{len(elementwise)} separate elementwise ops, {100 * share:.0f}% of the time,"
                f" {bounds}-bound",
                f"fuse what hone can: `hone optimize` passes {FuseActivationPass.name} (Conv/Gemm +"
                f" activation) and {FuseTransformerPass.name} (GELU, LayerNormalization, bias and"
                " skip adds), for onnxruntime targets",
                share,
            )
        )

    shape_ops = [n for n in result.nodes if n.op_type in _SHAPE_OPS]
    share = sum(n.share for n in shape_ops)
    if share >= _MIN_SHARE and len(shape_ops) >= 5:
        found.append(
            Recommendation(
                f"{len(shape_ops)} shape computations (Shape/Gather/Unsqueeze/Concat...) at run time, "
                f"{100 * share:.0f}% of the time",
                f"fold them: `hone optimize` passes {InferShapesPass.name}, {SimplifyShapesPass.name}"
                f" and {FoldConstantsPass.name}",
                share,
            )
        )

    if ops["Erf"] and not ops["Gelu"]:
        share = sum(n.share for n in result.nodes if "Erf" in n.covered_ops)
        found.append(
            Recommendation(
                f"GELU spelled out as Div/Erf/Add/Mul ({ops['Erf']} times, {100 * share:.0f}% of the time)",
                f"`hone optimize` pass {FuseTransformerPass.name}",
                share,
            )
        )

    if ops["ReduceMean"] >= 2 and ops["LayerNormalization"] == 0 and (ops["Pow"] or ops["Sqrt"]):
        share = sum(n.share for n in result.nodes if n.op_type in ("ReduceMean", "Pow", "Sqrt", "Div", "Sub"))
        found.append(
            Recommendation(
                f"LayerNormalization spelled out as ReduceMean/Pow/Sqrt ({ops['ReduceMean'] // 2} times, "
                f"{100 * share:.0f}% of the time)",
                f"`hone optimize` pass {FuseTransformerPass.name}",
                share,
            )
        )

    if (
        ops["Softmax"]
        and ops["MatMul"] >= 2 * ops["Softmax"]
        and not ops["Attention"]
        and not ops["MultiHeadAttention"]
    ):
        share = sum(
            n.share for n in result.nodes if n.op_type in ("Softmax", "MatMul") and "MatMul" in n.covered_ops
        )
        found.append(
            Recommendation(
                f"attention spelled out as MatMul/Softmax/MatMul ({ops['Softmax']} times)",
                f"`hone optimize --target ort-cpu` pass {FuseAttentionPass.name}",
                share,
            )
        )

    transfer = [n for n in result.nodes if n.bound == "transfer"]
    share = sum(n.share for n in transfer)
    if share >= _MIN_SHARE:
        found.append(
            Recommendation(
                f"Memcpy {100 * share:.0f}% transfer-bound ({len(transfer)} copies)",
                "keep the work on one provider: each copy sits between nodes that ran on different"
                " providers (every node's provider is in `--json` and `--trace`)",
                share,
            )
        )

    outside = result.outside_nodes_ms / result.total_ms if result.total_ms else 0.0
    if outside >= 0.1:
        found.append(
            Recommendation(
                f"{100 * outside:.0f}% of each run is outside every node (session overhead)",
                "amortize it: larger batches (`hone serve` dynamic batching)",
                outside,
            )
        )

    dense_compute = sum(n.share for n in result.nodes if n.op_type in _DENSE and n.bound == "compute")
    if dense_compute >= 0.5:
        found.append(
            Recommendation(
                f"Conv/MatMul/Gemm compute-bound, {100 * dense_compute:.0f}% of the time",
                "fewer or cheaper FLOPs: INT8 quantization (`hone quantize`), or pruning",
                dense_compute,
            )
        )

    memory = result.bound_shares.get("memory", 0.0)
    if memory >= 0.3:
        found.append(
            Recommendation(
                f"memory-bound nodes hold {100 * memory:.0f}% of the time",
                "move fewer bytes: fusion (`hone optimize`), fp16 or INT8 weights (`hone quantize`)",
                memory,
            )
        )

    if result.unknown_ops:
        listed = ", ".join(f"{op} x{count}" for op, count in result.unknown_ops.items())
        found.append(
            Recommendation(
                f"ops without a cost formula: {listed}; their FLOPs are not counted",
                "none needed to run; their time is still measured",
                0.0,
            )
        )
    return sorted(found, key=lambda rec: rec.share, reverse=True)
