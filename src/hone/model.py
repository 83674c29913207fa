"""Model, the one currency of hone: an onnx-ir model plus what hone knows about it.

``load_onnx_file()`` reads an .onnx file (external data included, no 2 GB protobuf limit) and checks
it; every failure becomes one ``InputError`` line that says what to do. ``Model.save()`` writes one,
``Model.clone()`` copies one. ``hone.sources.load()`` is the entry point that also takes zoo names and
PyTorch factories.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from hone.errors import ExternalDataError, InvalidModelError
from hone.infer_inputs import InputFacts, input_facts
from hone.paths import ensure_writable
from hone.specs import TensorSpec

if TYPE_CHECKING:  # torch is imported lazily: loading an .onnx file must not pay for it
    import torch

    from hone.samples import SampleSet

logger = logging.getLogger(__name__)

# Key under which hone records input specs (value ranges, default dims) in the model's metadata.
_SPECS_METADATA_KEY = "hone.inputs"
_DEFAULT_DIMS_METADATA_KEY = "hone.default_dims"
# onnxruntime session config entries a model needs to compute what hone verified (a JSON object of
# strings, e.g. {"session.x64quantprecision": "1"} for INT8 on x86 CPUs without VNNI); hone's
# Session applies them, the serve repository and the edge manifest carry them.
SESSION_CONFIG_METADATA_KEY = "hone.session_config"
# Above this many bytes of weights, hand onnxruntime a file instead of one serialized protobuf.
_IN_MEMORY_LIMIT_BYTES = 1_500_000_000
# When weights go to an external file, tensors under this size stay inside the .onnx file.
_EXTERNAL_DATA_MIN_TENSOR_BYTES = 1024

# What a Model was loaded from: an .onnx file, a zoo entry, or a user's PyTorch factory.
SourceKind = Literal["onnx", "zoo", "torch"]
# onnx-ir's model type under a name that Model's own ``ir`` field does not shadow.
IrModel = ir.Model


@dataclass
class Model:
    """An ONNX model in onnx-ir form, with its specs, where it came from and what was done to it."""

    ir: ir.Model
    name: str
    source: str
    source_kind: SourceKind
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Values for symbolic dims other than the batch dim (e.g. {"sequence": 128}).
    default_dims: dict[str, int] = field(default_factory=dict)
    # The file the graph was read from, while the graph is unchanged since then.
    path: Path | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    # Builds the eager PyTorch module this model was exported from, when there is one.
    torch_factory: Callable[[], torch.nn.Module] | None = None
    # Sample data (the user's --data or the zoo's), shared by every stage; see hone.data.attach.
    samples: SampleSet | None = None

    @property
    def opset(self) -> int:
        return int(self.ir.opset_imports.get("", 0))

    @property
    def session_config(self) -> dict[str, str]:
        """The onnxruntime session config entries this model needs (``SESSION_CONFIG_METADATA_KEY``);
        {} when none, or when the entry is not a JSON object of strings (then a warning)."""
        raw = self.ir.metadata_props.get(SESSION_CONFIG_METADATA_KEY)
        if not raw:
            return {}
        try:
            entries = json.loads(raw)
        except ValueError:
            entries = None
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            logger.warning(
                "ignoring %s's metadata %s: not a JSON object of strings",
                self.name,
                SESSION_CONFIG_METADATA_KEY,
            )
            return {}
        return entries

    def with_session_config(self, entries: dict[str, str]) -> Model:
        """This model with ``entries`` added to the session config it needs (in its metadata; the
        graph is shared, so call it on a model you own, e.g. one just built)."""
        merged = {**self.session_config, **entries}
        self.ir.metadata_props[SESSION_CONFIG_METADATA_KEY] = json.dumps(merged, sort_keys=True)
        return replace(
            self,
            path=None,
            steps=[
                *self.steps,
                "onnxruntime session config " + ", ".join(f"{k}={v}" for k, v in entries.items()),
            ],
        )

    def with_graph(self, new_ir: IrModel, step: str) -> Model:
        """A new Model holding ``new_ir``, with ``step`` appended to its history."""
        return replace(self, ir=new_ir, path=None, steps=[*self.steps, step])

    def clone(self, step: str | None = None) -> Model:
        """A deep copy to change freely: its own graph (weights loaded into memory; the metadata, and
        with it the session config, copied along), its own dims, provenance and steps (``step``
        appended when given), and no ``path``. The specs are immutable; the samples and the torch
        factory are shared (they are read, never changed)."""
        ir.external_data.load_to_model(self.ir)
        return replace(
            self,
            ir=ir.from_proto(ir.to_proto(self.ir)),
            path=None,
            default_dims=dict(self.default_dims),
            provenance=dict(self.provenance),
            steps=[*self.steps, step] if step is not None else list(self.steps),
        )

    def onnx_source(self) -> str | bytes:
        """What onnxruntime should load: the original file while unchanged, else serialized bytes."""
        if self.path is not None:
            return str(self.path)
        if _initializer_bytes(self.ir) > _IN_MEMORY_LIMIT_BYTES:
            folder = Path(tempfile.mkdtemp(prefix="hone-"))
            target = folder / f"{self.name}.onnx"
            ir.save(
                self.ir,
                target,
                external_data=f"{self.name}.onnx.data",
                size_threshold_bytes=_EXTERNAL_DATA_MIN_TENSOR_BYTES,
            )
            return str(target)
        ir.external_data.load_to_model(self.ir)
        return ir.to_proto(self.ir).SerializeToString()

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the model as ONNX; weights go to ``<name>.data`` beside it when over 2 GB in total."""
        target = ensure_writable(path, force=force)
        self.ir.metadata_props[_SPECS_METADATA_KEY] = json.dumps(
            [
                {"name": s.name, "value_range": list(s.value_range)}
                for s in self.inputs
                if s.value_range is not None
            ]
        )
        if self.default_dims:
            self.ir.metadata_props[_DEFAULT_DIMS_METADATA_KEY] = json.dumps(self.default_dims)
        if _initializer_bytes(self.ir) > _IN_MEMORY_LIMIT_BYTES:
            data_name = target.name + ".data"
            ensure_writable(target.parent / data_name, force=force)
            ir.save(
                self.ir, target, external_data=data_name, size_threshold_bytes=_EXTERNAL_DATA_MIN_TENSOR_BYTES
            )
        else:
            ir.external_data.load_to_model(self.ir)
            ir.save(self.ir, target)
        return target


