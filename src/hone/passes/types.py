"""The optimize pipeline's result types (``hone.passes.manager``), apart from the code that computes
them, so that the report, the export and the job render them without importing the passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# What a target may run: onnxruntime (with its contrib ops) on CPU or CUDA, or standard ops only.
Target = Literal["ort-cpu", "ort-cuda", "web", "generic"]
TARGETS: tuple[Target, ...] = get_args(Target)
# What became of a pass: rewritten and kept, nothing to rewrite, rewritten but it changed the
# answer (undone), or it raised (skipped).
PassStatus = Literal["applied", "no_change", "rolled_back", "failed"]


@dataclass
class PassReport:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    status: PassStatus
    max_abs_error: float | None  # worst output difference against the model before the pass
    matched: int | None = None  # patterns rewritten, for fusions
    missed: list[str] = field(default_factory=list)  # expected patterns left unrewritten
    message: str = ""


@dataclass
class OptimizeResult:
    model: str
    target: Target
    verified: bool
    nodes_before: int
    nodes_after: int
    passes: list[PassReport] = field(default_factory=list)
    op_counts_before: dict[str, int] = field(default_factory=dict)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped and why (verification, foreign ops)

    @property
    def rolled_back(self) -> list[str]:
        return [p.name for p in self.passes if p.status == "rolled_back"]
