"""The model variants ``hone tune`` searches over, each verified before it may be served.

- ``original``: the model as given (the reference; what ``hone serve`` runs by default);
- ``optimized``: hone's graph passes for onnxruntime on CPU (``hone.optimize``, each pass verified
  and rolled back when it changes the answer), judged again by the accuracy gate;
- the INT8 candidates of ``hone.quantize.gated_candidates``, first in the mode ``hone quantize``
  would choose, then, while the budget's share for variants lasts, static per tensor and the other
  mode (static: QDQ and QOperator, per channel or per tensor; dynamic: s8 and u8 weights), with
  the gate on every output and its per-layer fallback; fp16 only where the provider has fp16 kernels (not
  onnxruntime's CPU provider, which runs most fp16 ops by casting back to float);
- ``static-dims`` (with ``--dim``): the symbolic dims the user pinned, other than the batch axis,
  fixed in the graph's inputs so onnxruntime can fold shape arithmetic and plan memory, on the
  original and on the first passing INT8 candidate. Such a variant only serves those shapes: it is
  built only when the user declared them, and its note says so.

Without real data (``--data`` or the zoo's), no INT8 variant is built: the gate would judge it on
inputs invented from the graph, which cannot vouch for a quantized model's answers (the optimized
graph is verified pass by pass as ``hone optimize`` does, and is built).

Each variant is written under the cache folder and read back from there (so a second run reuses
it, and what is served is what was judged); its report is cached with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import onnx_ir as ir

from hone.errors import HoneError
from hone.model import Model, load_onnx_file
from hone.quantize.gate import Budget, judge, plan_for
from hone.quantize.int8 import size_bytes
from hone.quantize.types import AccuracyReport
from hone.tune.cache import PointCache, key_of
from hone.tune.search import Variant
from hone.tune.types import VariantReport

logger = logging.getLogger(__name__)

GATE_SAMPLES = 100
# The variants folder (hone's cache) is trimmed to this size, least recently used first.
MAX_FOLDER_BYTES = 2 * 1024**3
Clock = Callable[[], float]
Note = Callable[[str], None]
Make = Callable[[], tuple[Model, "AccuracyReport | None", str]]


def build_variants(
    original: Model,
    *,
    budget: Budget,
    dims: dict[str, int],
    key: str,
    folder: Path,
    cache: PointCache,
    provider: str,
    threads: int | None,
    clock: Clock,
    deadline: float,
    note: Note,
) -> tuple[Variant, list[Variant]]:
    """The original and every other variant, built (or read from the cache) until ``deadline``."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = reference_variant(original)
    built: list[Variant] = []
    plan = None

    def gate(model: Model) -> AccuracyReport:
        nonlocal plan
        if plan is None:
            plan = plan_for(original, samples=GATE_SAMPLES, threads=threads)
        return judge(model, plan, budget)

    used: list[Path] = []

    def path_of(name: str) -> tuple[str, Path]:
        item_key = key_of(key, "variant", name, budget.describe("all"))
        return item_key, folder / f"{item_key[:20]}-{name}.onnx"

    def stored(name: str, description: str, make: Make) -> None:
        item_key, path = path_of(name)
        used.append(path)
        hit = cache.get(item_key)
        if hit is not None and path.is_file():
            report = VariantReport(**hit)
            report.cached = True
            path.touch()  # recently used: the folder's trim keeps it
            built.append(Variant(report, _read_back(path, original)))
            return
        if clock() > deadline:
            note(f"variant {name} not built: the share of the budget for variants was spent")
            return
        try:
            model, accuracy, extra = make()
        except HoneError as exc:
            note(f"variant {name} not built: {exc}")
            return
        model.save(path, force=True)
        report = VariantReport(
            name,
            description,
            passed=accuracy is None or accuracy.passed,
            accuracy=_verdict(accuracy),
            accuracy_value=accuracy.candidate_value if accuracy else 1.0,
            size_bytes=size_bytes(model),
            note=extra,
        )
        cache.put(item_key, "variant", _report_json(report))
        built.append(Variant(report, _read_back(path, original)))

    def optimized() -> tuple[Model, AccuracyReport | None, str]:
        from hone.passes import optimize

        model, result = optimize(original, target="ort-cpu")
        applied = [p.name for p in result.passes if p.status == "applied"]
        text = (
            f"{result.nodes_before} -> {result.nodes_after} nodes: {', '.join(applied) or 'no pass applied'}"
        )
        return model, gate(model), text

    stored("optimized", "hone's graph passes for ort-cpu, each verified", optimized)
    # The INT8 candidates are built together (one calibration, one fallback); a run that built them
    # all records their names, and a later run reads them back instead of quantizing again.
    names_key = key_of(key, "int8-variants", budget.describe("all"))
    names = cache.get(names_key)
    if original.samples is None or original.samples.source == "invented":
        # A gate on invented inputs cannot vouch for INT8: on magika (a file-type classifier) static
        # INT8 passed it on random bytes and agreed on 81% of real files.
        note(
            "INT8 variants not tried: no real data to judge them on (give --data; inputs invented "
            "from the graph cannot show that a quantized model keeps its answers)"
        )
        names = []
    if names is not None and all(
        path_of(name)[1].is_file() and cache.get(path_of(name)[0]) for name, _ in names
    ):
        for name, description in names:
            stored(name, description, _missing(name))
    else:
        int8 = _int8_variants(original, budget, threads, clock, deadline, note)
        for name, description, model, accuracy in int8:
            stored(name, description, _built(model, accuracy))
        if clock() <= deadline:  # every mode was tried: the list is complete
            cache.put(names_key, "int8-variants", [[name, description] for name, description, *_ in int8])
    if provider == "cpu":
        note("fp16 not tried: onnxruntime's CPU provider has no fp16 kernels for most ops")
    pinned = _pinned_dims(original, dims)
    if pinned:
        text = ", ".join(f"{k}={v}" for k, v in sorted(pinned.items()))
        shape_note = f"serves only {text} (fixed by --dim)"
        quantized = [
            v for v in built if v.report.passed and v.report.name.startswith(("static-", "dynamic-"))
        ]
        bases = [reference, *quantized[:1]]
        for base in bases:
            name = "static-dims" if base is reference else f"static-dims+{base.report.name}"

            def fixed(base: Variant = base) -> tuple[Model, AccuracyReport | None, str]:
                model = _fix_dims(base.model, pinned)
                return model, gate(model), shape_note

            stored(name, f"{base.report.name} with {text} fixed in the graph", fixed)
    _trim(folder, keep=set(used))
    return reference, built


