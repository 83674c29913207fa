"""The result types of ``hone run``: the RunReport and what each stage adds to it.

They live apart from ``hone.job`` (the producer) so that the renderers (``hone.report.terminal``,
``hone.report.html``) import them and not the job, and the job never imports a renderer. Nothing
heavy is imported at run time: the stage results are other packages' types, named for the type
checker only (their JSON comes from the dataclass fields either way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hone.bench.types import BenchResult
    from hone.export.placement import PlacementReport
    from hone.export.types import EdgeResult
    from hone.generate.loadtest import CacheCheck, LoadTest
    from hone.generate.types import DecoderLayout
    from hone.info import ModelInfo
    from hone.passes.types import OptimizeResult
    from hone.profile.types import ProfileResult
    from hone.quantize.types import GenerativeQuantizeResult, QuantizeResult
    from hone.serve.types import LoadTestResult
    from hone.tune.types import TuneResult
    from hone.verify import VerifyResult

# The stages of ``hone run`` in the order they run (hone.job's docstring says what each needs).
STAGES = ("load", "verify", "profile", "optimize", "quantize", "bench", "serve", "ship-serve", "web", "edge")
# ... and of a generative model (``hone.generate``'s own stages).
GENERATIVE_STAGES = ("load", "verify", "optimize", "quantize", "serve", "ship")
GENERATE_FOLDER = "generate"  # <out>/generate/model.onnx: `hone serve <out>/generate/model.onnx`
REPORT_JSON = "report.json"  # written by the job
REPORT_HTML = "report.html"  # written by its caller (the CLI, ``hone.run``) with hone.report.html
SERVE_FOLDER = "serve"  # <out>/serve/<model>/1/model.onnx + config.json: `hone serve <out>/serve`
WEB_FOLDER = "web"
EDGE_FOLDER = "edge"


StageStatus = Literal["ok", "failed", "skipped"]
PageOutcome = Literal["ran", "not-opened", "did-not-run", "failed", "differs"]


@dataclass(frozen=True)
class RunOptions:
    """What every stage may need besides the model; each stage takes the model and these."""

    out: Path
    batches: tuple[int, ...]
    threads: int
    provider: str
    budget_s: float
    force: bool


@dataclass
class StageResult:
    name: str
    status: StageStatus
    seconds: float
    message: str = ""  # the one-line reason of a failed or skipped stage, else a summary (may be empty)


@dataclass
class ShippedChoice:
    """Which model the targets ship (serve, the model repository), measured in the bench race."""

    label: str  # the bench variant: "ort-all" (the loaded model), "hone+ort-all", "hone-qdq+ort-all", ...
    artifact: str  # its short name: "loaded", "hone", "hone-qdq", ...
    reason: str
    # Per candidate label, its speedup over the loaded model's ort-all at each batch (bench order).
    speedups: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class WebStage:
    """The web bundle ``hone run`` wrote: its size, the static WebGPU placement, and the page's own
    report from one load in Chromium (provider, adapter, median_ms, ...; None without Chromium)."""

    path: str
    size_bytes: int
    gzip_bytes: int
    placement: PlacementReport
    page: dict[str, Any] | None = None
    page_note: str = ""
    # What became of the page load: it ran and answered like native onnxruntime ("ran"), or was not
    # opened (no Chromium), or did not start, failed, or answered differently (these fail the stage).
    page_outcome: PageOutcome = "ran"

    @property
    def page_failed(self) -> bool:
        return self.page_outcome in ("did-not-run", "failed", "differs")


@dataclass
class ServeRepositoryStage:
    """The model repository ``hone run`` wrote for ``hone serve <path>``: one model, version 1."""

    path: str  # the repository folder, <out>/serve
    model_name: str  # the served name (its folder)
    model_path: str  # <path>/<model_name>/1/model.onnx
    config_path: str  # <path>/<model_name>/config.json
    size_bytes: int  # model.onnx and its external data
    artifact: str  # the shipped model's bench label (ShippedChoice.label)
    config: dict[str, Any]  # what config.json holds: the batcher, instances and session options
    measured: bool  # whether the serve stage measured exactly these settings
    note: str = ""


@dataclass
class PhotoTop5:
    """One showcase photo: the five most likely classes of the float model and of the shipped one."""

    photo: str
    float_top5: list[tuple[str, float]]  # (class name, probability)
    shipped_top5: list[tuple[str, float]]


@dataclass
class GenerativeRun:
    """What ``hone run`` found for a generative model: its layout, the KV-cache check, the int4 gate
    and race, the in-process load test of the shipped decoder, and where that decoder was written."""

    layout: DecoderLayout
    cache_check: CacheCheck | None = None
    quantize: GenerativeQuantizeResult | None = None
    load_test: LoadTest | None = None
    shipped: str = "float"  # "float" or the kept quantized candidate's name
    shipped_path: str = ""


@dataclass
class RunReport:
    hone_version: str
    model: str
    source: str
    started_at: str
    out_dir: str
    # Choices hone made because the user did not (zero config, but said out loud).
    defaults_taken: list[str] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    info: ModelInfo | None = None
    verify: VerifyResult | None = None
    profile: ProfileResult | None = None
    optimize: OptimizeResult | None = None
    quantize: QuantizeResult | None = None
    bench: BenchResult | None = None
    shipped: ShippedChoice | None = None
    serve: LoadTestResult | None = None  # the chosen settings' load test (from serve_tune)
    serve_tune: TuneResult | None = None  # the serve stage's bounded search
    serve_repository: ServeRepositoryStage | None = None
    web: WebStage | None = None
    edge: EdgeResult | None = None
    # The zoo's showcase photos, float vs shipped top-5 (models with class names and photos only).
    showcase: list[PhotoTop5] = field(default_factory=list)
    showcase_artifact: str = ""
    data: str = ""  # where the samples came from and how they were split
    generate: GenerativeRun | None = None  # a generative model's run (its stages replace the others)

    @property
    def passed(self) -> bool:
        return all(stage.status in ("ok", "skipped") for stage in self.stages)

    @property
    def failed(self) -> list[StageResult]:
        return [stage for stage in self.stages if stage.status == "failed"]

    def stage(self, name: str) -> StageResult | None:
        return next((stage for stage in self.stages if stage.name == name), None)
