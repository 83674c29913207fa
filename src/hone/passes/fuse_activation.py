"""Activation fusion for onnxruntime targets: Conv -> activation  ->  com.microsoft ``FusedConv``;
Conv -> Add(residual) -> Relu  ->  ``FusedConv`` with the residual as its sum input ``Z`` (CPU);
Gemm -> activation  ->  com.microsoft ``FusedGemm`` (CPU).

Activations and their parameters (``activation`` and ``activation_params`` of FusedConv,
``activation_alpha``/``activation_beta`` of FusedGemm):
Relu; Tanh; Sigmoid; LeakyRelu(alpha); and for FusedConv also HardSigmoid(alpha, beta) and
Clip(min, max) with constant bounds (missing bounds are -inf/+inf). The fused kernel applies the activation
to the
convolution's (or Gemm's) output while it is still in cache, so the result is the same numbers
without a second pass over memory. onnxruntime does this at ORT_ENABLE_ALL on its own; doing it
here gives runtimes with optimizations off (or a session that skips them) the same graph.

Written here: onnxscript has no rule that emits FusedConv/FusedGemm. Targets: ort-cpu (every
activation above, both ops); ort-cuda (Conv + Relu only, the one fused CUDA kernel). Leaves
alone: a Conv/Gemm whose output is also used elsewhere or is a graph output, Clip with bounds
computed at run time, a residual whose shape is not known to equal the convolution's (``Z`` does
not broadcast).
"""

from __future__ import annotations

import math

import onnx_ir as ir

from hone.passes.base import HonePass
from hone.passes.graph import MS_DOMAIN, ONNX_DOMAINS, infer_shapes, is_onnx_op

_CPU_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Clip")
_GEMM_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "LeakyRelu")


class FuseActivationPass(HonePass):
    name = "fuse_activation"
    targets = ("ort-cpu", "ort-cuda")

    def __init__(self, target: str = "ort-cpu") -> None:
        super().__init__()
        self.target = target

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        infer_shapes(model)  # residual fusion needs known shapes
        graph, outputs = model.graph, set(model.graph.outputs)
        conv_activations = ("Relu",) if self.target == "ort-cuda" else _CPU_ACTIVATIONS
        gemm_activations = () if self.target == "ort-cuda" else _GEMM_ACTIVATIONS
        self.matched = 0
        for node in list(graph):
            if not is_onnx_op(node, "Conv", "Gemm"):
                continue
            produced = node.outputs[0]
            users = list(produced.uses())
            if produced in outputs or len(users) != 1:
                continue
            activation = users[0][0]
            if node.op_type == "Conv" and self.target == "ort-cpu" and activation.op_type == "Add":
                self.matched += _fuse_residual(graph, node, activation, outputs)
                continue
            allowed = conv_activations if node.op_type == "Conv" else gemm_activations
            if not is_onnx_op(activation, *allowed):
                continue
            params = _activation_params(activation)
            if params is None:
                self.missed.append(f"{node.op_type} + Clip with run-time bounds: {activation.name}")
                continue
            fused = _fused_node(node, activation, params)
            ir.convenience.replace_nodes_and_values(
                graph, activation, [node, activation], [fused], [activation.outputs[0]], [fused.outputs[0]]
            )
            self.matched += 1
        if self.matched:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        return ir.passes.PassResult(model, modified=self.matched > 0)


def _fuse_residual(graph: ir.Graph, conv: ir.Node, add: ir.Node, outputs: set[ir.Value]) -> int:
    """Conv -> Add(residual) -> Relu  ->  FusedConv(x, w, b, Z=residual, activation=Relu); 1 if fused."""
    added = add.outputs[0]
    users = list(added.uses())
    if add.domain not in ONNX_DOMAINS or added in outputs or len(users) != 1:
        return 0
    relu = users[0][0]
    if not is_onnx_op(relu, "Relu"):
        return 0
    conv_out = conv.outputs[0]
    residual = add.inputs[1] if add.inputs[0] is conv_out else add.inputs[0]
    if (
        residual is None
        or residual is conv_out
        or not _same_known_shape(residual, conv_out)
        or not _same_known_shape(added, conv_out)
    ):
        return 0
    inputs = list(conv.inputs) + [None] * (3 - len(conv.inputs)) + [residual]
    attributes = {name: attr.value for name, attr in conv.attributes.items()}
    attributes["activation"] = "Relu"
    fused = ir.node(
        "FusedConv",
        inputs,
        attributes,
        domain=MS_DOMAIN,
        name=f"{conv.name or conv.outputs[0].name}_add_relu",
    )
    ir.convenience.replace_nodes_and_values(
        graph, relu, [conv, add, relu], [fused], [relu.outputs[0]], [fused.outputs[0]]
    )
    return 1


def _same_known_shape(a: ir.Value, b: ir.Value) -> bool:
    return (
        a.shape is not None
        and b.shape is not None
        and len(a.shape) == len(b.shape)
        and all(
            x == y and (isinstance(x, int) or isinstance(x, ir.SymbolicDim) and x.value is not None)
            for x, y in zip(a.shape, b.shape, strict=False)
        )
    )


def _activation_params(activation: ir.Node) -> list[float] | None:
    """The activation's parameters in FusedConv's order, or None when they are not constant."""
    op_type = activation.op_type
    if op_type == "LeakyRelu":
        return [_float_attr(activation, "alpha", 0.01)]
    if op_type == "HardSigmoid":
        return [_float_attr(activation, "alpha", 0.2), _float_attr(activation, "beta", 0.5)]
    if op_type != "Clip":
        return []
    if "min" in activation.attributes or "max" in activation.attributes:  # opset < 11 spelling
        return [_float_attr(activation, "min", -math.inf), _float_attr(activation, "max", math.inf)]
    bounds = []
    for index, default in ((1, -math.inf), (2, math.inf)):
        bound = activation.inputs[index] if len(activation.inputs) > index else None
        if bound is None:
            bounds.append(default)
            continue
        tensor = ir.convenience.get_const_tensor(bound)
        if tensor is None or tensor.size != 1:
            return None
        bounds.append(float(tensor.numpy().reshape(-1)[0]))
    return bounds


def _fused_node(node: ir.Node, activation: ir.Node, params: list[float]) -> ir.Node:
    attributes = {name: attr.value for name, attr in node.attributes.items()}
    attributes["activation"] = activation.op_type
    if node.op_type == "Conv":
        if params:
            attributes["activation_params"] = params
        op_type = "FusedConv"
    else:
        for name, value in zip(("activation_alpha", "activation_beta"), params, strict=False):
            attributes[name] = value
        op_type = "FusedGemm"
    return ir.node(
        op_type,
        list(node.inputs),
        attributes,
        domain=MS_DOMAIN,
        name=f"{node.name or node.outputs[0].name}_{activation.op_type}",
    )


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    attribute = node.attributes.get(name)
    return attribute.as_float() if attribute is not None else default
