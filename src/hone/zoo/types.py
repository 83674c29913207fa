"""What a built-in model is: a deterministic torch module, its input specs, and optional real data.

The zoo's types, apart from the entries that build them, so that the data module, the loader and the
accuracy gate import these and not the zoo's modules (this module imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from hone.specs import TensorSpec

if TYPE_CHECKING:  # for the type checker only: importing hone.zoo does not import torch
    import torch

# How an EvalSet judges a candidate's outputs (see EvalSet).
EvalMetric = Literal["top1", "agreement", "cosine"]


@dataclass(frozen=True)
class EvalSet:
    """Real held-out data for a zoo model: inputs by name, and labels or reference outputs.

    ``metric`` names how a candidate's outputs are judged: ``"top1"`` (argmax of the first output
    against ``labels``), ``"agreement"`` (no labels: the candidate's argmax of ``output_name`` against
    the float model's, for classifiers) or ``"cosine"`` (the output named ``output_name`` against
    ``reference``).
    """

    inputs: dict[str, np.ndarray]
    metric: EvalMetric
    labels: np.ndarray | None = None
    reference: np.ndarray | None = None
    output_name: str | None = None
    description: str = ""


@dataclass(frozen=True)
class TrainSet:
    """Labelled training data for a zoo model, disjoint from its EvalSet (for fine-tuning)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    description: str


@dataclass(frozen=True)
class ZooModel:
    """One built-in model. ``build_module`` returns the module in eval mode, same weights every call."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    build_module: Callable[[], torch.nn.Module]
    # Values for the symbolic dims of ``inputs`` other than "batch" (e.g. {"sequence": 128}).
    default_dims: dict[str, int] = field(default_factory=dict)
    # Facts worth recording with the model: seed, data set, attention implementation, accuracy...
    provenance: dict[str, str] = field(default_factory=dict)
    eval_data: Callable[[], EvalSet] | None = None
    # Samples for calibrating static INT8, disjoint from ``eval_data``: (inputs by name, description).
    calibration_data: Callable[[], tuple[dict[str, np.ndarray], str]] | None = None
    # Labelled training data, disjoint from ``eval_data`` (fine-tuning after pruning).
    train_data: Callable[[], TrainSet] | None = None
    # The class names of a classifier's output, index i = class i (e.g. ImageNet's 1000).
    class_names: Callable[[], list[str]] | None = None
    # Whole photos for a report's top-5 table: (name, one preprocessed sample without batch axis).
    showcase: Callable[[], list[tuple[str, np.ndarray]]] | None = None
    # Entries written into the exported ONNX file's metadata_props (e.g. hone.imaging.METADATA_KEY
    # -> the ImagePreprocess JSON); they are part of the cached export's name, so a change rebuilds it.
    metadata: dict[str, str] = field(default_factory=dict)
    # Facts measured when the model is built (e.g. a trained model's held-out perplexity), added to
    # ``provenance`` at load time.
    measured_provenance: Callable[[], dict[str, str]] | None = None
    # Writes the model's ONNX file itself (a decoder with its KV cache) instead of the plain export of
    # ``build_module`` with ``inputs``.
    export_onnx: Callable[[Path], None] | None = None
    # Bump when the architecture or weights change so that cached exports are rebuilt.
    version: str = "1"
