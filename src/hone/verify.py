"""Numerical equivalence of two executions of a model on the same inputs; the one home of tolerances.

``compare`` judges candidate outputs against reference outputs (max abs / relative error, cosine,
top-1 agreement); ``verify_runs`` is the spine's check that a loaded model runs and agrees with
itself across onnxruntime's optimization levels and with its PyTorch source, when it has one.

Tolerances of an exact rewrite (``tolerance_for``, what ``hone optimize`` verifies each pass with),
``|candidate - reference| <= atol + rtol * |reference|`` element-wise: float32/float64 atol 1e-4,
rtol 1e-3 (folding BN or constants reorders float arithmetic); float16/bfloat16 atol 1e-2, rtol
1e-2; integer and bool outputs must be equal. The accuracy gate's thresholds (agreement, cosine,
channel error, exact match; ``Tolerances``) are defined below too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from hone.data import feeds as sample_feeds
from hone.model import Model
from hone.runtime import Session, SessionConfig
from hone.specs import has_batch_axis

logger = logging.getLogger(__name__)

# Element-wise tolerances (atol, rtol) of an exact rewrite, per output dtype (see the module docstring).
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
HALF_PRECISION_ATOL = 1e-2
HALF_PRECISION_RTOL = 1e-2
_HALF_PRECISION_DTYPES = ("float16", "bfloat16")


def tolerance_for(dtype: np.dtype | type) -> tuple[float, float]:
    """``(atol, rtol)`` for outputs of ``dtype``: float32/float64 ``DEFAULT_*``, float16/bfloat16
    ``HALF_PRECISION_*``, and ``(0, 0)`` (exactly equal) for integers and bools."""
    if not np.issubdtype(dtype, np.floating):
        return (0.0, 0.0)
    if np.dtype(dtype).name in _HALF_PRECISION_DTYPES:
        return (HALF_PRECISION_ATOL, HALF_PRECISION_RTOL)
    return (DEFAULT_ATOL, DEFAULT_RTOL)


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
    JSON_PROPERTIES: ClassVar[tuple[str, ...]] = ("max_abs_error",)  # its JSON has the worst error

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
        results.append(OutputComparison(name, list(ref64.shape), max_abs, max_rel, cosine, top1, passed))
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
    batch = batch if has_batch_axis(model.inputs) else 1
    feeds = sample_feeds(model, batch=batch, seed=seed)
    optimized = Session(model, SessionConfig(provider=provider, threads=threads, optimization="all"))
    plain = Session(model, SessionConfig(provider=provider, threads=threads, optimization="disabled"))
    ort_all = optimized.run(feeds)
    ort_disabled = plain.run(feeds)
    names = optimized.output_names
    result = VerifyResult(
        model=model.name,
        batch=batch,
        output_shapes={n: list(o.shape) for n, o in zip(names, ort_all, strict=False)},
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


# --- per output, per channel: the accuracy gate's comparison ------------------------------------

# Default tolerances of the accuracy gate (``hone.quantize.gate.Budget`` takes its defaults here).
MIN_AGREEMENT = 0.98  # classifier outputs: share of samples whose top-1 class is unchanged (1 flip in 50)
MIN_COSINE_MEAN = 0.995  # float outputs: cosine with the float model per sample, mean ...
MIN_COSINE_MIN = 0.98  # ... and worst sample
MAX_CHANNEL_ERROR = 0.1  # float outputs: RMS error of the worst channel over its own scale (range or peak)
MIN_EXACT_MATCH = 0.99  # integer and bool outputs: share of elements exactly equal
_EMBEDDING_WORDS = ("embed", "hidden", "feature", "pool")

# How an output is judged (``output_role``), and the metric that decided its judgement: one of its
# role's metrics, or "shape" / "finite" when the candidate's output has another shape or non-finite values.
OutputRole = Literal["classifier", "float", "exact"]
JudgedMetric = Literal["top1", "agreement", "channel-error", "cosine", "exact", "shape", "finite"]


@dataclass
class OutputJudgement:
    """One output of a candidate judged against the float model's, with the metrics of its role.

    ``role`` is "classifier" (a (batch, classes) float output: top-1/top-5 agreement), "float"
    (anything else of a float type: worst channel's RMS error over that channel's scale (its range or peak
    magnitude), plus
    cosine per sample), or "exact" (integer and bool outputs: share of equal elements). Channels
    are the slices along ``channel_axis``, the smallest static axis other than the batch one
    (84 in a detector's [1, 84, N]): one channel of box pixels and one of probabilities are each
    held to their own range. ``margin`` is how far inside the threshold the deciding metric is
    (negative: outside); the output with the smallest margin decides the gate.
    """

    name: str
    role: OutputRole
    metric: JudgedMetric  # the deciding metric
    value: float
    threshold: str
    passed: bool
    margin: float
    samples: int
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    channel_axis: int | None = None
    channels: int | None = None
    worst_channel: int | None = None
    worst_channel_error: float | None = None
    exact_match: float | None = None
    top1_float: float | None = None  # with labels: top-1 accuracy (%) of the float model and the candidate
    top1_candidate: float | None = None


@dataclass(frozen=True)
class Tolerances:
    """The thresholds one judgement applies (the gate's Budget hands its own)."""

    min_agreement: float = MIN_AGREEMENT
    min_cosine_mean: float = MIN_COSINE_MEAN
    min_cosine_min: float | None = MIN_COSINE_MIN
    max_channel_error: float = MAX_CHANNEL_ERROR
    min_exact_match: float = MIN_EXACT_MATCH
    max_top1_drop_points: float = 0.5


def output_role(
    name: str,
    dtype: str,
    shape: Sequence[int | str | None],
    batch_axis: int | None,
    forced: str | None = None,
) -> OutputRole:
    """How an output is judged: "exact" for integers and bools, "classifier" for (batch, classes)
    float scores not named like an embedding, "float" for everything else."""
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return "exact"
    if forced in ("cosine",):
        return "float"
    if forced in ("agreement", "top1"):
        return "classifier"
    if (
        len(shape) == 2
        and batch_axis == 0
        and isinstance(shape[1], int)
        and shape[1] > 1
        and not any(word in name.lower() for word in _EMBEDDING_WORDS)
    ):
        return "classifier"
    return "float"


def per_sample(array: np.ndarray, batch_axis: int | None) -> np.ndarray:
    """``array`` with its samples first: the batch axis moved to the front (a new one when it has none)."""
    if batch_axis is None or array.ndim == 0:
        return array[None]
    return np.moveaxis(array, batch_axis, 0)


def judge_output(
    name: str,
    role: OutputRole,
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerances: Tolerances,
    labels: np.ndarray | None = None,
    channel_axis: int | None = None,
) -> OutputJudgement:
    """Judge one output, samples first in both arrays (``per_sample``); ``channel_axis`` counts from
    the sample's own axes (0 = the first axis after the samples)."""
    samples = len(reference)
    if reference.shape != candidate.shape:
        return OutputJudgement(
            name, role, "shape", 0.0, f"shape {list(reference.shape)}", False, -1.0, samples
        )
    if role == "exact":
        share = float(np.mean(reference == candidate)) if reference.size else 1.0
        margin = share - tolerances.min_exact_match
        return OutputJudgement(
            name,
            role,
            "exact",
            share,
            f">= {tolerances.min_exact_match:.1%} equal",
            margin >= -1e-12,
            margin,
            samples,
            exact_match=share,
        )
    ref = (
        reference.astype(np.float64).reshape(samples, -1)
        if role == "classifier"
        else reference.astype(np.float64)
    )
    cand = candidate.astype(np.float64).reshape(ref.shape)
    if not np.isfinite(cand).all():
        return OutputJudgement(name, role, "finite", 0.0, "finite values", False, -1.0, samples)
    if role == "classifier":
        top1 = float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))
        k = min(5, ref.shape[1])
        ref_top5 = np.argsort(-ref, axis=1)[:, :k]
        cand_top5 = np.argsort(-cand, axis=1)[:, :k]
        top5 = float(np.mean([set(a) == set(b) for a, b in zip(ref_top5, cand_top5, strict=False)]))
        cosines = _row_cosines(ref, cand)
        if labels is not None:
            float_top1 = float(np.mean(ref.argmax(axis=1) == labels) * 100)
            cand_top1 = float(np.mean(cand.argmax(axis=1) == labels) * 100)
            margin = tolerances.max_top1_drop_points - (float_top1 - cand_top1)
            return OutputJudgement(
                name,
                role,
                "top1",
                cand_top1,
                f"top-1 drop <= {tolerances.max_top1_drop_points:g} points",
                margin >= -1e-9,
                margin / 100,
                samples,
                top1,
                top5,
                float(cosines.mean()),
                float(cosines.min()),
                top1_float=float_top1,
                top1_candidate=cand_top1,
            )
        margin = top1 - tolerances.min_agreement
        return OutputJudgement(
            name,
            role,
            "agreement",
            top1,
            f"top-1 agreement >= {tolerances.min_agreement:.1%}",
            margin >= -1e-12,
            margin,
            samples,
            top1,
            top5,
            float(cosines.mean()),
            float(cosines.min()),
        )
    cosines = _row_cosines(ref.reshape(samples, -1), cand.reshape(samples, -1))
    cos_mean, cos_min = float(cosines.mean()), float(cosines.min())
    axis, errors = _channel_errors(ref, cand, channel_axis)
    worst = int(np.argmax(errors))
    worst_error = float(errors[worst])
    margins: dict[JudgedMetric, float] = {
        "channel-error": (
            (tolerances.max_channel_error - worst_error) / max(tolerances.max_channel_error, 1e-12)
        ),
        "cosine": (cos_mean - tolerances.min_cosine_mean) / max(1 - tolerances.min_cosine_mean, 1e-12),
    }
    if tolerances.min_cosine_min is not None:
        margins["cosine"] = min(
            margins["cosine"],
            (cos_min - tolerances.min_cosine_min) / max(1 - tolerances.min_cosine_min, 1e-12),
        )
    # The headline: the cosine when both hold, else the metric that fails worst.
    metric: JudgedMetric = "cosine"
    if min(margins.values()) < -1e-9:
        metric = "channel-error" if margins["channel-error"] <= margins["cosine"] else "cosine"
    value = worst_error if metric == "channel-error" else cos_mean
    cosine_rule = f"cosine mean >= {tolerances.min_cosine_mean:g}" + (
        f", min >= {tolerances.min_cosine_min:g}" if tolerances.min_cosine_min is not None else ""
    )
    threshold = f"worst channel error <= {tolerances.max_channel_error:g} of its scale; {cosine_rule}"
    return OutputJudgement(
        name,
        role,
        metric,
        value,
        threshold,
        all(m >= -1e-9 for m in margins.values()),
        min(margins.values()),
        samples,
        cosine_mean=cos_mean,
        cosine_min=cos_min,
        channel_axis=axis,
        channels=len(errors),
        worst_channel=worst,
        worst_channel_error=worst_error,
    )


