"""The torch references of the Triton kernels: what each kernel must compute, in plain torch ops.

Tests compare the kernels with these; the benchmark times them as the unfused baseline.
"""

from __future__ import annotations

from typing import get_args

import torch

from hone.kernels.types import Activation, Layout

ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)


def activate(x: torch.Tensor, activation: Activation | None) -> torch.Tensor:
    if activation in (None, "none"):
        return x
    if activation == "relu":
        return torch.relu(x)
    if activation == "gelu":
        return torch.nn.functional.gelu(x, approximate="tanh")
    if activation == "silu":
        return torch.nn.functional.silu(x)
    raise ValueError(f"unknown activation {activation!r}")


def matmul(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, activation: Activation | None = None
) -> torch.Tensor:
    """act(a @ b + bias), accumulated in float32, returned in a's dtype."""
    out = a.float() @ b.float()
    if bias is not None:
        out = out + bias.float()
    return activate(out, activation).to(a.dtype)


def bias_act_scale(
    x: torch.Tensor, bias: torch.Tensor, scale: float | torch.Tensor, activation: Activation | None = "relu"
) -> torch.Tensor:
    """act(x + bias) * scale (bias broadcast over the last dim), three separate torch ops."""
    return activate(x + bias, activation) * scale


def batchnorm_relu(
    x: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float = 1e-5,
    layout: Layout = "nchw",
) -> torch.Tensor:
    """Inference BatchNorm (per channel: dim 1 for NCHW, dim 3 for NHWC) then ReLU."""
    shape = [1, -1, 1, 1] if layout == "nchw" else [1, 1, 1, -1]
    scale = (gamma.float() / torch.sqrt(var.float() + eps)).view(shape)
    shift = beta.float().view(shape) - mean.float().view(shape) * scale
    return torch.relu(x.float() * scale + shift).to(x.dtype)


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.float(), dim=-1).to(x.dtype)


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps).to(
        x.dtype
    )
