"""The JSON documents of the v2 metadata routes and Triton's extensions, built from served models.

- ``server_metadata``: GET /v2 (name, version, the extensions hone implements);
- ``model_metadata``: GET /v2/models/{m} (platform, inputs and outputs with KServe datatypes);
- ``model_config``: GET /v2/models/{m}/config, Triton's model configuration as its JSON form
  (``max_batch_size``, ``input``/``output`` with ``TYPE_*`` data types and dims without the batch
  dim, ``dynamic_batching``, ``instance_group``), which perf_analyzer reads to shape its requests;
- ``model_statistics``: GET /v2/models/stats, Triton's statistics extension (durations in ns);
- ``index_entry``: POST /v2/repository/index, one entry per model version.

Pure functions of their arguments; the routes in ``http.py`` only pick the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hone._version import __version__
from hone.errors import InferenceInputError
from hone.serve.batcher import BatcherStats
from hone.serve.config import BatchConfig
from hone.serve.metrics import BatchTiming
from hone.serve.model_runner import ModelRunner, TensorMetadata
from hone.serve.registry import ServedModel

SERVER_NAME = "hone"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
# KServe datatype -> Triton's model-config data type.
CONFIG_DATA_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(runner: ModelRunner, versions: Sequence[str]) -> dict[str, Any]:
    """Name, versions, platform, and each tensor's KServe datatype and shape (-1: any size)."""
    return {
        "name": runner.name,
        "versions": list(versions),
        "platform": PLATFORM,
        "inputs": [_tensor_metadata(tensor) for tensor in runner.inputs],
        "outputs": [_tensor_metadata(tensor) for tensor in runner.outputs],
    }


def model_config(runner: ModelRunner, batch: BatchConfig) -> dict[str, Any]:
    """Triton's model configuration of a served version (dims leave out the batch dim if batching)."""
    batching = runner.batching
    config: dict[str, Any] = {
        "name": runner.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {
            "specific": {"versions": [int(runner.version) if runner.version.isdigit() else runner.version]}
        },
        "max_batch_size": runner.max_batch_size if batching else 0,
        "input": [_config_tensor(tensor, batching) for tensor in runner.inputs],
        "output": [_config_tensor(tensor, batching) for tensor in runner.outputs],
        "instance_group": [{"name": runner.name, "kind": "KIND_CPU", "count": runner.instances, "gpus": []}],
    }
    if batching:
        dynamic: dict[str, Any] = {
            "preferred_batch_size": list(batch.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(batch.max_queue_delay_ms * 1000),
            "preserve_ordering": True,
            "priority_levels": batch.priority_levels,
            # Triton numbers levels from 1 (highest); requests without a priority get the lowest.
            "default_priority_level": batch.priority_levels,
            "default_queue_policy": _queue_policy(batch),
        }
        config["dynamic_batching"] = dynamic
    return config


def model_statistics(
    name: str,
    version: str,
    stats: BatcherStats,
    batch_timings: Mapping[int, BatchTiming],
) -> dict[str, Any]:
    """One entry of ``model_stats``: Triton's counts and cumulative durations in ns.

    Queue and compute counts are the successful requests (Triton's convention); a batch's compute
    time counts once per request in it. ``batch_stats`` gives each batch size's executions; their
    time is the whole compute (input + infer + output), reported as compute_infer.
    """
    ran = stats.request_success
    return {
        "name": name,
        "version": version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.request_success, stats.success_ns),
            "fail": _duration(stats.request_failure, stats.failure_ns),
            "queue": _duration(ran, stats.queue_ns),
            "compute_input": _duration(ran, stats.compute_input_ns),
            "compute_infer": _duration(ran, stats.compute_infer_ns),
            "compute_output": _duration(ran, stats.compute_output_ns),
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(count, 0),
                "compute_infer": _duration(
                    count, batch_timings[size].compute_ns if size in batch_timings else 0
                ),
                "compute_output": _duration(count, 0),
            }
            for size, count in sorted(stats.batch_sizes.items())
        ],
        "memory_usage": [],
    }


def statistics_document(served_models: Sequence[ServedModel]) -> dict[str, Any]:
    """``{"model_stats": [...]}`` for the given model versions (GET .../stats, gRPC ModelStatistics)."""
    return {
        "model_stats": [
            model_statistics(served.name, served.version, served.batcher.stats, served.observer.batch_timings)
            for served in served_models
        ]
    }


def refuse_load_overrides(parameter_names: Iterable[str]) -> None:
    """Refuse Triton's load-time overrides (``config``, ``file:...``): hone loads what the folder holds."""
    overrides = sorted(key for key in parameter_names if key == "config" or key.startswith("file:"))
    if overrides:
        raise InferenceInputError(
            f"load parameter(s) {', '.join(overrides)} are not supported: hone serve loads what "
            "the repository folder holds; change the folder and load again"
        )


def index_entry(name: str, version: str, state: str, reason: str) -> dict[str, Any]:
    return {"name": name, "version": version, "state": state, "reason": reason}


def _tensor_metadata(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _config_tensor(tensor: TensorMetadata, batching: bool) -> dict[str, Any]:
    dims = list(tensor.shape[1:] if batching else tensor.shape)
    return {"name": tensor.name, "data_type": CONFIG_DATA_TYPES[tensor.datatype], "dims": dims}


def _queue_policy(batch: BatchConfig) -> dict[str, Any]:
    timeout_us = round(batch.default_timeout_ms * 1000) if batch.default_timeout_ms else 0
    return {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": timeout_us,
        "allow_timeout_override": True,
        "max_queue_size": batch.max_queue_size,
    }


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}
