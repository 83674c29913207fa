"""PyTorch to ONNX: export a module with dynamic batch (and other symbolic) axes, and export a
user's ``file.py:factory`` (``hone.sources`` loads the file as a hone Model; this module knows no Model).

The TorchScript exporter (``dynamo=False``) with ``TrainingMode.PRESERVE`` is used on purpose: it
keeps BatchNormalization as its own node (the dynamo exporter's optimizer and the eval-mode
exporter both fold it into Conv), so that hone's own passes decide what to fuse and verify it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hone.errors import FactoryError, ModelNotFoundError, OptionError, ShapeError
from hone.specs import TensorSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

OPSET = 17


def export_module(
    module: torch.nn.Module,
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    path: Path,
    *,
    dims: dict[str, int] | None = None,
    example_batch: int = 2,
) -> None:
    """Export ``module`` to ``path``; symbolic dims in ``inputs`` become dynamic axes."""
    import torch

    from hone.data import synthesize

    dims = {"batch": example_batch, **(dims or {})}
    feeds = synthesize(inputs, batch=example_batch, dims=dims, seed=0)
    args = tuple(torch.from_numpy(feeds[spec.name]) for spec in inputs)
    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in inputs:
        axes = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        if axes:
            dynamic_axes[spec.name] = axes
    with torch.inference_mode():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    for name, output in zip(output_names, outputs, strict=False):
        dynamic_axes[name] = {0: "batch"}
        if output.dim() >= 2 and "sequence" in dims and output.shape[1] == dims["sequence"]:
            dynamic_axes[name][1] = "sequence"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=[spec.name for spec in inputs],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
        )


def parse_shapes(texts: Sequence[str]) -> list[tuple[str | None, tuple[int, ...]]]:
    """``["1,3,224,224", "mask:1,128"]`` -> ``[(None, (1,3,224,224)), ("mask", (1,128))]``."""
    parsed = []
    for text in texts:
        name, _, dims_text = text.rpartition(":")
        try:
            dims = tuple(int(d) for d in dims_text.replace("x", ",").split(",") if d.strip())
        except ValueError as exc:
            raise OptionError(
                f"--input-shape {text!r} is not a list of integers; write it like 1,3,224,224"
            ) from exc
        if not dims or any(d <= 0 for d in dims):
            raise OptionError(f"--input-shape {text!r} needs positive dims, like 1,3,224,224")
        parsed.append((name or None, dims))
    return parsed


@dataclass(frozen=True)
class FactoryExport:
    """A user's ``file.py:factory`` exported: the ONNX file, and how to build the eager module again."""

    onnx_path: Path
    build: Callable[[], torch.nn.Module]


def export_factory(file: str, factory_name: str, input_shapes: Sequence[str]) -> FactoryExport:
    """Import ``file``, call ``factory_name()``, check it takes ``input_shapes``, and export the module
    to a temporary .onnx file (first dim of each shape: the dynamic batch axis)."""
    import torch

    file_path = Path(file).expanduser()
    if not file_path.is_file():
        raise ModelNotFoundError(f"{file}: no such Python file; check the path", source=file)
    if not input_shapes:
        raise OptionError(
            f"{file}:{factory_name} is a PyTorch factory; give --input-shape (e.g. 1,3,224,224)"
        )
    factory = import_factory(file_path, factory_name)
    module = call_factory(factory, f"{file}:{factory_name}")
    module.eval()
    shapes = parse_shapes(input_shapes)
    specs = tuple(
        TensorSpec(
            name=name or (f"input_{i}" if len(shapes) > 1 else "input"),
            dtype="float32",
            shape=("batch", *dims[1:]),
        )
        for i, (name, dims) in enumerate(shapes)
    )
    example = tuple(torch.zeros(dims) for _, dims in shapes)
    try:
        with torch.inference_mode():
            outputs = module(*example)
    except Exception as exc:
        shown = ", ".join("x".join(map(str, d)) for _, d in shapes)
        raise ShapeError(
            f"{file}:{factory_name} does not accept input shape {shown} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "give the shape the module expects with --input-shape"
        ) from exc
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    folder = Path(tempfile.mkdtemp(prefix="hone-export-"))
    onnx_path = folder / f"{file_path.stem}.onnx"
    try:
        export_module(module, specs, output_names, onnx_path, example_batch=shapes[0][1][0])
    except Exception as exc:
        raise FactoryError(
            f"torch.onnx could not export {file}:{factory_name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc

    def build() -> torch.nn.Module:
        built = factory()
        built.eval()
        return built

    return FactoryExport(onnx_path, build)


def call_factory(factory: object, label: str) -> torch.nn.Module:
    """``factory()``, checked: it must return a torch module; its errors become FactoryError."""
    import torch

    try:
        module = factory()  # type: ignore[operator]
    except Exception as exc:
        raise FactoryError(f"{label}() raised {type(exc).__name__}: {exc}; fix the factory") from exc
    if not isinstance(module, torch.nn.Module):
        raise FactoryError(f"{label}() returned {type(module).__name__}, not a torch.nn.Module")
    return module


def import_factory(file_path: Path, factory_name: str) -> Callable[[], Any]:
    module_name = f"hone_user_{abs(hash(str(file_path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file_path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"{file_path} cannot be imported as Python; give a .py file")
    user_module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = user_module
    try:
        spec.loader.exec_module(user_module)
    except Exception as exc:
        raise FactoryError(f"importing {file_path} raised {type(exc).__name__}: {exc}; fix the file") from exc
    factory = getattr(user_module, factory_name, None)
    if not callable(factory):
        raise FactoryError(f"{file_path} has no callable {factory_name!r}; check the name after ':'")
    return factory


__all__ = ["OPSET", "FactoryExport", "export_factory", "export_module", "parse_shapes"]
