"""The served models: load, warm up, look up by name and version, unload, drain.

``ModelRegistry`` owns one ``ServedModel`` (runner + batcher + metrics observer) per model version
and its state, in Triton's words: LOADING (sessions being built and warmed up), READY, UNLOADING
(draining its accepted requests), UNAVAILABLE (unloaded, or its load failed: ``reason`` says why).
The protocol layers only look models up and submit; the repository routes call ``load``/``unload``.

``resolve`` is called again on every ``load`` and ``index``, so a model folder added to a
repository after start-up can be loaded, and a changed one reloaded, without a restart. A reload
builds and warms every new version first and swaps only when all are ready (the old versions then
drain); when one fails, the old versions keep serving and the error is raised.

Readiness: the server is ready once ``start`` loaded every model, while it accepts requests and
every version not unloaded on purpose is READY. ``begin_shutdown`` makes every new request a 503
(``ServerShuttingDownError``); ``stop`` then answers every accepted request and returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

from hone.errors import (
    HoneError,
    InferenceInputError,
    ModelControlError,
    ModelNotReadyError,
    OptionError,
    ServedModelNotFoundError,
    ServerShuttingDownError,
)
from hone.serve.batcher import Batcher
from hone.serve.config import RepositoryEntry
from hone.serve.metrics import ModelObserver, ServeMetrics, StatsSource
from hone.serve.model_runner import ModelRunner

logger = logging.getLogger(__name__)

Resolver = Callable[[], Sequence[RepositoryEntry]]
# Triton's names: "none" serves what the repository held at start-up and refuses load/unload;
# "explicit" allows them (POST .../load, .../unload; gRPC RepositoryModelLoad/Unload).
ModelControlMode = Literal["none", "explicit"]
MODEL_CONTROL_MODES: tuple[ModelControlMode, ...] = get_args(ModelControlMode)


def parse_model_control(value: str, what: str = "model control mode") -> ModelControlMode:
    """``value`` as a ModelControlMode, or an OptionError naming ``what`` and the modes."""
    for mode in MODEL_CONTROL_MODES:
        if value == mode:
            return mode
    raise OptionError(f"{what} {value!r} is unknown; choose one of: {', '.join(MODEL_CONTROL_MODES)}")


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class ServedModel:
    """One model version being served."""

    entry: RepositoryEntry
    runner: ModelRunner
    batcher: Batcher
    observer: ModelObserver

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def version(self) -> str:
        return self.entry.version

    @property
    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.runner.outputs]

    def priority_level(self, priority: int) -> int:
        """The batcher's level (0 highest) of a Triton priority (0: default, the lowest; 1: highest)."""
        levels = self.entry.batch.priority_levels
        if priority == 0:
            return levels - 1
        if priority > levels:
            raise InferenceInputError(
                f"priority must be 0 (the default) or from 1 (highest) to {levels} for model "
                f"{self.name!r}, got {priority}",
                model=self.name,
            )
        return priority - 1


@dataclass
class _Slot:
    entry: RepositoryEntry
    state: ModelState
    reason: str = ""
    served: ServedModel | None = None
    unloaded: bool = False  # by request: readiness does not wait for it


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str


