"""Export a Model for a deployment target: ``onnx`` (the model as loaded, unchanged), ``edge`` (a
folder with the smallest INT8 artifact that passes the accuracy gate, its manifest and a profile
under edge-like limits; see ``edge.py``) or ``web`` (a self-contained folder that runs the model in
a browser on WebGPU or WASM with onnxruntime-web; see ``web.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hone.errors import OptionError
from hone.export.types import EXPORT_TARGETS, ExportResult, ExportTarget
from hone.info import describe
from hone.model import Model
from hone.paths import ensure_writable

# edge and web import the quantizer: they are loaded only when their target is asked for.
TARGETS = EXPORT_TARGETS


def export(
    model: Model,
    output: str | os.PathLike[str],
    *,
    target: ExportTarget | str = "onnx",
    force: bool = False,
    budget: str | None = None,
    calib: str | None = None,
    sparsity: float | None = None,
    memory_cap_mb: int | None = None,
    fp16: bool = False,
) -> ExportResult:
    """Write ``model`` for ``target``; ``budget``, ``calib``, ``sparsity`` and ``memory_cap_mb`` are edge
    options, ``fp16`` (a float16 model for WebGPU, kept if it answers like float32) a web option.
    The result is an ``ExportResult``; for ``edge`` an ``EdgeResult``, for ``web`` a ``WebResult``."""
    if target not in TARGETS:
        raise OptionError(f"export target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")
    if fp16 and target != "web":
        raise OptionError("--fp16 applies to --target web only (for edge, `hone quantize --mode fp16`)")
    if target == "web":
        from hone.export.web import export_web

        given = [
            flag
            for flag, value in {
                "--budget": budget,
                "--calib": calib,
                "--sparsity": sparsity,
                "--memory-cap-mb": memory_cap_mb,
            }.items()
            if value is not None
        ]
        if given:
            raise OptionError(f"{', '.join(given)} apply to --target edge only")
        return export_web(model, output, force=force, fp16=fp16)
    if target == "edge":
        from hone.export.edge import export_edge

        return export_edge(
            model,
            output,
            budget=budget,
            calib=calib,
            sparsity=sparsity,
            memory_cap_mb=memory_cap_mb,
            force=force,
        )
    edge_only = {
        "--budget": budget,
        "--calib": calib,
        "--sparsity": sparsity,
        "--memory-cap-mb": memory_cap_mb,
    }
    given = [flag for flag, value in edge_only.items() if value is not None]
    if given:
        raise OptionError(f"{', '.join(given)} apply to --target edge only")
    if model.source_kind == "onnx" and model.path is not None and not model.steps:
        path, size = _copy_unchanged(model.path, Path(output), force=force)
    else:
        path = model.save(output, force=force)
        size = path.stat().st_size
        data_file = Path(str(path) + ".data")
        if data_file.exists():
            size += data_file.stat().st_size
    return ExportResult(model=model.name, target="onnx", path=str(path), size_bytes=size)


def _copy_unchanged(source: Path, output: Path, *, force: bool) -> tuple[Path, int]:
    """Byte-identical copy of an .onnx file and its external data files (same relative names)."""
    from hone.model import load_onnx_file

    data_files = describe(load_onnx_file(source)).external_data_files
    target = ensure_writable(output, force=force)
    copies = [(source, target)]
    for location in data_files:
        copies.append((source.parent / location, ensure_writable(target.parent / location, force=force)))
    size = 0
    for origin, destination in copies:
        if origin.resolve() != destination.resolve():
            shutil.copyfile(origin, destination)
        size += destination.stat().st_size
    return target, size
