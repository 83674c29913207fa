"""hone run with the user's data, and the showcase of the default model's real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import hone
from hone.job import _showcase, run
from hone.job_types import RunReport
from hone.report.html import render_html


def test_run_takes_the_users_data_for_every_stage_and_says_how_it_was_split(tmp_path: Path) -> None:
    from hone.zoo.digits import load_split

    images = load_split().test_images[:40][:, None]  # 40 samples along a new first axis: (40, 1, 1, 8, 8)
    np.savez(tmp_path / "digits.npz", input=images.astype(np.float32))
    report = run("digits_cnn", out_dir=tmp_path / "out", batches=[1], budget_s=0.3, serve=False, web=False,
                 edge=False, data=tmp_path / "digits.npz")
    assert report.data.startswith(f"40 samples from {tmp_path / 'digits.npz'}")
    assert "20 calibration / 20 evaluation samples" in report.data
    assert report.quantize is not None and report.quantize.data_split.startswith("20 calibration / 20 evaluation")
    assert report.quantize.evaluation.startswith("20 evaluation samples")
    assert (tmp_path / "out" / "report.json").is_file()


def test_the_showcase_puts_float_and_shipped_top5_side_by_side() -> None:
    model = hone.load("efficientnet_lite0")
    rows = _showcase(model, model)
    assert [row.photo for row in rows][:2] == ["chelsea", "coffee"]
    chelsea, coffee = rows[0], rows[1]
    assert chelsea.float_top5[0][0] in ("tabby", "tiger cat", "Egyptian cat") and len(chelsea.float_top5) == 5
    assert coffee.float_top5[0][0] == "espresso" and coffee.float_top5 == coffee.shipped_top5
    assert all(0 <= p <= 1 for _, p in chelsea.float_top5)
    report = RunReport("0", "efficientnet_lite0", "efficientnet_lite0", "now", "out", showcase=rows,
                       showcase_artifact="ort-all")
    page = render_html(report)
    assert "Top-5 on real photos" in page and "espresso" in page


def test_a_model_without_class_names_has_no_showcase() -> None:
    model = hone.load("digits_cnn")
    assert _showcase(model, model) == []