def _missing(name: str) -> Make:
    """A Make for a variant that should be in the cache (its file vanished in between)."""

    def make() -> tuple[Model, AccuracyReport | None, str]:
        raise HoneError(f"the stored INT8 variant {name} is gone from the cache; run again to rebuild it")

    return make


def _trim(folder: Path, keep: set[Path], limit: int = MAX_FOLDER_BYTES) -> None:
    """Delete the least recently used variant files until the folder holds at most ``limit`` bytes
    (never those of this run)."""
    files = sorted(folder.glob("*.onnx*"), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for file in files:
        if total <= limit:
            break
        if file in keep or file.with_suffix(".onnx") in keep:
            continue
        size = file.stat().st_size
        file.unlink(missing_ok=True)
        total -= size
        logger.debug("tune: trimmed %s from the variants cache", file.name)


def reference_variant(model: Model, name: str = "original") -> Variant:
    """The model as given: the reference every variant is judged and raced against."""
    report = VariantReport(
        name,
        "the model as given",
        passed=True,
        accuracy="the reference",
        accuracy_value=1.0,
        size_bytes=size_bytes(model),
    )
    return Variant(report, model)


def _int8_variants(
    original: Model, budget: Budget, threads: int | None, clock: Clock, deadline: float, note: Note
) -> list[tuple[str, str, Model, AccuracyReport]]:
    """Every INT8 candidate the gate judged (passing or not): the mode ``hone quantize`` would choose
    per channel, then (static) per tensor, then the other mode, while the budget's share lasts."""
    from hone.quantize import gated_candidates

    found: list[tuple[str, str, Model, AccuracyReport]] = []
    plans: list[tuple[str, bool]] = [("auto", True)]
    while plans:
        mode, per_channel = plans.pop(0)
        what = f"{'' if mode == 'auto' else mode + ' '}INT8{'' if per_channel else ' per tensor'}"
        left = deadline - clock()
        if left <= 0:
            note(f"{what} not tried: the share of the budget for variants was spent")
            continue
        try:
            gated = gated_candidates(
                original,
                mode=mode,
                budget=budget,
                per_channel=per_channel,
                threads=threads,
                data=original.samples,
                time_limit_s=left,
            )
        except HoneError as exc:
            note(f"{what} not built: {exc}")
            continue
        suffix = "" if per_channel else "-per-tensor"
        for candidate, model in gated.built:
            description = f"INT8 {candidate.mode} {candidate.format}, " + (
                "per channel" if per_channel else "per tensor"
            )
            name = candidate.name + suffix
            if candidate.kept_float:
                description += f", {len(candidate.kept_float)} layer(s) kept float"
                name += f"-{len(candidate.kept_float)}-float"
            if any(name == seen for seen, *_ in found):
                continue  # the fallback rebuilds a candidate with the same float layers: judged once
            found.append((name, description, model, candidate.accuracy))
        if mode == "auto":
            # Dynamic INT8 weights are per channel or per tensor alike on onnxruntime's CPU kernels.
            chosen = gated.result.mode
            plans += [("static", False), ("dynamic", True)] if chosen == "static" else [("static", True)]
    return found


def _built(model: Model, accuracy: AccuracyReport) -> Make:
    """A Make for a variant already built and judged (the INT8 candidates)."""

    def make() -> tuple[Model, AccuracyReport | None, str]:
        return model, accuracy, ""

    return make


def _pinned_dims(model: Model, dims: dict[str, int]) -> dict[str, int]:
    """The --dim values that name a symbolic dim of an input other than its batch axis."""
    pinned: dict[str, int] = {}
    for spec in model.inputs:
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and axis != spec.batch_axis and dim in dims:
                pinned[dim] = dims[dim]
    return pinned


def _fix_dims(model: Model, pinned: dict[str, int]) -> Model:
    copy = model.clone(f"static dims {pinned}")
    for value in copy.ir.graph.inputs:
        if value.shape is None:
            continue
        dims = [
            pinned.get(str(d), d) if isinstance(d, ir.SymbolicDim) and str(d) in pinned else d
            for d in value.shape.dims
        ]
        value.shape = ir.Shape(dims)
    return copy


def _read_back(path: Path, original: Model) -> Model:
    """The stored variant as a Model, with the original's samples, dims and provenance."""
    model = load_onnx_file(path, name=original.name, source=original.source)
    return replace(
        model,
        samples=original.samples,
        default_dims=dict(original.default_dims),
        provenance=dict(original.provenance),
    )


def _verdict(accuracy: AccuracyReport | None) -> str:
    if accuracy is None:
        return "not judged"
    word = "passed" if accuracy.passed else "FAILED"
    return f"{word}: {accuracy.name} {accuracy.candidate_value:.4f} ({accuracy.budget})"


def _report_json(report: VariantReport) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(report)
