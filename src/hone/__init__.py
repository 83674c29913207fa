"""hone: take a trained model to its fastest correct deployment, end to end.

The Python API mirrors the CLI: ``hone.load(...)``, ``hone.info(...)``, ``hone.bench(...)``,
``hone.run(...)``, ``hone.export(...)``, ``hone.optimize(...)``, ``hone.quantize(...)``, ``hone.prune(...)``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The API functions below share their names with subpackages (hone.bench, hone.info, hone.export,
# hone.quantize).
# Python binds a subpackage to its parent's attribute only when it is first imported, so these are
# imported here first; the functions defined afterwards then own the names for good, while
# ``from hone.bench import ...`` keeps working through sys.modules.
import hone.bench  # noqa: E402,F401
import hone.export  # noqa: E402,F401
import hone.info  # noqa: E402,F401
import hone.quantize  # noqa: E402,F401
from hone.errors import HoneError  # noqa: E402
from hone.model import Model, load  # noqa: E402


def info(source: str | Model, **load_options: object) -> object:
    """The ModelInfo of ``source`` (a path, zoo name, factory or Model)."""
    from hone.info import describe

    return describe(load(source, **load_options))  # type: ignore[arg-type]


def _with_data(source: str | Model, data: object, dims: object, input_shapes: object = None) -> Model:
    """``source`` loaded with ``data`` (``--data``) and ``dims`` (``--dim``) attached; see ``hone.data``."""
    from hone.data import attach

    return attach(load(source, input_shapes=input_shapes), data, dims)  # type: ignore[arg-type]


def bench(source: str | Model, **options: object) -> object:
    """Benchmark ``source``; options are those of ``hone.bench.bench`` plus ``input_shapes``,
    ``data`` and ``dims`` (samples and symbolic dim values, as ``--data`` and ``--dim``)."""
    from hone.bench import bench as run_bench

    model = _with_data(
        source, options.pop("data", None), options.pop("dims", None), options.pop("input_shapes", None)
    )
    return run_bench(model, **options)  # type: ignore[arg-type]


def run(source: str | Model | None = None, **options: object) -> object:
    """The end-to-end job; options are those of ``hone.job.run``. Returns its RunReport, after
    writing ``report.json`` (the job) and ``report.html`` (rendered here) into ``out_dir``."""
    from pathlib import Path

    from hone.job import run as run_job
    from hone.job_types import REPORT_HTML
    from hone.report.html import write_html

    report = run_job(source, **options)  # type: ignore[arg-type]
    write_html(report, Path(report.out_dir) / REPORT_HTML)
    return report


def optimize(
    source: str | Model,
    *,
    target: str = "ort-cpu",
    verify: bool = True,
    data: object = None,
    dims: object = None,
) -> tuple[Model, object]:
    """Rewrite ``source`` for ``target`` with every pass verified (on ``data``'s samples when given);
    returns (Model, OptimizeResult)."""
    from hone.passes import optimize as run_optimize

    if data is not None or dims:
        source = _with_data(source, data, dims)
    return run_optimize(source, target=target, verify=verify)


def quantize(source: str | Model, **options: object) -> tuple[Model, object]:
    """INT8 or fp16 behind the accuracy and speed gates; returns (kept Model, QuantizeResult).

    Options are those of ``hone.quantize.quantize`` (mode, fmt, calib, method, budget, per_channel,
    samples, threads, measure_speed, prefer). The kept Model is the float one when nothing passed.
    """
    from hone.quantize import quantize as run_quantize

    return run_quantize(source, **options)  # type: ignore[arg-type]


def prune(source: str | Model, **options: object) -> tuple[Model, object]:
    """Magnitude pruning judged by the accuracy gate; returns (pruned Model, PruneResult).

    Options are those of ``hone.quantize.prune.prune`` (sparsity, pattern, scope, budget,
    fine_tune, fine_tune_epochs, exclude, threads, samples, measure_speed).
    """
    from hone.quantize.prune import prune as run_prune

    return run_prune(source, **options)  # type: ignore[arg-type]


def export(
    source: str | Model,
    output: str,
    *,
    target: str = "onnx",
    force: bool = False,
    budget: str | None = None,
    calib: str | None = None,
    sparsity: float | None = None,
    memory_cap_mb: int | None = None,
    **load_options: object,
) -> object:
    """Write ``source`` for ``target`` (``output``: an .onnx path, or a folder for ``edge``); see
    ``hone.export``.

    ``budget``, ``calib``, ``sparsity`` and ``memory_cap_mb`` are the edge target's options.
    """
    from hone.export import export as run_export

    return run_export(
        load(source, **load_options),
        output,
        target=target,
        force=force,  # type: ignore[arg-type]
        budget=budget,
        calib=calib,
        sparsity=sparsity,
        memory_cap_mb=memory_cap_mb,
    )


__all__ = [
    "HoneError",
    "Model",
    "__version__",
    "bench",
    "export",
    "info",
    "load",
    "optimize",
    "prune",
    "quantize",
    "run",
]
