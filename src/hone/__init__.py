"""hone: take a trained model to its fastest correct deployment, end to end.

The Python API mirrors the CLI: ``hone.load(...)``, ``hone.info(...)``, ``hone.bench(...)``,
``hone.run(...)``, ``hone.export(...)``, ``hone.optimize(...)``, ``hone.quantize(...)``,
``hone.prune(...)``, ``hone.tune(...)``. Every function takes the CLI's options as typed keyword
arguments and returns the result type the CLI renders (see each function): ``hone.quantize`` is
``hone.quantize.quantize`` and ``hone.prune`` is ``hone.quantize.prune.prune``.

The names bench, export, info, quantize and tune are also subpackages. Python binds a subpackage to its
parent's attribute when it is first imported, so they are imported here first; the functions
defined below then own the names for good, while ``from hone.bench import ...`` keeps working
through ``sys.modules``. (Renaming the subpackages would break every caller that imports them.)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec

import hone.bench
import hone.export
import hone.info
import hone.job
import hone.tune
from hone._version import __version__
from hone.errors import HoneError
from hone.model import Model

# quantize and prune take a path, zoo name or Model themselves: the API is the library function.
from hone.quantize import quantize
from hone.quantize.prune import prune
from hone.sources import load
from hone.tune import TUNE_HTML

P = ParamSpec("P")

if TYPE_CHECKING:
    from hone.bench.types import BenchResult
    from hone.export.types import ExportResult
    from hone.info import ModelInfo
    from hone.job_types import RunReport
    from hone.passes.types import OptimizeResult
    from hone.tune.types import TuneResult


def info(source: str | Model, *, input_shapes: Sequence[str] | None = None) -> ModelInfo:
    """The ModelInfo of ``source`` (a path, zoo name, factory or Model)."""
    from hone.info import describe

    return describe(load(source, input_shapes=input_shapes))


def _with_data(
    source: str | Model,
    data: str | os.PathLike[str] | None,
    dims: dict[str, int] | None,
    input_shapes: Sequence[str] | None = None,
) -> Model:
    """``source`` loaded with ``data`` (``--data``) and ``dims`` (``--dim``) attached; see ``hone.data``."""
    from hone.data import attach

    return attach(load(source, input_shapes=input_shapes), None if data is None else str(data), dims)


def bench(
    source: str | Model,
    *,
    batches: Sequence[int] | None = None,
    threads: int | None = None,
    provider: str = "cpu",
    variants: Sequence[str] | None = None,
    budget_s: float = 3.0,
    rel_tol: float = 0.02,
    min_runs: int = 10,
    max_runs: int = 2000,
    warmup_runs: int = 3,
    seed: int = 0,
    on_config: Callable[[str, int], None] | None = None,
    input_shapes: Sequence[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    dims: dict[str, int] | None = None,
) -> BenchResult:
    """Benchmark ``source`` (``hone.bench.bench``) on ``data``'s samples and ``dims``' values
    (as ``--data`` and ``--dim``), or on inputs invented from the graph."""
    from hone.bench import bench as run_bench

    return run_bench(
        _with_data(source, data, dims, input_shapes),
        batches=batches,
        threads=threads,
        provider=provider,
        variants=variants,
        rel_tol=rel_tol,
        min_runs=min_runs,
        max_runs=max_runs,
        warmup_runs=warmup_runs,
        budget_s=budget_s,
        seed=seed,
        on_config=on_config,
    )


def _writing_html(run_job: Callable[P, RunReport]) -> Callable[P, RunReport]:
    """``run_job`` that also renders ``report.html`` next to the ``report.json`` the job writes."""

    @functools.wraps(run_job)
    def run(*args: P.args, **kwargs: P.kwargs) -> RunReport:
        from hone.job_types import REPORT_HTML
        from hone.report.html import write_html

        report = run_job(*args, **kwargs)
        write_html(report, Path(report.out_dir) / REPORT_HTML)
        return report

    return run


# The end-to-end job, ``hone.job.run`` with its signature; returns its RunReport, after writing
# ``report.json`` (the job) and ``report.html`` (rendered here) into ``out_dir``.
run = _writing_html(hone.job.run)


def _writing_tune_html(search: Callable[P, TuneResult]) -> Callable[P, TuneResult]:
    """``search`` that also renders ``tune.html`` (the Pareto page) into the repository it wrote."""

    @functools.wraps(search)
    def tune(*args: P.args, **kwargs: P.kwargs) -> TuneResult:
        from hone.report.tune_page import write_tune_html

        result = search(*args, **kwargs)
        if result.repository is not None:
            write_tune_html(result, Path(result.repository) / TUNE_HTML)
        return result

    return tune


# The search of ``hone tune``, ``hone.tune.tune`` with its signature; returns its TuneResult after
# writing the model repository, ``tune.json`` (the search) and ``tune.html`` (rendered here).
tune = _writing_tune_html(hone.tune.tune)


def optimize(
    source: str | Model,
    *,
    target: str = "ort-cpu",
    verify: bool = True,
    data: str | os.PathLike[str] | None = None,
    dims: dict[str, int] | None = None,
) -> tuple[Model, OptimizeResult]:
    """Rewrite ``source`` for ``target`` with every pass verified (on ``data``'s samples when given);
    returns (Model, OptimizeResult)."""
    from hone.passes import optimize as run_optimize

    if data is not None or dims:
        source = _with_data(source, data, dims)
    return run_optimize(source, target=target, verify=verify)


def export(
    source: str | Model,
    output: str | os.PathLike[str],
    *,
    target: str = "onnx",
    force: bool = False,
    budget: str | None = None,
    calib: str | None = None,
    sparsity: float | None = None,
    memory_cap_mb: int | None = None,
    fp16: bool = False,
    input_shapes: Sequence[str] | None = None,
) -> ExportResult:
    """Write ``source`` for ``target`` (``hone.export.export``): ``output`` is an .onnx path, or a
    folder for ``edge`` and ``web``. ``budget``, ``calib``, ``sparsity`` and ``memory_cap_mb`` are
    the edge target's options, ``fp16`` the web target's."""
    from hone.export import export as run_export

    return run_export(
        load(source, input_shapes=input_shapes),
        output,
        target=target,
        force=force,
        budget=budget,
        calib=calib,
        sparsity=sparsity,
        memory_cap_mb=memory_cap_mb,
        fp16=fp16,
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
    "tune",
]
