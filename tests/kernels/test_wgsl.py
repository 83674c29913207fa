"""hone.kernels.wgsl through wgpu-py against numpy, on whatever adapter is found (on a machine
without a GPU: Mesa's lavapipe, a software Vulkan driver).

No adapter is a failure, not a skip: the error names what to install. Sizes are small and not
multiples of the 16 x 16 tiles; outputs start poisoned with NaN so that an element a kernel forgot
shows up.
"""

from __future__ import annotations

import numpy as np
import pytest

from hone.errors import OptionError
from hone.kernels import wgsl as hw

SIZES = [(1, 1, 1), (17, 33, 29), (64, 64, 64), (100, 3, 70), (3, 100, 1)]  # (M, K, N)
RTOL, ATOL = 1e-5, 1e-5


def random_matrix(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    return rng.standard_normal((rows, columns)).astype(np.float32)


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    assert not np.isnan(actual).any(), "some output elements were never written"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_an_adapter_is_found_and_described() -> None:
    info = hw.adapter_info()  # raises ProviderUnavailableError naming what to install when none is found
    print(f"WGSL adapter: {info.summary()}; {info.description}")
    assert info.device
    assert info.backend_type
    assert info.is_cpu == (info.adapter_type == "CPU" or info.is_fallback_adapter)


def test_the_kernels_are_plain_wgsl_files_shipped_with_the_package() -> None:
    for name in ("matmul_naive", "matmul_tiled", "bias_act_scale"):
        assert "@compute" in hw.wgsl_source(name)
    assert "var<workgroup>" in hw.wgsl_source("matmul_tiled")


@pytest.mark.parametrize("variant", hw.MATMUL_VARIANTS)
@pytest.mark.parametrize(("M", "K", "N"), SIZES)
def test_matmul_matches_numpy_and_writes_every_element(variant: str, M: int, K: int, N: int) -> None:
    rng = np.random.default_rng(M * 10_000 + K * 100 + N)
    a, b = random_matrix(rng, M, K), random_matrix(rng, K, N)
    close(hw._matmul(a, b, variant=variant, poison_output=True), a @ b)


@pytest.mark.parametrize("variant", hw.MATMUL_VARIANTS)
def test_matmul_accepts_non_contiguous_views(variant: str) -> None:
    rng = np.random.default_rng(1)
    a, b = random_matrix(rng, 29, 17).T, random_matrix(rng, 29, 33)[:, ::2]
    close(hw.matmul(a, b, variant=variant), a @ b)


def test_matmul_with_an_empty_inner_dimension_is_zeros() -> None:
    result = hw.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    assert result.shape == (3, 4) and not result.any()


def numpy_activation(name: str, v: np.ndarray) -> np.ndarray:
    """The references, in float64: gelu in the tanh form that the Triton kernels use too."""
    v = v.astype(np.float64)
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "gelu":
        return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v**3)))
    if name == "silu":
        return v * 0.5 * (1.0 + np.tanh(v / 2.0))  # v * sigmoid(v), without overflowing exp
    return v


@pytest.mark.parametrize("activation", list(hw.ACTIVATIONS))
@pytest.mark.parametrize(("M", "N"), [(1, 1), (17, 33), (100, 3), (3, 300)])
def test_bias_act_scale_matches_numpy_and_broadcasts_bias_over_rows(activation: str, M: int, N: int) -> None:
    rng = np.random.default_rng(M * 1000 + N)
    x = random_matrix(rng, M, N) * np.float32(4)  # wide enough to reach both tails of gelu and silu
    bias = rng.standard_normal(N).astype(np.float32)
    expected = (numpy_activation(activation, x + bias) * 0.5).astype(np.float32)
    close(hw._bias_act_scale(x, bias, 0.5, activation, poison_output=True), expected)


def test_bias_act_scale_gelu_and_silu_stay_finite_at_large_magnitudes() -> None:
    x = np.array([[-1e4, -80.0, 80.0, 1e4]], np.float32)
    zero = np.zeros(4, np.float32)
    for activation in ("gelu", "silu"):
        close(hw.bias_act_scale(x, zero, 1.0, activation), numpy_activation(activation, x).astype(np.float32))


def test_bias_act_scale_adds_bias_by_column() -> None:
    x = np.zeros((2, 3), np.float32)
    bias = np.array([1.0, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(hw.bias_act_scale(x, bias, 2, activation="none"), [[2, -4, 6], [2, -4, 6]])
    np.testing.assert_array_equal(hw.bias_act_scale(x, bias, 2), [[2, 0, 6], [2, 0, 6]])


F32 = np.float32
BAD_CALLS = [
    (lambda: hw.matmul(np.ones((3, 4), F32), np.ones((5, 6), F32)),
     r"matmul: a is \[3, 4\] and b is \[5, 6\]; a's columns must equal b's rows"),
    (lambda: hw.matmul(np.ones((3, 4), np.float64), np.ones((4, 2), F32)), "matmul: a must be float32, got float64"),
    (lambda: hw.matmul(np.ones((3, 4), F32), np.ones(4, F32)), r"matmul: b must be 2-D, got shape \[4\]"),
    (lambda: hw.matmul([[1.0]], np.ones((1, 1), F32)), "matmul: a must be a numpy array, got list"),
    (lambda: hw.matmul(np.ones((1, 1), F32), np.ones((1, 1), F32), variant="fast"),
     "matmul: variant must be one of naive, tiled, got 'fast'"),
    (lambda: hw.bias_act_scale(np.ones((2, 3), F32), np.ones(2, F32), 1.0),
     r"bias_act_scale: x is \[2, 3\] and bias is \[2\]; bias must be \[3\]"),
    (lambda: hw.bias_act_scale(np.ones((2, 3), F32), np.ones(3, np.float16), 1.0),
     "bias_act_scale: bias must be float32, got float16"),
    (lambda: hw.bias_act_scale(np.ones((2, 3), F32), np.ones(3, F32), "2"),
     "bias_act_scale: scale must be a real number, got str"),
    (lambda: hw.bias_act_scale(np.ones((2, 3), F32), np.ones(3, F32), 1.0, activation="tanh"),
     "bias_act_scale: activation must be one of none, relu, gelu, silu, got 'tanh'"),
    (lambda: hw.bias_act_scale(np.ones(3, F32), np.ones(3, F32), 1.0), r"bias_act_scale: x must be 2-D, got shape \[3\]"),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_inputs_raise_option_error_with_one_line_stating_the_contract(call, message: str) -> None:
    with pytest.raises(OptionError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
