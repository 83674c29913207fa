"""The accuracy gate: does a candidate (quantized, pruned) still give the float model's answers?

Every output is judged, each by the metrics of its role (``hone.verify.judge_output``), and the
worst output decides:

- classifier outputs (``(batch, classes)`` float scores): top-1 agreement with the float model
  (default at least 98%, one flip in 50; top-5 agreement reported), or, with labels (the zoo's digits), the
  drop
  in top-1 accuracy (default at most 0.5 points);
- other float outputs (embeddings, feature maps, a detector's packed boxes and scores): the worst
  channel's RMS error relative to that channel's own range (default at most 0.1), where channels
  are the slices of the output's structured axis, and the cosine per sample (mean at least 0.995,
  worst at least 0.98): a detector whose class scores collapse fails on its score channels even
  when the whole tensor's cosine is 0.9997;
- integer and bool outputs: the share of exactly equal elements (default at least 99%).

The inputs are the evaluation half of the model's samples (``hone.data``: the user's ``--data``,
else the zoo's held-out split), else ``samples`` invented inputs. Float outputs are computed once
per plan and reused for every candidate. ``AccuracyReport.outputs`` holds the per-output table.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from hone.data import synthesize, zoo_eval_set
from hone.errors import HoneError, OptionError
from hone.model import Model
from hone.quantize.types import METRICS, AccuracyReport, EvalMetric, GateMetric, checked_choice
from hone.runtime import Session, SessionConfig
from hone.samples import SampleSet
from hone.specs import has_batch_axis
from hone.verify import (
    MAX_CHANNEL_ERROR,
    MIN_AGREEMENT,
    MIN_COSINE_MEAN,
    MIN_COSINE_MIN,
    MIN_EXACT_MATCH,
    OutputJudgement,
    OutputRole,
    Tolerances,
    channel_axis_of,
    judge_output,
    output_role,
    per_sample,
)
from hone.zoo.types import EvalSet

logger = logging.getLogger(__name__)

EVAL_BATCH = 50  # evaluation batch: large enough to be quick, small enough for resnet50's activations


@dataclass(frozen=True)
class Budget:
    """How much a candidate may differ from the float model; unset fields take the defaults."""

    max_top1_drop_points: float = 0.5
    min_agreement: float = MIN_AGREEMENT
    min_cosine_mean: float = MIN_COSINE_MEAN
    min_cosine_min: float | None = MIN_COSINE_MIN
    max_channel_error: float = MAX_CHANNEL_ERROR
    min_exact_match: float = MIN_EXACT_MATCH

    _KEYS = {
        "top1-drop": "max_top1_drop_points",
        "agreement": "min_agreement",
        "cosine-mean": "min_cosine_mean",
        "cosine-min": "min_cosine_min",
        "channel-error": "max_channel_error",
        "exact": "min_exact_match",
    }

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """``"top1-drop=0.5,agreement=0.98,cosine-mean=0.995,cosine-min=0.98,channel-error=0.1,exact=0.99"``
        (any subset)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            key, _, number = part.strip().partition("=")
            try:  # the pattern lets through "1.2.3", "." or "e": float() has the last word
                value = float(number) if re.fullmatch(r"[0-9.eE+-]+", number.strip() or "x") else None
            except ValueError:
                value = None
            if key not in cls._KEYS or value is None:
                raise OptionError(
                    f"budget part {part.strip()!r} is not KEY=NUMBER with KEY one of {', '.join(cls._KEYS)} "
                    "(e.g. --budget top1-drop=0.5,cosine-mean=0.995)"
                )
            values[cls._KEYS[key]] = value
        return cls(**values)

    def tolerances(self) -> Tolerances:
        return Tolerances(
            self.min_agreement,
            self.min_cosine_mean,
            self.min_cosine_min,
            self.max_channel_error,
            self.min_exact_match,
            self.max_top1_drop_points,
        )

    def describe(self, metric: str) -> str:
        if metric == "top1":
            return f"top-1 drop <= {self.max_top1_drop_points:g} points"
        if metric == "agreement":
            return f"top-1 agreement >= {self.min_agreement:.1%}"
        if metric == "exact":
            return f">= {self.min_exact_match:.1%} of elements equal"
        text = f"cosine mean >= {self.min_cosine_mean:g}"
        text += f", min >= {self.min_cosine_min:g}" if self.min_cosine_min is not None else ""
        if metric == "channel-error":
            return f"worst channel error <= {self.max_channel_error:g} of its scale; {text}"
        if metric == "all":
            return (
                f"every output: classifiers top-1 agreement >= {self.min_agreement:.1%}; float outputs worst "
                f"channel error <= {self.max_channel_error:g} of its scale and {text}; integer outputs "
                f">= {self.min_exact_match:.1%} equal"
            )
        return text


