"""Numerical equivalence of two executions of a model on the same inputs.

``compare`` judges candidate outputs against reference outputs (max abs / relative error, cosine,
top-1 agreement); ``verify_runs`` is the spine's check that a loaded model runs and agrees with
itself across onnxruntime's optimization levels and with its PyTorch source, when it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hone.data import synthesize
from hone.model import Model
from hone.runtime import Session, SessionConfig

logger = logging.getLogger(__name__)

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass
class OutputComparison:
    name: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    cosine: float
    # Fraction of rows whose argmax matches, for outputs shaped (batch, classes); else None.
    top1_agreement: float | None
    passed: bool


@dataclass
class Comparison:
    reference: str
    candidate: str
    atol: float
    rtol: float
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)


@dataclass
class VerifyResult:
    """The run check: outputs are finite and match across executions of the same model."""

    model: str
    batch: int
    output_shapes: dict[str, list[int]]
    finite: bool
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.finite and all(c.passed for c in self.comparisons)


def compare(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    *,
    names: Sequence[str],
    reference_label: str,
    candidate_label: str,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Comparison:
    """Element-wise agreement: passes where ``|c - r| <= atol + rtol * |r|`` everywhere."""
    results = []
    for name, ref, cand in zip(names, reference, candidate, strict=True):
        ref64 = np.asarray(ref, dtype=np.float64)
        cand64 = np.asarray(cand, dtype=np.float64)
        if ref64.shape != cand64.shape:
            results.append(
                OutputComparison(name, list(cand64.shape), float("inf"), float("inf"), 0.0, None, False)
            )
            continue
        diff = np.abs(ref64 - cand64)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(ref64), 1e-12)).max()) if diff.size else 0.0
        cosine = _cosine(ref64.ravel(), cand64.ravel())
        top1 = None
        if ref64.ndim == 2 and ref64.shape[1] > 1:
            top1 = float(np.mean(ref64.argmax(axis=1) == cand64.argmax(axis=1)))
        passed = bool(np.all(diff <= atol + rtol * np.abs(ref64)))
        results.append(
            OutputComparison(name, list(ref64.shape), max_abs, max_rel, cosine, top1, passed)
        )
    return Comparison(reference_label, candidate_label, atol, rtol, results)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if float(np.linalg.norm(a - b)) == 0.0 else 0.0
    return float(np.dot(a, b) / norm)


def run_torch(model: Model, feeds: Mapping[str, np.ndarray], threads: int | None = None) -> list[np.ndarray]:
    """Outputs of the model's eager PyTorch module on ``feeds`` (inputs in spec order)."""
    import torch

    assert model.torch_factory is not None, "run_torch needs a model with a torch source"
    if threads:
        torch.set_num_threads(threads)
    module = model.torch_factory()
    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in model.inputs]
    with torch.inference_mode():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [o.detach().cpu().numpy() for o in outputs]


def verify_runs(
    model: Model,
    *,
    batch: int = 2,
    provider: str = "cpu",
    threads: int | None = None,
    seed: int = 0,
) -> VerifyResult:
    """Run the model and check it: finite outputs, ORT-all vs ORT-disabled, ORT vs PyTorch eager."""
    feeds = synthesize(model.inputs, batch=batch, dims=model.default_dims, seed=seed)
    optimized = Session(model, SessionConfig(provider=provider, threads=threads, optimization="all"))
    plain = Session(model, SessionConfig(provider=provider, threads=threads, optimization="disabled"))
    ort_all = optimized.run(feeds)
    ort_disabled = plain.run(feeds)
    names = optimized.output_names
    result = VerifyResult(
        model=model.name,
        batch=batch,
        output_shapes={n: list(o.shape) for n, o in zip(names, ort_all)},
        finite=all(bool(np.isfinite(o).all()) for o in ort_all if np.issubdtype(o.dtype, np.floating)),
    )
    result.comparisons.append(
        compare(ort_disabled, ort_all, names=names, reference_label="ort-disabled", candidate_label="ort-all")
    )
    if model.torch_factory is not None:
        eager = run_torch(model, feeds, threads=threads)
        result.comparisons.append(
            compare(eager, ort_all, names=names, reference_label="torch-eager", candidate_label="ort-all")
        )
    if not result.passed:
        logger.warning("verification of %s failed: %s", model.name, result)
    return result
