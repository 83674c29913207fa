"""The Triton kernels themselves (``@triton.jit``); ``hone.kernels.triton`` checks inputs and launches.

Written by hand because they are the point: the seed's matmul progression (naive -> tiled ->
tensor cores) and the fused elementwise kernels, each one kernel launch where torch needs several.

- ``matmul_naive``: each program lane owns one output element and reads its row of ``a`` and column
  of ``b`` from global memory one k at a time; nothing is reused between lanes.
- ``matmul_tiled``: blocked ``tl.dot`` with a float32 accumulator, masks for any M/N/K, grouped
  program order (``GROUP_M`` rows of tiles share columns of ``b`` while they sit in L2), and a fused
  epilogue (bias, activation). With fp16/bf16 inputs (or fp32 as tf32) ``tl.dot`` runs on tensor
  cores; the "tensorcore" variant is this kernel with larger tiles and deeper pipelining.
- ``bias_act_scale``: ``act(x + bias) * scale`` in one pass over x.
- ``batchnorm_relu``: inference BatchNorm folded to a per-channel scale and shift, then ReLU.

Activations are numbered (``ACT_*``) so the epilogue is chosen at compile time.
"""

from __future__ import annotations

import triton
import triton.language as tl

ACT_NONE, ACT_RELU, ACT_GELU, ACT_SILU = 0, 1, 2, 3


@triton.jit
def _activate(x, ACT: tl.constexpr):
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:  # GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = 0.5 * x * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))
    elif ACT == 3:
        x = x * tl.sigmoid(x)
    return x


@triton.jit
def matmul_naive(
    a_ptr, b_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = index < M * N
    m = index // N
    n = index % N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(0, K):
        a = tl.load(a_ptr + m * stride_am + k * stride_ak, mask=inside, other=0.0)
        b = tl.load(b_ptr + k * stride_bk + n * stride_bn, mask=inside, other=0.0)
        acc += a.to(tl.float32) * b.to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=inside, other=0.0).to(tl.float32)
    acc = _activate(acc, ACT)
    tl.store(c_ptr + m * stride_cm + n * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=inside)


@triton.jit
def matmul_tiled(
    a_ptr, b_ptr, bias_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    # Grouped ordering: consecutive programs walk GROUP_M tile rows down one tile column, so the
    # columns of b they read are reused from L2 instead of fetched again for every row.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    group = pid // per_group
    first_m = group * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (pid % per_group) % group_rows
    tile_n = (pid % per_group) // group_rows

    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    acc = _activate(acc, ACT)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def bias_act_scale(
    x_ptr, bias_ptr, out_ptr, scale,
    M, N, stride_xm, stride_xn, stride_om, stride_on,
    ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn, mask=inside, other=0.0)
    bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)
    y = _activate(x.to(tl.float32) + bias.to(tl.float32)[None, :], ACT) * scale
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def batchnorm_relu(
    x_ptr, scale_ptr, shift_ptr, out_ptr,
    total, D1, D2, D3,
    sx0, sx1, sx2, sx3, so0, so1, so2, so3,
    CHANNEL_DIM: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One lane per element of the 4-D tensor, in logical order; strides make any layout work.
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = index < total
    i3 = index % D3
    i2 = (index // D3) % D2
    i1 = (index // (D3 * D2)) % D1
    i0 = index // (D3 * D2 * D1)
    channel = i1 if CHANNEL_DIM == 1 else i3
    x = tl.load(x_ptr + i0 * sx0 + i1 * sx1 + i2 * sx2 + i3 * sx3, mask=inside, other=0.0)
    scale = tl.load(scale_ptr + channel, mask=inside, other=0.0)
    shift = tl.load(shift_ptr + channel, mask=inside, other=0.0)
    y = tl.maximum(x.to(tl.float32) * scale + shift, 0.0)
    tl.store(out_ptr + i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3, y.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def softmax_rows(
    x_ptr, out_ptr, N, stride_x, stride_o, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # One program per row; the whole row sits in registers (BLOCK_N >= N), read once, written once.
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_N)
    x = tl.load(x_ptr + row * stride_x + offs, mask=offs < N, other=-float("inf")).to(tl.float32)
    x = x - tl.max(x, axis=0)
    e = tl.exp(x)
    y = e / tl.sum(e, axis=0)
    tl.store(out_ptr + row * stride_o + offs, y.to(out_ptr.dtype.element_ty), mask=offs < N)


@triton.jit
def layernorm_rows(
    x_ptr, weight_ptr, bias_ptr, out_ptr, N, eps, stride_x, stride_o, BLOCK_N: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_N)
    inside = offs < N
    x = tl.load(x_ptr + row * stride_x + offs, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    centered = tl.where(inside, x - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / N
    weight = tl.load(weight_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    y = centered / tl.sqrt(var + eps) * weight + bias
    tl.store(out_ptr + row * stride_o + offs, y.to(out_ptr.dtype.element_ty), mask=inside)