@dataclass
class EvalPlan:
    """The inputs, what to compare, and the float model's outputs on them."""

    metric: EvalMetric
    feeds: list[dict[str, np.ndarray]]  # batches
    output_index: int
    output_name: str
    data: str
    labels: np.ndarray | None = None
    float_outputs: list[np.ndarray] = field(default_factory=list)  # per batch, the primary output
    threads: int | None = None
    all_float_outputs: list[list[np.ndarray]] = field(default_factory=list)  # per batch, every output
    split: str = ""  # how calibration and evaluation samples were split

    @property
    def samples(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.feeds)


def plan_for(
    model: Model,
    *,
    samples: int = 200,
    seed: int = 1,
    threads: int | None = None,
    metric: str | None = None,
    batch: int = EVAL_BATCH,
) -> EvalPlan:
    """Inputs and metric for judging candidates of ``model`` (float outputs computed here).

    ``batch`` is how many samples each judged run takes. It matters for dynamic INT8, whose
    activation scale is computed per run over the whole batch (padding tokens included), so the
    same model is more accurate at batch 1 than in a large padded batch.
    """
    if batch < 1:
        raise OptionError(f"evaluation batch must be at least 1, got {batch}")
    chosen_metric = None if metric is None else checked_choice(metric, METRICS, "metric")
    real = _zoo_eval(model) if model.samples is None or model.samples.source == "zoo" else None
    evaluation, split = _evaluation_samples(model)
    if real is not None:
        inputs = real.inputs
        count = len(next(iter(inputs.values())))
        feeds = [{k: v[i : i + batch] for k, v in inputs.items()} for i in range(0, count, batch)]
        output_name = real.output_name or _primary_output(model)
        chosen: EvalMetric = chosen_metric or (
            "top1"
            if real.labels is not None
            else "cosine"
            if real.metric == "cosine"
            else _metric_for(model, output_name)
        )
        plan = EvalPlan(
            chosen,
            feeds,
            _output_index(model, output_name),
            output_name,
            f"{real.description}",
            labels=real.labels,
            threads=threads,
            split=split,
        )
    elif evaluation is not None:
        output_name = _primary_output(model)
        plan = EvalPlan(
            chosen_metric or _metric_for(model, output_name),
            evaluation.batches(model.inputs, batch),
            _output_index(model, output_name),
            output_name,
            evaluation.description,
            threads=threads,
            split=split,
        )
    else:
        output_name = _primary_output(model)
        feeds = []
        per_run = batch if has_batch_axis(model.inputs) else 1
        for start in range(0, samples, per_run):
            size = min(per_run, samples - start)
            feeds.append(synthesize(model.inputs, batch=size, dims=model.default_dims, seed=seed + start))
        plan = EvalPlan(
            chosen_metric or _metric_for(model, output_name),
            feeds,
            _output_index(model, output_name),
            output_name,
            f"{samples} inputs invented from the graph (no real data given: pass --data)",
            threads=threads,
            split="no real data: invented inputs for the gate, invented or zoo inputs for calibration",
        )
    if plan.metric == "top1" and plan.labels is None:
        raise OptionError("metric top1 needs labels; this model's data has none (use agreement or cosine)")
    plan.all_float_outputs = run_all(model, plan)
    plan.float_outputs = [outputs[plan.output_index] for outputs in plan.all_float_outputs]
    return plan


def _evaluation_samples(model: Model) -> tuple[SampleSet | None, str]:
    if model.samples is None or not model.samples.samples:
        return None, ""
    split = model.samples.split()
    return split.evaluation, split.description


def _primary_output(model: Model) -> str:
    """The output a one-number summary names: the first float one (every output is judged anyway)."""
    return next((o.name for o in model.outputs if o.dtype.startswith("float")), model.outputs[0].name)


def run_all(model: Model, plan: EvalPlan) -> list[list[np.ndarray]]:
    """Every output of ``model`` on every batch of the plan."""
    session = Session(model, SessionConfig(threads=plan.threads, optimization="all"))
    dtypes = {spec.name: spec.dtype for spec in model.inputs}  # fp16 models may take float16 inputs
    results = []
    for feeds in plan.feeds:
        outputs = session.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()})
        results.append(
            [
                np.asarray(o, dtype=np.float32) if np.issubdtype(o.dtype, np.floating) else np.asarray(o)
                for o in outputs
            ]
        )
    return results


def run_judged(model: Model, plan: EvalPlan) -> list[np.ndarray]:
    """The judged output of ``model`` on every batch of the plan."""
    session = Session(model, SessionConfig(threads=plan.threads, optimization="all"))
    dtypes = {spec.name: spec.dtype for spec in model.inputs}  # fp16 models may take float16 inputs
    return [
        np.asarray(
            session.run({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in feeds.items()})[
                plan.output_index
            ],
            dtype=np.float32,
        )
        for feeds in plan.feeds
    ]


