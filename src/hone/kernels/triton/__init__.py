"""hone's Triton kernels behind one-call APIs that check their inputs:

    from hone.kernels import triton as hk
    c = hk.matmul(a, b, variant="tiled", bias=bias, activation="relu")   # naive | tiled | tensorcore
    y = hk.bias_act_scale(x, bias, 0.5, activation="relu")              # act(x + bias) * scale
    y = hk.batchnorm_relu(x, mean, var, gamma, beta, 1e-5, layout="nchw")
    y = hk.softmax(x)                                                   # over the last dim
    y = hk.layernorm(x, weight, bias, 1e-5)                             # over the last dim

Where they run: on CUDA tensors on a GPU, or, with ``TRITON_INTERPRET=1`` in the environment before
this module is imported, on CPU tensors through Triton's interpreter (slow, exact enough for tests;
bf16 and fp8 are silently wrong there). Without either, launching would fail deep inside Triton
with "0 active drivers"; ``available()`` says so up front and every call raises one clear
``OptionError`` instead.

Tuning: ``variant="tensorcore"`` uses ``config`` if given, else what ``tune_matmul`` found for that
shape and dtype, else ``TENSORCORE_DEFAULT``. ``tune_matmul`` times ``TENSORCORE_CONFIGS`` with an
injectable ``bench`` (``triton.testing.do_bench`` on a GPU), instead of ``@triton.autotune``, whose
timing cannot run in the interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import get_args

import torch
import triton

from hone.errors import OptionError
from hone.kernels.triton import kernels
from hone.kernels.triton.reference import ACTIVATIONS
from hone.kernels.types import Activation, Layout, TritonMatmulVariant

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # read by Triton when the kernels were made
VARIANTS: tuple[TritonMatmulVariant, ...] = get_args(TritonMatmulVariant)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ACTIVATION_CODES = {
    None: kernels.ACT_NONE,
    "none": kernels.ACT_NONE,
    "relu": kernels.ACT_RELU,
    "gelu": kernels.ACT_GELU,
    "silu": kernels.ACT_SILU,
}
NAIVE_BLOCK = 256
ELEMENTWISE_BLOCK = 1024


@dataclass(frozen=True)
class MatmulConfig:
    """Tile sizes and launch knobs of ``matmul_tiled``."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


TILED_DEFAULT = MatmulConfig(64, 64, 32, num_warps=4, num_stages=3)
# Candidates for tensor cores (fp16/bf16, fp32 as tf32): the shapes Triton's tutorial tunes over.
TENSORCORE_CONFIGS = (
    MatmulConfig(128, 256, 64, num_warps=8, num_stages=3),
    MatmulConfig(256, 128, 64, num_warps=8, num_stages=3),
    MatmulConfig(128, 128, 64, num_warps=8, num_stages=4),
    MatmulConfig(128, 128, 32, num_warps=4, num_stages=4),
    MatmulConfig(64, 256, 32, num_warps=4, num_stages=4),
    MatmulConfig(128, 64, 32, num_warps=4, num_stages=4),
)
TENSORCORE_DEFAULT = TENSORCORE_CONFIGS[0]
# fp32 tiles are twice the bytes: the 16-bit default's stages would not fit in shared memory.
TENSORCORE_DEFAULT_FP32 = MatmulConfig(128, 128, 32, num_warps=4, num_stages=4)
_tuned: dict[tuple[int, int, int, torch.dtype], MatmulConfig] = {}


def available() -> tuple[bool, str]:
    """Whether the kernels can launch here, and why not."""
    if INTERPRETED:
        return True, "Triton's interpreter (TRITON_INTERPRET=1): CPU tensors"
    if torch.cuda.is_available():
        return True, f"CUDA: {torch.cuda.get_device_name()}"
    return False, (
        "no GPU here and TRITON_INTERPRET is not 1: Triton has no active driver; run on a CUDA GPU, "
        "or set TRITON_INTERPRET=1 before importing hone.kernels.triton to use the CPU interpreter"
    )


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    variant: TritonMatmulVariant = "tiled",
    bias: torch.Tensor | None = None,
    activation: Activation | None = None,
    *,
    config: MatmulConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``activation(a @ b + bias)`` for 2-D a [M, K] and b [K, N], in a's dtype (float32 accumulate)."""
    _check_variant(variant)
    _check_matrix("a", a)
    _check_matrix("b", b)
    if a.dtype != b.dtype:
        raise OptionError(f"matmul: a is {a.dtype} and b is {b.dtype}; give both the same dtype")
    if a.shape[1] != b.shape[0]:
        raise OptionError(
            f"matmul: a is {list(a.shape)} and b is {list(b.shape)}; a's columns must equal b's rows"
        )
    (M, K), N = a.shape, b.shape[1]
    if bias is not None:
        _check_vector("bias", bias, N, a)
    code = _activation_code(activation)
    out = _output(out, (M, N), a, "matmul")
    _check_devices(a, b, bias, out)
    if M == 0 or N == 0:
        return out
    bias_arg = bias if bias is not None else out  # never read when HAS_BIAS is False
    strides = (*a.stride(), *b.stride(), *out.stride())
    if variant == "naive":
        grid = (triton.cdiv(M * N, NAIVE_BLOCK),)
        kernels.matmul_naive[grid](
            a, b, bias_arg, out, M, N, K, *strides, HAS_BIAS=bias is not None, ACT=code, BLOCK=NAIVE_BLOCK
        )
        return out
    if variant == "tensorcore":
        if a.dtype == torch.float32 and not INTERPRETED and torch.cuda.get_device_capability()[0] < 8:
            raise OptionError("matmul: tensorcore fp32 runs as tf32, which needs an Ampere or newer GPU")
        default = TENSORCORE_DEFAULT_FP32 if a.dtype == torch.float32 else TENSORCORE_DEFAULT
        chosen = config or _tuned.get((M, N, K, a.dtype), default)
        precision = "tf32"
    else:
        chosen = config or TILED_DEFAULT
        precision = "ieee"
    _launch_tiled(a, b, bias_arg, out, strides, bias is not None, code, chosen, precision)
    return out


