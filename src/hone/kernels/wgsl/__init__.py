"""WGSL compute kernels run through wgpu-py on numpy arrays: ``matmul`` and ``bias_act_scale``.

The kernels are plain .wgsl files next to this module (so a web bundle can load the same source):

- ``matmul_naive.wgsl``: one invocation per output element, reading a row of a and a column of b.
- ``matmul_tiled.wgsl``: 16 x 16 tiles of a and b staged in workgroup memory, bounds-checked.
- ``bias_act_scale.wgsl``: ``act(x + bias) * scale`` element-wise, bias broadcast over rows.

Each wrapper checks its inputs (raising ``OptionError`` with one line that states the contract),
uploads them, dispatches the grid, and reads the result back. Nothing touches wgpu or a device at
import time; the device (see ``device.py``) is requested on the first call and then reused.
"""

from __future__ import annotations

import functools
import logging
import math
from importlib import resources
from numbers import Real
from typing import Any, get_args

import numpy as np

from hone.errors import OptionError
from hone.kernels.types import Activation, WgslMatmulVariant
from hone.kernels.wgsl.device import AdapterInfo, WgpuDevice, adapter_info, get_device

__all__ = [
    "AdapterInfo",
    "ACTIVATIONS",
    "MATMUL_VARIANTS",
    "adapter_info",
    "bias_act_scale",
    "matmul",
    "wgsl_source",
]

logger = logging.getLogger(__name__)

MATMUL_VARIANTS: tuple[WgslMatmulVariant, ...] = get_args(WgslMatmulVariant)
ACTIVATIONS: dict[Activation, int] = {
    "none": 0,
    "relu": 1,
    "gelu": 2,
    "silu": 3,
}  # params.ACTIVATION; the codes of hone.kernels.triton
MATMUL_BLOCK = 16  # workgroup_size (16, 16) in both matmul kernels: one workgroup per 16 x 16 block of c
BIAS_ACT_SCALE_WORKGROUP_SIZE = 256
MAX_WORKGROUPS_PER_DIMENSION = 65535  # the WebGPU default limit


def wgsl_source(name: str) -> str:
    """The text of one of this package's kernels, e.g. ``wgsl_source("matmul_tiled")``."""
    return resources.files(__package__).joinpath(f"{name}.wgsl").read_text(encoding="utf-8")


@functools.cache
def _pipeline(name: str) -> Any:
    device = get_device().device
    module = device.create_shader_module(label=name, code=wgsl_source(name))
    return device.create_compute_pipeline(
        label=name, layout="auto", compute={"module": module, "entry_point": "main"}
    )


