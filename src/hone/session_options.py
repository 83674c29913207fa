"""SessionOptions: the onnxruntime session knobs hone sets and tunes, and their JSON form.

``hone tune`` searches them, a model repository's ``config.json`` carries them (its ``"session"``
object) and ``hone serve`` applies them to every instance (``runtime.SessionConfig.from_options``).
Light: no onnxruntime here, so result types and the repository reader can name them.

- ``threads``: intra-op threads of one instance (None: the physical cores divided among the
  instances);
- ``inter_threads`` and ``execution_mode``: ``parallel`` runs independent branches of the graph at
  once on ``inter_threads`` threads (onnxruntime's ORT_PARALLEL); ``sequential`` is its default;
- ``spinning``: intra-op threads spin waiting for work between runs
  (``session.intra_op.allow_spinning``; on by default: lower latency, busier cores);
- ``arena``: the CPU memory arena; ``mem_pattern``: memory planned from the first run's shapes;
- ``optimization``: onnxruntime's graph optimization level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Literal, get_args

from hone.errors import OptionError

ExecutionMode = Literal["sequential", "parallel"]
OptimizationLevel = Literal["disabled", "basic", "extended", "all"]
EXECUTION_MODES: tuple[ExecutionMode, ...] = get_args(ExecutionMode)
OPTIMIZATION_LEVEL_NAMES: tuple[OptimizationLevel, ...] = get_args(OptimizationLevel)


@dataclass(frozen=True)
class SessionOptions:
    """onnxruntime's session options for one instance of a served model."""

    threads: int | None = None
    inter_threads: int = 1
    execution_mode: ExecutionMode = "sequential"
    spinning: bool = True
    arena: bool = True
    mem_pattern: bool = True
    optimization: OptimizationLevel = "all"

    def __post_init__(self) -> None:
        for name in ("threads", "inter_threads"):
            value = getattr(self, name)
            if value is None and name == "threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"session {name} must be an integer of at least 1, got {value!r}")
        if self.execution_mode not in EXECUTION_MODES:
            raise OptionError(
                f"session execution_mode {self.execution_mode!r} is unknown; choose one of: "
                f"{', '.join(EXECUTION_MODES)}"
            )
        if self.optimization not in OPTIMIZATION_LEVEL_NAMES:
            raise OptionError(
                f"session optimization {self.optimization!r} is unknown; choose one of: "
                f"{', '.join(OPTIMIZATION_LEVEL_NAMES)}"
            )
        for name in ("spinning", "arena", "mem_pattern"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"session {name} must be true or false, got {getattr(self, name)!r}")

    def label(self) -> str:
        """Short words for what differs from onnxruntime's defaults, e.g. ``2t no-spin``."""
        parts = [f"{self.threads}t" if self.threads else "auto-threads"]
        if self.execution_mode == "parallel":
            parts.append(f"parallel/{self.inter_threads}")
        if not self.spinning:
            parts.append("no-spin")
        if not self.arena:
            parts.append("no-arena")
        if not self.mem_pattern:
            parts.append("no-mem-pattern")
        if self.optimization != "all":
            parts.append(f"opt-{self.optimization}")
        return " ".join(parts)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object, where: str = "session") -> SessionOptions:
        """``raw`` (a JSON object with keys from SESSION_KEYS) as SessionOptions; OptionError otherwise."""
        if not isinstance(raw, Mapping):
            raise OptionError(f"{where} must be a JSON object with keys from: {', '.join(SESSION_KEYS)}")
        unknown = sorted(set(raw) - set(SESSION_KEYS))
        if unknown:
            raise OptionError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: "
                f"{', '.join(SESSION_KEYS)}"
            )
        return cls(**dict(raw))


SESSION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(SessionOptions))
