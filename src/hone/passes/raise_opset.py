"""A graph below opset 18 raised to opset 18, for onnxruntime targets, before the fusions run.

The fusions emit ops of newer opsets than many third-party files carry, and match the forms of
newer ones: ``LayerNormalization`` is opset 17, onnxscript's LayerNorm rule matches ReduceMean with
its axes as an input (opset 18), and onnxscript's ort_fusions put ``Shape(start=...)`` (opset 15)
into the graph whatever its opset, which onnxruntime then refuses to load (an opset-14 GPT-2 from
Optimum 1.x lost every ``fuse_transformer`` fusion that way). onnx's own version converter does the
conversion (through onnxscript's ``ConvertVersionPass``, whose own converter starts at opset 18 and
falls back to onnx's C API below it); the pass is verified like every other, so a conversion that
changed an answer is rolled back.

Runs after simplify_shapes (onnxruntime's symbolic shape inference fails on some raised graphs)
and only where fuse_transformer needs it: a spelled-out LayerNorm (ReduceMean with Sqrt), or below
opset 15 a Softmax or an Erf. A CNN, or an opset-17 BERT whose LayerNorm is already the op, keeps
its opset (raised, MiniLM lost its 6 SkipLayerNormalization fusions: the converted graph had no
value shapes until inferred again).

Leaves alone: opset 18 and newer; graphs without those needs; graphs the converter cannot convert
(custom or contrib domains it does not know, very old opsets): reported as missed with the
converter's reason, nothing changed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass
from onnxscript.version_converter import ConvertVersionPass

from hone.passes.base import HonePass
from hone.passes.graph import infer_shapes

TARGET_OPSET = 18  # LayerNormalization (17); ReduceMean with axes as an input (18), the form the rules match


class RaiseOpsetPass(HonePass):
    name = "raise_opset"
    targets = ("ort-cpu", "ort-cuda")

    def rewrite(self, model: ir.Model) -> ir.passes.PassResult:
        version = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
        if version is None or version >= TARGET_OPSET or not _needs_raising(model, version):
            return ir.passes.PassResult(model, modified=False)
        notes: list[str] = []
        try:
            with _quiet_converter(notes):
                ConvertVersionPass(TARGET_OPSET, fallback=True)(model)
        except Exception as exc:  # noqa: BLE001 - onnx's converter raises plain RuntimeError/ValueError
            notes.append(_first_line(exc))
        raised = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
        if raised != TARGET_OPSET:  # onnxscript logs the C API's failure and leaves the graph as it was
            reason = notes[-1] if notes else "the graph was left as it was"
            self.missed = [f"opset {version} left: onnx's version converter failed ({reason})"]
            return ir.passes.PassResult(model, modified=False)
        # the converter writes new operands (ReduceMean's axes) as Constant nodes; the rules match
        # constants held as initializers, as every other pass leaves them
        LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        infer_shapes(model)  # the converter's graph has no value shapes; the fusions check them
        self.matched = 1
        return ir.passes.PassResult(model, modified=True)


def _needs_raising(model: ir.Model, version: int) -> bool:
    """Whether fuse_transformer needs a newer opset here: a spelled-out LayerNorm (ReduceMean with
    Sqrt), or, below opset 15, an attention's Softmax or an Erf GELU (its rules emit opset-15 Shape).
    A CNN, or a graph whose LayerNorm is already the op, keeps its opset."""
    ops = {node.op_type for node in model.graph if node.domain in ("", "ai.onnx")}
    return {"ReduceMean", "Sqrt"} <= ops or (version < 15 and bool(ops & {"Softmax", "Erf"}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_converter(notes: list[str]) -> Iterator[None]:
    """onnxscript's converter logs a warning on every fallback and on failure; keep the failure's
    reason for the report instead of printing either."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                notes.append(_first_line(record.exc_info[1]))

    converter_logger = logging.getLogger("onnxscript.version_converter")
    handler, propagate = Keep(), converter_logger.propagate
    converter_logger.addHandler(handler)
    converter_logger.propagate = False
    try:
        yield
    finally:
        converter_logger.removeHandler(handler)
        converter_logger.propagate = propagate


__all__ = ["TARGET_OPSET", "RaiseOpsetPass"]