def channel_axis_of(sample_shape: Sequence[int | str | None]) -> int | None:
    """The structured axis of one sample: the smallest static axis longer than 1 (None: one channel)."""
    static = [(size, axis) for axis, size in enumerate(sample_shape) if isinstance(size, int) and size > 1]
    return min(static)[1] if static else None


def _channel_errors(
    ref: np.ndarray, cand: np.ndarray, channel_axis: int | None
) -> tuple[int | None, np.ndarray]:
    """Per channel: RMS error over the reference channel's scale: its range (max - min over every
    sample) or its peak magnitude, whichever is larger, so a channel that sits far from zero with
    little spread (a pooled feature, an offset) is not judged on its spread alone."""
    if channel_axis is None or ref.ndim < 2 or channel_axis + 1 >= ref.ndim:
        ref_c, cand_c, axis = ref.reshape(1, -1), cand.reshape(1, -1), None
    else:
        axis = channel_axis
        ref_c = np.moveaxis(ref, channel_axis + 1, 0).reshape(ref.shape[channel_axis + 1], -1)
        cand_c = np.moveaxis(cand, channel_axis + 1, 0).reshape(ref_c.shape)
    spans = np.maximum(ref_c.max(axis=1) - ref_c.min(axis=1), np.abs(ref_c).max(axis=1))
    overall = float(spans.max()) if spans.size else 0.0
    floor = max(1e-3 * overall, 1e-12)
    rms = np.sqrt(np.mean((cand_c - ref_c) ** 2, axis=1))
    return axis, rms / np.maximum(spans, floor)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    same = np.abs(a - b).max(axis=1) == 0 if a.size else np.ones(len(a), dtype=bool)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-30), np.where(same, 1.0, 0.0))


def max_abs_difference(got: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """The largest ``|got - reference|`` over every pair of arrays, in their own dtype (0.0 for no
    pairs); the two sequences must be as long as each other (a ValueError otherwise)."""
    return max(
        (float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(got, reference, strict=True)),
        default=0.0,
    )
