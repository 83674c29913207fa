"""Serving configuration: the batcher's knobs and the model repository layout.

``BatchConfig`` holds the dynamic batcher's knobs, checked when given, each message stating the
contract. A model repository is Triton's layout with a JSON config instead of protobuf text::

    repository/
      resnet/                  one folder per model; its name is the served model name
        config.json            optional: max_batch_size, max_queue_delay_ms, preferred_batch_sizes,
                               max_queue_size, default_timeout_ms, priority_levels, idle_dispatch,
                               instances, session (onnxruntime's options:
                               hone.session_options, as ``hone tune`` writes them)
        1/model.onnx           numbered version folders, each holding model.onnx
        2/model.onnx

``resolve_models`` turns what ``hone serve`` was given (a repository folder, an .onnx file or a zoo
name) into ``RepositoryEntry`` items; keys in a model's ``config.json`` override the defaults the
caller passes (the command line's flags).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hone import zoo
from hone.errors import InputError, ModelNotFoundError, OptionError, RepositoryError, UnknownModelError
from hone.model import Model
from hone.session_options import SessionOptions
from hone.sources import load

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
BATCH_CONFIG_KEYS = (
    "max_batch_size",
    "max_queue_delay_ms",
    "preferred_batch_sizes",
    "max_queue_size",
    "default_timeout_ms",
    "priority_levels",
    "idle_dispatch",
)
CONFIG_KEYS = (*BATCH_CONFIG_KEYS, "instances", "session")
# Served names travel in URL paths (/v2/models/{name}); keep them to characters that need no escaping.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class BatchConfig:
    """The dynamic batcher's knobs (see ``hone.serve.batcher``).

    ``max_batch_size`` counts samples (rows along the batch dim), 0 or 1 turns batching off;
    ``max_queue_size`` counts requests waiting per priority level, whatever their size; priority 0 is
    the highest of ``priority_levels``. ``default_timeout_ms`` bounds the time a request may wait in
    the queue (None: no bound). ``idle_dispatch`` sends a lone request on an idle model at once
    instead of waiting ``max_queue_delay_ms`` for company (false: always wait, as Triton does).
    """

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    default_timeout_ms: float | None = None
    priority_levels: int = 2
    idle_dispatch: bool = True

    def __post_init__(self) -> None:
        _check_int("max_batch_size", self.max_batch_size, minimum=0, note="0 or 1 turns batching off")
        _check_number("max_queue_delay_ms", self.max_queue_delay_ms, minimum=0.0, inclusive=True)
        _check_int("max_queue_size", self.max_queue_size, minimum=1, note="it counts waiting requests")
        if self.default_timeout_ms is not None:
            _check_number("default_timeout_ms", self.default_timeout_ms, minimum=0.0, inclusive=False)
        _check_int("priority_levels", self.priority_levels, minimum=1, note="priority 0 is the highest")
        if not isinstance(self.idle_dispatch, bool):
            raise OptionError(f"idle_dispatch must be true or false, got {self.idle_dispatch!r}")
        object.__setattr__(self, "preferred_batch_sizes", self._checked_preferred_sizes())

    @classmethod
    def from_flags(cls, max_batch_size: int | None, max_queue_delay_ms: float | None) -> BatchConfig:
        """The command line's two knobs over the defaults (None: the default)."""
        knobs: dict[str, float | int] = {}
        if max_batch_size is not None:
            knobs["max_batch_size"] = max_batch_size
        if max_queue_delay_ms is not None:
            knobs["max_queue_delay_ms"] = max_queue_delay_ms
        return cls(**knobs)  # type: ignore[arg-type]

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def _checked_preferred_sizes(self) -> tuple[int, ...]:
        sizes = self.preferred_batch_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (tuple, list)):
            raise OptionError(f"preferred_batch_sizes must be a list of batch sizes, got {sizes!r}")
        if sizes and not self.batching:
            raise OptionError(
                f"preferred_batch_sizes {list(sizes)} need batching on; set max_batch_size above 1 "
                f"(it is {self.max_batch_size})"
            )
        for size in sizes:
            valid = isinstance(size, int) and not isinstance(size, bool)
            if not valid or not 1 <= size <= self.max_batch_size:
                raise OptionError(
                    f"preferred_batch_sizes must be integers from 1 to max_batch_size "
                    f"({self.max_batch_size}), got {size!r}"
                )
        return tuple(sorted(set(sizes)))


