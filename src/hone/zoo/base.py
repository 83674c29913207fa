"""What a built-in model is: a deterministic torch module, its input specs, and optional real data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hone.specs import TensorSpec


@dataclass(frozen=True)
class EvalSet:
    """Real held-out data for a zoo model: inputs by name, and labels or reference outputs.

    ``metric`` names how a candidate's outputs are judged: ``"top1"`` (argmax of the first output
    against ``labels``) or ``"cosine"`` (the output named ``output_name`` against ``reference``).
    """

    inputs: dict[str, np.ndarray]
    metric: str
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None
    output_name: str | None = None
    description: str = ""


@dataclass(frozen=True)
class ZooModel:
    """One built-in model. ``build_module`` returns the module in eval mode, same weights every call."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    build_module: Callable[[], "object"]
    # Values for the symbolic dims of ``inputs`` other than "batch" (e.g. {"sequence": 128}).
    default_dims: dict[str, int] = field(default_factory=dict)
    # Facts worth recording with the model: seed, data set, attention implementation, accuracy...
    provenance: dict[str, str] = field(default_factory=dict)
    eval_data: Callable[[], EvalSet] | None = None
    # Samples for calibrating static INT8, disjoint from ``eval_data``: (inputs by name, description).
    calibration_data: Callable[[], tuple[dict[str, np.ndarray], str]] | None = None
    # Bump when the architecture or weights change so that cached exports are rebuilt.
    version: str = "1"