def tune_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    configs: Sequence[MatmulConfig] = TENSORCORE_CONFIGS,
    bench: Callable[[Callable[[], object]], float] | None = None,
) -> MatmulConfig:
    """Time each config of the tensorcore variant on (a, b); remember and return the fastest.

    ``bench`` takes a no-argument function and returns its time (any unit); by default
    ``triton.testing.do_bench`` (CUDA events, median), which needs a GPU. A config that does not
    fit this GPU (shared memory, registers) is left out.
    """
    if not configs:
        raise OptionError("tune_matmul: give at least one config")
    timer = bench or triton.testing.do_bench
    timings: dict[MatmulConfig, float] = {}
    failures: list[str] = []
    for config in configs:
        try:
            timings[config] = timer(partial(matmul, a, b, "tensorcore", config=config))
        except triton.runtime.errors.OutOfResources as exc:  # e.g. its stages need more shared memory
            failures.append(f"{config}: {exc}")
    if not timings:
        raise OptionError(f"tune_matmul: no config could run here: {'; '.join(failures)}")
    best = min(timings, key=timings.__getitem__)
    _tuned[(a.shape[0], b.shape[1], a.shape[1], a.dtype)] = best
    return best


def bias_act_scale(
    x: torch.Tensor,
    bias: torch.Tensor,
    scale: float,
    activation: Activation | None = "relu",
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``activation(x + bias) * scale`` in one pass; bias [N] broadcasts over x's last dim."""
    if x.dtype not in FLOAT_DTYPES:
        raise OptionError(f"bias_act_scale: x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1:
        raise OptionError("bias_act_scale: x must have at least one dim (the one bias runs along)")
    N = x.shape[-1]
    _check_vector("bias", bias, N, x)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise OptionError(f"bias_act_scale: scale must be a number, got {type(scale).__name__}")
    code = _activation_code(activation)
    out = _output(out, tuple(x.shape), x, "bias_act_scale")
    _check_devices(x, bias, out)
    if x.numel() == 0:
        return out
    x2, out2 = _as_rows(x), _as_rows(out)
    if out2.data_ptr() != out.data_ptr() or (out.dim() > 2 and not out.is_contiguous()):
        raise OptionError("bias_act_scale: out must be contiguous when x has more than 2 dims")
    M = x2.shape[0]
    block_n = min(triton.next_power_of_2(N), 256)
    block_m = max(1, min(64, ELEMENTWISE_BLOCK // block_n))
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    kernels.bias_act_scale[grid](
        x2, bias, out2, float(scale), M, N, *x2.stride(), *out2.stride(),
        ACT=code, BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    return out


def batchnorm_relu(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float = 1e-5,
    layout: Layout = "nchw",
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inference BatchNorm then ReLU on a 4-D x, channels on dim 1 (``nchw``) or dim 3 (``nhwc``)."""
    if layout not in ("nchw", "nhwc"):
        raise OptionError(f"batchnorm_relu: layout must be 'nchw' or 'nhwc', got {layout!r}")
    if x.dim() != 4 or x.dtype not in FLOAT_DTYPES:
        raise OptionError(
            f"batchnorm_relu: x must be a 4-D float tensor ({layout.upper()}), got {x.dim()}-D {x.dtype}"
        )
    channels = x.shape[1] if layout == "nchw" else x.shape[3]
    for label, tensor in (("mean", mean), ("var", var), ("gamma", gamma), ("beta", beta)):
        _check_vector(label, tensor, channels, x)
    if not eps >= 0:
        raise OptionError(f"batchnorm_relu: eps must be non-negative, got {eps}")
    out = _output(out, tuple(x.shape), x, "batchnorm_relu")
    _check_devices(x, mean, var, gamma, beta, out)
    if x.numel() == 0:
        return out
    # Folded once per call (C values): y = relu(x * scale + shift).
    scale = (gamma.float() / torch.sqrt(var.float() + eps)).contiguous()
    shift = (beta.float() - mean.float() * scale).contiguous()
    grid = (triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)
    kernels.batchnorm_relu[grid](
        x, scale, shift, out, x.numel(), x.shape[1], x.shape[2], x.shape[3], *x.stride(), *out.stride(),
        CHANNEL_DIM=1 if layout == "nchw" else 3, BLOCK=ELEMENTWISE_BLOCK,
    )  # fmt: skip
    return out


def softmax(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim, one program per row (rows up to ``MAX_ROW`` values)."""
    x2, out, out2 = _rowwise_args("softmax", x, out)
    if x.numel():
        block = triton.next_power_of_2(x2.shape[1])
        kernels.softmax_rows[(x2.shape[0],)](
            x2, out2, x2.shape[1], x2.stride(0), out2.stride(0), BLOCK_N=block
        )
    return out


def layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm over the last dim with ``weight`` and ``bias`` [N], one program per row."""
    _check_vector("weight", weight, x.shape[-1] if x.dim() else 0, x)
    _check_vector("bias", bias, x.shape[-1], x)
    if not eps >= 0:
        raise OptionError(f"layernorm: eps must be non-negative, got {eps}")
    x2, out, out2 = _rowwise_args("layernorm", x, out)
    _check_devices(x, weight, bias)
    if x.numel():
        kernels.layernorm_rows[(x2.shape[0],)](
            x2, weight, bias, out2, x2.shape[1], float(eps), x2.stride(0), out2.stride(0),
            BLOCK_N=triton.next_power_of_2(x2.shape[1]),
        )  # fmt: skip
    return out


MAX_ROW = 65536


def _rowwise_args(
    op: str, x: torch.Tensor, out: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x as 2-D with contiguous rows, the output, and the output as 2-D (one program per row)."""
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES or x.dim() < 1:
        raise OptionError(f"{op}: x must be a float tensor with at least one dim")
    if x.shape[-1] > MAX_ROW:
        raise OptionError(f"{op}: rows of {x.shape[-1]} values are above the {MAX_ROW} one program holds")
    out = _output(out, tuple(x.shape), x, op)
    if not out.is_contiguous():
        raise OptionError(f"{op}: out must be contiguous")
    _check_devices(x, out)
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    if x2.shape[-1] and x2.stride(-1) != 1:
        x2 = x2.contiguous()  # the kernels read rows as contiguous runs
    return x2, out, out.view(-1, x.shape[-1]) if x.shape[-1] else out


# -- checks ----------------------------------------------------------------------------------------


def _launch_tiled(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor,
    out: torch.Tensor,
    strides: tuple[int, ...],
    has_bias: bool,
    code: int,
    config: MatmulConfig,
    precision: str,
) -> None:
    M, K = a.shape
    N = b.shape[1]
    grid = (triton.cdiv(M, config.block_m) * triton.cdiv(N, config.block_n),)
    kernels.matmul_tiled[grid](
        a, b, bias, out, M, N, K, *strides,
        HAS_BIAS=has_bias, ACT=code,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, GROUP_M=config.group_m,
        PRECISION=precision, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise OptionError(f"matmul: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")


def _check_matrix(label: str, tensor: object) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise OptionError(f"matmul: {label} must be a torch tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise OptionError(f"matmul: {label} must be 2-D, got shape {list(tensor.shape)}")
    if tensor.dtype not in FLOAT_DTYPES:
        raise OptionError(f"matmul: {label} must be float32, float16 or bfloat16, got {tensor.dtype}")


def _check_vector(label: str, tensor: object, length: int, like: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.shape[0] != length:
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise OptionError(f"{label} must be a 1-D tensor of {length} values, got {shape}")
    if tensor.dtype not in FLOAT_DTYPES:
        raise OptionError(f"{label} must be a float tensor, got {tensor.dtype}")


def _activation_code(activation: str | None) -> int:
    if activation not in _ACTIVATION_CODES:
        raise OptionError(f"activation must be one of {', '.join(ACTIVATIONS)} (or None), got {activation!r}")
    return _ACTIVATION_CODES[activation]


def _output(out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor, op: str) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    if tuple(out.shape) != shape or out.dtype != like.dtype:
        raise OptionError(
            f"{op}: out must be {like.dtype} of shape {list(shape)}, got {out.dtype} {list(out.shape)}"
        )
    return out


def _check_devices(*tensors: torch.Tensor | None) -> None:
    present = [t for t in tensors if t is not None]
    devices = {str(t.device) for t in present}
    if len(devices) > 1:
        raise OptionError(
            f"the tensors are on different devices ({', '.join(sorted(devices))}); put them on one"
        )
    device = present[0].device
    if INTERPRETED:
        if device.type != "cpu":
            raise OptionError("under TRITON_INTERPRET=1 the kernels run on the CPU: give CPU tensors")
        return
    ok, why = available()
    if not ok:
        raise OptionError(why)
    if device.type != "cuda":
        raise OptionError(f"the kernels run on the GPU: move the tensors to CUDA (they are on {device})")


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """x as a 2-D [rows, last dim] view (no copy for 2-D x, or contiguous N-D x)."""
    if x.dim() == 2:
        return x
    if x.dim() == 1:
        return x.view(1, -1) if x.is_contiguous() else x.reshape(1, -1)
    return x.reshape(-1, x.shape[-1])
