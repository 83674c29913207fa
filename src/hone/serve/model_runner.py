"""ModelRunner: one served model version as N onnxruntime sessions (instances) that share the cores.

One session runs one batch at a time, so N instances let the batcher run N batches at once; each
gets ``cores // N`` intra-op threads so that together they fill the cores without fighting over
them. The sessions sit in a thread-safe pool: ``run`` takes a free one, runs, and puts it back.

onnxruntime allocates buffers and settles its kernels the first time it sees a shape, so
``warm_up`` runs every batch size the batcher can form once on every instance: the first request
at a new size then does not stall.

``validate`` checks a request against the model's inputs (names, KServe datatypes, ranks, fixed
dims, batch size, and the index ranges onnxruntime's Gather enforces: ``index_ranges``) before it
is queued, so a bad request fails alone instead of failing the batch it would have joined. Tensors
are described in the KServe datatypes of ``datatypes``.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from hone.data import feeds as sample_feeds
from hone.errors import InferenceInputError, OptionError
from hone.model import Model
from hone.runtime import Session, SessionConfig, default_threads
from hone.serve.datatypes import KSERVE_DATATYPES, STRING_KINDS, Datatype, datatype_from_dtype
from hone.serve.index_ranges import IndexRange, enforced_index_ranges
from hone.session_options import SessionOptions
from hone.specs import TensorSpec

logger = logging.getLogger(__name__)

# Above this max_batch_size, warm up powers of two and the max instead of every size.
_WARM_EVERY_SIZE_UP_TO = 64


@dataclass(frozen=True)
class TensorMetadata:
    """A served input or output in KServe terms: the batch dim included, -1 for dynamic dims."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return KSERVE_DATATYPES[self.datatype]

    def shape_text(self) -> str:
        return _shape_text(self.shape)


@dataclass(frozen=True)
class WarmUpResult:
    batch_sizes: tuple[int, ...]
    instances: int
    seconds: float


def warm_up_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Every size 1..max (batching off: just 1); above 64, the powers of two and the max."""
    largest = max(1, max_batch_size)
    if largest <= _WARM_EVERY_SIZE_UP_TO:
        return tuple(range(1, largest + 1))
    powers = [1 << i for i in range(largest.bit_length()) if 1 << i < largest]
    return (*powers, largest)


class ModelRunner:
    """``instances`` onnxruntime sessions of one model version, taken one per ``run`` call.

    ``max_batch_size`` is the batcher's (0 or 1: batching off, requests run with the shapes they
    bring); with batching on every input's first dim must be dynamic, as it is the batch dim.
    ``threads`` is per instance; by default ``session.threads``, else the physical cores divided
    among the instances. ``session`` holds the other onnxruntime options (``hone.session_options``).
    """

    def __init__(
        self,
        model: Model,
        name: str,
        version: str = "1",
        *,
        instances: int = 1,
        max_batch_size: int = 0,
        threads: int | None = None,
        provider: str = "cpu",
        session: SessionOptions | None = None,
    ) -> None:
        if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
            raise OptionError(f"instances must be an integer of at least 1, got {instances!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0:
            raise OptionError(
                "max_batch_size must be an integer of at least 0 (0 or 1 turns batching off), "
                f"got {max_batch_size!r}"
            )
        self.model = model
        self.name = name
        self.version = version
        self.instances = instances
        self.max_batch_size = max_batch_size
        options = session or SessionOptions()
        self.threads = threads or options.threads or max(1, default_threads() // instances)
        self.inputs = tuple(_metadata(spec) for spec in model.inputs)
        self.outputs = tuple(_metadata(spec) for spec in model.outputs)
        self._inputs_by_name = {tensor.name: tensor for tensor in self.inputs}
        self.index_ranges = enforced_index_ranges(model.ir)
        if self.batching:
            self._check_batchable()
        config = replace(SessionConfig.from_options(options, provider=provider), threads=self.threads)
        self._sessions = [Session(model, config) for _ in range(instances)]
        self._pool: queue.SimpleQueue[Session] = queue.SimpleQueue()
        for built in self._sessions:
            self._pool.put(built)
        logger.info(
            "%s v%s: %d instance(s) x %d thread(s), max_batch_size %d",
            name,
            version,
            instances,
            self.threads,
            max_batch_size,
        )

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def validate(self, feeds: Mapping[str, np.ndarray]) -> int:
        """Check a request against the model's inputs; return its sample count.

        The sample count is the batch dim every input shares when batching is on, else 1.
        """
        expected = [tensor.name for tensor in self.inputs]
        unknown = [name for name in feeds if name not in self._inputs_by_name]
        if unknown:
            raise InferenceInputError(
                f"model {self.name!r} has no input(s) {', '.join(map(repr, unknown))}; its inputs "
                f"are: {', '.join(expected)}",
                model=self.name,
            )
        missing = [name for name in expected if name not in feeds]
        if missing:
            raise InferenceInputError(
                f"model {self.name!r} needs input(s) {', '.join(map(repr, missing))} too; its "
                f"inputs are: {', '.join(expected)}",
                model=self.name,
            )
        for tensor in self.inputs:
            _check_tensor(tensor, feeds[tensor.name], model=self.name)
        for name, allowed in self.index_ranges.items():
            _check_indices(name, feeds[name], allowed, model=self.name)
        return self._sample_count(feeds) if self.batching else 1

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``feeds`` (already validated) on a free instance; blocks while all are busy."""
        with self._session() as session:
            outputs = session.run(feeds)
        return dict(zip(session.output_names, outputs, strict=False))

    def warm_up(self, batch_sizes: Sequence[int] | None = None) -> WarmUpResult:
        """Run each batch size once on every instance (in parallel) on synthesized inputs."""
        if batch_sizes is None:
            batch_sizes = warm_up_batch_sizes(self.max_batch_size)
        sizes = tuple(batch_sizes)
        largest = max(1, self.max_batch_size)
        if not sizes or any(not 1 <= size <= largest for size in sizes):
            raise OptionError(
                f"warm-up batch sizes must be from 1 to {largest} (max_batch_size "
                f"{self.max_batch_size}), got {list(sizes)}"
            )
        feeds_by_size = {size: sample_feeds(self.model, batch=size) for size in sizes}
        start = time.perf_counter()
        feeds_list = [feeds_by_size[size] for size in sizes]
        with ThreadPoolExecutor(self.instances, thread_name_prefix=f"hone-warm-{self.name}") as pool:
            runs = [pool.submit(_run_each, session, feeds_list) for session in self._sessions]
        for finished in runs:
            finished.result()  # raises the instance's ExecutionError, if any
        seconds = time.perf_counter() - start
        logger.info(
            "%s v%s warmed up: %d batch size(s) from %d to %d on %d instance(s) in %.2f s",
            self.name,
            self.version,
            len(sizes),
            min(sizes),
            max(sizes),
            self.instances,
            seconds,
        )
        return WarmUpResult(sizes, self.instances, seconds)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = self._pool.get()
        try:
            yield session
        finally:
            self._pool.put(session)

    def _check_batchable(self) -> None:
        for tensor in self.inputs:
            if not tensor.shape or tensor.shape[0] != -1:
                raise OptionError(
                    f"model {self.name!r} input {tensor.name!r} has shape {tensor.shape_text()}, so "
                    "its first dim cannot be the batch dim that max_batch_size "
                    f"{self.max_batch_size} needs; serve it with max_batch_size 0 (batching off) or "
                    "export it with a dynamic batch axis",
                    model=self.name,
                    input=tensor.name,
                )

    def _sample_count(self, feeds: Mapping[str, np.ndarray]) -> int:
        batch_dims = {name: int(feeds[name].shape[0]) for name in self._inputs_by_name}
        counts = set(batch_dims.values())
        if len(counts) > 1:
            found = ", ".join(f"{name} has {count}" for name, count in batch_dims.items())
            raise InferenceInputError(
                f"the inputs of model {self.name!r} must share their first (batch) dim; {found}",
                model=self.name,
            )
        samples = counts.pop()
        if not 1 <= samples <= self.max_batch_size:
            raise InferenceInputError(
                f"model {self.name!r} takes 1 to {self.max_batch_size} samples per request "
                f"(max_batch_size), this request carries {samples}; split it into smaller requests",
                model=self.name,
                samples=samples,
            )
        return samples


