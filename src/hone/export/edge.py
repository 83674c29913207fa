"""The edge target: the smallest artifact that passes the accuracy gate, a manifest, and a profile
measured under edge-like limits (one thread, a memory cap).

``export_edge(model, DIR)`` writes three files:

- ``DIR/model.onnx``: the kept artifact. With ``sparsity`` the model is pruned first and judged by
  the gate (outside the budget: the notes say so and the unpruned model goes on); then
  ``quantize(prefer="size", threads=1)`` keeps the smallest INT8 candidate within the budget. A
  pruned INT8 model is judged once more against the *source* model, since each step alone may
  pass while both together drift too far. When no INT8 candidate passes, the (pruned) float model
  is written and the notes say so.
- ``DIR/manifest.json`` (``EdgeManifest``): what a deployment needs to feed the artifact and what
  it costs: inputs and outputs, preprocessing, the gate's report, sizes raw and gzip'd.
- ``DIR/profile.json`` (``EdgeProfile``): the float model and the artifact, each in a fresh Python
  process that imports only numpy and onnxruntime (what an edge deployment runs), one intra-op and
  one inter-op thread, all onnxruntime optimizations, batch 1, warm-up then timed runs. Its peak
  resident set is that model's alone; an idle process with the same imports and inputs is the
  baseline. The peak is the process's ``VmHWM``, not ``ru_maxrss``: on Linux a process started by
  vfork+exec (as ``subprocess`` does) inherits its parent's resident set in ``ru_maxrss`` (hone's
  own hundreds of MB), while ``VmHWM`` belongs to the new address space (``ru_maxrss`` is the
  fallback where /proc is missing). Before creating its session the process limits its own
  address space (``RLIMIT_AS``) to what it already holds plus ``memory_cap_mb``, so the cap is what
  the model may add above the runtime, whatever this machine's Python reserves. Float and artifact
  processes alternate (``rounds`` each, lowest p50 kept, highest peak RSS kept) so machine noise
  hits both.

The artifact must run under the cap; if it does not, nothing is written and the error says how far
to raise ``--memory-cap-mb``. A float model over the cap is reported as such (that it does not
fit is worth knowing) and does not stop the export. RLIMIT_AS counts reserved address space, which
is more than the resident set, so the cap is conservative; it is enforced on Linux only.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hone.errors import ExecutionError, OptionError, OutputExistsError
from hone.export.preprocessing import preprocessing_for
from hone.export.types import EdgeManifest, EdgeProfile, EdgeResult, ProcessProfile, ProfiledModel
from hone.model import SESSION_CONFIG_METADATA_KEY, Model
from hone.quantize import quantize
from hone.quantize.gate import Budget, EvalPlan, judge, plan_for
from hone.quantize.prune import prune
from hone.quantize.types import AccuracyReport, PruneResult, QuantizeResult
from hone.results import write_json
from hone.sources import load

logger = logging.getLogger(__name__)

# What the model may add above an idle interpreter, in MB of address space. Measured here (1 thread,
# batch 1): resnet18 fp32 +169 MB (peak RSS +175), INT8 +45 MB; resnet50 fp32 +265 MB does not fit,
# its INT8 (+97 MB) does; digits_cnn +3 MB. Small-board sized, with room for resnet18's fp32.
DEFAULT_MEMORY_CAP_MB = 256
DEFAULT_PROFILE_S = 2.0  # timed runs per process
DEFAULT_ROUNDS = 2  # processes per model, float and artifact alternating
WARMUP_RUNS = 5
MIN_TIMED_RUNS = 10
MAX_TIMED_RUNS = 20_000
GZIP_LEVEL = 6  # what `gzip` does by default
QUANTIZE_BENCH_S = 1.0  # quantize's own speed check: informative only, the profile measures
_PROBE_TIMEOUT_S = 300
_NEED_PROBE_S = 0.1  # timed runs of the uncapped process that measures what a model over the cap needs
_BUNDLE_FILES = ("model.onnx", "manifest.json", "profile.json")
_ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Run in a fresh `python -I -c`: imports, loads the inputs, caps its address space, then measures.
_PROBE = r"""
import json, resource, sys, time
import numpy as np
import onnxruntime as ort

def status_mb(key):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None

