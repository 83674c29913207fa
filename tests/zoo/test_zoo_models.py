"""Behaviour of the built-in models: deterministic builds, torchvision layouts, real accuracy, real embeddings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hone.zoo import digits, minilm, resnet
from hone.zoo.types import ZooModel
from hone.zoo.digits import DIGITS_CNN
from hone.zoo.minilm import MINILM, MINILM_EAGER
from hone.zoo.resnet import RESNET18, RESNET50

ALL_MODELS = (RESNET18, RESNET50, DIGITS_CNN, MINILM, MINILM_EAGER)
TORCHVISION_PARAMETER_COUNTS = {"resnet18": 11_689_512, "resnet50": 25_557_032}
TORCHVISION_STATE_DICT_SIZES = {"resnet18": 122, "resnet50": 320}
SEQUENCE_FOR_TESTS = 16


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for this module, so each model is trained or calibrated once; env restored afterwards."""
    path = tmp_path_factory.mktemp("hone-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_CACHE_DIR", str(path))
        yield path


def seeded_inputs(model: ZooModel, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs from the model's specs: uniform in value_range for ints, standard normal for floats."""
    generator = torch.Generator().manual_seed(seed)
    dims = {"batch": batch, **model.default_dims, "sequence": SEQUENCE_FOR_TESTS}
    tensors = []
    for spec in model.inputs:
        shape = tuple(dims[d] if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype == "int64":
            low, high = spec.value_range
            tensors.append(torch.randint(int(low), int(high), shape, generator=generator, dtype=torch.int64))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def run(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        outputs = module(*inputs)
    return outputs if isinstance(outputs, tuple) else (outputs,)


def output_hash(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    digest = hashlib.sha256()
    for output in run(module, inputs):
        digest.update(output.numpy().tobytes())
    return digest.hexdigest()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.name)
def test_each_zoo_model_returns_one_finite_tensor_per_output_name_from_two_identical_builds(
    model: ZooModel, zoo_cache: Path
) -> None:
    inputs = seeded_inputs(model)
    first, second = model.build_module(), model.build_module()
    outputs = run(first, inputs)

    assert not first.training
    assert len(outputs) == len(model.output_names)
    assert all(output.shape[0] == 2 and torch.isfinite(output).all() for output in outputs)
    assert output_hash(first, inputs) == output_hash(second, inputs)


@pytest.mark.slow
def test_resnet18_rebuilds_bit_identical_weights_after_its_cache_is_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HONE_CACHE_DIR", str(tmp_path))
    inputs = seeded_inputs(RESNET18)
    first_hash = output_hash(RESNET18.build_module(), inputs)
    cached = resnet.weights_path("resnet18")
    assert cached.is_relative_to(tmp_path) and cached.exists()

    cached.unlink()
    second_hash = output_hash(RESNET18.build_module(), inputs)

    assert cached.exists()
    assert second_hash == first_hash


@pytest.mark.slow
def test_digits_cnn_retrains_to_bit_identical_weights_in_an_empty_cache(
    zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = seeded_inputs(DIGITS_CNN)
    shared_hash = output_hash(DIGITS_CNN.build_module(), inputs)

    monkeypatch.setenv("HONE_CACHE_DIR", str(tmp_path))
    assert not digits.weights_path().exists()
    retrained_hash = output_hash(DIGITS_CNN.build_module(), inputs)

    assert digits.weights_path().exists()
    assert retrained_hash == shared_hash


@pytest.mark.slow
@pytest.mark.parametrize("model", (RESNET18, RESNET50), ids=lambda m: m.name)
def test_resnet_state_dict_uses_torchvision_names_and_sizes(model: ZooModel, zoo_cache: Path) -> None:
    module = model.build_module()
    state_dict = module.state_dict()
    parameter_count = sum(p.numel() for p in module.parameters())

    assert parameter_count == TORCHVISION_PARAMETER_COUNTS[model.name]
    assert len(state_dict) == TORCHVISION_STATE_DICT_SIZES[model.name]
    for key in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias",
                "fc.weight", "fc.bias"):
        assert key in state_dict, key
    assert state_dict["fc.weight"].shape == (1000, 512 if model.name == "resnet18" else 2048)
    assert ("layer1.0.conv3.weight" in state_dict) == (model.name == "resnet50")


@pytest.mark.slow
@pytest.mark.parametrize("model", (RESNET18, RESNET50), ids=lambda m: m.name)
def test_resnet_batchnorms_hold_nontrivial_statistics_and_affine_parameters(model: ZooModel, zoo_cache: Path) -> None:
    batchnorms = [m for m in model.build_module().modules() if isinstance(m, torch.nn.BatchNorm2d)]

    assert len(batchnorms) == (20 if model.name == "resnet18" else 53)
    for bn in batchnorms:
        # Folding any of these into its Conv must be a real change: stats and affine are not identity.
        assert bn.running_mean.abs().max() > 0.1
        assert (bn.running_var - 1.0).abs().max() > 0.1
        assert (bn.running_var > 0).all()
        assert (bn.weight - 1.0).abs().max() > 0.1
        assert bn.bias.abs().max() > 0.05
    all_means = torch.cat([bn.running_mean for bn in batchnorms])
    all_vars = torch.cat([bn.running_var for bn in batchnorms])
    assert all_means.abs().median() > 0.1
    assert (all_vars - 1.0).abs().median() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("model", (RESNET18, RESNET50), ids=lambda m: m.name)
def test_resnet_logits_are_finite_moderate_and_depend_on_the_input(model: ZooModel, zoo_cache: Path) -> None:
    logits = run(model.build_module(), seeded_inputs(model, batch=2))[0]

    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    assert logits.abs().max() < 50
    assert logits.std(dim=1).min() > 0.1
    assert (logits[0] - logits[1]).abs().max() > 1e-3


@pytest.mark.slow
def test_digits_cnn_reaches_95_percent_top1_on_the_held_out_split(zoo_cache: Path) -> None:
    eval_set = DIGITS_CNN.eval_data()
    images = eval_set.inputs["input"]
    logits = run(DIGITS_CNN.build_module(), (torch.from_numpy(images),))[0]
    accuracy = float((logits.argmax(dim=1).numpy() == eval_set.labels).mean())
    recorded = json.loads(digits.record_path().read_text())

    assert eval_set.metric == "top1"
    assert images.dtype == np.float32 and images.shape == (450, 1, 8, 8)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert eval_set.labels.dtype == np.int64 and set(eval_set.labels.tolist()) == set(range(10))
    assert accuracy >= 0.95
    assert recorded["heldout_top1"] == pytest.approx(accuracy)
    assert digits.heldout_accuracy() == pytest.approx(accuracy)


@pytest.mark.slow
def test_digits_cnn_has_batchnorm_after_every_conv(zoo_cache: Path) -> None:
    module = DIGITS_CNN.build_module()
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    batchnorms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    assert len(convs) == len(batchnorms) == 3
    assert all(bn.running_mean.abs().max() > 0.01 for bn in batchnorms)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "attention"), ((MINILM, "sdpa"), (MINILM_EAGER, "eager")), ids=("sdpa", "eager"))
def test_minilm_embeddings_match_sentence_transformers(model: ZooModel, attention: str, zoo_cache: Path) -> None:
    eval_set = model.eval_data()
    module = model.build_module()
    inputs = tuple(torch.from_numpy(eval_set.inputs[spec.name]) for spec in model.inputs)
    last_hidden_state, sentence_embedding = run(module, inputs)

    assert model.provenance["attention"] == attention
    assert module.encoder.config._attn_implementation == attention
    assert eval_set.metric == "cosine" and eval_set.output_name == "sentence_embedding"
    assert eval_set.reference.shape == (len(minilm.EVAL_SENTENCES), 384)
    assert last_hidden_state.shape == (*inputs[0].shape, 384)
    assert cosines(sentence_embedding.numpy(), eval_set.reference).min() > 0.9999
    assert np.allclose(np.linalg.norm(sentence_embedding.numpy(), axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_minilm_sentence_embedding_ignores_padding(zoo_cache: Path) -> None:
    sentences = ["Short one.", "A much longer sentence that forces the short one to be padded heavily."]
    module = MINILM.build_module()
    batch = minilm.tokenize(sentences)
    alone = minilm.tokenize(sentences[:1])
    batched_embedding = run(module, tuple(torch.from_numpy(batch[s.name]) for s in MINILM.inputs))[1]
    alone_embedding = run(module, tuple(torch.from_numpy(alone[s.name]) for s in MINILM.inputs))[1]

    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]
    assert cosines(batched_embedding[:1].numpy(), alone_embedding.numpy())[0] > 0.99999


def test_minilm_tokenize_pads_to_the_longest_and_truncates_to_max_length() -> None:
    tokens = minilm.tokenize(["hello world", "the quick brown fox jumps over the lazy dog"], max_length=8)

    assert set(tokens) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(array.dtype == np.int64 and array.shape == (2, 8) for array in tokens.values())
    assert tokens["input_ids"][0].tolist()[:4] == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert tokens["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tokens["input_ids"][1, -1] == 102  # truncated, still ends with [SEP]
    assert not tokens["token_type_ids"].any()


def test_zoo_models_declare_the_agreed_specs() -> None:
    assert [m.name for m in ALL_MODELS] == ["resnet18", "resnet50", "digits_cnn", "minilm", "minilm-eager"]
    assert RESNET18.inputs[0].shape == ("batch", 3, 224, 224) and RESNET18.eval_data is None
    assert DIGITS_CNN.inputs[0].shape == ("batch", 1, 8, 8) and DIGITS_CNN.eval_data is not None
    assert [s.name for s in MINILM.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert MINILM.output_names == ("last_hidden_state", "sentence_embedding")
    assert MINILM.default_dims == {"sequence": 128}
    assert RESNET50.provenance["seed"] == "0" and RESNET50.provenance["architecture"] == "torchvision resnet50"
