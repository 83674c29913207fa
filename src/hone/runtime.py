"""Session: the one way hone executes a model, a thin layer over onnxruntime.

Profile, bench, verify and serve all build their sessions here, so they measure the same thing:
same provider names, same thread settings, same graph-optimization levels.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from hone.errors import ExecutionError, InvalidModelError, OptionError, ProviderUnavailableError
from hone.model import Model
from hone.session_options import EXECUTION_MODES, ExecutionMode, SessionOptions

logger = logging.getLogger(__name__)

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# onnxruntime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. A failed run makes
# onnxruntime print its own "[E:onnxruntime:, sequential_executor.cc ...]" line to stderr before hone
# raises; the exception carries the same text, which hone turns into one line naming the node, so
# sessions and runs leave onnxruntime only its fatal messages.
ORT_LOG_SEVERITY = 4
# "... Non-zero status code returned while running Gather node. Name:'xyz' Status Message: ..."
_FAILED_NODE = re.compile(
    r"running (?P<op_type>[\w.]+) node\. Name:'(?P<node>[^']*)'(?: Status Message: (?P<status>.*))?"
)


def default_threads() -> int:
    """Physical cores of this machine (intra-op threads beyond them rarely help)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@dataclass(frozen=True)
class SessionConfig:
    provider: str = "cpu"
    threads: int | None = None
    optimization: str = "all"
    # Profiling (hone.profile): onnxruntime's per-node trace is written under this prefix.
    profile_prefix: str | None = None
    # Where onnxruntime saves the graph after its own optimizations, when set.
    optimized_model_path: str | None = None
    # The knobs of hone.session_options (what ``hone tune`` searches); onnxruntime's defaults.
    inter_threads: int = 1
    execution_mode: ExecutionMode = "sequential"
    spinning: bool = True
    arena: bool = True
    mem_pattern: bool = True

    @classmethod
    def from_options(cls, options: SessionOptions, *, provider: str = "cpu") -> SessionConfig:
        """A session config carrying ``options`` (a served model's ``config.json`` "session")."""
        return cls(
            provider=provider,
            threads=options.threads,
            optimization=options.optimization,
            inter_threads=options.inter_threads,
            execution_mode=options.execution_mode,
            spinning=options.spinning,
            arena=options.arena,
            mem_pattern=options.mem_pattern,
        )

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise OptionError(f"provider {self.provider!r} is unknown; choose one of: {', '.join(PROVIDERS)}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise OptionError(
                f"optimization {self.optimization!r} is unknown; choose one of: "
                f"{', '.join(OPTIMIZATION_LEVELS)}"
            )
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"threads must be at least 1, got {self.threads}")
        if self.execution_mode not in EXECUTION_MODES:
            raise OptionError(
                f"execution mode {self.execution_mode!r} is unknown; choose one of: "
                f"{', '.join(EXECUTION_MODES)}"
            )


def check_provider(provider: str) -> str:
    """The onnxruntime name of ``provider``, or a clear error when this build lacks it."""
    if provider not in PROVIDERS:
        raise OptionError(f"provider {provider!r} is unknown; choose one of: {', '.join(PROVIDERS)}")
    ort_name = PROVIDERS[provider]
    available = ort.get_available_providers()
    if ort_name not in available:
        raise ProviderUnavailableError(
            f"provider {provider!r} ({ort_name}) is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use --provider cpu",
            provider=provider,
        )
    return ort_name


