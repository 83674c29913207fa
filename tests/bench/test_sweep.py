"""hone.bench on real sessions: the configurations, their fields, the ratios and the bad options."""

from __future__ import annotations

from pathlib import Path

import pytest

import hone
from hone.bench import bench
from hone.errors import OptionError, ProviderUnavailableError, ShapeError


def test_every_variant_and_batch_is_measured_with_its_statistics(mlp_path: Path) -> None:
    result = bench(hone.load(mlp_path), batches=[1, 4], threads=1, budget_s=0.3)
    assert [(c.variant, c.batch) for c in result.configs] == [
        ("ort-disabled", 1), ("ort-disabled", 4), ("ort-all", 1), ("ort-all", 4)
    ]
    for config in result.configs:
        assert config.threads == 1 and config.provider == "cpu"
        assert 0 < config.min_ms <= config.p50_ms <= config.p90_ms <= config.p99_ms <= config.max_ms
        assert config.throughput == pytest.approx(config.batch * 1000 / config.p50_ms)
        assert config.runs >= 5
        assert config.baseline_variant == "ort-disabled"
    baseline = result.configs[0]
    assert baseline.speedup_vs_baseline == pytest.approx(1.0)


def test_a_batch_the_model_cannot_take_is_refused(tmp_path: Path) -> None:
    import onnx

    from conftest import SMALL_MLP_TEXT

    fixed = onnx.parser.parse_model(SMALL_MLP_TEXT.replace("float[batch, 4] x", "float[2, 4] x"))
    path = tmp_path / "fixed.onnx"
    onnx.save(fixed, path)
    with pytest.raises(ShapeError, match="batch 8 cannot run"):
        bench(hone.load(path), batches=[8])


def test_torch_eager_does_not_apply_to_a_plain_onnx_file(mlp_path: Path) -> None:
    with pytest.raises(OptionError, match="does not apply"):
        bench(hone.load(mlp_path), variants=["torch-eager"])


def test_an_unavailable_provider_says_what_to_install(mlp_path: Path) -> None:
    with pytest.raises(ProviderUnavailableError, match="onnxruntime-gpu"):
        bench(hone.load(mlp_path), provider="cuda")


@pytest.mark.parametrize("batches", [[], [0], [-1, 2]])
def test_batch_sizes_must_be_positive(mlp_path: Path, batches: list[int]) -> None:
    with pytest.raises(OptionError):
        bench(hone.load(mlp_path), batches=batches)
