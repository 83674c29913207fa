"""PyTorch factories (``file.py:factory`` + ``--input-shape``) become Models with a dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hone
from hone.errors import FactoryError, ModelNotFoundError, OptionError, ShapeError
from hone.runtime import Session
from hone.torch_export import parse_shapes
from hone.verify import run_torch

FACTORIES = '''
import torch

class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

def make():
    return Small()

def broken():
    raise RuntimeError("weights file not found")

def not_a_module():
    return 42
'''


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(FACTORIES)
    return path


def test_a_factory_exports_with_a_dynamic_batch_and_matches_eager(factory_file: Path) -> None:
    model = hone.load(f"{factory_file}:make", input_shapes=["1,3,8,8"])
    assert model.source_kind == "torch"
    assert model.inputs[0].shape == ("batch", 3, 8, 8)
    assert "BatchNormalization" in {n.op_type for n in model.ir.graph}
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    (onnx_out,) = Session(model).run({"input": x})
    (eager_out,) = run_torch(model, {"input": x})
    assert onnx_out.shape == (4, 5)
    np.testing.assert_allclose(onnx_out, eager_out, rtol=1e-4, atol=1e-5)


def test_a_factory_that_raises_is_reported_with_its_message(factory_file: Path) -> None:
    with pytest.raises(FactoryError, match="raised RuntimeError: weights file not found"):
        hone.load(f"{factory_file}:broken", input_shapes=["1,3,8,8"])


def test_a_factory_returning_something_else_is_refused(factory_file: Path) -> None:
    with pytest.raises(FactoryError, match="returned int, not a torch.nn.Module"):
        hone.load(f"{factory_file}:not_a_module", input_shapes=["1,3,8,8"])


def test_a_missing_factory_name_is_refused(factory_file: Path) -> None:
    with pytest.raises(FactoryError, match="no callable 'nothing'"):
        hone.load(f"{factory_file}:nothing", input_shapes=["1,3,8,8"])


def test_a_factory_file_that_does_not_import_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("import not_a_real_package_xyz\n")
    with pytest.raises(FactoryError, match="importing .* raised ModuleNotFoundError"):
        hone.load(f"{path}:make", input_shapes=["1,3,8,8"])


def test_an_input_shape_that_does_not_fit_is_a_shape_error(factory_file: Path) -> None:
    with pytest.raises(ShapeError, match="does not accept input shape 1x3x9x9"):
        hone.load(f"{factory_file}:make", input_shapes=["1,3,9,9"])


def test_a_factory_needs_an_input_shape(factory_file: Path) -> None:
    with pytest.raises(OptionError, match="--input-shape"):
        hone.load(f"{factory_file}:make")


def test_a_missing_factory_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        hone.load(f"{tmp_path / 'gone.py'}:make", input_shapes=["1,3"])


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["1,3,224,224"], [(None, (1, 3, 224, 224))]),
        (["ids:2,128", "mask:2,128"], [("ids", (2, 128)), ("mask", (2, 128))]),
    ],
)
def test_input_shapes_parse_with_optional_names(texts: list[str], expected: list[object]) -> None:
    assert parse_shapes(texts) == expected


@pytest.mark.parametrize("text", ["1,a,3", "0,3", ""])
def test_malformed_input_shapes_are_option_errors(text: str) -> None:
    with pytest.raises(OptionError):
        parse_shapes([text])
