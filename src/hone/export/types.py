"""What ``hone export`` returns: one base type for every target (the edge and web results extend it),
and the manifests and profiles the bundles carry.

Imports nothing heavy, so that the CLI, the job and the renderers can name these types without
loading the quantizer or the web exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from hone.export.placement import PlacementReport
    from hone.export.preprocessing import Preprocessing
    from hone.passes.types import OptimizeResult
    from hone.quantize.types import AccuracyReport, PruneResult, QuantizeResult
    from hone.specs import TensorSpec

ExportTarget = Literal["onnx", "edge", "web"]
EXPORT_TARGETS: tuple[ExportTarget, ...] = get_args(ExportTarget)
ProfiledModel = Literal["float", "artifact"]  # which model of an edge bundle a process measured


@dataclass
class ExportResult:
    """What ``export`` wrote: the model's name, the target, where, and how many bytes it takes there
    (``onnx``: the .onnx file and its external data; ``edge``: the bundle's model file; ``web``: the
    whole bundle folder). ``target="onnx"`` results are exactly this type."""

    model: str
    target: ExportTarget
    path: str
    size_bytes: int


@dataclass
class EdgeManifest:
    """What a deployment needs to know about ``model.onnx``."""

    hone_version: str
    model: str
    source: str
    format: str  # "qdq" | "qoperator" | "dynamic" | "float"
    kept_float: list[str]  # layers the gate kept in float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing
    accuracy: AccuracyReport | None  # the artifact judged against the source model (None: it is the source)
    size_bytes: int
    gzip_bytes: int
    float_size_bytes: int
    float_gzip_bytes: int
    sparsity: float | None = None  # share of prunable weights that are zero, when pruned
    notes: list[str] = field(default_factory=list)
    # onnxruntime session config entries to set when loading model.onnx (what the gate measured under)
    session_config: dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessProfile:
    """One model measured in its own fresh process under the memory cap."""

    label: ProfiledModel
    fits: bool
    error: str | None = None
    session_create_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    runs: int = 0
    peak_rss_mb: float | None = None  # VmHWM of the process (see the module docstring)
    model_rss_mb: float | None = None  # peak_rss_mb above the idle process's
    peak_vm_mb: float | None = None  # address space at its peak
    # Address space the session took above what the process held before it: what the cap limits.
    # For a model over the cap, measured in one more process without the cap.
    model_vm_mb: float | None = None
    address_space_limit_mb: float | None = None  # RLIMIT_AS of the process: held before the session + cap


@dataclass
class EdgeProfile:
    """The float model and the artifact under edge-like limits, with the idle baseline."""

    intra_op_threads: int
    inter_op_threads: int
    optimization: str
    batch: int
    warmup_runs: int
    timed_s: float
    rounds: int
    memory_cap_mb: int  # address space a model may add above the idle process
    cap_enforced: bool
    idle_rss_mb: float
    idle_vm_mb: float | None
    float_model: ProcessProfile
    artifact: ProcessProfile
    inputs: str


@dataclass
class SampleTensor:
    """One array of the sample: ``file`` holds its raw little-endian bytes, relative to the bundle."""

    name: str
    dtype: str
    shape: list[int]
    file: str


@dataclass
class WebSample:
    """The input the page runs, and what native onnxruntime (CPU) answered on it."""

    inputs: list[SampleTensor]
    expected: list[SampleTensor]
    text: str | None = None  # text models: the sentence the page tokenizes into ``inputs``


@dataclass
class Fp16Check:
    """The fp16 variant for WebGPU against the float model, on the sample (native onnxruntime)."""

    kept: bool
    min_cosine: float
    max_abs_error: float
    reason: str


@dataclass
class WebManifest:
    """What the page reads (``manifest.json``) and what a deployment needs to know."""

    hone_version: str
    model: str
    source: str
    ort_web_version: str
    models: dict[str, str]  # provider -> model file ("webgpu" may be the fp16 variant)
    external_data: list[str]  # data files a model file refers to, served beside it
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing
    sample: WebSample
    placement: PlacementReport
    runs: int
    fp16: Fp16Check | None
    size_bytes: int  # the whole folder
    gzip_bytes: int  # the whole folder, each file gzip'd (what a server sending gzip transfers)
    notes: list[str] = field(default_factory=list)


@dataclass
class EdgeResult(ExportResult):
    """What ``export_edge`` wrote and why: the manifest and profile, and the quantize/prune reports.
    ``path`` is the bundle folder, ``size_bytes`` its model.onnx."""

    files: list[str]
    manifest: EdgeManifest
    profile: EdgeProfile
    quantize: QuantizeResult
    prune: PruneResult | None = None
    seconds: float = 0.0


@dataclass
class WebResult(ExportResult):
    """What ``export_web`` wrote: the folder, its files, the manifest, and the optimize report.
    ``path`` is the bundle folder, ``size_bytes`` the whole folder (the manifest's size)."""

    files: list[str]
    manifest: WebManifest
    optimize: OptimizeResult | None