def report(**fields):
    # VmHWM is this process's own peak. ru_maxrss is the fallback where /proc is missing: on Linux it
    # also holds the parent's resident set when the parent spawned this process (vfork, then exec).
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    fields["peak_rss_mb"] = status_mb("VmHWM") or peak_rss_mb
    fields["peak_vm_mb"] = status_mb("VmPeak")
    print(json.dumps(fields))

job = json.loads(sys.argv[1])
with np.load(job["inputs"]) as data:
    feeds = {name: data[name] for name in data.files}
times = np.empty(job["max_runs"])  # allocated before the cap: the timings take none of it
held_mb = status_mb("VmSize")
limit_mb = None
if job["model"] and job["cap_mb"] and held_mb is not None:
    limit_mb = held_mb + job["cap_mb"]
    resource.setrlimit(resource.RLIMIT_AS, (int(limit_mb * 2**20), resource.getrlimit(resource.RLIMIT_AS)[1]))
if not job["model"]:
    report(held_mb=held_mb)
    sys.exit(0)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.log_severity_level = 3
for key, value in job["session_config"].items():  # what the model was verified under (its metadata)
    options.add_session_config_entry(key, value)
try:
    began = time.perf_counter()
    session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
    create_ms = (time.perf_counter() - began) * 1e3
    for _ in range(job["warmup"]):
        session.run(None, feeds)
    runs = 0
    deadline = time.perf_counter() + job["seconds"]
    while runs < job["min_runs"] or (time.perf_counter() < deadline and runs < job["max_runs"]):
        began = time.perf_counter()
        session.run(None, feeds)
        times[runs] = (time.perf_counter() - began) * 1e3
        runs += 1
except BaseException as exc:
    text = str(exc).strip().splitlines()
    report(error=type(exc).__name__ + (": " + text[0] if text else ""), held_mb=held_mb, limit_mb=limit_mb)
    sys.exit(3)
times = times[:runs]
report(held_mb=held_mb, limit_mb=limit_mb, create_ms=create_ms, runs=runs,
       p50_ms=float(np.percentile(times, 50)), p90_ms=float(np.percentile(times, 90)),
       mean_ms=float(times.mean()))