@dataclass(frozen=True)
class RepositoryEntry:
    """One model version to serve: where it comes from and how to batch and instance it."""

    name: str
    version: str
    source: str  # the path of an .onnx file, or a zoo name
    batch: BatchConfig
    instances: int = 1
    data: str | None = None  # --data: samples for the warm-up and the SLO probe
    dims: tuple[tuple[str, int], ...] = ()  # --dim values
    session: SessionOptions | None = None  # config.json's "session": onnxruntime's options

    def load(self) -> Model:
        """The model, named as it is served, with its samples attached (errors as ``hone.load`` and
        ``hone.data.attach`` give them: one that cannot run on invented inputs is refused)."""
        from hone.data import attach

        return attach(replace(load(self.source), name=self.name), self.data, dict(self.dims))


def resolve_models(
    model_or_repository: str | os.PathLike[str],
    name: str | None = None,
    *,
    batch: BatchConfig | None = None,
    instances: int = 1,
    data: str | None = None,
    dims: dict[str, int] | None = None,
) -> list[RepositoryEntry]:
    """What to serve: every version in a repository folder, or one model (.onnx file or zoo name).

    A single model is served under ``name``, else its zoo name or file stem, as version "1".
    ``batch`` and ``instances`` are the defaults a repository model's ``config.json`` overrides;
    ``data`` and ``dims`` (``--data``, ``--dim``) apply to a single model only.
    """
    _check_int("instances", instances, minimum=1, note="each instance is one onnxruntime session")
    defaults = batch or BatchConfig()
    text = str(model_or_repository)
    path = Path(text).expanduser()
    if path.is_dir():
        if name is not None:
            raise OptionError(
                f"--name names a single model, but {text} is a repository folder whose models are "
                "named by their subfolders; drop --name or give one .onnx file"
            )
        if data is not None or dims:
            raise OptionError(
                f"--data and --dim apply to a single model; {text} is a repository folder: serve "
                "one model of it, or let each warm up on inputs invented from its graph"
            )
        return load_repository(path, batch=defaults, instances=instances)
    if path.is_file():
        source, served_name = str(path), name or path.stem
    elif text in zoo.names():
        source, served_name = text, name or text
    elif path.suffix.lower() == ".onnx" or os.sep in text:
        raise ModelNotFoundError(f"{text}: no such file or folder; check the path", source=text)
    else:
        raise UnknownModelError(
            f"{text!r} is neither an .onnx file, a repository folder nor a zoo model; zoo models "
            f"are: {', '.join(zoo.names())}",
            source=text,
        )
    origin = "--name" if name else text
    _check_model_name(served_name, origin=origin, fix="give --name NAME", error=OptionError)
    return [
        RepositoryEntry(
            served_name, "1", source, defaults, instances, data, tuple(sorted((dims or {}).items()))
        )
    ]


