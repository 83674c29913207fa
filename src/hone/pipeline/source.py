"""What ``hone pipeline`` splits: a torch module rebuilt in every stage process, or an ONNX graph.

A torch source is a picklable factory (a zoo name, or ``file.py:factory``) plus its one input
spec: each stage process calls the factory and then loads the weights the parent saved, so every
stage holds exactly the parent's weights even when the factory draws them at random. An ONNX source
is a hone Model, split at single-tensor boundaries (``hone.pipeline.onnx_stages``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hone import zoo
from hone.errors import ModelNotFoundError, OptionError, UnknownModelError
from hone.pipeline.types import SourceKind
from hone.specs import TensorSpec

if TYPE_CHECKING:
    from torch import nn

    from hone.model import Model
    from hone.samples import SampleSet


@dataclass(frozen=True)
class ZooFactory:
    """Builds the zoo model ``name`` (deterministic weights)."""

    name: str

    def __call__(self) -> nn.Module:
        return zoo.get(self.name).build_module()


@dataclass(frozen=True)
class FileFactory:
    """Imports ``file`` and calls ``factory_name()``; picklable, so a stage process can do it too."""

    file: str
    factory_name: str

    def __call__(self) -> nn.Module:
        from hone.torch_export import call_factory, import_factory

        factory = import_factory(Path(self.file), self.factory_name)
        return call_factory(factory, f"{self.file}:{self.factory_name}")


@dataclass
class PipelineSource:
    """A model to pipeline: ``factory`` for torch (train and inference), ``onnx`` for inference only."""

    name: str
    input_spec: TensorSpec | None = None  # torch sources: the one input of the block chain
    dims: dict[str, int] = field(default_factory=dict)  # values of symbolic dims other than batch
    factory: Callable[[], nn.Module] | None = None
    onnx: Model | None = None
    samples: SampleSet | None = None  # --data: the step's inputs come from these samples

    @property
    def kind(self) -> SourceKind:
        return "torch" if self.factory is not None else "onnx"


def resolve(
    model: str,
    *,
    input_shapes: Sequence[str] | None = None,
    dims: Mapping[str, int] | None = None,
    data: str | None = None,
) -> PipelineSource:
    """The source for a command-line MODEL: a zoo name, ``file.py:factory``, or an .onnx file;
    ``data`` (``--data``) gives the samples the step runs on, else they are invented."""
    source = _resolve(model, input_shapes=input_shapes, dims=dims)
    if data is not None:
        from hone.data import attach, load_arrays_data

        if source.onnx is not None:
            source.samples = attach(source.onnx, data, check=False).samples
        else:
            assert source.input_spec is not None
            source.samples = load_arrays_data(Path(data), [source.input_spec])
    elif source.onnx is not None:
        from hone.data import check_invented

        check_invented(source.onnx)
    return source


def _resolve(
    model: str,
    *,
    input_shapes: Sequence[str] | None = None,
    dims: Mapping[str, int] | None = None,
) -> PipelineSource:
    from hone.model import load_onnx_file
    from hone.sources import split_factory_ref

    dims = dict(dims or {})
    factory_ref = split_factory_ref(model)
    if factory_ref is not None:
        return _from_file_factory(*factory_ref, input_shapes or ())
    if model in zoo.names():
        entry = zoo.get(model)
        if len(entry.inputs) != 1:
            names = ", ".join(s.name for s in entry.inputs)
            raise OptionError(
                f"{model} takes {len(entry.inputs)} inputs ({names}); hone pipeline splits a chain of "
                "blocks with one tensor between them; use transformer_stack, resnet18/50, or a "
                "file.py:factory module that is an nn.Sequential or has pipeline_blocks()"
            )
        return PipelineSource(
            model, input_spec=entry.inputs[0], dims={**entry.default_dims, **dims}, factory=ZooFactory(model)
        )
    path = Path(model).expanduser()
    if path.is_file():
        onnx_model = load_onnx_file(path)
        return PipelineSource(onnx_model.name, dims={**onnx_model.default_dims, **dims}, onnx=onnx_model)
    if path.suffix.lower() in (".onnx", ".py"):
        raise ModelNotFoundError(f"{model}: no such file; check the path", source=model)
    raise UnknownModelError(
        f"{model!r} is neither a file nor a zoo model; zoo models are: {', '.join(zoo.names())}",
        source=model,
    )


def _from_file_factory(file: str, factory_name: str, input_shapes: Sequence[str]) -> PipelineSource:
    from hone.torch_export import parse_shapes

    if not Path(file).expanduser().is_file():
        raise ModelNotFoundError(f"{file}: no such Python file; check the path", source=file)
    if len(input_shapes) != 1:
        raise OptionError(
            f"{file}:{factory_name} is a PyTorch factory; give its one input shape with --input-shape "
            "(e.g. 8,128,256; the first dim is the batch)"
        )
    ((name, dims),) = parse_shapes(input_shapes)
    spec = TensorSpec(name or "input", "float32", ("batch", *dims[1:]))
    return PipelineSource(
        Path(file).stem,
        input_spec=spec,
        factory=FileFactory(str(Path(file).expanduser().resolve()), factory_name),
    )
