"""Serve an ONNX model from NVIDIA's Triton Inference Server, through PyTriton, as the baseline
that the serving benchmark compares ``hone serve`` against.

Triton runs the model as PyTriton does it: Triton's dynamic batcher forms the batches and hands
each to a Python inference callable (``@batch``), which runs it in onnxruntime (CPU). So both
servers run the same ONNX model in the same onnxruntime, and the comparison is about the server:
protocol handling, batching and queueing.

Runs in ``.cache/pytriton-venv`` (``scripts/setup-pytriton.sh``), not in hone's environment:
nvidia-pytriton needs numpy<2. Usage::

    .cache/pytriton-venv/bin/python benchmarks/servelib/pytriton_server.py MODEL.onnx --name NAME \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 \\
        --max-batch-size 32 --max-queue-delay-us 2000 --instances 1 --threads 2

It prints ``pytriton: ready`` on stdout once Triton answers and the model is loaded, serves on
127.0.0.1 only, leaves Triton's statistics API open (perf_analyzer reads it; PyTriton would put it
behind an access token), and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

LOGGER = logging.getLogger("pytriton_server")
HOST = "127.0.0.1"
MONITOR_PERIOD_S = 1.0

# onnxruntime's type string -> the numpy dtype PyTriton declares to Triton.
_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def signature(session: ort.InferenceSession) -> tuple[list[Tensor], list[Tensor]]:
    """The model's inputs and outputs as PyTriton tensors, without the leading batch dimension
    (which must be dynamic: Triton's batcher stacks requests along it); other dynamic dims are -1.
    Read from onnxruntime rather than onnx, which this environment does not need."""

    def tensors(values: list[Any], kind: str) -> list[Tensor]:
        result = []
        for value in values:
            if value.type not in _DTYPES:
                raise SystemExit(
                    f"pytriton_server: {kind} {value.name!r} is a {value.type}, which this server does not map; "
                    "use float or integer tensors"
                )
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in value.shape]
            if not dims or dims[0] != -1:
                raise SystemExit(
                    f"pytriton_server: {kind} {value.name!r} has shape {value.shape}; "
                    "its first dimension must be a dynamic batch dimension"
                )
            result.append(Tensor(name=value.name, dtype=_DTYPES[value.type], shape=tuple(dims[1:])))
        return result

    return tensors(session.get_inputs(), "input"), tensors(session.get_outputs(), "output")


def session_for(model_path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def infer_function(session: ort.InferenceSession) -> Callable[..., dict[str, np.ndarray]]:
    """One instance: its own onnxruntime session, run on each batch Triton's batcher formed."""
    output_names = [output.name for output in session.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, inputs)))

    return infer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="ONNX model file")
    parser.add_argument("--name", default=None, help="model name (default: the file's stem)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1, help="model instances (one onnxruntime session each)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads per instance")
    parser.add_argument("--verbose", action="store_true", help="PyTriton's and Triton's logs on stderr")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"{args.model} is not a file; pass an ONNX model")
    for flag in ("max_batch_size", "instances", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    # Triton's Python backend stub links libpython3.X.so; it inherits this environment.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    sessions = [session_for(args.model, args.threads) for _ in range(args.instances)]
    inputs, outputs = signature(sessions[0])
    name = args.name or args.model.stem
    functions = [infer_function(session) for session in sessions]
    config = TritonConfig(
        http_address=HOST,
        http_port=args.http_port,
        grpc_address=HOST,
        grpc_port=args.grpc_port,
        metrics_address=HOST,
        metrics_port=args.metrics_port,
        log_verbose=1 if args.verbose else None,
    )
    model_config = ModelConfig(
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
    )

    # PyTriton echoes tritonserver's log with print(): keep stdout for the ready line alone.
    ready_out, sys.stdout = sys.stdout, sys.stderr

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    # PyTriton puts Triton's statistics API behind a generated access token by default; perf_analyzer
    # reads it (without the token over gRPC), so it stays open. Triton only listens on 127.0.0.1.
    security = TritonSecurityConfig(
        restricted_endpoints=[endpoint for endpoint in DEFAULT_PROTECTED_ENDPOINTS if endpoint != "statistics"]
    )
    triton = Triton(config=config, security_config=security)
    try:
        triton.bind(model_name=name, infer_func=functions, inputs=inputs, outputs=outputs, config=model_config)
        triton.run()  # starts tritonserver, waits until it and the model are ready
        print("pytriton: ready", file=ready_out, flush=True)
        while not stop.wait(MONITOR_PERIOD_S):
            if not triton.is_alive():
                print("pytriton_server: Triton stopped on its own; rerun with --verbose for its logs", file=sys.stderr)
                return 1
    finally:
        triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