def served_name(name: str) -> str:
    """A model name ``hone serve`` accepts (letters, digits, ``_ . -``, starting with a letter or digit)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip("_.-")
    return cleaned or "model"


def load_repository(
    path: str | os.PathLike[str],
    *,
    batch: BatchConfig | None = None,
    instances: int = 1,
) -> list[RepositoryEntry]:
    """Every version of every model in a repository folder, by model name then version number."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a folder", path=str(root))
    if _version_folders(root):
        raise RepositoryError(
            f"{root} holds version folders itself, so it is one model's folder; give its parent "
            f"folder (the repository: <repository>/<model>/<version>/{MODEL_FILE})",
            path=str(root),
        )
    model_folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_folders:
        raise RepositoryError(
            f"model repository {root} holds no model folders; expected "
            f"<repository>/<model>/<version>/{MODEL_FILE}",
            path=str(root),
        )
    entries: list[RepositoryEntry] = []
    skipped: list[str] = []
    for folder in model_folders:
        try:
            entries.extend(_model_entries(folder, batch or BatchConfig(), instances))
        except RepositoryError as exc:  # one bad folder never takes the others down
            logger.warning("skipping model folder %r: %s", folder.name, exc)
            skipped.append(f"{folder.name} ({exc})")
    if not entries:
        raise RepositoryError(
            f"model repository {root} holds no servable model: {'; '.join(skipped)}", path=str(root)
        )
    logger.info("repository %s: %d model(s), %d version(s)", root, len(model_folders), len(entries))
    return entries


def _model_entries(folder: Path, defaults: BatchConfig, instances: int) -> list[RepositoryEntry]:
    _check_model_name(folder.name, origin=str(folder), fix="rename the folder", error=RepositoryError)
    versions = _version_folders(folder)
    if not versions:
        raise RepositoryError(
            f"model folder {folder} has no numbered version folder; put the model in "
            f"{folder / '1' / MODEL_FILE}",
            path=str(folder),
        )
    batch, instances, session = _read_config(folder / CONFIG_FILE, defaults, instances)
    entries = []
    for version in versions:
        model_file = version / MODEL_FILE
        if not model_file.is_file():
            raise RepositoryError(
                f"version folder {version} has no {MODEL_FILE}; add it or remove the folder",
                path=str(version),
            )
        entries.append(
            RepositoryEntry(folder.name, version.name, str(model_file), batch, instances, session=session)
        )
    return entries


def _version_folders(folder: Path) -> list[Path]:
    """Subfolders named by a non-negative integer, in numeric order."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )


def _read_config(
    path: Path, defaults: BatchConfig, instances: int
) -> tuple[BatchConfig, int, SessionOptions | None]:
    """The model's BatchConfig, instance count and session options: ``config.json`` over the defaults."""
    if not path.is_file():
        return defaults, instances, None
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RepositoryError(f"{path} is not readable JSON ({exc}); fix the file", path=str(path)) from exc
    if not isinstance(raw, dict):
        raise RepositoryError(
            f"{path} must hold a JSON object with keys from: {', '.join(CONFIG_KEYS)}", path=str(path)
        )
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise RepositoryError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(CONFIG_KEYS)}",
            path=str(path),
            keys=unknown,
        )
    overrides = {key: raw[key] for key in BATCH_CONFIG_KEYS if key in raw}
    if isinstance(overrides.get("preferred_batch_sizes"), list):
        overrides["preferred_batch_sizes"] = tuple(overrides["preferred_batch_sizes"])
    try:
        batch = replace(defaults, **overrides)
        count = raw.get("instances", instances)
        _check_int("instances", count, minimum=1, note="each instance is one onnxruntime session")
        session = SessionOptions.from_json(raw["session"], "session") if "session" in raw else None
    except OptionError as exc:
        raise RepositoryError(f"{path}: {exc}", path=str(path)) from exc
    return batch, count, session


def _check_model_name(name: str, *, origin: str, fix: str, error: type[InputError]) -> None:
    if not _MODEL_NAME.fullmatch(name):
        raise error(
            f"{name!r} (from {origin}) is not a valid model name: it may hold letters, digits, '_', "
            f"'.' and '-', starting with a letter or digit; {fix}",
            name=name,
        )


def _check_int(name: str, value: object, *, minimum: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer of at least {minimum} ({note}), got {value!r}")


def _check_number(name: str, value: object, *, minimum: float, inclusive: bool) -> None:
    valid = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= minimum if inclusive else value > minimum)
    )
    if not valid:
        bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"
        raise OptionError(f"{name} must be a finite number {bound} (milliseconds), got {value!r}")