# Contrib ops onnxruntime registers in the default domain (its own optimizer, and hone's
# fuse_rms_norm, emit them there); the ONNX checker knows no such op and refuses the model.
ORT_DEFAULT_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})


def check_onnx(model: onnx.ModelProto | Path, *, full_check: bool = False) -> None:
    """The ONNX checker (on a path, external data included); a graph holding one of
    ``ORT_DEFAULT_DOMAIN_OPS`` is checked as if those nodes were in onnxruntime's own domain.
    Raises ``onnx.checker.ValidationError``."""
    proto = model if isinstance(model, onnx.ModelProto) else None
    if proto is None:
        proto = onnx.load_model(str(model), load_external_data=False)
    ours = [
        n for n in proto.graph.node if n.op_type in ORT_DEFAULT_DOMAIN_OPS and n.domain in ("", "ai.onnx")
    ]
    if not ours:
        onnx.checker.check_model(
            model if isinstance(model, onnx.ModelProto) else str(model), full_check=full_check
        )
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for node in copy.graph.node:
        if node.op_type in ORT_DEFAULT_DOMAIN_OPS and node.domain in ("", "ai.onnx"):
            node.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in copy.opset_import):
        copy.opset_import.add(domain="com.microsoft", version=1)
    onnx.checker.check_model(copy, full_check=full_check)


def load_onnx_file(path: Path, *, name: str | None = None, source: str | None = None) -> Model:
    """Read and check an .onnx file; external data must stay inside the model's folder."""
    if path.is_dir():
        raise InvalidModelError(f"{path} is a folder; give the path of an .onnx file", path=str(path))
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModelError(
            f"{path} is not a readable ONNX model (truncated or corrupt protobuf?); re-export it",
            path=str(path),
        ) from exc
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.output:
        raise InvalidModelError(
            f"{path} does not hold an ONNX model (no graph or outputs); give an .onnx file",
            path=str(path),
        )
    _check_external_data(proto, path.parent)
    _check_tensor_interface(proto.graph, path)
    try:
        check_onnx(path)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidModelError(
            f"{path} fails the ONNX checker ({first_line}); fix or re-export the model",
            path=str(path),
        ) from exc
    try:
        model_ir = ir.load(path)
    except Exception as exc:  # onnx-ir raises several types for malformed graphs
        raise InvalidModelError(
            f"{path} could not be read by onnx-ir ({_root_cause(exc)}); re-export it", path=str(path)
        ) from exc
    zoo_specs = _recorded_specs(model_ir)
    facts = input_facts(model_ir)
    default_dims = _recorded_default_dims(model_ir)
    return Model(
        ir=model_ir,
        name=name or path.stem,
        source=source or str(path),
        source_kind="onnx",
        inputs=_graph_specs(model_ir.graph.inputs, zoo_specs, facts),
        outputs=_graph_specs(model_ir.graph.outputs, {}, facts),
        default_dims=default_dims,
        path=path.resolve(),
        provenance={"file": str(path.resolve())},
    )


