"""The quantizer's and the pruner's result types and fixed choices, apart from the code that computes
them, so that the quantizer, the export, the job and the renderers all import these and not each
other (this module imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from hone.errors import OptionError

if TYPE_CHECKING:
    from hone.verify import OutputJudgement

# --- fixed choices -----------------------------------------------------------------------------

ModeChoice = Literal["auto", "static", "dynamic", "fp16"]  # --mode; auto picks one of the others
Mode = Literal["static", "dynamic", "fp16"]
StaticFormat = Literal["qdq", "qoperator"]  # static INT8's two graph forms
FormatChoice = Literal["qdq", "qoperator", "auto"]  # --format; auto builds both
CandidateFormat = Literal["qdq", "qoperator", "dynamic", "fp16"]
KeptFormat = Literal["qdq", "qoperator", "dynamic", "fp16", "float"]  # "float": nothing was kept
CalibrationMethod = Literal["minmax", "percentile", "entropy"]
WeightType = Literal["s8", "u8"]  # dynamic INT8's weight type
Prefer = Literal["speed", "size"]  # keep the fastest passing candidate, or the smallest
# The metric a gate verdict is summarized by, and the one a plan judges its primary output with.
GateMetric = Literal["top1", "agreement", "cosine", "channel-error", "exact"]
EvalMetric = Literal["top1", "agreement", "cosine"]
Pattern = Literal["unstructured", "2:4"]
Scope = Literal["global", "per_layer"]  # one threshold over all prunable weights, or one per layer

MODES: tuple[ModeChoice, ...] = get_args(ModeChoice)
FORMATS: tuple[StaticFormat, ...] = get_args(StaticFormat)
FORMAT_CHOICES: tuple[FormatChoice, ...] = get_args(FormatChoice)
METHODS: tuple[CalibrationMethod, ...] = get_args(CalibrationMethod)
WEIGHT_TYPES: tuple[WeightType, ...] = get_args(WeightType)
PREFER: tuple[Prefer, ...] = get_args(Prefer)
METRICS: tuple[EvalMetric, ...] = get_args(EvalMetric)
PATTERNS: tuple[Pattern, ...] = get_args(Pattern)
SCOPES: tuple[Scope, ...] = get_args(Scope)

Choice = TypeVar("Choice", bound=str)


def checked_choice(value: str, choices: tuple[Choice, ...], what: str) -> Choice:
    """``value`` as one of ``choices``; else an OptionError: "WHAT 'VALUE' is unknown; choose one of: ..."."""
    for choice in choices:
        if value == choice:
            return choice
    raise OptionError(f"{what} {value!r} is unknown; choose one of: {', '.join(choices)}")


# --- the accuracy gate ---------------------------------------------------------------------------


@dataclass
class AccuracyReport:
    """One candidate judged: the metric, its value for the float model and the candidate."""

    metric: GateMetric
    name: str  # what was measured, in words
    float_value: float  # top-1 accuracy for "top1"; 1.0 for agreement and cosine (the float model vs itself)
    candidate_value: float  # top-1 accuracy, agreement share, or cosine mean
    budget: str
    passed: bool
    samples: int
    cosine_min: float | None = None
    data: str = ""  # where the inputs came from
    outputs: list[OutputJudgement] = field(default_factory=list)  # every output, judged; the worst decides
    deciding_output: str = ""
    margin: float = 0.0  # the deciding output's margin inside its threshold (negative: outside)

    @property
    def failing_outputs(self) -> list[str]:
        return [o.name for o in self.outputs if not o.passed]


# --- quantize ------------------------------------------------------------------------------------


@dataclass
class LayerError:
    """One quantizable node's share of a candidate's error (``hone.quantize.sensitivity.rank_layers``)."""

    node: str
    op_type: str
    cumulative: float  # relative L2 error of this node's output against the float model
    local: float  # what this node added on top of its inputs' error


@dataclass
class Candidate:
    """One quantized variant, judged and (when it passed) timed."""

    name: str  # e.g. "static-qdq", "dynamic-s8", "fp16"
    mode: Mode
    format: CandidateFormat
    accuracy: AccuracyReport
    kept_float: list[str]
    size_bytes: int
    p50_ms: float | None = None
    speedup: float | None = None  # float p50 / this p50, measured in the same run
    faster_every_round: bool | None = None  # faster than float in each round of the speed gate
    chosen: bool = False


@dataclass
class QuantizeResult:
    model: str
    mode: Mode
    format: KeptFormat  # of the kept model
    accuracy: AccuracyReport | None  # of the kept candidate (None when float was kept)
    kept_float: list[str]  # layers left in float by the gate, with the reason in ``layer_errors``
    speedup: float | None  # kept model vs the float model, measured on the target
    size_bytes_before: int
    size_bytes_after: int
    calibration: str
    budget: str
    float_p50_ms: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    layer_errors: list[LayerError] = field(default_factory=list)  # worst first, when the fallback ran
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    evaluation: str = ""  # the samples the gate judged on
    data_split: str = ""  # how calibration and evaluation samples were split

    @property
    def outputs(self) -> list[OutputJudgement]:
        """The per-output table of the kept candidate (else of the best candidate judged)."""
        if self.accuracy is not None:
            return self.accuracy.outputs
        judged = [c.accuracy for c in self.candidates]
        return max(judged, key=lambda a: a.margin).outputs if judged else []

    @property
    def kept_quantized(self) -> bool:
        return self.format != "float"


# --- prune ---------------------------------------------------------------------------------------


@dataclass
class LayerSparsity:
    """One pruned weight: its initializer, the op it feeds, and its zeros before and after."""

    name: str  # initializer name
    op_type: str  # the op it feeds: Conv, Gemm or MatMul (or onnxruntime's FusedConv, FusedGemm)
    shape: list[int]
    params: int
    zeros_before: int
    zeros_after: int
    sparsity_after: float


@dataclass
class PruneResult:
    """What prune did, what it cost in accuracy, and what it gained in size and speed."""

    model: str
    pattern: Pattern
    scope: Scope  # unstructured only; 2:4 is decided per group
    target_sparsity: float
    achieved_sparsity: float  # zeros / params over the prunable weights
    layers: list[LayerSparsity] = field(default_factory=list)
    accuracy_before: AccuracyReport | None = None  # the float model on the gate's inputs
    accuracy_after: AccuracyReport | None = None  # the pruned (and fine-tuned) model, judged
    accuracy_before_fine_tune: AccuracyReport | None = None  # pruned only, when fine-tuned
    size_bytes_before: int = 0  # the serialized .onnx (plus external data, if any)
    size_bytes_after: int = 0
    compressed_bytes_before: int = 0  # the same bytes through zlib level 6 (deflate, as zip)
    compressed_bytes_after: int = 0
    latency_ms_before: float | None = None  # p50, batch 1, onnxruntime with all optimizations
    latency_ms_after: float | None = None
    speedup: float | None = None  # latency_ms_before / latency_ms_after, same race
    threads: int | None = None
    fine_tuned: bool = False
    fine_tune_epochs: int = 0
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # With an output path: where the pruned model was written, or why it was not (one line).
    written_to: str | None = None
    not_written: str | None = None

    @property
    def passed(self) -> bool | None:
        """Whether the pruned model is within the accuracy budget (None when not judged)."""
        return None if self.accuracy_after is None else self.accuracy_after.passed

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)


@dataclass
class GenerativeCandidate:
    """One int4/int8 candidate of a decoder, judged on held-out text and (if it passed) raced."""

    name: str  # "int4-rtn", "int4-hqq" or "int8-dynamic"
    perplexity: float
    perplexity_increase: float  # relative to the float decoder: 0.01 = +1%
    agreement: float  # share of greedy tokens equal to the float decoder's (teacher-forced)
    passed: bool
    reason: str
    kept_float: list[str] = field(default_factory=list)  # MatMuls the fallback kept float
    size_bytes: int = 0
    tokens_per_s: float | None = None  # one sequence, greedy, prefill included (when raced)
    speedup: float | None = None  # median over rounds of float seconds / candidate seconds
    chosen: bool = False


@dataclass
class GenerativeQuantizeResult:
    """``hone quantize`` of a generative model: the gate's numbers and the race's."""

    model: str
    mode: str  # "int4" or "int8"
    block_size: int | None
    budget: str
    data: str  # the held-out text the gate measured on
    float_perplexity: float
    size_bytes_before: int
    size_bytes_after: int = 0
    float_tokens_per_s: float | None = None
    candidates: list[GenerativeCandidate] = field(default_factory=list)
    kept: str = "float"  # the chosen candidate's name, or "float"
    speedup: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
