"""Sample data for running a model: the user's ``--data``, the zoo's real data, or invented inputs
that are valid for the graph.

Every command that runs a model gets its inputs here, so that verification, calibration, the
accuracy gate and the benchmarks all see the same samples:

- ``load_data(path, model)`` reads ``--data PATH``: an ``.npz`` (one array per input name, samples
  along a new first axis; an array of the input's own rank is split along its batch axis), a
  folder of ``.npz`` files (each one sample, or several as above), a ``.npy`` (single-input
  models), a folder of images (preprocessed as the model's ``hone.preprocess`` metadata says, else
  resized to the input, scaled to [0, 1] and normalized with ImageNet's mean and std), or a
  ``.txt`` (one text per line) for text models whose tokenizer hone knows (a zoo model's, or a
  ``tokenizer.json`` beside the .onnx file). Every sample is checked against the input specs, and
  a misfit is one line naming the input and the shape/dtype wanted.
- ``attach(model, data, dims)`` is what every command calls: it applies ``--dim`` values, attaches
  the samples (the user's, else the zoo's), and when there are none checks once that the model
  runs on invented inputs, or refuses in one line naming the failing node and asking for
  ``--data``.
- ``feeds(model, batch=..., seed=...)`` gives one batch from the attached samples, else invented.
- ``zoo_eval_set(model)``, ``zoo_calibration_set(model)``, ``zoo_train_set(model)``: the data sets of
  a zoo model's entry (found through its provenance), None for other models.
- ``SampleSet.split()`` (``hone.samples``) cuts samples into disjoint calibration and evaluation
  halves, keeping samples of one group (one source photo) on one side.

Invented values follow each input's graph facts (``hone.infer_inputs``: batch axis, index bounds,
compared constants), then its recorded ``value_range``, then name hints (``*mask*`` -> ones,
``*type*``/``*segment*`` -> zeros, other ids -> small non-negative ints); floats are N(0, 1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hone import zoo
from hone.errors import ExecutionError, HoneError, InventedInputsError, OptionError, ShapeError
from hone.samples import SampleSet, join, joinable
from hone.specs import TensorSpec, has_batch_axis
from hone.zoo.types import EvalSet, TrainSet, ZooModel

if TYPE_CHECKING:
    from hone.model import Model

logger = logging.getLogger(__name__)

# Fallback sizes for symbolic dims nobody gave a value for, chosen by a hint in the dim's name.
_DIM_HINTS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("seq", "len", "token", "time"), 128),
    (("height", "width", "h", "w"), 224),
)
_FALLBACK_DIM = 1
_IMAGE_SIDE = 224  # unknown spatial dims of an image-like input (N, C, H, W) or (N, H, W, C)
# When invented inputs fail, these sizes are tried for the dims hone had to guess.
_RETRY_DIMS = (16, 64, 224)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
TEXT_SUFFIXES = (".txt",)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PREPROCESS_METADATA_KEY = "hone.preprocess"
_NODE_IN_MESSAGE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


# --- shapes -------------------------------------------------------------------------------------


def resolve_shape(spec: TensorSpec, *, batch: int, dims: Mapping[str, int]) -> tuple[int, ...]:
    """Concrete shape of ``spec``: its batch axis takes ``batch``, named dims take ``dims``."""
    shape: list[int] = []
    for axis, dim in enumerate(spec.shape):
        if axis == spec.batch_axis and not (isinstance(dim, int) and dim > 0):
            shape.append(batch)
        elif isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif axis_label(spec.name, axis) in dims:
            shape.append(int(dims[axis_label(spec.name, axis)]))
        elif isinstance(dim, str) and dim in dims:
            shape.append(int(dims[dim]))
        else:
            shape.append(_guess_dim(spec, axis, dims))
    return tuple(shape)


def resolve_shapes(
    specs: Sequence[TensorSpec], *, batch: int, dims: Mapping[str, int]
) -> dict[str, tuple[int, ...]]:
    """``resolve_shape`` of every spec, a named dim guessed for one input kept for the others: the
    ``S`` of x [N, S, 8] and of mask [N, 1, S, S] is one size (alone, the mask's looks like an
    image's side)."""
    pinned = dict(dims)
    shapes = {}
    for spec in specs:
        shape = resolve_shape(spec, batch=batch, dims=pinned)
        for axis, (dim, size) in enumerate(zip(spec.shape, shape, strict=True)):
            if isinstance(dim, str) and axis != spec.batch_axis:
                pinned.setdefault(dim, size)
        shapes[spec.name] = shape
    return shapes


def _guess_dim(spec: TensorSpec, axis: int, dims: Mapping[str, int]) -> int:
    name = spec.shape[axis]
    lowered = (name or "").lower() if isinstance(name, str) else ""
    for hints, size in _DIM_HINTS:
        if lowered and any(lowered == h or (len(h) > 1 and h in lowered) for h in hints):
            logger.info("symbolic dim %r set to %d (give --dim %s=N to choose)", name, size, name)
            return size
    if _is_image_spatial(spec, axis):
        return int(dims.get("*", _IMAGE_SIDE))
    logger.info(
        "symbolic dim %r of input %r has no value; using %d (give --dim NAME=N)",
        name,
        spec.name,
        dims.get("*", _FALLBACK_DIM),
    )
    return int(dims.get("*", _FALLBACK_DIM))


def _is_image_spatial(spec: TensorSpec, axis: int) -> bool:
    """Axis 2 or 3 of (N, C, H, W) with C in 1..4, or 1 or 2 of (N, H, W, C), for a float input."""
    if len(spec.shape) != 4 or not spec.dtype.startswith("float"):
        return False
    channels_first = isinstance(spec.shape[1], int) and 1 <= spec.shape[1] <= 4
    channels_last = isinstance(spec.shape[3], int) and 1 <= spec.shape[3] <= 4
    return (channels_first and axis in (2, 3)) or (channels_last and not channels_first and axis in (1, 2))


def axis_label(input_name: str, axis: int) -> str:
    """``input[axis]``: how ``--dim`` names one axis of one input (for dims without a name)."""
    return f"{input_name}[{axis}]"


def guessed_axes(specs: Sequence[TensorSpec], dims: Mapping[str, int]) -> list[tuple[TensorSpec, int]]:
    """Axes hone would have to guess: neither fixed, nor the batch, nor given by name or label."""
    guessed = []
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if (
                axis == spec.batch_axis
                or (isinstance(dim, int) and dim > 0)
                or (isinstance(dim, str) and dim in dims)
                or axis_label(spec.name, axis) in dims
            ):
                continue
            guessed.append((spec, axis))
    return guessed


def guessed_dims(specs: Sequence[TensorSpec], dims: Mapping[str, int]) -> list[str]:
    """Dims hone would have to guess (neither fixed, nor the batch, nor given), as ``input[axis]``."""
    return [
        axis_label(spec.name, axis) + (f" ({spec.shape[axis]})" if isinstance(spec.shape[axis], str) else "")
        for spec, axis in guessed_axes(specs, dims)
    ]


def check_batchable(specs: Sequence[TensorSpec], batch: int) -> None:
    """Refuse a batch size the model cannot take: a fixed batch dim, or no batch axis at all."""
    shaped = [spec for spec in specs if spec.shape]
    if batch != 1 and shaped and not has_batch_axis(shaped):
        raise ShapeError(
            f"{', '.join(f'{s.name!r} {s.shape_text()}' for s in shaped)}: no symbolic dim is shared by the"
            f" inputs and outputs, so the model has no batch axis and batch {batch} cannot run; use --batch 1"
            " or export the model with a dynamic batch axis",
            batch=batch,
        )
    for spec in shaped:
        if spec.batch_axis is None:
            continue
        dim = spec.shape[spec.batch_axis]
        if isinstance(dim, int) and dim > 0 and dim != batch:
            raise ShapeError(
                f"input {spec.name!r} has a fixed batch dim of {dim}, so batch {batch} "
                f"cannot run; use --batch {dim} or export the model with a dynamic batch axis",
                input=spec.name,
                batch=batch,
            )


# --- invented inputs ----------------------------------------------------------------------------


def synthesize(
    specs: Sequence[TensorSpec],
    *,
    batch: int = 1,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded inputs for every spec, same values for the same (specs, batch, dims, seed)."""
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    shapes = resolve_shapes(specs, batch=batch, dims=dims)
    sizes = dict(dims)  # every symbolic dim's resolved size, for index bounds named by a dim
    for spec in specs:
        for dim, size in zip(spec.shape, shapes[spec.name], strict=False):
            if isinstance(dim, str):
                sizes.setdefault(dim, size)
    return {spec.name: _values(spec, shapes[spec.name], rng, sizes) for spec in specs}


def _values(
    spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, sizes: Mapping[str, int]
) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        if spec.equal_to is not None:
            return np.full(shape, spec.equal_to, dtype=dtype)
        low, high = _int_range(spec, sizes)
        return rng.integers(int(low), int(high), size=shape).astype(dtype)
    logger.warning("input %r has dtype %s; synthesizing zeros", spec.name, dtype)
    return np.zeros(shape, dtype=dtype)


def _int_range(spec: TensorSpec, sizes: Mapping[str, int]) -> tuple[int, int]:
    """[low, high) for an integer input: its index bounds, else its recorded range, else its name."""
    bounds = []
    for bound in spec.index_bounds:
        value = bound if isinstance(bound, int) else sizes.get(bound, _FALLBACK_DIM)
        bounds.append(max(int(value), 1))
    low, high = spec.value_range or _guess_int_range(spec.name)
    if bounds:
        high = min(bounds) if spec.value_range is None else min(int(high), *bounds)
        low = min(max(int(low), 0), high - 1)
    return int(low), int(high)


def _guess_int_range(name: str) -> tuple[int, int]:
    lowered = name.lower()
    if "mask" in lowered:
        return (1, 2)
    if "type" in lowered or "segment" in lowered or "position" in lowered:
        return (0, 1)
    return (0, 100)


# --- attaching data to a model ------------------------------------------------------------------


def parse_dims(values: Sequence[str] | None) -> dict[str, int]:
    """``["sequence=64", "height=320"]`` -> ``{"sequence": 64, "height": 320}``."""
    dims: dict[str, int] = {}
    for item in values or ():
        name, sep, number = item.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit() or int(number) < 1:
            raise OptionError(
                f"--dim {item!r} is not NAME=N with N a positive integer (e.g. --dim sequence=64)"
            )
        dims[name.strip()] = int(number)
    return dims


def attach(
    model: Model,
    data: str | Path | SampleSet | None = None,
    dims: Mapping[str, int] | None = None,
    *,
    check: bool = True,
) -> Model:
    """``model`` with ``dims`` applied and samples attached: ``data``, else the zoo's, else none (then,
    with ``check``, the model is run once on invented inputs and refused in one line if it fails)."""
    if dims:
        labels = {
            axis_label(s.name, axis)
            for s in model.inputs
            for axis, d in enumerate(s.shape)
            if not (isinstance(d, int) and d > 0)
        }
        unknown = sorted(set(dims) - {d for s in model.inputs for d in s.symbolic_dims} - labels - {"*"})
        if unknown:
            known = sorted({d for s in model.inputs for d in s.symbolic_dims})
            raise OptionError(
                f"--dim {', '.join(unknown)}: {model.name} has no such symbolic dim "
                f"(its inputs have: {', '.join(known) or 'none'})"
            )
        model.default_dims.update(dims)
    if isinstance(data, SampleSet):
        model.samples = data
    elif data is not None:
        model.samples = load_data(Path(data), model)
    elif model.samples is None:
        model.samples = zoo_samples(model)
    if model.samples is None and check:
        check_invented(model)
    return model


def feeds(model: Model, *, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of ``batch`` for ``model``: from its attached samples (cycling from ``seed``), else
    invented."""
    samples = model.samples
    if samples is None or not samples.samples:
        return synthesize(model.inputs, batch=batch, dims=model.default_dims, seed=seed)
    return sample_batch(samples, model.inputs, batch=batch, seed=seed)


def sample_batch(
    samples: SampleSet, specs: Sequence[TensorSpec], *, batch: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """``batch`` samples joined on each input's batch axis, from sample ``seed`` on, cycling; samples
    whose shape differs from the first one's (ragged text, images of other sizes) are not mixed in."""
    check_batchable(specs, batch)
    axes = {spec.name: spec.batch_axis for spec in specs}
    first = samples.samples[seed % len(samples)]
    chosen = [first]
    index = seed
    while len(chosen) < batch:
        index += 1
        candidate = samples.samples[index % len(samples)]
        chosen.append(candidate if joinable(first, candidate, axes) else first)
    dtypes = {spec.name: spec.dtype for spec in specs}
    joined = join(chosen, axes)
    return {name: array.astype(dtypes.get(name, array.dtype), copy=False) for name, array in joined.items()}


def zoo_entry(model: Model) -> ZooModel | None:
    """The zoo entry ``model`` was loaded from (by its provenance), None for other models."""
    name = model.provenance.get("zoo")
    return zoo.get(name) if name else None


def zoo_eval_set(model: Model) -> EvalSet | None:
    """The zoo's held-out evaluation data of ``model``; None when it is no zoo model or its entry has
    none. A set that cannot be read raises its HoneError (the caller says what it does instead)."""
    entry = zoo_entry(model)
    return entry.eval_data() if entry is not None and entry.eval_data is not None else None


def zoo_calibration_set(model: Model) -> tuple[dict[str, np.ndarray], str] | None:
    """The zoo's calibration inputs of ``model`` and their description, disjoint from ``zoo_eval_set``;
    None when it is no zoo model or its entry has none (errors as ``zoo_eval_set``)."""
    entry = zoo_entry(model)
    return entry.calibration_data() if entry is not None and entry.calibration_data is not None else None


def zoo_train_set(model: Model) -> TrainSet | None:
    """The zoo's labelled training data of ``model``, disjoint from ``zoo_eval_set``; None when it is no zoo
    model or its entry has none (errors as ``zoo_eval_set``)."""
    entry = zoo_entry(model)
    return entry.train_data() if entry is not None and entry.train_data is not None else None


def zoo_samples(model: Model) -> SampleSet | None:
    """The zoo's calibration and evaluation data of ``model`` as one SampleSet with its own split."""
    entry = zoo_entry(model)
    if entry is None or (entry.eval_data is None and entry.calibration_data is None):
        return None
    try:
        parts: list[tuple[dict[str, np.ndarray], str]] = []
        calibration = zoo_calibration_set(model)
        if calibration is not None:
            parts.append(calibration)
        evaluation = zoo_eval_set(model)
        if evaluation is not None:
            parts.append((evaluation.inputs, evaluation.description))
    except HoneError as exc:
        logger.warning("the zoo's data for %s is unavailable: %s", model.provenance["zoo"], exc)
        return None
    samples: list[dict[str, np.ndarray]] = []
    ranges = []
    for arrays, _ in parts:
        start = len(samples)
        samples.extend(_split_batched(arrays, model.inputs))
        ranges.append(list(range(start, len(samples))))
    fixed = (ranges[0], ranges[1]) if len(ranges) == 2 else None
    return SampleSet(samples, "zoo", "; ".join(description for _, description in parts), fixed_split=fixed)


def _split_batched(
    arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> list[dict[str, np.ndarray]]:
    """Arrays joined on each input's batch axis -> one feed per sample."""
    specs_by_name = {s.name: s for s in specs}
    names = [n for n in arrays if n in specs_by_name]
    if not names:
        return []
    first = specs_by_name[names[0]]
    axis0 = first.batch_axis or 0
    count = arrays[names[0]].shape[axis0]
    samples = []
    for i in range(count):
        sample = {}
        for name in names:
            axis = specs_by_name[name].batch_axis or 0
            sample[name] = np.take(arrays[name], [i], axis=axis)
        samples.append(sample)
    return samples


def check_invented(model: Model) -> None:
    """Run ``model`` once on invented inputs; when that fails, retry with other sizes for the axes hone
    had to guess (see ``_retry_plans``), and refuse in one line naming the failing node when none runs."""
    from hone.runtime import Session, SessionConfig

    session = Session(model, SessionConfig(optimization="disabled", threads=1))
    guessed = guessed_axes(model.inputs, model.default_dims)
    last_error: ExecutionError | None = None
    for extra in [{}, *_retry_plans(model, guessed)]:
        dims = {**model.default_dims, **extra}
        try:
            session.run(synthesize(model.inputs, batch=1, dims=dims, seed=0))
        except ExecutionError as exc:
            last_error = exc
            continue
        if extra:
            first = {
                axis_label(spec.name, axis): resolve_shape(spec, batch=1, dims=model.default_dims)[axis]
                for spec, axis in guessed
            }
            model.default_dims.update(extra)
            logger.warning(
                "%s did not run on invented inputs with the guessed dims %s; it runs with %s; give "
                "--dim (e.g. --dim %s=N) or --data to choose",
                model.name,
                _dims_text(first),
                _dims_text(extra),
                next(iter(extra)),
            )
        return
    assert last_error is not None
    raise InventedInputsError(refusal_message(model, last_error), model=model.name)


def _retry_plans(model: Model, guessed: Sequence[tuple[TensorSpec, int]]) -> list[dict[str, int]]:
    """Sizes to retry for the guessed axes, smallest first: 16, 64, 224 and, for a model with long
    convolution kernels (an STFT front end), the largest kernel x 1, 2 and 4. For each size, first only
    the last axis of each input (sequences, widths), then every guessed axis but a leading one (the
    batch of a model whose dims have no names), then every guessed axis."""
    if not guessed:
        return []
    kernel = _largest_conv_kernel(model)
    sizes = sorted({*_RETRY_DIMS, *(kernel * k for k in (1, 2, 4) if kernel * k > _RETRY_DIMS[-1])})
    plans: list[dict[str, int]] = []
    for size in sizes:
        last = {axis_label(spec.name, axis): size for spec, axis in guessed if axis == len(spec.shape) - 1}
        inner = {axis_label(spec.name, axis): size for spec, axis in guessed if axis > 0}
        every = {axis_label(spec.name, axis): size for spec, axis in guessed}
        for plan in (last, inner, every):
            if plan and plan not in plans:
                plans.append(plan)
    return plans


def _largest_conv_kernel(model: Model) -> int:
    """The largest spatial kernel size of any Conv in the model (subgraphs included), 0 without one."""
    largest = 0
    for node in ir.traversal.RecursiveGraphIterator(model.ir.graph):
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        kernel = node.attributes.get("kernel_shape")
        if kernel is not None:
            sizes = list(kernel.as_ints())
        elif len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].shape is not None:
            sizes = [d for d in node.inputs[1].shape[2:] if isinstance(d, int)]
        else:
            sizes = []
        largest = max([largest, *sizes])
    return largest


def _dims_text(dims: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={size}" for name, size in dims.items())


def refusal_message(model: Model, error: ExecutionError) -> str:
    """One line: the model does not run on invented inputs, which node failed, and to pass --data."""
    node, op_type = error.context.get("node"), error.context.get("op_type")
    if op_type is None:
        match = _NODE_IN_MESSAGE.search(str(error)) or _NODE_IN_MESSAGE.search(str(error.__cause__ or ""))
        if match:
            op_type, node = match.group(1), match.group(2)
    where = f"node {node or '(unnamed)'!r} ({op_type})" if op_type else "a node"
    text = str(error)
    detail = text.split(": ", 1)[-1].split("; check that")[0] if op_type else text
    return (
        f"{model.name} does not run on invented inputs: {where} failed ({detail[:200]}); pass real samples "
        "with --data PATH (.npz with one array per input name, samples along a new first axis)"
    )


# --- reading --data -----------------------------------------------------------------------------


def load_arrays_data(path: Path, specs: Sequence[TensorSpec]) -> SampleSet:
    """Samples from an .npz/.npy file or a folder of them, for sources that are not a Model (torch)."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES) if path.is_dir() else [path]
    )
    if not path.exists() or not files or any(f.suffix.lower() not in ARRAY_SUFFIXES for f in files):
        raise OptionError(f"--data {path}: give an .npz/.npy file or a folder of them for this model")
    samples = [sample for file in files for sample in _array_samples(file, specs)]
    for sample in samples:
        check_sample(sample, specs, path)
    return SampleSet(samples, "data", f"{len(samples)} samples from {path}")


def load_data(path: Path, model: Model) -> SampleSet:
    """Samples from ``path`` (see the module docstring), each checked against ``model``'s inputs."""
    if not path.exists():
        raise OptionError(
            f"--data {path} does not exist; give an .npz/.npy file, a .txt, or a folder of .npz or images"
        )
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES + IMAGE_SUFFIXES)
        if not files:
            raise OptionError(f"--data folder {path} holds no .npz, .npy or image files")
    else:
        files = [path]
    samples: list[dict[str, np.ndarray]] = []
    groups: list[str] = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix in TEXT_SUFFIXES:
            read = _text_samples(file, model)
        elif suffix in IMAGE_SUFFIXES:
            read = [_image_sample(file, model)]
        elif suffix in ARRAY_SUFFIXES:
            read = _array_samples(file, model.inputs)
        else:
            raise OptionError(
                f"--data {file}: {suffix or 'no suffix'} is not a data format hone reads "
                "(.npz, .npy, .txt, or a folder of .npz or images)"
            )
        samples.extend(read)
        groups.extend([file.name] * len(read))
    for sample in samples:
        check_sample(sample, model.inputs, path)
    kinds = sorted({f.suffix.lower() for f in files})
    description = f"{len(samples)} samples from {path}" + (f" ({len(files)} files)" if len(files) > 1 else "")
    logger.info("read %s (%s)", description, ", ".join(kinds))
    return SampleSet(samples, "data", description, groups=groups if len(files) > 1 else None)


def check_sample(sample: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], where: object) -> None:
    """Every input present with the spec's dtype, rank and fixed dims; one line naming the misfit."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in sample]
    if missing:
        raise ShapeError(
            f"--data {where} has no array for input(s) {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, sample)) or 'none'}); the model takes "
            + ", ".join(f"{s.name!r} {s.shape_text()} {s.dtype}" for s in specs),
            input=missing[0],
        )
    for spec in specs:
        array = sample[spec.name]
        want = f"{spec.shape_text()} {spec.dtype}"
        if str(array.dtype) != spec.dtype:
            raise ShapeError(
                f"--data {where}: input {spec.name!r} is {array.dtype}, the model wants {want}; convert "
                f"it (e.g. array.astype('{spec.dtype}'))",
                input=spec.name,
            )
        if array.ndim != len(spec.shape):
            raise ShapeError(
                f"--data {where}: input {spec.name!r} has shape {list(array.shape)} per sample, the "
                f"model wants {want}",
                input=spec.name,
            )
        for axis, (dim, size) in enumerate(zip(spec.shape, array.shape, strict=False)):
            if (
                isinstance(dim, int)
                and dim > 0
                and dim != size
                and not (axis == spec.batch_axis and size == 1)
            ):
                raise ShapeError(
                    f"--data {where}: input {spec.name!r} has shape {list(array.shape)} per sample, the "
                    f"model wants {want} (dim {axis} must be {dim})",
                    input=spec.name,
                )
            if axis == spec.batch_axis and size != 1:
                raise ShapeError(
                    f"--data {where}: input {spec.name!r} has {size} along its batch axis {axis} in one "
                    "sample; give samples along a new first axis",
                    input=spec.name,
                )


def _array_samples(file: Path, specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    try:
        if file.suffix.lower() == ".npz":
            with np.load(file, allow_pickle=False) as loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        else:
            if len(specs) != 1:
                raise OptionError(
                    f"--data {file}: a .npy holds one array, but the model takes "
                    f"{[s.name for s in specs]}; use an .npz with one array per input name"
                )
            arrays = {specs[0].name: np.load(file, allow_pickle=False)}
    except (OSError, ValueError) as exc:
        raise OptionError(f"--data {file} cannot be read as {file.suffix}: {exc}") from exc
    specs_by_name = {s.name: s for s in specs}
    unknown = [n for n in arrays if n not in specs_by_name]
    if unknown:
        raise ShapeError(
            f"--data {file} has array(s) {unknown} that are not inputs of the model "
            f"(inputs: {list(specs_by_name)})",
            input=unknown[0],
        )
    per_input: dict[str, list[np.ndarray]] = {}
    for name, array in arrays.items():
        spec = specs_by_name[name]
        rank = len(spec.shape)
        if array.ndim == rank + 1:  # samples along a new first axis
            per_input[name] = [np.asarray(a) for a in array]
        elif array.ndim == rank and spec.batch_axis is not None:  # samples joined on the batch axis
            per_input[name] = [
                np.take(array, [i], axis=spec.batch_axis) for i in range(array.shape[spec.batch_axis])
            ]
        elif array.ndim == rank:  # one sample
            per_input[name] = [array]
        else:
            raise ShapeError(
                f"--data {file}: input {name!r} has shape {list(array.shape)}, the model wants "
                f"{spec.shape_text()} {spec.dtype} per sample (stack samples along a new first axis)",
                input=name,
            )
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1 or 0 in counts:
        raise ShapeError(
            f"--data {file}: the inputs hold different numbers of samples "
            f"({', '.join(f'{n}: {len(v)}' for n, v in per_input.items())}); give the same count for each"
        )
    count = counts.pop()
    return [{name: values[i] for name, values in per_input.items()} for i in range(count)]


def _image_input(model: Model, file: Path) -> TensorSpec:
    floats = [s for s in model.inputs if s.dtype.startswith("float") and len(s.shape) in (3, 4)]
    if len(model.inputs) != 1 or not floats:
        raise OptionError(
            f"--data {file.name}: images are for models with one image input (N, C, H, W); "
            f"{model.name} takes {', '.join(f'{s.name} {s.shape_text()}' for s in model.inputs)}; "
            "use an .npz with one array per input"
        )
    return floats[0]


def _image_sample(file: Path, model: Model) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    spec = _image_input(model, file)
    try:
        with Image.open(file) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise OptionError(f"--data image {file} cannot be read: {exc}") from exc
    preprocess = _preprocess_metadata(model)
    if preprocess is not None:
        pixels = preprocess.preprocess(image)
    else:
        pixels = _default_image(image, spec, model.default_dims)
    if len(spec.shape) == 4 and pixels.ndim == 3:
        pixels = pixels[None] if spec.batch_axis in (0, None) else np.expand_dims(pixels, spec.batch_axis)
    return {spec.name: pixels.astype(spec.dtype)}


def _preprocess_metadata(model: Model):
    raw = model.ir.metadata_props.get(PREPROCESS_METADATA_KEY)
    if not raw:
        return None
    try:
        from hone.imaging import ImagePreprocess

        return ImagePreprocess.from_json(raw)
    except (ImportError, ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "ignoring the model's %s metadata (%s); preprocessing images the default way",
            PREPROCESS_METADATA_KEY,
            exc,
        )
        return None


def _default_image(image, spec: TensorSpec, dims: Mapping[str, int]) -> np.ndarray:
    """Resize to the input's H x W (unknown dims: 224), scale to [0, 1], ImageNet mean/std for RGB."""
    shape = resolve_shape(spec, batch=1, dims=dims)
    channels_first = len(shape) == 4 and shape[1] in (1, 3, 4) or len(shape) == 3 and shape[0] in (1, 3, 4)
    spatial = shape[-2:] if channels_first else shape[-3:-1]
    channels = shape[-3] if channels_first else shape[-1]
    height, width = int(spatial[0]), int(spatial[1])
    converted = image.convert("L") if channels == 1 else image
    pixels = np.asarray(converted.resize((width, height)), dtype=np.float32) / 255.0
    pixels = pixels.reshape(height, width, -1)
    if pixels.shape[-1] == 3:
        pixels = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    return pixels.transpose(2, 0, 1) if channels_first else pixels


def _text_samples(file: Path, model: Model) -> list[dict[str, np.ndarray]]:
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise OptionError(f"--data {file} holds no text; give one text per line")
    tokenizer_path = _tokenizer_for(model)
    if tokenizer_path is None:
        raise OptionError(
            f"--data {file.name}: hone knows no tokenizer for {model.name} (put its tokenizer.json "
            "beside the .onnx file, or give token ids as an .npz with one array per input)"
        )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    specs = {s.name: s for s in model.inputs}
    length = next((d for s in model.inputs for d in s.shape[1:] if isinstance(d, int) and d > 0), None)
    length = length or int(
        next(
            (model.default_dims[d] for s in model.inputs for d in s.symbolic_dims if d in model.default_dims),
            128,
        )
    )
    tokenizer.enable_truncation(max_length=length)
    samples = []
    for line in lines:
        encoding = tokenizer.encode(line)
        fields = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        sample = {}
        for name, spec in specs.items():
            key = next((k for k in fields if k in name.lower() or name.lower() in k), None)
            if key is None:
                raise OptionError(
                    f"--data {file.name}: input {name!r} is not one a tokenizer gives "
                    "(input_ids, attention_mask, token_type_ids); use an .npz"
                )
            sample[name] = np.asarray([fields[key]], dtype=spec.dtype)
        samples.append(sample)
    return samples


def _tokenizer_for(model: Model) -> Path | None:
    if model.path is not None and (model.path.parent / "tokenizer.json").is_file():
        return model.path.parent / "tokenizer.json"
    name = model.provenance.get("zoo", "")
    if name.startswith("minilm"):
        from hone.zoo.minilm import model_path

        return model_path() / "tokenizer.json"
    return None


def describe_specs(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {s.shape_text()} {s.dtype}" for s in specs)


__all__ = [
    "attach",
    "check_batchable",
    "check_invented",
    "feeds",
    "load_data",
    "parse_dims",
    "resolve_shape",
    "synthesize",
    "zoo_calibration_set",
    "zoo_entry",
    "zoo_eval_set",
    "zoo_samples",
    "zoo_train_set",
]
