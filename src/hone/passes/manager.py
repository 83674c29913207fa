"""The optimize pipeline: passes in order for a target, each verified and rolled back on a miss.

For every pass: copy the current model, run the pass on the copy, run the copy and the current
model on the same inputs (the model's samples, ``hone.data``: the user's ``--data`` or the zoo's
data, first 8; else inputs invented from the graph at batch 2, or 1 without a batch axis) with
onnxruntime's own optimizations off, compare every output (with the tolerances per dtype of
``hone.verify.tolerance_for``), and keep the copy only if it agrees. A pass that raises is
reported ``failed``; a pass that changes the answer is ``rolled_back``, with a warning naming the
pass and the worst output.
``verify=False`` keeps every pass unchecked. When the original model cannot run on those inputs,
``optimize`` refuses (``InventedInputsError``, naming the failing node) instead of shipping
unverified passes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hone.data import attach, feeds, refusal_message, zoo_eval_set
from hone.errors import ExecutionError, HoneError, InvalidModelError, InventedInputsError, OptionError
from hone.info import op_counts
from hone.model import Model
from hone.passes.base import HonePass
from hone.passes.collapse_chains import CollapseChainsPass
from hone.passes.eliminate_common_subexpressions import EliminateCommonSubexpressionsPass
from hone.passes.fold_constants import FoldConstantsPass
from hone.passes.fuse_activation import FuseActivationPass
from hone.passes.fuse_attention import FuseAttentionPass
from hone.passes.fuse_conv_bn import FuseConvBnPass
from hone.passes.fuse_matmul_add import FuseMatMulAddPass
from hone.passes.fuse_pad_conv import FusePadConvPass
from hone.passes.fuse_rms_norm import FuseRmsNormPass
from hone.passes.fuse_rotary import FuseRotaryPass
from hone.passes.fuse_transformer import FuseTransformerPass
from hone.passes.graph import node_count
from hone.passes.infer_shapes import InferShapesPass
from hone.passes.lift_constants import LiftConstantsPass
from hone.passes.raise_opset import RaiseOpsetPass
from hone.passes.remove_dead_code import RemoveDeadCodePass
from hone.passes.remove_no_ops import RemoveNoOpsPass
from hone.passes.simplify_shapes import SimplifyShapesPass
from hone.passes.types import TARGETS, OptimizeResult, PassReport, Target
from hone.runtime import Session, SessionConfig
from hone.sources import load
from hone.specs import has_batch_axis
from hone.verify import compare, tolerance_for

logger = logging.getLogger(__name__)

ONNX_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def default_passes(target: str = "ort-cpu") -> list[HonePass]:
    """Every pass in the order the pipeline runs them (each pass's ``targets`` filter the list)."""
    return [
        InferShapesPass(),
        FoldConstantsPass(),
        RemoveNoOpsPass(),
        SimplifyShapesPass(),
        FoldConstantsPass(),  # what the shape values simplify_shapes made constant feed (a scale)
        CollapseChainsPass(),
        FuseConvBnPass(),
        FusePadConvPass(),
        FuseActivationPass(target),
        FuseMatMulAddPass(),
        EliminateCommonSubexpressionsPass(),
        FuseRmsNormPass(),
        FuseRotaryPass(),
        FuseAttentionPass(),
        RaiseOpsetPass(),  # late: onnxruntime's symbolic shape inference fails on some raised graphs
        FuseTransformerPass(),
        FoldConstantsPass(),
        LiftConstantsPass(),
        RemoveDeadCodePass(),
    ]


def quantizable_passes(target: str = "ort-cpu") -> list[HonePass]:
    """``default_passes`` without the fusions into ops onnxruntime's quantizer cannot read: Conv or
    Gemm + activation -> FusedConv/FusedGemm (``FuseActivationPass``), which INT8 would leave float
    (openwakeword's timer: nothing was quantized). Attention fusions stay: the quantizer knows them."""
    return [p for p in default_passes(target) if not isinstance(p, FuseActivationPass)]


def optimize(
    source: str | Model,
    *,
    target: Target | str = "ort-cpu",
    verify: bool = True,
    passes: list[HonePass] | None = None,
    seed: int = 0,
) -> tuple[Model, OptimizeResult]:
    """Optimize ``source`` for ``target``; returns the new Model and the per-pass report."""
    target = _checked_target(target)
    original = attach(load(source), check=False)
    current = original.clone("load for optimize")
    result = OptimizeResult(
        model=original.name,
        target=target,
        verified=verify,
        nodes_before=node_count(original.ir),
        nodes_after=0,
        op_counts_before=op_counts(original.ir),
    )
    checker = None
    if not verify:
        result.notes.append("passes NOT verified (verification turned off)")
    else:
        try:
            checker = _Checker(original, seed=seed)
        except InvalidModelError as exc:  # onnxruntime cannot load it (an op it lacks): nothing can verify
            raise InvalidModelError(
                f"{exc}; hone optimize cannot verify passes on a model onnxruntime cannot run "
                "(pass --no-verify to rewrite it unchecked)"
            ) from exc
        except ExecutionError as exc:
            raise InventedInputsError(
                refusal_message(original, exc) + " (or --no-verify to rewrite it unchecked)",
                model=original.name,
            ) from exc
    for hone_pass in passes if passes is not None else default_passes(target):
        if target not in hone_pass.targets:
            continue
        current = _run_pass(hone_pass, current, checker, result)
    if target in ("web", "generic"):
        foreign = _foreign_ops(current.ir)
        added = sorted(foreign - _foreign_ops(original.ir))
        if added:  # a pass emitted a contrib op for a standard-only target: a hone bug, never shipped
            raise InvalidModelError(
                f"optimizing for {target} introduced non-standard ops ({', '.join(added)})"
            )
        if foreign:
            result.notes.append(
                f"the model itself uses non-standard ops ({', '.join(sorted(foreign))}), which many {target} "
                "runtimes cannot run; hone kept them as they were"
            )
    result.nodes_after = node_count(current.ir)
    result.op_counts_after = op_counts(current.ir)
    return current, result


def _checked_target(target: str) -> Target:
    for known in TARGETS:
        if target == known:
            return known
    raise OptionError(f"target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")


def _foreign_ops(model_ir: ir.Model) -> set[str]:
    return {
        f"{n.domain}::{n.op_type}"
        for n in ir.traversal.RecursiveGraphIterator(model_ir.graph)
        if n.domain not in ONNX_STANDARD_DOMAINS
    }


def _run_pass(hone_pass: HonePass, current: Model, checker: _Checker | None, result: OptimizeResult) -> Model:
    before = node_count(current.ir)
    began = time.perf_counter()
    candidate_ir = current.clone().ir
    try:
        changed = hone_pass(candidate_ir).modified
    except Exception as exc:  # noqa: BLE001 - a library pass failing on an unusual graph must not stop the run
        logger.warning("pass %s failed and was skipped: %s", hone_pass.name, exc)
        result.passes.append(
            PassReport(
                hone_pass.name,
                before,
                before,
                time.perf_counter() - began,
                "failed",
                None,
                message=f"{type(exc).__name__}: {exc}",
            )
        )
        return current
    after = node_count(candidate_ir)
    report = PassReport(
        hone_pass.name,
        before,
        after,
        0.0,
        "applied" if changed else "no_change",
        None,
        matched=hone_pass.matched,
        missed=list(hone_pass.missed),
    )
    if changed:
        candidate = current.with_graph(candidate_ir, hone_pass.name)
        if checker is not None:
            verdict = checker.check(candidate)
            report.max_abs_error = verdict.max_abs_error
            if not verdict.passed:
                report.status = "rolled_back"
                report.nodes_after = before
                report.message = verdict.message
                logger.warning(
                    "pass %s changed the answer and was rolled back: %s", hone_pass.name, verdict.message
                )
                candidate = current
            else:
                checker.accept(verdict)
        current = candidate
    report.seconds = time.perf_counter() - began
    result.passes.append(report)
    return current


@dataclass
class _Verdict:
    passed: bool
    max_abs_error: float
    message: str
    outputs: list[list[np.ndarray]]


class _Checker:
    """Runs candidates on fixed inputs and compares them with the last accepted model."""

    def __init__(self, original: Model, *, seed: int) -> None:
        if original.samples is not None and original.samples.samples:
            self.feeds = original.samples.batches(original.inputs, 8)[:2]
        else:
            batch = 2 if has_batch_axis(original.inputs) else 1
            self.feeds = [feeds(original, batch=batch, seed=seed)]
            self.feeds.extend(_real_inputs(original))
        self.reference = self._run(original)
        self.names = [spec.name for spec in original.outputs]

    def _run(self, model: Model) -> list[list[np.ndarray]]:
        session = Session(model, SessionConfig(optimization="disabled"))
        return [session.run(feeds) for feeds in self.feeds]

    def check(self, candidate: Model) -> _Verdict:
        try:
            outputs = self._run(candidate)
        except HoneError as exc:
            return _Verdict(False, float("inf"), f"the rewritten model does not run: {exc}", [])
        worst, worst_name, passed = 0.0, "", True
        for reference, produced in zip(self.reference, outputs, strict=False):
            for name, ref, out in zip(self.names, reference, produced, strict=False):
                atol, rtol = tolerance_for(ref.dtype)
                comparison = compare(
                    [ref],
                    [out],
                    names=[name],
                    reference_label="before",
                    candidate_label="after",
                    atol=atol,
                    rtol=rtol,
                )
                error = comparison.max_abs_error
                if error >= worst:
                    worst, worst_name = error, name
                passed = passed and comparison.passed
        message = "" if passed else f"worst output {worst_name!r}: max abs error {worst:.3g}"
        return _Verdict(passed, worst, message, outputs)

    def accept(self, verdict: _Verdict) -> None:
        self.reference = verdict.outputs


def _real_inputs(model: Model) -> list[dict[str, np.ndarray]]:
    """The zoo's real evaluation inputs (first 8 samples), when the model is a zoo model."""
    try:
        data = zoo_eval_set(model)
    except HoneError as exc:
        logger.warning("verifying on synthesized inputs only: %s", exc)
        return []
    return [] if data is None else [{key: value[:8] for key, value in data.inputs.items()}]


__all__ = ["TARGETS", "OptimizeResult", "PassReport", "default_passes", "optimize", "quantizable_passes"]