def _run_each(session: Session, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> None:
    for feeds in feeds_list:
        session.run(feeds)


def _metadata(spec: TensorSpec) -> TensorMetadata:
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else -1 for dim in spec.shape)
    return TensorMetadata(spec.name, datatype_from_dtype(spec.dtype), shape)


def _check_tensor(tensor: TensorMetadata, array: object, *, model: str) -> None:
    if not isinstance(array, np.ndarray):
        raise InferenceInputError(
            f"input {tensor.name!r} of model {model!r} must be an array, got {type(array).__name__}",
            model=model,
            input=tensor.name,
        )
    if not _dtype_matches(tensor, array.dtype):
        raise InferenceInputError(
            f"input {tensor.name!r} of model {model!r} must be {tensor.datatype}, got "
            f"{_datatype_text(array.dtype)}",
            model=model,
            input=tensor.name,
        )
    if array.ndim != len(tensor.shape) or any(
        want not in (-1, got) for want, got in zip(tensor.shape, array.shape, strict=False)
    ):
        raise InferenceInputError(
            f"input {tensor.name!r} of model {model!r} must have shape {tensor.shape_text()} "
            f"(-1: any size), got {_shape_text(array.shape)}",
            model=model,
            input=tensor.name,
        )


def _check_indices(name: str, array: np.ndarray, allowed: IndexRange, *, model: str) -> None:
    """Refuse ids onnxruntime's Gather would refuse (``hone.serve.index_ranges``), before batching."""
    if array.size == 0 or array.dtype.kind not in "iu":
        return
    low, high = int(array.min()), int(array.max())
    if low < allowed.low or high > allowed.high:
        bad = low if low < allowed.low else high
        raise InferenceInputError(
            f"input {name!r} of model {model!r} holds {bad}, but Gather node {allowed.node!r} takes indices"
            f" from {allowed.low} to {allowed.high}",
            model=model,
            input=name,
        )


def _dtype_matches(tensor: TensorMetadata, dtype: np.dtype) -> bool:
    if tensor.datatype == "BYTES":
        return dtype.kind in STRING_KINDS
    return dtype == tensor.dtype


def _datatype_text(dtype: np.dtype) -> str:
    try:
        return datatype_from_dtype(dtype)
    except OptionError:
        return dtype.name


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"
