"""Calibration data for static INT8: the zoo's training split, the user's .npy/.npz/images/folders,
synthesized inputs with a warning, and one clear line for every file that does not fit the model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hone
from hone.errors import HoneError, OptionError, ShapeError
from hone.model import Model
from hone.quantize import quantize
from hone.quantize.calibration import IMAGENET_MEAN, IMAGENET_STD, calibration_set

CONV = """
<ir_version: 8, opset_import: ["" : 17]>
conv (float[N, 3, 8, 8] x) => (float[N, 4] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    r = Relu (c)
    p = GlobalAveragePool (r)
    y = Flatten (p)
}
"""
TWO_INPUTS = """
<ir_version: 8, opset_import: ["" : 17]>
two (float[N, 4] a, float[N, 4] b) => (float[N, 4] y) { y = Add (a, b) }
"""


def _save(text: str, tmp_path: Path, weights: dict[str, np.ndarray] | None = None) -> Model:
    proto = onnx.parser.parse_model(text)
    for index, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type.lower()}_{index}"
    proto.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in (weights or {}).items())
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / f"{proto.graph.name}.onnx"
    onnx.save(proto, path)
    return hone.load(path)


@pytest.fixture
def conv(tmp_path: Path) -> Model:
    rng = np.random.default_rng(0)
    return _save(CONV, tmp_path, {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                                  "b": rng.normal(size=(4,)).astype(np.float32)})


@pytest.fixture
def two_inputs(tmp_path: Path) -> Model:
    return _save(TWO_INPUTS, tmp_path)


@pytest.fixture(scope="module")
def digits() -> Model:
    return hone.load("digits_cnn")


def _joined(feeds: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([batch[name] for batch in feeds])


def _samples(count: int, seed: int = 0, shape: tuple[int, ...] = (3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)


# --- where the samples come from -------------------------------------------------------------


def test_digits_is_calibrated_on_its_training_split_never_the_held_out_images(digits: Model) -> None:
    from hone.zoo.digits import load_split

    calibration = calibration_set(digits)
    assert calibration.source == "zoo"
    assert calibration.samples == 64
    assert [len(batch["input"]) for batch in calibration.feeds] == [16, 16, 16, 16]
    np.testing.assert_array_equal(_joined(calibration.feeds, "input"), load_split().train_images[:64])
    assert calibration.description == (
        "64 samples: scikit-learn digits training split (disjoint from the held-out split)"
    )
    assert calibration_set(digits, samples=20).samples == 20


def test_a_model_without_data_is_calibrated_on_seeded_synthesized_inputs_with_a_warning(
    conv: Model, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hone.quantize.calibration"):
        calibration = calibration_set(conv, samples=40)
    assert calibration.source == "synthesized"
    assert calibration.samples == 40
    assert [batch["x"].shape for batch in calibration.feeds] == [(16, 3, 8, 8), (16, 3, 8, 8), (8, 3, 8, 8)]
    assert "weaker than real data" in calibration.description
    assert any("synthesized" in r.getMessage() and "--calib" in r.getMessage() for r in caplog.records)
    again = calibration_set(conv, samples=40)
    np.testing.assert_array_equal(_joined(again.feeds, "x"), _joined(calibration.feeds, "x"))


def test_a_npy_file_is_read_batch_first_into_batches_of_16(conv: Model, tmp_path: Path) -> None:
    samples = _samples(40)
    np.save(tmp_path / "calib.npy", samples)
    calibration = calibration_set(conv, tmp_path / "calib.npy")
    assert calibration.source == "file"
    assert calibration.description == f"40 samples from {tmp_path / 'calib.npy'}"
    assert [len(batch["x"]) for batch in calibration.feeds] == [16, 16, 8]
    np.testing.assert_array_equal(_joined(calibration.feeds, "x"), samples)


def test_a_npz_file_gives_each_input_its_own_array(two_inputs: Model, tmp_path: Path) -> None:
    a, b = _samples(5, 0, (4,)), _samples(5, 1, (4,))
    np.savez(tmp_path / "calib.npz", a=a, b=b)
    calibration = calibration_set(two_inputs, str(tmp_path / "calib.npz"))
    assert calibration.source == "file" and calibration.samples == 5
    np.testing.assert_array_equal(calibration.feeds[0]["a"], a)
    np.testing.assert_array_equal(calibration.feeds[0]["b"], b)


def test_a_folder_of_arrays_is_joined_in_name_order_and_other_files_are_ignored(conv: Model, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    first, second = _samples(5, 1), _samples(3, 2)
    np.save(folder / "b.npy", second)
    np.save(folder / "a.npy", first)
    (folder / "README.txt").write_text("not a sample")
    calibration = calibration_set(conv, folder)
    assert calibration.samples == 8 and calibration.source == "file"
    np.testing.assert_array_equal(_joined(calibration.feeds, "x"), np.concatenate([first, second]))


def test_gray_images_are_scaled_to_0_1_and_resized_to_the_input(digits: Model, tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is needed to write the test images")
    folder = tmp_path / "images"
    folder.mkdir()
    pattern = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0..252, already 8 x 8: no resampling
    image_module.fromarray(pattern, mode="L").save(folder / "a.png")
    image_module.fromarray(np.full((16, 16), 204, dtype=np.uint8), mode="L").save(folder / "b.png")  # resized
    calibration = calibration_set(digits, folder)
    images = _joined(calibration.feeds, "input")
    assert images.shape == (2, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_allclose(images[0, 0], pattern / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(images[1], np.full((1, 8, 8), 204 / 255.0), rtol=0, atol=1e-6)
    assert calibration.description == f"2 samples from {folder}"


def test_colour_images_are_normalized_with_imagenet_mean_and_std(conv: Model, tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is needed to write the test images")
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51
    image_module.fromarray(rgb, mode="RGB").save(tmp_path / "red.png")
    image_module.fromarray(np.full((8, 8), 255, np.uint8), mode="L").save(tmp_path / "white.bmp")
    red = calibration_set(conv, tmp_path / "red.png").feeds[0]["x"]
    white = calibration_set(conv, tmp_path / "white.bmp").feeds[0]["x"]  # gray is converted to RGB
    assert red.shape == white.shape == (1, 3, 8, 8)
    expected = (np.array([1.0, 0.0, 0.2], np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(red[0], np.broadcast_to(expected[:, None, None], (3, 8, 8)), atol=1e-5)
    np.testing.assert_allclose(white[0], np.broadcast_to(((1 - IMAGENET_MEAN) / IMAGENET_STD)[:, None, None],
                                                        (3, 8, 8)), atol=1e-5)


# --- files that do not fit -------------------------------------------------------------------


def _write_npy(array: object) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        np.save(folder / "calib.npy", array, allow_pickle=True)
        return folder / "calib.npy"

    return write


def _write_npz(**arrays: np.ndarray) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        np.savez(folder / "calib.npz", **arrays)
        return folder / "calib.npz"

    return write


def _empty_folder(folder: Path) -> Path:
    (folder / "calib").mkdir()
    (folder / "calib" / "notes.txt").write_text("no samples here")
    return folder / "calib"


def _mixed_shapes(folder: Path) -> Path:
    (folder / "calib").mkdir()
    np.save(folder / "calib" / "a.npy", _samples(2))
    np.save(folder / "calib" / "b.npy", _samples(2, shape=(3, 8, 9)))
    return folder / "calib"


def _text_as(name: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / name).write_text("this is not a sample\n")
        return folder / name

    return write


# case -> (model, write the file, error, message, whether the message names the file)
BAD_FILES: dict[str, tuple[str, Callable[[Path], Path], type[HoneError], str, bool]] = {
    "missing path": ("conv", lambda folder: folder / "absent.npy", OptionError, "does not exist", True),
    "empty folder": ("conv", _empty_folder, OptionError, "holds no .npz, .npy or image files", True),
    "wrong rank": ("conv", _write_npy(_samples(5, shape=(3, 8))), ShapeError,
                   "has shape [5, 3, 8], the model wants ['N', 3, 8, 8] (batch first)", False),
    "wrong dim": ("conv", _write_npy(_samples(5, shape=(3, 8, 9))), ShapeError, "(dim 3 must be 8)", False),
    "wrong dtype": ("conv", _write_npy(_samples(5).astype(np.float64)), ShapeError,
                    "has dtype float64, the model wants float32", False),
    "no samples": ("conv", _write_npy(np.zeros((0, 3, 8, 8), np.float32)), ShapeError, "(at least one)", False),
    "a scalar": ("conv", _write_npy(np.float32(1.0)), ShapeError, "is a scalar", True),
    "not an array": ("conv", _text_as("calib.npy"), OptionError, "cannot be read as .npy", True),
    "pickled objects": ("conv", _write_npy(np.array([{"x": 1}], dtype=object)), OptionError,
                        "cannot be read as .npy", True),
    "npz missing an input": ("two", _write_npz(a=_samples(3, shape=(4,))), ShapeError, "(missing ['b'])", False),
    "npz named wrongly": ("conv", _write_npz(image=_samples(3)), ShapeError,
                          "(missing ['x']) (unknown ['image'])", False),
    "npz unequal counts": ("two", _write_npz(a=_samples(3, shape=(4,)), b=_samples(4, shape=(4,))), ShapeError,
                           "same number of samples", False),
    "npy for two inputs": ("two", _write_npy(_samples(3, shape=(4,))), OptionError,
                           "calibrate single-input models only", True),
    "folder of mixed shapes": ("conv", _mixed_shapes, ShapeError, "have different shapes", True),
    "image for two inputs": ("two", _text_as("calib.png"), OptionError, "calibrate single-input models only", True),
    "unreadable image": ("conv", _text_as("calib.png"), OptionError, "cannot be read", True),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_calibration_data_that_does_not_fit_is_one_line_naming_the_problem(
    case: str, conv: Model, two_inputs: Model, tmp_path: Path
) -> None:
    model_name, write, error, message, names_file = BAD_FILES[case]
    if case == "unreadable image":
        pytest.importorskip("PIL.Image", reason="Pillow reads calibration images")
    folder = tmp_path / "data"
    folder.mkdir()
    path = write(folder)
    with pytest.raises(error) as caught:
        calibration_set(conv if model_name == "conv" else two_inputs, path)
    text = str(caught.value)
    assert "\n" not in text
    assert message in text, text
    if names_file:
        assert path.name in text, text


def test_images_need_a_static_nchw_input(tmp_path: Path) -> None:
    pytest.importorskip("PIL.Image", reason="Pillow reads calibration images")
    model = _save("""
        <ir_version: 8, opset_import: ["" : 17]>
        flat (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }""", tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(OptionError, match=r"a.png: images need an input of static shape \(N, C, H, W\)"):
        calibration_set(model, tmp_path / "a.png")


# --- through quantize ------------------------------------------------------------------------


def test_quantize_uses_the_users_file_and_says_so(digits: Model, tmp_path: Path) -> None:
    from hone.zoo.digits import load_split

    np.save(tmp_path / "digits.npy", load_split().train_images[:32])
    kept, result = quantize(digits, mode="static", fmt="qdq", calib=str(tmp_path / "digits.npy"),
                            measure_speed=False, threads=1)
    # --calib is the older name of --data: its samples are split, half to calibrate, half to judge.
    assert result.calibration.startswith(f"16 calibration samples of 32 samples from {tmp_path / 'digits.npy'}")
    assert result.data_split.startswith("16 calibration / 16 evaluation samples")
    assert result.evaluation.startswith("16 evaluation samples of 32 samples")
    assert result.format == "qdq" and result.accuracy is not None and result.accuracy.passed
    assert not any("synthesized" in note for note in result.notes)
    assert "QuantizeLinear" in {node.op_type for node in kept.ir.graph}


def test_quantize_refuses_a_calibration_file_that_does_not_fit_before_building_anything(
    digits: Model, tmp_path: Path
) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"input 'input' has shape \[4, 8, 8\], the model wants \[batch, 1, 8, 8\] float32") as caught:
        quantize(digits, calib=str(tmp_path / "wrong.npy"), measure_speed=False)
    assert "\n" not in str(caught.value)


def test_quantize_notes_when_it_calibrated_on_synthesized_inputs(conv: Model) -> None:
    kept, result = quantize(conv, mode="static", fmt="qdq", samples=20, measure_speed=False, threads=1,
                            budget="agreement=0")
    assert result.calibration == "64 inputs synthesized from the input specs (weaker than real data)"
    assert "calibrated on synthesized inputs: give real samples with --calib for better scales" in result.notes
    assert result.format == "qdq"
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {node.op_type for node in kept.ir.graph}
