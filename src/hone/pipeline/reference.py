"""The single-process reference: the same model, micro-batches and order in one process, to check
the pipeline's answers and to time what the pipeline has to beat.

The reference runs the same micro-batches in the same order with a stage's thread count, so a
pipeline that is right matches it exactly in the forward and to rounding in the gradients.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hone.errors import ExecutionError
from hone.pipeline.plan import Prepared
from hone.pipeline.worker import StageReport
from hone.verify import max_abs_difference


def compare_with_reference(
    prepared: Prepared, reports: list[StageReport], train: bool, threads: int
) -> tuple[float, float | None]:
    """Max abs error of outputs (or losses) and max relative gradient error vs one process, which
    runs the same micro-batches in the same order with a stage's thread count."""
    if prepared.onnx_whole is not None:
        session = _onnx_session(prepared.onnx_whole, threads)
        reference = [session.run(None, feeds)[0] for feeds in prepared.inputs]
        got = reports[-1].outputs or []
        return _max_abs(got, reference), None
    import torch

    module, chain = _torch_chain(prepared)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _torch_reference(chain, module, prepared, reports, train)
    finally:
        torch.set_num_threads(previous)


def time_single_process(prepared: Prepared, train: bool, threads: int, runs: int = 3) -> float:
    """The whole batch in one process, no pipeline: what the pipeline has to beat (median ms)."""
    if prepared.onnx_whole is not None:
        session = _onnx_session(prepared.onnx_whole, threads)
        feeds = prepared.full_batch
        session.run(None, feeds)
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            session.run(None, feeds)
            times.append(1000 * (time.perf_counter() - began))
        return statistics.median(times)
    import torch

    _, chain = _torch_chain(prepared)
    chain.train(train)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for _ in range(runs + 1):
            began = time.perf_counter()
            if train:
                torch.nn.functional.mse_loss(
                    chain(prepared.full_batch), torch.cat(prepared.targets)
                ).backward()
            else:
                with torch.no_grad():
                    chain(prepared.full_batch)
            times.append(1000 * (time.perf_counter() - began))
        return statistics.median(times[1:])
    finally:
        torch.set_num_threads(previous)


def _onnx_session(model_bytes: bytes, threads: int) -> Any:
    """The whole ONNX graph on onnxruntime's CPU provider with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _torch_chain(prepared: Prepared) -> tuple[Any, Any]:
    """The module with the weights the stages loaded, and its blocks as one ``nn.Sequential``."""
    import torch

    from hone.pipeline.blocks import torch_blocks

    assert prepared.factory is not None and prepared.weights_path is not None
    module = prepared.factory()
    module.load_state_dict(torch.load(prepared.weights_path, weights_only=True))
    return module, torch.nn.Sequential(*(block for _, block in torch_blocks(module)))


def _torch_reference(
    chain: Any, module: Any, prepared: Prepared, reports: list[StageReport], train: bool
) -> tuple[float, float | None]:
    import torch

    if not train:
        chain.eval()
        with torch.no_grad():
            reference = [chain(x).numpy() for x in prepared.inputs]
        return _max_abs(reports[-1].outputs or [], reference), None
    chain.train()
    losses = []
    for x, target in zip(prepared.inputs, prepared.targets, strict=False):
        loss = torch.nn.functional.mse_loss(chain(x), target) / len(prepared.inputs)
        loss.backward()
        losses.append(float(loss.detach()))
    forward_error = _max_abs([np.array(v) for v in reports[-1].losses or []], [np.array(v) for v in losses])
    names = dict(module.named_parameters())
    worst = 0.0
    compared = 0
    for report in reports:
        for name, gradient in (report.gradients or {}).items():
            expected = names[name].grad.numpy()
            scale = float(np.abs(expected).max()) or 1.0
            worst = max(worst, float(np.abs(gradient - expected).max()) / scale)
            compared += 1
    expected_count = sum(1 for p in names.values() if p.grad is not None)
    if compared < expected_count:
        raise ExecutionError(f"the stages returned {compared} gradients for {expected_count} parameters")
    return forward_error, worst


def _max_abs(got: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """The largest difference over the micro-batches, once the last stage returned all of them."""
    if len(got) != len(reference):
        raise ExecutionError(
            f"the last stage returned {len(got)} micro-batch outputs, expected {len(reference)}"
        )
    return max_abs_difference(got, reference)
