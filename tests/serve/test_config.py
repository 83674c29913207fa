"""BatchConfig's contract, the model repository layout and what `hone serve` accepts as a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_models import RECORDER_TEXT, save_model

from hone.errors import ModelNotFoundError, OptionError, RepositoryError, UnknownModelError
from hone.serve.config import CONFIG_KEYS, BatchConfig, RepositoryEntry, load_repository, resolve_models


def test_the_default_batch_config_batches() -> None:
    config = BatchConfig()
    assert config.batching and config.max_batch_size == 32 and config.priority_levels == 2
    assert not BatchConfig(max_batch_size=1).batching and not BatchConfig(max_batch_size=0).batching


def test_preferred_batch_sizes_are_kept_sorted_and_unique() -> None:
    assert BatchConfig(max_batch_size=16, preferred_batch_sizes=[8, 2, 8]).preferred_batch_sizes == (2, 8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size must be an integer of at least 0 .*0 or 1 turns batching off"),
        ({"max_batch_size": 2.5}, "max_batch_size must be an integer"),
        ({"max_batch_size": True}, "max_batch_size must be an integer"),
        ({"max_queue_delay_ms": -1.0}, "max_queue_delay_ms must be a finite number at least 0"),
        ({"max_queue_delay_ms": float("inf")}, "max_queue_delay_ms must be a finite number"),
        ({"max_queue_size": 0}, "max_queue_size must be an integer of at least 1 .*waiting requests"),
        ({"default_timeout_ms": 0.0}, "default_timeout_ms must be a finite number above 0"),
        ({"priority_levels": 0}, "priority_levels must be an integer of at least 1 .*priority 0 is the highest"),
        ({"preferred_batch_sizes": (64,)}, r"from 1 to max_batch_size \(32\), got 64"),
        ({"preferred_batch_sizes": (0,)}, r"from 1 to max_batch_size \(32\), got 0"),
        ({"preferred_batch_sizes": "8"}, "must be a list of batch sizes"),
        ({"max_batch_size": 1, "preferred_batch_sizes": (1,)}, "need batching on"),
        ({"idle_dispatch": "no"}, "idle_dispatch must be true or false"),
    ],
)
def test_batch_config_values_outside_the_contract_are_refused(options: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        BatchConfig(**options)


def make_repository(root: Path, layout: dict[str, dict]) -> Path:
    """``layout``: model name -> {"versions": [...], "config": {...} (optional)}."""
    root.mkdir(parents=True, exist_ok=True)
    for name, spec in layout.items():
        for version in spec.get("versions", []):
            save_model(RECORDER_TEXT, root / name / str(version) / "model.onnx")
        (root / name).mkdir(exist_ok=True)
        if "config" in spec:
            (root / name / "config.json").write_text(json.dumps(spec["config"]))
    return root


def test_a_repository_lists_every_version_with_its_models_config(tmp_path: Path) -> None:
    root = make_repository(
        tmp_path / "repo",
        {
            "alpha": {
                "versions": [1, 10, 2],
                "config": {"max_batch_size": 8, "preferred_batch_sizes": [4], "instances": 2},
            },
            "beta": {"versions": [3]},
        },
    )
    (root / "alpha" / "notes").mkdir()  # not a number: not a version
    (root / ".hidden").mkdir()
    entries = load_repository(root, batch=BatchConfig(max_queue_delay_ms=5.0))
    versions = [(entry.name, entry.version) for entry in entries]
    assert versions == [("alpha", "1"), ("alpha", "2"), ("alpha", "10"), ("beta", "3")]
    alpha, beta = entries[0], entries[-1]
    assert alpha.batch == BatchConfig(max_batch_size=8, max_queue_delay_ms=5.0, preferred_batch_sizes=(4,))
    assert alpha.instances == 2 and alpha.source == str(root / "alpha" / "1" / "model.onnx")
    assert beta.batch == BatchConfig(max_queue_delay_ms=5.0) and beta.instances == 1


def test_an_unknown_config_key_names_the_file_and_the_allowed_keys(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "repo", {"alpha": {"versions": [1], "config": {"max_batch": 8}}})
    with pytest.raises(RepositoryError) as refused:
        load_repository(root)
    message = str(refused.value)
    assert str(root / "alpha" / "config.json") in message and "'max_batch'" in message
    assert all(key in message for key in CONFIG_KEYS) and "\n" not in message


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ('{"max_batch_size": -3}', "config.json: max_batch_size must be an integer of at least 0"),
        ('{"instances": 0}', "config.json: instances must be an integer of at least 1"),
        ('{"max_batch_size": ', "config.json is not readable JSON"),
        ("[1, 2]", "config.json must hold a JSON object with keys from: max_batch_size"),
    ],
    ids=["bad-value", "bad-instances", "broken-json", "not-an-object"],
)
def test_a_bad_config_file_is_named_in_the_error(tmp_path: Path, config_text: str, message: str) -> None:
    root = make_repository(tmp_path / "repo", {"alpha": {"versions": [1]}})
    (root / "alpha" / "config.json").write_text(config_text)
    with pytest.raises(RepositoryError, match=message):
        load_repository(root)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "holds no model folders"),
        ({"alpha": {}}, "has no numbered version folder"),
        ({"bad name": {"versions": [1]}}, "'bad name' .* is not a valid model name.*rename the folder"),
    ],
    ids=["empty", "no-versions", "bad-name"],
)
def test_a_repository_that_breaks_the_layout_says_what_is_expected(
    tmp_path: Path, layout: dict, message: str
) -> None:
    root = make_repository(tmp_path / "repo", layout)
    with pytest.raises(RepositoryError, match=message):
        load_repository(root)


def test_a_version_folder_without_its_model_file_is_refused(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "repo", {"alpha": {"versions": [1]}})
    (root / "alpha" / "2").mkdir()
    with pytest.raises(RepositoryError, match=r"version folder .*alpha/2 has no model.onnx"):
        load_repository(root)


def test_a_model_folder_given_as_the_repository_points_at_its_parent(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "repo", {"alpha": {"versions": [1]}})
    with pytest.raises(RepositoryError, match="one model's folder; give its parent"):
        load_repository(root / "alpha")


def test_a_single_onnx_file_is_served_under_its_stem_or_the_given_name(tmp_path: Path) -> None:
    path = save_model(RECORDER_TEXT, tmp_path / "my-model.onnx")
    config = BatchConfig(max_batch_size=4)
    expected = RepositoryEntry("my-model", "1", str(path), config, 3)
    assert resolve_models(path, batch=config, instances=3) == [expected]
    (entry,) = resolve_models(str(path), name="scorer")
    assert (entry.name, entry.version, entry.batch) == ("scorer", "1", BatchConfig())
    assert entry.load().name == "scorer"


def test_a_zoo_name_is_served_under_that_name_without_loading_it() -> None:
    (entry,) = resolve_models("digits_cnn")
    assert (entry.name, entry.source, entry.version) == ("digits_cnn", "digits_cnn", "1")


def test_a_repository_folder_is_resolved_to_its_entries(tmp_path: Path) -> None:
    root = make_repository(tmp_path / "repo", {"alpha": {"versions": [1]}})
    assert [e.name for e in resolve_models(root)] == ["alpha"]
    with pytest.raises(OptionError, match="--name names a single model"):
        resolve_models(root, name="other")


@pytest.mark.parametrize(
    ("source", "name", "error", "message"),
    [
        ("missing/model.onnx", None, ModelNotFoundError, "no such file or folder"),
        ("not-a-zoo-model", None, UnknownModelError, "neither an .onnx file, a repository folder nor a zoo model"),
        ("digits_cnn", "has/slash", OptionError, "not a valid model name.*give --name NAME"),
    ],
)
def test_what_cannot_be_served_is_refused_with_what_to_do(
    source: str, name: str | None, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        resolve_models(source, name=name)


def test_instances_outside_the_contract_are_refused() -> None:
    with pytest.raises(OptionError, match="instances must be an integer of at least 1"):
        resolve_models("digits_cnn", instances=0)