def _check_matrix(op: str, name: str, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise OptionError(f"{op}: {name} must be a numpy array, got {type(value).__name__}", argument=name)
    if value.ndim != 2:
        raise OptionError(f"{op}: {name} must be 2-D, got shape {list(value.shape)}", argument=name)
    if value.dtype != np.float32:
        raise OptionError(f"{op}: {name} must be float32, got {value.dtype}", argument=name)
    return np.ascontiguousarray(value)


def _check_buffer_size(wgpu_device: WgpuDevice, op: str, name: str, array_bytes: int) -> None:
    limit = wgpu_device.device.limits["max-storage-buffer-binding-size"]
    if array_bytes > limit:
        raise OptionError(
            f"{op}: {name} needs {array_bytes} bytes, more than this adapter's storage buffer limit of"
            f" {limit} bytes",
            argument=name,
        )


def _run(
    name: str,
    inputs: list[np.ndarray],
    params: bytes,
    out_shape: tuple[int, int],
    grid: tuple[int, int],
    poison_output: bool,
) -> np.ndarray:
    """Upload ``inputs`` (bindings 0..), an output (next binding) and ``params`` (a uniform, last
    binding), dispatch ``grid`` workgroups of kernel ``name`` and read the output back.

    ``poison_output`` fills the output buffer with NaN first, so a test can prove every element
    was written; otherwise it starts as zeros (WebGPU zero-initialises new buffers).
    """
    wgpu_device = get_device()
    device, wgpu = wgpu_device.device, wgpu_device.wgpu
    op = name.split("_naive")[0].split("_tiled")[0]
    for index, array in enumerate(inputs):
        _check_buffer_size(wgpu_device, op, f"input {index}", array.nbytes)
    out_bytes = int(np.prod(out_shape)) * 4
    _check_buffer_size(wgpu_device, op, "the output", out_bytes)
    for axis, count in zip("xy", grid, strict=False):
        if count > MAX_WORKGROUPS_PER_DIMENSION:
            raise OptionError(
                f"{op}: the output {list(out_shape)} needs {count} workgroups along {axis}, "
                f"more than the {MAX_WORKGROUPS_PER_DIMENSION} WebGPU allows",
            )

    storage = wgpu.BufferUsage.STORAGE
    buffers = [device.create_buffer_with_data(data=array, usage=storage) for array in inputs]
    out_usage = storage | wgpu.BufferUsage.COPY_SRC
    if poison_output:
        out_buffer = device.create_buffer_with_data(
            data=np.full(out_shape, np.nan, np.float32), usage=out_usage
        )
    else:
        out_buffer = device.create_buffer(size=out_bytes, usage=out_usage)
    params_buffer = device.create_buffer_with_data(data=params, usage=wgpu.BufferUsage.UNIFORM)
    buffers += [out_buffer, params_buffer]

    pipeline = _pipeline(name)
    bind_group = device.create_bind_group(
        layout=pipeline.get_bind_group_layout(0),
        entries=[
            {"binding": i, "resource": {"buffer": buffer, "offset": 0, "size": buffer.size}}
            for i, buffer in enumerate(buffers)
        ],
    )
    encoder = device.create_command_encoder()
    compute_pass = encoder.begin_compute_pass()
    compute_pass.set_pipeline(pipeline)
    compute_pass.set_bind_group(0, bind_group)
    compute_pass.dispatch_workgroups(grid[0], grid[1], 1)
    compute_pass.end()
    device.queue.submit([encoder.finish()])
    result = np.frombuffer(device.queue.read_buffer(out_buffer), dtype=np.float32).reshape(out_shape)
    for buffer in buffers:
        buffer.destroy()
    return result.copy()


def matmul(a: np.ndarray, b: np.ndarray, variant: WgslMatmulVariant = "tiled") -> np.ndarray:
    """``a @ b`` for 2-D float32 arrays of any size, computed by the ``variant`` WGSL kernel."""
    return _matmul(a, b, variant=variant)


def _matmul(
    a: np.ndarray, b: np.ndarray, variant: WgslMatmulVariant, poison_output: bool = False
) -> np.ndarray:
    if variant not in MATMUL_VARIANTS:
        raise OptionError(
            f"matmul: variant must be one of {', '.join(MATMUL_VARIANTS)}, got {variant!r}",
            argument="variant",
        )
    a = _check_matrix("matmul", "a", a)
    b = _check_matrix("matmul", "b", b)
    (M, K), (K_b, N) = a.shape, b.shape
    if K != K_b:
        raise OptionError(
            f"matmul: a is {list(a.shape)} and b is {list(b.shape)}; a's columns must equal b's rows",
            a_shape=a.shape,
            b_shape=b.shape,
        )
    if M == 0 or N == 0 or K == 0:  # nothing to dispatch (and WebGPU has no zero-sized bindings)
        return np.zeros((M, N), np.float32)
    params = np.array([M, N, K, 0], dtype=np.uint32).tobytes()
    grid = (math.ceil(N / MATMUL_BLOCK), math.ceil(M / MATMUL_BLOCK))
    return _run(f"matmul_{variant}", [a, b], params, (M, N), grid, poison_output)


def bias_act_scale(
    x: np.ndarray, bias: np.ndarray, scale: float, activation: Activation = "relu"
) -> np.ndarray:
    """``act(x + bias) * scale`` for x [M, N] float32 and bias [N] float32 (broadcast over rows)."""
    return _bias_act_scale(x, bias, scale, activation)


def _bias_act_scale(
    x: np.ndarray, bias: np.ndarray, scale: float, activation: Activation, poison_output: bool = False
) -> np.ndarray:
    if activation not in ACTIVATIONS:
        raise OptionError(
            f"bias_act_scale: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}",
            argument="activation",
        )
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise OptionError(
            f"bias_act_scale: scale must be a real number, got {type(scale).__name__}", argument="scale"
        )
    x = _check_matrix("bias_act_scale", "x", x)
    if not isinstance(bias, np.ndarray):
        raise OptionError(
            f"bias_act_scale: bias must be a numpy array, got {type(bias).__name__}", argument="bias"
        )
    if bias.dtype != np.float32:
        raise OptionError(f"bias_act_scale: bias must be float32, got {bias.dtype}", argument="bias")
    M, N = x.shape
    if bias.shape != (N,):
        raise OptionError(
            f"bias_act_scale: x is {list(x.shape)} and bias is {list(bias.shape)}; bias must be [{N}], one"
            " value per column of x",
            x_shape=x.shape,
            bias_shape=bias.shape,
        )
    if M == 0 or N == 0:
        return np.zeros((M, N), np.float32)
    bias = np.ascontiguousarray(bias)
    params = (
        np.array([M, N], np.uint32).tobytes()
        + np.float32(scale).tobytes()
        + np.uint32(ACTIVATIONS[activation]).tobytes()
    )
    workgroups = math.ceil(M * N / BIAS_ACT_SCALE_WORKGROUP_SIZE)
    grid_x = min(workgroups, MAX_WORKGROUPS_PER_DIMENSION)
    grid = (grid_x, math.ceil(workgroups / grid_x))
    return _run("bias_act_scale", [x, bias], params, (M, N), grid, poison_output)
