"""Plan a pipeline run: measure the blocks, partition them into stages, write the weights and the
micro-batches once, and describe every stage process as a ``StageProgram``.

The parent saves the weights once and every stage loads them, so the pipeline and the
single-process reference hold the same model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hone.errors import OptionError
from hone.pipeline.options import PipelineOptions
from hone.pipeline.partition import Partition, measure_loopback_link, partition
from hone.pipeline.source import PipelineSource
from hone.pipeline.types import Link
from hone.pipeline.worker import StageProgram

if TYPE_CHECKING:
    from hone.model import Model
    from hone.pipeline.onnx_stages import OnnxBlock

SEED = 0


@dataclass
class Prepared:
    """What the stages were given, kept by the parent for the reference check and the result."""

    plan: Partition
    boundary_shapes: list[tuple[int, ...]]  # per stage boundary, per micro-batch
    boundary_dtypes: list[str]  # torch dtype names
    data_path: Path
    inputs: list[Any]  # per micro-batch: a tensor (torch) or feeds (onnx)
    targets: list[Any]  # per micro-batch (train): a tensor
    weights_path: Path | None = None
    factory: Callable[[], Any] | None = None
    onnx_stages: list[bytes] | None = None
    onnx_whole: bytes | None = None
    full_batch: Any = None  # the whole batch: a tensor (torch) or feeds (onnx)


def plan_run(o: PipelineOptions, *, init_method: str, pin: bool) -> tuple[Prepared, list[StageProgram]]:
    """Measure the blocks, partition them, write weights and data, and describe every stage;
    ``pin`` gives each stage its own CPUs (stages spawned on this host)."""
    threads = o.threads
    workdir = Path(tempfile.mkdtemp(prefix="hone-pipeline-"))
    plan_link = o.link or measure_loopback_link()
    if o.source.kind == "torch":
        prepared = _prepare_torch(
            o.source, workdir, o.batch, o.microbatches, o.stages, o.train, threads, plan_link
        )
    else:
        prepared = _prepare_onnx(o.source, workdir, o.batch, o.microbatches, o.stages, threads, plan_link)
    programs = []
    last = o.stages - 1
    for index, stage in enumerate(prepared.plan.stages):
        programs.append(
            StageProgram(
                rank=index,
                world_size=o.stages,
                init_method=init_method,
                backend=o.backend,
                timeout_s=o.timeout_s,
                threads=threads,
                mode=o.mode,
                schedule=o.schedule,
                microbatches=o.microbatches,
                steps=o.steps,
                block_range=(stage.first_block, stage.last_block),
                recv_shape=prepared.boundary_shapes[index - 1] if index > 0 else None,
                send_shape=prepared.boundary_shapes[index] if index < last else None,
                recv_dtype=prepared.boundary_dtypes[index - 1] if index > 0 else "float32",
                send_dtype=prepared.boundary_dtypes[index] if index < last else "float32",
                factory=o.source.factory,
                weights_path=str(prepared.weights_path) if prepared.weights_path else None,
                onnx_stage=prepared.onnx_stages[index] if prepared.onnx_stages else None,
                data_path=str(prepared.data_path) if index in (0, last) else None,
                learning_rate=o.learning_rate,
                cpus=stage_cpus(index, o.stages, threads) if pin else None,
            )
        )
    return prepared, programs


def _prepare_torch(
    source: PipelineSource,
    workdir: Path,
    batch: int,
    microbatches: int,
    stages: int,
    train: bool,
    threads: int,
    link: Link,
) -> Prepared:
    import torch

    from hone.data import sample_batch, synthesize
    from hone.pipeline.blocks import measure_block_costs, torch_blocks

    assert source.factory is not None and source.input_spec is not None
    module = source.factory()
    weights_path = workdir / "weights.pt"
    torch.save(module.state_dict(), weights_path)  # before costing: training mode moves BN stats
    blocks = torch_blocks(module)
    feeds = (
        sample_batch(source.samples, [source.input_spec], batch=batch)
        if source.samples is not None
        else synthesize([source.input_spec], batch=batch, dims=source.dims, seed=SEED)
    )
    full = torch.from_numpy(feeds[source.input_spec.name])
    inputs = list(full.chunk(microbatches))
    costs = measure_block_costs(blocks, inputs[0], train=train, threads=threads)
    plan = partition(costs, stages, link=link, train=train)
    shapes = [costs[s.last_block].output_shape for s in plan.stages]
    dtypes = [costs[s.last_block].output_dtype for s in plan.stages]
    generator = torch.Generator().manual_seed(SEED + 1)
    out_shape = (batch, *costs[-1].output_shape[1:])
    targets = list(torch.randn(out_shape, generator=generator).chunk(microbatches)) if train else []
    data_path = workdir / "data.pt"
    torch.save({"inputs": inputs, "targets": targets}, data_path)
    return Prepared(
        plan,
        shapes,
        dtypes,
        data_path,
        inputs,
        targets,
        weights_path=weights_path,
        factory=source.factory,
        full_batch=full,
    )


def _prepare_onnx(
    source: PipelineSource,
    workdir: Path,
    batch: int,
    microbatches: int,
    stages: int,
    threads: int,
    link: Link,
) -> Prepared:
    import onnx
    import torch

    from hone.data import sample_batch, synthesize
    from hone.pipeline.blocks import BlockCost
    from hone.pipeline.onnx_stages import measure_block_ms, onnx_blocks, stage_model

    model = source.onnx
    assert model is not None
    blocks = onnx_blocks(model)
    full = (
        sample_batch(source.samples, model.inputs, batch=batch)
        if source.samples is not None
        else synthesize(model.inputs, batch=batch, dims=source.dims, seed=SEED)
    )
    inputs = [
        {
            name: value[i * (batch // microbatches) : (i + 1) * (batch // microbatches)]
            for name, value in full.items()
        }
        for i in range(microbatches)
    ]
    if stages > len(blocks):
        raise OptionError(
            f"--stages {stages} is more than the {len(blocks)} blocks {model.name} splits into at "
            f"single-tensor boundaries; use --stages {len(blocks)} or fewer"
        )
    measured = measure_block_ms(model, blocks, inputs[0], threads=threads)
    shapes, dtypes = _onnx_block_outputs(model, blocks, inputs[0])
    costs = [
        BlockCost(block.name, ms, 0.0, block.params, size, shapes[i], dtypes[i])
        for i, (block, (ms, size)) in enumerate(zip(blocks, measured, strict=False))
    ]
    plan = partition(costs, stages, link=link, train=False)
    stage_bytes = [
        stage_model(model, blocks[s.first_block : s.last_block + 1]).SerializeToString() for s in plan.stages
    ]
    for index, s in enumerate(plan.stages[:-1]):
        boundary = blocks[s.last_block].output_names
        if len(boundary) != 1:  # a cut always carries one tensor; the last block may have more
            raise AssertionError(f"stage {index} ends on {boundary}")
    torch_inputs = [
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()} for feed in inputs
    ]
    data_path = workdir / "data.pt"
    torch.save({"inputs": torch_inputs, "targets": []}, data_path)
    onnx_source = model.onnx_source()
    whole = onnx.load_from_string(onnx_source) if isinstance(onnx_source, bytes) else onnx.load(onnx_source)
    return Prepared(
        plan,
        [shapes[s.last_block] for s in plan.stages],
        [dtypes[s.last_block] for s in plan.stages],
        data_path,
        inputs,
        [],
        onnx_stages=stage_bytes,
        onnx_whole=whole.SerializeToString(),
        full_batch=full,
    )


def _onnx_block_outputs(
    model: Model, blocks: Sequence[OnnxBlock], feeds: Mapping[str, np.ndarray]
) -> tuple[list[tuple[int, ...]], list[str]]:
    """Shape and torch dtype name of each block's first output on one micro-batch."""
    import onnxruntime as ort
    import torch

    from hone.pipeline.onnx_stages import stage_model

    shapes, dtypes = [], []
    values = dict(feeds)
    for block in blocks:
        session = ort.InferenceSession(
            stage_model(model, [block]).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, {i.name: values[i.name] for i in session.get_inputs()})
        values.update(zip(block.output_names, outputs, strict=False))
        shapes.append(tuple(outputs[0].shape))
        dtypes.append(str(torch.from_numpy(outputs[0][:0].copy()).dtype).removeprefix("torch."))
    return shapes, dtypes


def stage_cpus(index: int, stages: int, threads: int) -> tuple[int, ...] | None:
    """Each stage on its own CPUs when they go round (no migrations, no two stages on one core);
    None, letting the OS share them, when there are more stages than CPUs."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if stages * threads > len(available):
        return None
    return tuple(available[index * threads : (index + 1) * threads])