"""


@dataclass
class _Choice:
    """The artifact kept, with the reports that led to it."""

    model: Model
    quantize: QuantizeResult
    accuracy: AccuracyReport | None
    prune: PruneResult | None  # the pruning report, whenever pruning ran
    pruned: bool  # whether ``model`` is the pruned one
    notes: list[str]


def export_edge(
    model: str | Model,
    out_dir: str | os.PathLike[str],
    *,
    budget: Budget | str | None = None,
    calib: str | None = None,
    sparsity: float | None = None,
    memory_cap_mb: int | None = None,
    force: bool = False,
    profile_s: float = DEFAULT_PROFILE_S,
    rounds: int = DEFAULT_ROUNDS,
) -> EdgeResult:
    """Write the edge bundle of ``model`` into ``out_dir`` (empty or new, unless ``force``)."""
    began = time.perf_counter()
    cap_mb = DEFAULT_MEMORY_CAP_MB if memory_cap_mb is None else memory_cap_mb
    _check_options(cap_mb, profile_s, rounds, sparsity, calib)
    folder = Path(out_dir)
    _check_folder(folder, force)
    gate_budget = budget if isinstance(budget, Budget) else Budget.parse(budget)
    original = load(model)
    choice = _choose_artifact(original, gate_budget, calib, sparsity)
    logger.info(
        "edge %s: kept %s%s; profiling it against the float model at 1 thread",
        original.name,
        choice.quantize.format,
        " (pruned)" if choice.pruned else "",
    )
    with tempfile.TemporaryDirectory(prefix="hone-edge-") as scratch:
        float_path = _save(original, Path(scratch) / "float.onnx")
        artifact_path = _save(choice.model, Path(scratch) / "model.onnx")
        profile = profile_edge(
            float_path, artifact_path, original, memory_cap_mb=cap_mb, timed_s=profile_s, rounds=rounds
        )
        _check_fits(profile, original.name, choice.quantize.format)
        manifest = _manifest(original, choice, artifact_path, float_path)
        files = _write_bundle(folder, artifact_path, manifest, profile)
    return EdgeResult(
        model=original.name,
        target="edge",
        path=str(folder),
        size_bytes=manifest.size_bytes,
        files=files,
        manifest=manifest,
        profile=profile,
        quantize=choice.quantize,
        prune=choice.prune,
        seconds=time.perf_counter() - began,
    )


def _check_options(
    cap_mb: int, profile_s: float, rounds: int, sparsity: float | None, calib: str | None
) -> None:
    """Options that would otherwise fail only after minutes of judging."""
    if sparsity is not None and not 0 <= sparsity < 1:
        raise OptionError(f"--sparsity must be in [0, 1), got {sparsity:g}")
    if calib is not None and not Path(calib).exists():
        raise OptionError(
            f"calibration data {calib} does not exist; give a .npz/.npy/image file or a folder of them"
        )
    if cap_mb < 1:
        raise OptionError(f"--memory-cap-mb must be at least 1, got {cap_mb}")
    if profile_s <= 0:
        raise OptionError(f"profile seconds must be positive, got {profile_s:g}")
    if rounds < 1:
        raise OptionError(f"rounds must be at least 1, got {rounds}")


def _check_folder(folder: Path, force: bool) -> None:
    """Refuse before any work: a file in the way, or a folder with something in it (without force)."""
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(
            f"{folder} exists and is not a folder; give a folder for the edge bundle", path=str(folder)
        )
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise OutputExistsError(
            f"{folder} is not empty; pass --force to write {', '.join(_BUNDLE_FILES)} into it (files of those"
            " names are replaced, others kept) or choose an empty folder",
            path=str(folder),
        )


def _choose_artifact(original: Model, budget: Budget, calib: str | None, sparsity: float | None) -> _Choice:
    """Pruned INT8 if it passes against the source, else INT8, else the pruned float, else the float model."""
    notes: list[str] = []
    pruned, prune_result, plan = None, None, None
    if sparsity is not None:
        plan = plan_for(original, threads=1)
        pruned, prune_result = _pruned(original, budget, sparsity, plan, notes)
    if pruned is not None:
        assert plan is not None
        kept, result = _quantize(pruned, budget, calib)
        if result.kept_quantized:
            accuracy = judge(kept, plan, budget)
            if accuracy.passed:
                return _Choice(kept, result, accuracy, prune_result, True, notes + result.notes)
            notes.append(
                f"pruned and INT8 together drift too far from the source ({accuracy.metric} "
                f"{accuracy.candidate_value:.4f}, budget {accuracy.budget}); quantizing the unpruned model"
            )
        else:
            notes.append("the pruned model cannot be quantized within the budget; trying the unpruned model")
    kept, result = _quantize(original, budget, calib)
    notes.extend(result.notes)
    if result.kept_quantized:
        return _Choice(kept, result, result.accuracy, prune_result, False, notes)
    if pruned is not None:
        assert prune_result is not None
        notes.append("no INT8 candidate passed the gate: model.onnx is the pruned float model")
        return _Choice(pruned, result, prune_result.accuracy_after, prune_result, True, notes)
    notes.append("no INT8 candidate passed the gate: model.onnx is the float model")
    return _Choice(original, result, None, prune_result, False, notes)


def _quantize(model: Model, budget: Budget, calib: str | None) -> tuple[Model, QuantizeResult]:
    return quantize(
        model, calib=calib, budget=budget, threads=1, prefer="size", bench_budget_s=QUANTIZE_BENCH_S
    )


def _pruned(
    original: Model, budget: Budget, sparsity: float, plan: EvalPlan, notes: list[str]
) -> tuple[Model | None, PruneResult]:
    """The pruned model when it is within the budget, else None and a note; and the pruning report."""
    pruned, result = prune(
        original, sparsity=sparsity, budget=budget, threads=1, measure_speed=False, plan=plan
    )
    if result.passed:
        return pruned, result
    assert result.accuracy_after is not None
    notes.append(
        f"pruned to {result.achieved_sparsity:.0%} the model is outside the budget "
        f"({result.accuracy_after.metric} {result.accuracy_after.candidate_value:.4f}, "
        f"{result.accuracy_after.budget}); continuing from the unpruned model"
    )
    return None, result


def profile_edge(
    float_path: Path,
    artifact_path: Path,
    model: Model,
    *,
    memory_cap_mb: int = DEFAULT_MEMORY_CAP_MB,
    timed_s: float = DEFAULT_PROFILE_S,
    rounds: int = DEFAULT_ROUNDS,
) -> EdgeProfile:
    """Measure both files, each in fresh processes under the cap, alternating; see the module docstring."""
    from hone.data import feeds

    paths: dict[ProfiledModel, Path] = {"float": float_path, "artifact": artifact_path}
    with tempfile.TemporaryDirectory(prefix="hone-edge-inputs-") as scratch:
        inputs_path = Path(scratch) / "inputs.npz"
        np.savez(inputs_path, **feeds(model, batch=1, seed=0))  # type: ignore[arg-type]  # numpy's stub
        idle = _probe(None, inputs_path, memory_cap_mb, timed_s)
        measured: dict[ProfiledModel, list[dict]] = {label: [] for label in paths}
        for _ in range(rounds):
            for label, path in paths.items():
                if not any("error" in run for run in measured[label]):  # over the cap once is enough
                    measured[label].append(_probe(path, inputs_path, memory_cap_mb, timed_s))
        profiles = {
            label: _summarize(label, runs, float(idle["peak_rss_mb"])) for label, runs in measured.items()
        }
        for label, profile in profiles.items():
            if not profile.fits:  # how much it would need: once more without the cap, briefly
                profile.model_vm_mb = _model_vm_mb(_probe(paths[label], inputs_path, 0, _NEED_PROBE_S))
    return EdgeProfile(
        intra_op_threads=1,
        inter_op_threads=1,
        optimization="all",
        batch=1,
        warmup_runs=WARMUP_RUNS,
        timed_s=timed_s,
        rounds=rounds,
        memory_cap_mb=memory_cap_mb,
        cap_enforced=idle.get("held_mb") is not None,
        idle_rss_mb=float(idle["peak_rss_mb"]),
        idle_vm_mb=idle.get("peak_vm_mb"),
        float_model=profiles["float"],
        artifact=profiles["artifact"],
        inputs=(
            f"batch 1, the first of {model.samples.description} ({_shapes(model)})"
            if model.samples is not None
            else f"batch 1, seeded values invented from the graph ({_shapes(model)})"
        ),
    )


def _session_config_of(path: Path) -> dict[str, str]:
    """The session config entries recorded in the ONNX file at ``path`` (``Model.session_config``)."""
    proto = onnx.load(str(path), load_external_data=False)
    raw = next((p.value for p in proto.metadata_props if p.key == SESSION_CONFIG_METADATA_KEY), "{}")
    entries = json.loads(raw)
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def _probe(model_path: Path | None, inputs_path: Path, cap_mb: int, timed_s: float) -> dict:
    """One fresh process: the idle baseline (no model) or one model measured; its report as a dict.

    ``cap_mb`` 0 runs without the cap."""
    job = {
        "model": str(model_path) if model_path else None,
        "inputs": str(inputs_path),
        "cap_mb": cap_mb,
        "session_config": _session_config_of(model_path) if model_path else {},
        "seconds": timed_s,
        "warmup": WARMUP_RUNS,
        "min_runs": MIN_TIMED_RUNS,
        "max_runs": MAX_TIMED_RUNS,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, json.dumps(job)],
            capture_output=True,
            text=True,
            env={**os.environ, **_ONE_THREAD_ENV},
            timeout=_PROBE_TIMEOUT_S + timed_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(
            f"profiling {model_path} took over {_PROBE_TIMEOUT_S + timed_s:g} s; is the machine overloaded?"
        ) from exc
    lines = done.stdout.strip().splitlines()
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if model_path is None:
        raise ExecutionError(
            f"the idle profiling process failed (exit {done.returncode}): {_last_line(done.stderr)}"
        )
    return {"error": f"the process died (exit {done.returncode}): {_last_line(done.stderr)}"}


def _model_vm_mb(run: dict) -> float | None:
    if run.get("peak_vm_mb") is None or run.get("held_mb") is None or "error" in run:
        return None
    return float(run["peak_vm_mb"]) - float(run["held_mb"])


def _summarize(label: ProfiledModel, runs: list[dict], idle_rss_mb: float) -> ProcessProfile:
    """The round with the lowest p50, with the highest peak RSS and address space of all rounds."""
    failed = next((run for run in runs if "error" in run), None)
    if failed is not None:
        return ProcessProfile(
            label,
            fits=False,
            error=failed["error"],
            peak_rss_mb=failed.get("peak_rss_mb"),
            peak_vm_mb=failed.get("peak_vm_mb"),
            address_space_limit_mb=failed.get("limit_mb"),
        )
    best = min(runs, key=lambda run: run["p50_ms"])
    peak_rss_mb = max(run["peak_rss_mb"] for run in runs)
    model_vm = [vm for vm in map(_model_vm_mb, runs) if vm is not None]
    return ProcessProfile(
        label,
        fits=True,
        session_create_ms=best["create_ms"],
        p50_ms=best["p50_ms"],
        p90_ms=best["p90_ms"],
        mean_ms=best["mean_ms"],
        runs=best["runs"],
        peak_rss_mb=peak_rss_mb,
        model_rss_mb=peak_rss_mb - idle_rss_mb,
        peak_vm_mb=max(
            (run["peak_vm_mb"] for run in runs if run.get("peak_vm_mb") is not None), default=None
        ),
        model_vm_mb=max(model_vm, default=None),
        address_space_limit_mb=best.get("limit_mb"),
    )


def _check_fits(profile: EdgeProfile, name: str, fmt: str) -> None:
    artifact = profile.artifact
    if artifact.fits:
        return
    need = f" above the {artifact.model_vm_mb:.1f} MB it took without the cap" if artifact.model_vm_mb else ""
    raise ExecutionError(
        f"{name}'s {fmt} artifact does not fit under the memory cap of {profile.memory_cap_mb} MB of address"
        f" space above the idle process (RLIMIT_AS): {artifact.error}; raise --memory-cap-mb{need}; nothing"
        " was written",
        model=name,
    )


def _manifest(original: Model, choice: _Choice, artifact_path: Path, float_path: Path) -> EdgeManifest:
    from hone._version import __version__

    size, gzipped = _sizes(artifact_path)
    float_size, float_gzipped = _sizes(float_path)
    result = choice.quantize
    return EdgeManifest(
        hone_version=__version__,
        model=original.name,
        source=original.source,
        format=result.format,
        kept_float=list(result.kept_float),
        inputs=list(choice.model.inputs),
        outputs=list(choice.model.outputs),
        preprocessing=preprocessing_for(original),
        accuracy=choice.accuracy,
        size_bytes=size,
        gzip_bytes=gzipped,
        float_size_bytes=float_size,
        float_gzip_bytes=float_gzipped,
        sparsity=choice.prune.achieved_sparsity if choice.pruned and choice.prune is not None else None,
        notes=choice.notes,
        session_config=choice.model.session_config,
    )


def _save(model: Model, path: Path) -> Path:
    return model.save(path, force=True)


def _model_files(path: Path) -> list[Path]:
    """The .onnx file and its external data file, when it has one."""
    data = Path(str(path) + ".data")
    return [path, data] if data.exists() else [path]


def _sizes(path: Path) -> tuple[int, int]:
    """Bytes of the model files, and of the same bytes through gzip."""
    files = _model_files(path)
    raw = sum(f.stat().st_size for f in files)
    gzipped = sum(len(gzip.compress(f.read_bytes(), compresslevel=GZIP_LEVEL, mtime=0)) for f in files)
    return raw, gzipped


def _write_bundle(
    folder: Path, artifact_path: Path, manifest: EdgeManifest, profile: EdgeProfile
) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in _model_files(artifact_path):
        target = folder / source.name
        shutil.copyfile(source, target)
        written.append(str(target))
    written.append(str(write_json(manifest, folder / "manifest.json", force=True)))
    written.append(str(write_json(profile, folder / "profile.json", force=True)))
    return written


def _shapes(model: Model) -> str:
    from hone.data import resolve_shape

    return ", ".join(
        f"{s.name} {list(resolve_shape(s, batch=1, dims=model.default_dims))} {s.dtype}" for s in model.inputs
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


__all__ = [
    "DEFAULT_MEMORY_CAP_MB",
    "EdgeManifest",
    "EdgeProfile",
    "ProcessProfile",
    "export_edge",
    "profile_edge",
]