def _check_tensor_interface(graph: onnx.GraphProto, path: Path) -> None:
    """A map input/output (ZipMap's seq(map), ONNX-ML's dictionaries) is refused by name: onnx-ir
    cannot read maps, and hone cannot invent or compare them. Sequences and optionals pass."""
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if "map(" in _type_text(value.type):
                raise InvalidModelError(
                    f"{path}: {kind} {value.name!r} is a {_type_text(value.type)}, which hone "
                    "cannot read or compare; give a model with tensor outputs (for a scikit-learn "
                    "converter, convert with options={'zipmap': False})",
                    path=str(path),
                )


def _type_text(type_proto: onnx.TypeProto) -> str:
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        return f"sequence({_type_text(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({_type_text(type_proto.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(type_proto.optional_type.elem_type)})"
    return "tensor" if kind == "tensor_type" else (kind or "value of unknown type")


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's text: onnx-ir wraps the real reason behind a hashed message."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}".strip()


def _check_external_data(proto: onnx.ModelProto, base_dir: Path) -> None:
    base = base_dir.resolve()
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(base):
            raise ExternalDataError(
                f"tensor {tensor.name!r} points at external data {location!r} outside the model's "
                f"folder {base}; move the data file next to the model",
                tensor=tensor.name,
                location=location,
            )
        if not target.is_file():
            raise ExternalDataError(
                f"external data file {location!r} for tensor {tensor.name!r} is missing; copy it "
                f"next to the model in {base}",
                tensor=tensor.name,
                location=location,
            )
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        if end > target.stat().st_size:
            raise ExternalDataError(
                f"external data file {location!r} is shorter than tensor {tensor.name!r} needs "
                f"({target.stat().st_size} < {end} bytes); it is truncated, copy it again",
                tensor=tensor.name,
                location=location,
            )


def _all_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                tensors.append(attribute.t)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                tensors.extend(_all_tensors(attribute.g))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    tensors.extend(_all_tensors(subgraph))
    return tensors


def _graph_specs(
    values: Sequence[ir.Value], recorded: dict[str, TensorSpec], facts: dict[str, InputFacts] | None = None
) -> tuple[TensorSpec, ...]:
    """Specs of graph inputs or outputs; ``facts`` (``hone.infer_inputs``) gives batch axes and index
    bounds."""
    facts = facts or {}
    specs = []
    for value in values:
        dims: list[int | str | None] = []
        for dim in value.shape or ():
            dims.append(dim if isinstance(dim, int) else dim.value)
        dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
        known = recorded.get(value.name or "")
        fact = facts.get(value.name or "", InputFacts())
        specs.append(
            TensorSpec(
                name=value.name or "",
                dtype=dtype,
                shape=tuple(dims),
                value_range=known.value_range if known else None,
                batch_axis=fact.batch_axis,
                index_bounds=tuple(fact.index_bounds),
                equal_to=fact.equal_constants[0] if fact.equal_constants else None,
            )
        )
    return tuple(specs)


def _recorded_specs(model_ir: ir.Model) -> dict[str, TensorSpec]:
    raw = model_ir.metadata_props.get(_SPECS_METADATA_KEY)
    if not raw:
        return {}
    try:
        entries: list[dict[str, Any]] = json.loads(raw)
        return {e["name"]: TensorSpec(e["name"], "", (), tuple(e["value_range"])) for e in entries}
    except (ValueError, KeyError, TypeError):
        logger.warning("ignoring malformed %s metadata", _SPECS_METADATA_KEY)
        return {}


def _recorded_default_dims(model_ir: ir.Model) -> dict[str, int]:
    raw = model_ir.metadata_props.get(_DEFAULT_DIMS_METADATA_KEY)
    if not raw:
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError, TypeError):
        logger.warning("ignoring malformed %s metadata", _DEFAULT_DIMS_METADATA_KEY)
        return {}


def _initializer_bytes(model_ir: ir.Model) -> int:
    total = 0
    for value in model_ir.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None:
            total += tensor.nbytes
    return total