def judge(candidate: Model, plan: EvalPlan, budget: Budget) -> AccuracyReport:
    """Run ``candidate`` on the plan's inputs and judge every output against the float model's."""
    produced = run_all(candidate, plan)
    tolerances = budget.tolerances()
    if len(produced[0]) != len(plan.all_float_outputs[0]):
        raise OptionError(
            f"{candidate.name} has {len(produced[0])} outputs but the float model has "
            f"{len(plan.all_float_outputs[0])}; a candidate must keep every output"
        )
    judgements = []
    for index, spec in enumerate(candidate.outputs):
        forced = plan.metric if index == plan.output_index else None
        role = output_role(spec.name, spec.dtype, spec.shape, spec.batch_axis, forced)
        labels = plan.labels if index == plan.output_index and plan.metric == "top1" else None
        sample_shape = [d for axis, d in enumerate(spec.shape) if axis != spec.batch_axis]
        judgements.append(
            _judge_one(
                spec.name,
                role,
                [b[index] for b in plan.all_float_outputs],
                [b[index] for b in produced],
                spec.batch_axis,
                tolerances,
                labels,
                channel_axis_of(sample_shape),
            )
        )
    deciding = min(judgements, key=lambda j: j.margin)
    primary = judgements[plan.output_index]
    summary = deciding if not deciding.passed else primary
    passed = all(j.passed for j in judgements)
    metric: GateMetric
    if summary.metric == "top1":
        metric, name = "top1", f"top-1 accuracy (%) of {summary.name!r} on labelled data"
        float_value, value = summary.top1_float or 0.0, summary.top1_candidate or 0.0
    elif summary.role == "classifier":
        metric, name = "agreement", f"top-1 agreement of {summary.name!r} with the float model"
        float_value, value = 1.0, summary.top1_agreement or 0.0
    elif summary.role == "exact":
        metric, name, float_value, value = (
            "exact",
            f"share of equal elements of {summary.name!r}",
            1.0,
            summary.value,
        )
    elif summary.metric == "channel-error":
        metric, name = (
            "channel-error",
            f"worst channel error of {summary.name!r} (RMS over the channel's range or peak)",
        )
        float_value, value = 0.0, summary.value
    else:
        metric, name = "cosine", f"cosine of {summary.name!r} with the float model, per sample"
        float_value, value = 1.0, summary.cosine_mean or 0.0
    described = budget.describe(metric) if len(judgements) == 1 else budget.describe("all")
    return AccuracyReport(
        metric,
        name,
        float_value,
        value,
        described,
        passed,
        summary.samples,
        cosine_min=summary.cosine_min if summary.role == "float" else None,
        data=plan.data,
        outputs=judgements,
        deciding_output=deciding.name,
        margin=deciding.margin,
    )


def _judge_one(
    name: str,
    role: OutputRole,
    reference: list[np.ndarray],
    produced: list[np.ndarray],
    batch_axis: int | None,
    tolerances: Tolerances,
    labels: np.ndarray | None,
    channel_axis: int | None,
) -> OutputJudgement:
    """One output over every batch: samples first, grouped by shape when batches differ (ragged text)."""
    ref_samples = [per_sample(r, batch_axis) for r in reference]
    cand_samples = [per_sample(c, batch_axis) for c in produced]
    for r, c in zip(ref_samples, cand_samples, strict=False):
        if r.shape != c.shape:
            return judge_output(name, role, r, c, tolerances)
    shapes = {r.shape[1:] for r in ref_samples}
    if len(shapes) == 1:
        return judge_output(
            name,
            role,
            np.concatenate(ref_samples),
            np.concatenate(cand_samples),
            tolerances,
            labels,
            channel_axis,
        )
    groups: dict[tuple[int, ...], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for r, c in zip(ref_samples, cand_samples, strict=False):
        groups.setdefault(r.shape[1:], ([], []))
        groups[r.shape[1:]][0].append(r)
        groups[r.shape[1:]][1].append(c)
    results = [
        judge_output(name, role, np.concatenate(rs), np.concatenate(cs), tolerances, None, channel_axis)
        for rs, cs in groups.values()
    ]
    worst = min(results, key=lambda j: j.margin)
    worst.samples = sum(j.samples for j in results)
    return worst


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(
        norms > 0, dots / np.maximum(norms, 1e-30), np.where(np.abs(a - b).max(axis=1) == 0, 1.0, 0.0)
    )


def _metric_for(model: Model, output_name: str) -> EvalMetric:
    """A 2-D float output with more than one column reads as class scores; anything else as embeddings."""
    spec = next((o for o in model.outputs if o.name == output_name), None)
    if (
        spec is not None
        and len(spec.shape) == 2
        and isinstance(spec.shape[1], int)
        and spec.shape[1] > 1
        and not _looks_like_embedding(output_name)
    ):
        return "agreement"
    return "cosine"


def _looks_like_embedding(name: str) -> bool:
    return any(word in name.lower() for word in ("embed", "hidden", "feature", "pool"))


def _output_index(model: Model, name: str) -> int:
    names = [o.name for o in model.outputs]
    if name not in names:
        raise OptionError(f"output {name!r} is not one of the model's outputs ({', '.join(names)})")
    return names.index(name)


def _zoo_eval(model: Model) -> EvalSet | None:
    try:
        return zoo_eval_set(model)
    except HoneError as exc:
        logger.warning("judging on synthesized inputs: %s", exc)
        return None