class ModelRegistry:
    """Every model version of one server; methods run on the server's event loop."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        metrics: ServeMetrics | None = None,
        model_control: ModelControlMode = "none",
    ) -> None:
        self.model_control = parse_model_control(model_control)  # a string from anywhere: checked
        self._resolve = resolve
        self.metrics = metrics or ServeMetrics()
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = asyncio.Lock()
        self._started = False
        self.accepting = True

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load, warm up and start every model ``resolve`` gives; the first failure is raised."""
        async with self._lock:
            for entry in self._resolve():
                await self._load_entry(entry)
        self._started = True

    def begin_shutdown(self) -> None:
        """From now on every new request is refused with 503; accepted ones still run."""
        if self.accepting:
            logger.info("shutting down: no new requests; answering the accepted ones")
        self.accepting = False

    async def stop(self) -> None:
        """Refuse new requests, answer every accepted one, release the sessions."""
        self.begin_shutdown()
        served = [slot.served for slot in self._slots.values() if slot.served is not None]
        await asyncio.gather(*(model.batcher.stop() for model in served))

    @property
    def ready(self) -> bool:
        return (
            self._started
            and self.accepting
            and all(slot.state == ModelState.READY or slot.unloaded for slot in self._slots.values())
        )

    def check_accepting(self) -> None:
        if not self.accepting:
            raise ServerShuttingDownError(
                "the server is shutting down and takes no new requests; retry on another replica"
            )

    # -- look-up ---------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The READY model version (no version: the highest READY one), or a 404/503 error."""
        slots = [slot for (model, _), slot in self._slots.items() if model == name]
        if not slots:
            raise ServedModelNotFoundError(
                f"no model named {name!r} is served; served models: {', '.join(self.names()) or 'none'}",
                model=name,
            )
        if version is not None:
            slot = self._slots.get((name, version))
            if slot is None:
                raise ServedModelNotFoundError(
                    f"model {name!r} has no version {version!r}; its versions: "
                    f"{', '.join(self._versions(name, ready_only=False))}",
                    model=name,
                    version=version,
                )
            return self._ready(slot)
        ready = [slot for slot in slots if slot.state == ModelState.READY and slot.served is not None]
        if not ready:
            return self._ready(max(slots, key=lambda slot: _version_key(slot.entry.version)))
        return self._ready(max(ready, key=lambda slot: _version_key(slot.entry.version)))

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._slots})

    def versions(self, name: str) -> list[str]:
        """The READY versions of a model, in version order."""
        return self._versions(name, ready_only=True)

    def served(self) -> list[ServedModel]:
        """Every READY model version, by name then version."""
        return [
            slot.served
            for _, slot in self._ordered()
            if slot.state == ModelState.READY and slot.served is not None
        ]

    def statistics_targets(self, name: str | None = None, version: str | None = None) -> list[ServedModel]:
        """The versions a statistics request is about: all (no name), one model's, or one version."""
        if not name:
            return self.served()
        if version:
            return [self.get(name, version)]
        self.get(name)  # 404 unknown, 503 no version ready
        return [served for served in self.served() if served.name == name]

    # -- repository ------------------------------------------------------------------------------

    def index(self) -> list[IndexEntry]:
        """Every model version of the repository (served or not), with its state."""
        try:
            for entry in self._resolve():
                key = (entry.name, entry.version)
                if key not in self._slots:
                    self._slots[key] = _Slot(entry, ModelState.UNAVAILABLE, "not loaded", unloaded=True)
        except HoneError as exc:
            logger.warning("repository index: %s", exc)
        return [
            IndexEntry(name, version, slot.state, slot.reason) for (name, version), slot in self._ordered()
        ]

    def check_model_control(self, action: str) -> None:
        """Refuse repository load/unload unless the server was started with explicit model control."""
        if self.model_control != "explicit":
            raise ModelControlError(
                f"repository {action} is off on this server: start hone serve with --model-control-mode "
                "explicit to allow it (and --token to require a token for it)",
                action=action,
            )

    async def load(self, name: str) -> None:
        """(Re)load every version of ``name`` the repository holds now; older ones are unloaded."""
        self.check_model_control("load")
        self.check_accepting()
        async with self._lock:
            entries = [entry for entry in self._resolve() if entry.name == name]
            if not entries:
                raise ServedModelNotFoundError(
                    f"the model repository has no model {name!r}; it holds: "
                    f"{', '.join(sorted({e.name for e in self._resolve()})) or 'nothing'}",
                    model=name,
                )
            served_before = any(
                model == name and slot.served is not None for (model, _), slot in self._slots.items()
            )
            if not served_before:
                await self._unload_name(name)
                for entry in entries:
                    await self._load_entry(entry)
                return
            # A reload: build and warm every new version first; swap only when all of them are ready,
            # so a corrupt file leaves the old versions serving.
            staged: list[ServedModel] = []
            try:
                for entry in entries:
                    staged.append(await self._build(entry))
            except Exception as exc:
                await asyncio.gather(*(model.batcher.stop() for model in staged))
                for (model_name, version), slot in self._slots.items():  # the metrics follow the old again
                    if model_name == name and slot.served is not None:
                        self.metrics.observe(model_name, version, _stats_of(slot.served.batcher))
                logger.warning(
                    "%r: the reload failed, the versions loaded before keep serving: %s", name, exc
                )
                raise
            old = [(key, slot) for key, slot in self._slots.items() if key[0] == name]
            for model in staged:
                self._slots[(model.entry.name, model.entry.version)] = _Slot(
                    model.entry, ModelState.READY, "", model
                )
            kept = {(model.entry.name, model.entry.version) for model in staged}
            draining = [slot.served for _, slot in old if slot.served is not None]
            for key, slot in old:
                if key not in kept:
                    self._slots[key] = _Slot(slot.entry, ModelState.UNAVAILABLE, "unloaded", unloaded=True)
                    self.metrics.forget(*key)
            await asyncio.gather(*(model.batcher.stop() for model in draining))
            for model in staged:
                logger.info("%s v%s reloaded", model.entry.name, model.entry.version)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` once its accepted requests are answered."""
        self.check_model_control("unload")
        async with self._lock:
            if not any(model == name for model, _ in self._slots):
                raise ServedModelNotFoundError(f"no model named {name!r} is served", model=name)
            await self._unload_name(name)

    # -- internals -------------------------------------------------------------------------------

    async def _load_entry(self, entry: RepositoryEntry) -> None:
        """Build, warm up and start one version; on failure it stays UNAVAILABLE and the error is raised."""
        key = (entry.name, entry.version)
        slot = _Slot(entry, ModelState.LOADING)
        self._slots[key] = slot
        try:
            slot.served = await self._build(entry)
        except Exception as exc:  # HoneError as it is; a bug still leaves the slot UNAVAILABLE
            slot.state, slot.reason = ModelState.UNAVAILABLE, str(exc)
            self.metrics.forget(entry.name, entry.version)
            logger.info("%s v%s failed to load: %s", entry.name, entry.version, exc)
            raise
        slot.state, slot.reason = ModelState.READY, ""
        logger.info("%s v%s ready", entry.name, entry.version)

    async def _build(self, entry: RepositoryEntry) -> ServedModel:
        """Sessions built, every batch size warmed up, the batcher started: a version ready to serve."""
        runner = await asyncio.to_thread(_build_runner, entry)
        holder: list[Batcher] = []  # the batcher takes the observer, the observer reads the batcher
        observer = self.metrics.observe(entry.name, entry.version, lambda: holder[0].stats)
        batcher = Batcher(runner, entry.batch, observer=observer)
        holder.append(batcher)
        await batcher.start()
        return ServedModel(entry, runner, batcher, observer)

    async def _unload_name(self, name: str) -> None:
        slots = [(key, slot) for key, slot in self._slots.items() if key[0] == name]
        for _, slot in slots:
            slot.unloaded = True
            if slot.served is not None:
                slot.state = ModelState.UNLOADING
        await asyncio.gather(*(slot.served.batcher.stop() for _, slot in slots if slot.served is not None))
        for key, slot in slots:
            slot.served = None
            slot.state, slot.reason = ModelState.UNAVAILABLE, "unloaded"
            self.metrics.forget(*key)
            logger.info("%s v%s unloaded", *key)

    def _ready(self, slot: _Slot) -> ServedModel:
        if slot.state != ModelState.READY or slot.served is None:
            entry = slot.entry
            why = f" ({slot.reason})" if slot.reason else ""
            raise ModelNotReadyError(
                f"model {entry.name!r} version {entry.version} is {slot.state.value.lower()}{why}; "
                f"load it with POST /v2/repository/models/{entry.name}/load or retry later",
                model=entry.name,
                version=entry.version,
            )
        return slot.served

    def _ordered(self) -> list[tuple[tuple[str, str], _Slot]]:
        return sorted(self._slots.items(), key=lambda item: (item[0][0], _version_key(item[0][1])))

    def _versions(self, name: str, *, ready_only: bool) -> list[str]:
        versions = [
            version
            for (model, version), slot in self._slots.items()
            if model == name and (not ready_only or slot.state == ModelState.READY)
        ]
        return sorted(versions, key=_version_key)


def _build_runner(entry: RepositoryEntry) -> ModelRunner:
    """Load the model, build its sessions and warm every batch size up (blocking: run in a thread)."""
    runner = ModelRunner(
        entry.load(),
        entry.name,
        entry.version,
        instances=entry.instances,
        max_batch_size=entry.batch.max_batch_size,
        session=entry.session,
    )
    runner.warm_up()
    return runner


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _stats_of(batcher: Batcher) -> StatsSource:
    """What the metrics read from ``batcher`` at each scrape."""
    return lambda: batcher.stats
