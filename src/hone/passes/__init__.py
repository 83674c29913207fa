"""Graph rewrites on onnx-ir, one small module per pass; pipeline.py orders, verifies and rolls
them back. ``optimize(model, target=..., verify=True)`` is the entry point."""

from hone.passes.manager import (
    TARGETS,
    OptimizeResult,
    PassReport,
    default_passes,
    optimize,
    quantizable_passes,
)

__all__ = ["TARGETS", "OptimizeResult", "PassReport", "default_passes", "optimize", "quantizable_passes"]