class Session:
    """An onnxruntime InferenceSession for a hone Model under a SessionConfig."""

    def __init__(self, model: Model, config: SessionConfig | None = None) -> None:
        self.model = model
        self.config = config or SessionConfig()
        ort_provider = check_provider(self.config.provider)
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.config.optimization]
        options.intra_op_num_threads = self.config.threads or default_threads()
        options.inter_op_num_threads = self.config.inter_threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.config.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.enable_cpu_mem_arena = self.config.arena
        options.enable_mem_pattern = self.config.mem_pattern
        if not self.config.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = ORT_LOG_SEVERITY
        if self.config.profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = self.config.profile_prefix
        if self.config.optimized_model_path:
            options.optimized_model_filepath = self.config.optimized_model_path
        for key, value in model.session_config.items():  # what the model was verified under
            options.add_session_config_entry(key, value)
        providers = (
            [ort_provider]
            if ort_provider == "CPUExecutionProvider"
            else [ort_provider, "CPUExecutionProvider"]
        )
        try:
            self._session = ort.InferenceSession(model.onnx_source(), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise InvalidModelError(
                f"onnxruntime cannot load {model.name}: {_first_line(exc)}; check the model's "
                "opset and operators",
                model=model.name,
            ) from exc
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = ORT_LOG_SEVERITY
        # the default graph id, said explicitly: unset, onnxruntime's Python run_with_iobinding looks it
        # up by raising and catching an exception, 29 us a call (measured), as long as a tiny_gpt step
        self._run_options.add_run_config_entry("gpu_graph_id", "0")
        self._in_place_values: dict[int, tuple[np.ndarray, ort.OrtValue]] = {}

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def end_profiling(self) -> str:
        """Stop profiling and return the path of onnxruntime's trace file."""
        return str(self._session.end_profiling())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise ExecutionError(f"inputs missing for {self.model.name}: {', '.join(missing)}")
        try:
            return self._session.run(
                None, {name: feeds[name] for name in self.input_names}, self._run_options
            )
        except Exception as exc:
            raise _run_error(self.model.name, exc) from exc

    def run_in_place(
        self,
        feeds: Mapping[str, np.ndarray],
        in_place: Mapping[str, tuple[str, np.ndarray]],
        fetch: list[str],
    ) -> list[np.ndarray]:
        """Run with each ``in_place[input] = (output, array)`` bound to one buffer for both (the
        graph writes the output over the input, as a KV cache shared between past and present), and
        return the ``fetch`` outputs. ``feeds`` and the arrays are read where they are (no copy).
        Passing the same array objects again reuses their OrtValues (one per array per step
        otherwise; a step of a 32-layer decoder binds 64)."""
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in fetch:  # first: get_outputs() lists the outputs in the order they were bound
            binding.bind_output(name)
        values: dict[int, tuple[np.ndarray, ort.OrtValue]] = {}
        for name, (output, array) in in_place.items():
            cached = self._in_place_values.get(id(array))
            # held with its array, so the id cannot be another array's while it is cached
            value = (
                cached[1]
                if cached is not None and cached[0] is array
                else ort.OrtValue.ortvalue_from_numpy(array)
            )
            values[id(array)] = (array, value)
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(output, value)
        self._in_place_values = values  # only this run's: nothing else is kept alive
        try:
            self._session.run_with_iobinding(binding, self._run_options)
        except Exception as exc:
            raise _run_error(self.model.name, exc) from exc
        return [value.numpy() for value in binding.get_outputs()[: len(fetch)]]

    def release_in_place(self) -> None:
        """Drop the OrtValues kept from the last ``run_in_place`` (and so their arrays)."""
        self._in_place_values = {}


def _run_error(model_name: str, exc: BaseException) -> ExecutionError:
    """onnxruntime's run failure as one line that names the failing node (from its message) when it can."""
    failed = _FAILED_NODE.search(str(exc))
    if failed is None:
        return ExecutionError(
            f"onnxruntime failed running {model_name}: {_first_line(exc)}", model=model_name
        )
    status = (failed.group("status") or "").strip().splitlines()
    node = failed.group("node") or "(unnamed)"
    return ExecutionError(
        f"onnxruntime failed running {model_name} at {failed.group('op_type')} node '{node}': "
        f"{status[0] if status else _first_line(exc)}; check that the inputs' values and shapes fit the"
        " model",
        model=model_name,
        node=failed.group("node"),
        op_type=failed.group("op_type"),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
