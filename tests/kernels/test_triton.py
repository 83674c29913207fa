"""hone.kernels.triton through Triton's interpreter on the CPU, against the torch references.

TRITON_INTERPRET=1 is set by tests/conftest.py before this module imports the kernels. Sizes are
small and not multiples of the tiles; inputs include transposed (non-contiguous) views;
outputs start poisoned with NaN so that an element the kernel forgot shows up. bf16 is not tested
here: the interpreter computes it wrongly without saying so (it is checked on a GPU, in
benchmarks/kernels.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hone.errors import OptionError
from hone.kernels import triton as hk
from hone.kernels.triton import reference

pytestmark = pytest.mark.slow
SIZES = [(1, 1, 1), (17, 33, 29), (64, 64, 64), (70, 5, 130)]
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-2, 2e-2)}


def poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert not torch.isnan(actual).any(), "some output elements were never written"
    rtol, atol = TOLERANCE[actual.dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol)


def test_the_interpreter_is_on_and_reported() -> None:
    assert hk.INTERPRETED
    assert hk.available() == (True, "Triton's interpreter (TRITON_INTERPRET=1): CPU tensors")


@pytest.mark.parametrize("variant", hk.VARIANTS)
@pytest.mark.parametrize(("m", "n", "k"), SIZES)
def test_matmul_variants_match_torch_on_sizes_that_are_not_tile_multiples(variant: str, m: int, n: int, k: int) -> None:
    generator = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    a = torch.randn(m, k, generator=generator)
    b = torch.randn(k, n, generator=generator)
    out = poisoned((m, n), torch.float32)
    result = hk.matmul(a, b, variant, out=out)
    assert result is out
    close(out, reference.matmul(a, b))


@pytest.mark.parametrize("variant", hk.VARIANTS)
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", None])
def test_the_fused_epilogue_adds_bias_and_activates(variant: str, activation: str | None) -> None:
    a, b, bias = torch.randn(19, 23), torch.randn(23, 37), torch.randn(37)
    result = hk.matmul(a, b, variant, bias=bias, activation=activation, out=poisoned((19, 37), torch.float32))
    close(result, reference.matmul(a, b, bias, activation))


@pytest.mark.parametrize("variant", ["tiled", "tensorcore"])
def test_fp16_matmul_accumulates_in_fp32(variant: str) -> None:
    a, b = torch.randn(33, 70).half(), torch.randn(70, 18).half()
    result = hk.matmul(a, b, variant, out=poisoned((33, 18), torch.float16))
    assert result.dtype == torch.float16
    close(result, reference.matmul(a, b))


@pytest.mark.parametrize("variant", hk.VARIANTS)
def test_non_contiguous_inputs_are_read_through_their_strides(variant: str) -> None:
    a = torch.randn(40, 21).t()  # [21, 40], column-major
    b = torch.randn(40, 60)[:, ::3]  # [40, 20], every third column
    assert not a.is_contiguous() and not b.is_contiguous()
    close(hk.matmul(a, b, variant), reference.matmul(a, b))


def test_tuning_picks_the_fastest_config_by_the_injected_timer_and_uses_it() -> None:
    a, b = torch.randn(20, 30), torch.randn(30, 40)
    configs = [hk.MatmulConfig(16, 16, 16), hk.MatmulConfig(32, 32, 16), hk.MatmulConfig(64, 32, 32)]
    costs = iter([3.0, 1.0, 2.0])
    calls: list[int] = []

    def bench(run) -> float:
        run()
        calls.append(1)
        return next(costs)

    assert hk.tune_matmul(a, b, configs=configs, bench=bench) == configs[1]
    assert len(calls) == 3
    close(hk.matmul(a, b, "tensorcore"), reference.matmul(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", ["relu", "gelu", "none"])
def test_bias_act_scale_is_one_fused_pass(dtype: torch.dtype, activation: str) -> None:
    x, bias = torch.randn(37, 300).to(dtype), torch.randn(300).to(dtype)
    result = hk.bias_act_scale(x, bias, 0.5, activation, out=poisoned((37, 300), dtype))
    close(result, reference.bias_act_scale(x.float(), bias.float(), 0.5, activation).to(dtype))


def test_bias_act_scale_takes_nd_and_strided_inputs() -> None:
    x, bias = torch.randn(3, 5, 7), torch.randn(7)
    close(hk.bias_act_scale(x, bias, 2.0), reference.bias_act_scale(x, bias, 2.0))
    strided = torch.randn(9, 40)[:, ::2]
    bias = torch.randn(20)
    close(hk.bias_act_scale(strided, bias, 1.5, "relu"), reference.bias_act_scale(strided, bias, 1.5))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batchnorm_relu_matches_torch_in_both_layouts(layout: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 5, 7, 3).to(dtype)
    channels = 5 if layout == "nchw" else 3
    mean, var = torch.randn(channels), torch.rand(channels) + 0.5
    gamma, beta = torch.randn(channels), torch.randn(channels)
    result = hk.batchnorm_relu(x, mean, var, gamma, beta, 1e-5, layout, out=poisoned(tuple(x.shape), dtype))
    close(result, reference.batchnorm_relu(x, mean, var, gamma, beta, 1e-5, layout))


def test_batchnorm_relu_reads_a_channels_last_view_through_its_strides() -> None:
    x = torch.randn(2, 4, 6, 5).to(memory_format=torch.channels_last)
    stats = [torch.randn(4), torch.rand(4) + 0.1, torch.randn(4), torch.randn(4)]
    close(hk.batchnorm_relu(x, *stats), reference.batchnorm_relu(x, *stats))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (3, 4, 100), (5, 1000)])
def test_softmax_and_layernorm_rows_match_torch(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = (torch.randn(*shape) * 3).to(dtype)
    close(hk.softmax(x, out=poisoned(shape, dtype)), reference.softmax(x))
    weight, bias = torch.randn(shape[-1]), torch.randn(shape[-1])
    close(hk.layernorm(x, weight, bias, out=poisoned(shape, dtype)), reference.layernorm(x, weight, bias))


def test_softmax_reads_strided_rows() -> None:
    x = torch.randn(30, 12).t()  # rows of 30 values, each strided
    close(hk.softmax(x), reference.softmax(x))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(5, 6)), r"a is \[3, 4\] and b is \[5, 6\]"),
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(4, 2).half()), "give both the same dtype"),
        (lambda: hk.matmul(torch.randn(3), torch.randn(3, 2)), "a must be 2-D"),
        (lambda: hk.matmul(torch.randn(3, 4).long(), torch.randn(4, 2).long()), "float32, float16 or bfloat16"),
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(4, 2), "fast"), "variant must be one of"),
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(4, 2), bias=torch.randn(3)), "bias must be a 1-D tensor of 2"),
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(4, 2), activation="tanh"), "activation must be one of"),
        (lambda: hk.matmul(torch.randn(3, 4), torch.randn(4, 2), out=torch.empty(2, 3)), r"out must be torch.float32 of shape \[3, 2\]"),
        (lambda: hk.bias_act_scale(torch.randn(3, 4), torch.randn(5), 1.0), "bias must be a 1-D tensor of 4"),
        (lambda: hk.bias_act_scale(torch.randn(3, 4), torch.randn(4), "x"), "scale must be a number"),
        (lambda: hk.batchnorm_relu(torch.randn(3, 4), *[torch.randn(4)] * 4), "must be a 4-D float tensor"),
        (lambda: hk.batchnorm_relu(torch.randn(1, 4, 2, 2), *[torch.randn(4)] * 4, layout="chw"), "layout must be"),
        (lambda: hk.batchnorm_relu(torch.randn(1, 4, 2, 2), *[torch.randn(3)] * 4), "mean must be a 1-D tensor of 4"),
        (lambda: hk.softmax(torch.randn(2, 3).long()), "softmax: x must be a float tensor"),
        (lambda: hk.layernorm(torch.randn(2, 3), torch.randn(4), torch.randn(3)), "weight must be a 1-D tensor of 3"),
    ],
)
def test_bad_inputs_are_one_clear_error(call, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        call()


def test_without_a_gpu_or_the_interpreter_a_call_is_one_clear_error() -> None:
    script = (
        "import torch\n"
        "from hone.errors import OptionError\n"
        "from hone.kernels import triton as hk\n"
        "print(hk.available()[0])\n"
        "try:\n"
        "    hk.matmul(torch.randn(2, 2), torch.randn(2, 2))\n"
        "except OptionError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    available, message = done.stdout.strip().splitlines()
    assert available == "False"
    assert "Triton has no active driver" in message and "TRITON_INTERPRET=1" in message


def test_tuning_leaves_out_configs_that_do_not_fit_and_fails_clearly_if_none_does() -> None:
    import triton

    a, b = torch.randn(8, 8), torch.randn(8, 8)
    configs = [hk.MatmulConfig(16, 16, 16), hk.MatmulConfig(32, 32, 32)]

    def too_big_first(run) -> float:
        if not too_big_first.seen:
            too_big_first.seen = True
            raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
        run()
        return 1.0

    too_big_first.seen = False
    assert hk.tune_matmul(a, b, configs=configs, bench=too_big_first) == configs[1]

    def never_fits(run) -> float:
        raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")

    with pytest.raises(OptionError, match="no config could run here"):
        hk.tune_matmul(a, b, configs=configs, bench=never_fits)
