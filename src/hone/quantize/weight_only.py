"""INT4 weight-only quantization: onnxruntime's ``MatMulNBitsQuantizer`` behind hone's Model.

Every MatMul with a constant 2-D weight becomes a com.microsoft ``MatMulNBits`` node holding the
weight in 4 bits, in blocks of ``block_size`` values along the input axis, each block with its own
scale (and zero point). Two ways to choose the 4-bit values, both onnxruntime's:

- ``rtn``: round to nearest, symmetric (``DefaultWeightOnlyQuantConfig``);
- ``hqq``: half-quadratic quantization (``HQQWeightOnlyQuantConfig``), which fits each block's
  scale and zero point to minimise the weight error (calibrated on the weights, no data needed).

Both run with ``accuracy_level=4``: activations are quantized to int8 at run time, onnxruntime's
fastest CPU path (on tiny_gpt, HQQ's nodes without it decoded 4x slower than float).

Gemm nodes (GPT-2's Conv1D, exported as ``Gemm(x, W, b)``) are first written as ``MatMul + Add``,
the same numbers, so that the quantizer sees them.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx_ir as ir

from hone.model import Model
from hone.quantize.int8 import QuantizationError

logger = logging.getLogger(__name__)

Int4Method = Literal["rtn", "hqq"]
INT4_METHODS: tuple[Int4Method, ...] = ("rtn", "hqq")
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32
RTN_ACCURACY_LEVEL = 4


def gemm_as_matmul(model: Model) -> Model:
    """``Gemm(A, B, C)`` with a constant B, alpha = beta = 1 and A not transposed -> ``MatMul(A, B')
    + C`` (B' = B, or its transpose when transB = 1): the same arithmetic, in the form weight-only
    quantizers read. Other Gemms are left as they are."""
    copy = model.clone()
    graph = copy.ir.graph
    changed = 0
    for node in list(graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        attrs = {name: attr.value for name, attr in node.attributes.items()}
        weight = node.inputs[1]
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
            or weight is None
            or weight.const_value is None
            or len(weight.uses()) != 1
        ):
            continue
        array = weight.const_value.numpy()
        if attrs.get("transB", 0):
            array = np.ascontiguousarray(array.T)
        new_weight = ir.Value(name=f"{weight.name}_matmul", const_value=ir.tensor(array))
        graph.register_initializer(new_weight)
        matmul = ir.node("MatMul", [node.inputs[0], new_weight], name=f"{node.name}_MatMul")
        replacement = [matmul]
        result = matmul.outputs[0]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None:
            add = ir.node("Add", [result, bias], name=f"{node.name}_Add")
            replacement.append(add)
            result = add.outputs[0]
        result.name, result.shape, result.type = (
            node.outputs[0].name,
            node.outputs[0].shape,
            node.outputs[0].type,
        )
        old_output = node.outputs[0]
        old_output.name = f"{old_output.name}_gemm"
        graph.insert_before(node, replacement)
        old_output.replace_all_uses_with(result)
        if old_output.is_graph_output():
            outputs = graph.outputs
            outputs[outputs.index(old_output)] = result
        graph.remove(node, safe=True)
        if weight.name is not None and weight.name in graph.initializers and not weight.uses():
            graph.initializers.pop(weight.name)
        changed += 1
    return copy.with_graph(copy.ir, f"Gemm -> MatMul + Add ({changed})") if changed else model


def int4_matmuls(model: Model) -> list[str]:
    """Names of the MatMul nodes int4 would quantize: a constant 2-D weight whose rows (the input
    axis) fill at least one block."""
    names = []
    for node in model.ir.graph:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = node.inputs[1]
        if weight is not None and weight.const_value is not None and len(weight.const_value.shape) == 2:
            names.append(node.name or "")
    return names


def int4(
    float_model: Model,
    *,
    method: Int4Method = "rtn",
    block_size: int = DEFAULT_BLOCK_SIZE,
    exclude: tuple[str, ...] = (),
    include: tuple[str, ...] | None = None,
) -> Model:
    """INT4 weight-only of ``float_model``'s MatMuls (``gemm_as_matmul`` first), ``exclude`` kept
    float, or only ``include`` quantized."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if block_size not in BLOCK_SIZES:
        raise QuantizationError(
            f"--block-size {block_size}: MatMulNBits takes one of {', '.join(map(str, BLOCK_SIZES))}"
        )
    prepared = gemm_as_matmul(float_model)
    if include is not None:  # onnxruntime's nodes_to_include adds to its op types; exclude the rest
        exclude = (*exclude, *(n for n in int4_matmuls(prepared) if n not in include))
    if method == "rtn":
        config: object = nbits.DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=True, accuracy_level=RTN_ACCURACY_LEVEL
        )
    else:
        config = nbits.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4)
    ir.external_data.load_to_model(prepared.ir)
    proto = ir.to_proto(prepared.ir)
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level, quiet.level = quiet.level, logging.WARNING  # it logs every node it skips at INFO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HQQ's torch.from_numpy on read-only arrays (it copies)
            quantizer = nbits.MatMulNBitsQuantizer(
                proto,
                block_size=block_size,
                is_symmetric=True,
                accuracy_level=RTN_ACCURACY_LEVEL if method == "rtn" else None,
                nodes_to_exclude=list(exclude),
                algo_config=config,
            )
            quantizer.process()
    except Exception as exc:  # onnxruntime raises many types; one line for the user
        raise QuantizationError(
            f"onnxruntime could not quantize {float_model.name} to int4 ({method}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        quiet.setLevel(level)
    with tempfile.TemporaryDirectory(prefix="hone-int4-") as folder:
        path = Path(folder) / "int4.onnx"
        onnx.save(quantizer.model.model, str(path))
        quantized = ir.load(path)
        ir.external_data.load_to_model(quantized)
    for node in quantized.graph:
        if node.op_type == "MatMulNBits":  # HQQ's nodes too: int8 compute, the fast CPU path
            node.attributes["accuracy_level"] = ir.AttrInt64("accuracy_level", RTN_ACCURACY_LEVEL)
    for key, value in prepared.ir.metadata_props.items():
        quantized.metadata_props.setdefault(key, value)
    kept = f", {len(exclude)} MatMuls kept float" if exclude else ""
    return prepared.with_graph(quantized, f"quantize int4 weight-only ({method}, block {block_size}{kept})")


__all__ = [
    "BLOCK_SIZES",
    "DEFAULT_BLOCK_SIZE",
    "INT4_METHODS",
    "Int4Method",
    "gemm_as_matmul",
    "int4",
    "int4_matmuls",
]
