"""Magnitude pruning: zero the smallest weights of Conv, Gemm and MatMul, unstructured or 2:4.

What is pruned: float initializers of two or more dims that are the weight of a Conv (input 1), a
Gemm (input 1, ``transB`` respected) or a MatMul (its one constant operand), and are used for
nothing else; onnxruntime's FusedConv and FusedGemm (what ``hone optimize --target ort-*`` makes of
Conv/Gemm + activation) count as Conv and Gemm. Left alone: biases, BatchNorm parameters, embeddings (Gather
data, also when the
same tensor is tied to a MatMul), weights held in Constant nodes (``hone optimize`` lifts them),
initializers that are also graph inputs (a caller may override them), and subgraphs. The first
and the last layer are pruned like the others (the notes name them; ``exclude`` keeps any layer
dense).

Patterns:

- ``unstructured`` -- zero the ``round(sparsity * n)`` weights of smallest ``|w|``: over all
  prunable weights together (``scope="global"``, one threshold, so layers end up with different
  sparsities) or in each layer on its own (``scope="per_layer"``, every layer at the same sparsity).
  Ties at the threshold are broken by position, so the count is exact.
- ``2:4`` -- in every group of 4 consecutive weights along the reduction (input-channel) dim keep
  the 2 of largest ``|w|``: exactly 50% in every full group. The groups follow NVIDIA's sparse
  tensor cores and apex's ASP: Conv ``W[O, I, kh, kw]`` groups 4 input channels at each
  ``(o, kh, kw)`` (the GEMM's K = kh*kw*I with I innermost, as in channels-last), Gemm/MatMul
  ``W[K, N]`` groups along K (``W[N, K]`` with ``transB=1``: along its last dim). A reduction dim
  not divisible by 4 keeps its last ``K mod 4`` weights dense (and a layer with K < 4, such as an
  RGB or gray first conv, stays dense); the notes say which.

onnxruntime's CPU kernels are dense: a pruned model runs at the same speed. The gain is the size of
the compressed artifact (zeros compress), measured here with zlib; the speed is measured anyway, in
the same run, and reported as it is. The pruned model is judged by the accuracy gate
(``hone.quantize.gate``) against the float model; prune reports whether it passed but does not roll
back; given an output path, it writes the pruned model only when it passed (or when told to
ignore the budget), the result saying where it wrote it or why not. ``fine_tune=True`` retrains
a torch-sourced model with known training data (the zoo's digits_cnn) for a few epochs with the
masks held fixed, and re-exports it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hone.data import zoo_train_set
from hone.errors import ExecutionError, InputError, OptionError
from hone.model import Model
from hone.quantize.gate import Budget, EvalPlan, judge, plan_for
from hone.quantize.types import (
    PATTERNS,
    SCOPES,
    AccuracyReport,
    LayerSparsity,
    Pattern,
    PruneResult,
    Scope,
    checked_choice,
)
from hone.sources import load

if TYPE_CHECKING:  # torch is imported lazily: pruning an .onnx file must not pay for it
    import torch

logger = logging.getLogger(__name__)

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")
# (domain, op) whose weight input is pruned: the standard ops, and onnxruntime's fused forms of them
# that `hone optimize --target ort-*` emits (same weight layout and attributes).
_CONV_OPS = {("", "Conv"), ("ai.onnx", "Conv"), ("com.microsoft", "FusedConv")}
_GEMM_OPS = {("", "Gemm"), ("ai.onnx", "Gemm"), ("com.microsoft", "FusedGemm")}
_MATMUL_OPS = {("", "MatMul"), ("ai.onnx", "MatMul")}
GROUP_SIZE = 4  # 2:4: groups of 4 along the reduction dim ...
KEPT_PER_GROUP = 2  # ... keep the 2 largest
_FLOAT_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)
_ZLIB_LEVEL = 6  # deflate's default, what `zip` uses
_IN_MEMORY_LIMIT_BYTES = 1_500_000_000  # above this, sizes are measured on files with external data
_BENCH_BUDGET_S = 3.0  # per model: float and pruned race in alternating blocks (hone.bench.compare)
_FLOAT_LABEL, _PRUNED_LABEL = "float", "pruned"  # the two contenders of that race
_GLOBAL_HIGH_SPARSITY = 0.95  # a layer pruned past this by the global threshold gets a note

# Fine-tuning: Adam on cross-entropy, seeded, one thread (bitwise repeatable), masks re-applied
# after every step.
FINE_TUNE_LEARNING_RATE = 1e-3
FINE_TUNE_BATCH_SIZE = 64
FINE_TUNE_SEED = 0
_NO_FINE_TUNE = "fine-tuning needs a torch-sourced model with training data (the zoo's digits_cnn)"


@dataclass
class _Weight:
    """A prunable initializer: the value to rewrite, its array, and where its reduction dim is."""

    value: ir.Value
    op_type: str
    reduction_axis: int
    array: np.ndarray

    @property
    def name(self) -> str:
        assert self.value.name is not None  # an initializer always has a name
        return self.value.name


def prune(
    source: str | Model,
    *,
    sparsity: float | None = None,
    pattern: Pattern | str = "unstructured",
    scope: Scope | str = "global",
    budget: Budget | str | None = None,
    fine_tune: bool = False,
    fine_tune_epochs: int = 3,
    threads: int | None = None,
    measure_speed: bool = True,
    samples: int = 200,
    exclude: Sequence[str] = (),
    plan: EvalPlan | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    ignore_budget: bool = False,
) -> tuple[Model, PruneResult]:
    """Prune ``source`` to ``sparsity`` with ``pattern``; returns the new Model and what happened.

    ``sparsity`` is the share of prunable weights set to zero, in [0, 1); for ``2:4`` it is 0.5
    and may be omitted. ``budget`` is a ``Budget`` or its text form (``"top1-drop=1"``, as
    ``--budget``). ``exclude`` names initializers to keep dense. ``plan`` is the gate's plan
    for ``source`` (``plan_for``), to reuse across candidates; made here from ``samples`` and
    ``threads`` when None. The caller's model is never modified.

    With ``output``, the pruned model is saved there (``force``: over an existing file) unless it
    is outside the accuracy budget: then nothing is written (unless ``ignore_budget``) and
    ``result.not_written`` says why; ``result.written_to`` is where it was written.
    """
    target, pattern, scope = _check_options(sparsity, pattern, scope, fine_tune, fine_tune_epochs, samples)
    gate_budget = budget if isinstance(budget, Budget) else Budget.parse(budget)
    original = load(source)
    if fine_tune:
        _check_fine_tunable(original)
    candidate_ir = original.clone().ir
    size_before, compressed_before = _saved_sizes(candidate_ir)
    weights, notes = prunable_weights(candidate_ir)
    weights = _without_excluded(weights, exclude)
    if not weights:
        raise InputError(
            f"{original.name} has no prunable weights (float initializers of 2+ dims feeding "
            f"{', '.join(PRUNABLE_OPS)} and nothing else); there is nothing to prune",
            model=original.name,
        )
    notes.extend(_first_and_last_notes(candidate_ir, weights, exclude))
    if pattern == "2:4":
        masks, tail_notes = two_four_masks(weights)
        notes.extend(tail_notes)
    elif scope == "global":
        masks = global_magnitude_masks(weights, target)
    else:
        masks = per_layer_magnitude_masks(weights, target)
    for weight in weights:
        pruned = np.where(masks[weight.name], weight.array, np.zeros((), dtype=weight.array.dtype))
        weight.value.const_value = ir.tensor(pruned, name=weight.name)
    step = f"prune {pattern}" + (f" {scope} {target:g}" if pattern == "unstructured" else "")
    pruned_model = original.with_graph(candidate_ir, step)
    pruned_model.torch_factory = None  # the eager module still holds the dense weights

    result = PruneResult(
        model=original.name,
        pattern=pattern,
        scope=scope,
        target_sparsity=target,
        achieved_sparsity=0.0,
        size_bytes_before=size_before,
        compressed_bytes_before=compressed_before,
        threads=threads,
        excluded=list(exclude),
        notes=notes,
    )
    plan = plan if plan is not None else plan_for(original, samples=samples, threads=threads)
    result.accuracy_after = judge(pruned_model, plan, gate_budget)
    result.accuracy_before = _float_report(result.accuracy_after)
    if fine_tune:
        result.accuracy_before_fine_tune = result.accuracy_after
        pruned_model = _fine_tuned(original, masks, fine_tune_epochs, step)
        result.fine_tuned, result.fine_tune_epochs = True, fine_tune_epochs
        result.accuracy_after = judge(pruned_model, plan, gate_budget)
        result.notes.append(
            f"fine-tuned {fine_tune_epochs} epochs on {_training_data_description(original)}: "
            f"Adam lr {FINE_TUNE_LEARNING_RATE:g}, batch {FINE_TUNE_BATCH_SIZE}, seed {FINE_TUNE_SEED}, "
            "masks held fixed"
        )
    result.layers = layer_sparsities(pruned_model.ir, weights)
    zeros = sum(layer.zeros_after for layer in result.layers)
    result.achieved_sparsity = zeros / max(1, result.params)
    if scope == "global" and pattern == "unstructured":
        result.notes.extend(
            f"{layer.name} ({layer.op_type} {layer.shape}) was pruned to {layer.sparsity_after:.1%} by the "
            "global threshold"
            + (": its output no longer depends on its input" if layer.sparsity_after == 1.0 else "")
            + "; use scope per_layer or exclude it if accuracy suffers"
            for layer in result.layers
            if layer.sparsity_after > _GLOBAL_HIGH_SPARSITY and layer.sparsity_after > target
        )
    result.size_bytes_after, result.compressed_bytes_after = _saved_sizes(pruned_model.ir)
    if measure_speed:
        _measure_speed(original, pruned_model, result)
    result.notes.append(_gate_note(result))
    if output is not None:
        _write(pruned_model, result, output, force=force, ignore_budget=ignore_budget)
    logger.info(
        "pruned %s to %.1f%% (%s): %s",
        original.name,
        100 * result.achieved_sparsity,
        pattern,
        "within budget" if result.passed else "outside budget",
    )
    return pruned_model, result


def prunable_weights(model_ir: ir.Model) -> tuple[list[_Weight], list[str]]:
    """The prunable initializers of the main graph (see the module docstring), and notes on the rest."""
    graph = model_ir.graph
    graph_inputs = {value.name for value in graph.inputs}
    weights: list[_Weight] = []
    notes: list[str] = []
    for name, value in graph.initializers.items():
        tensor = value.const_value
        if (
            tensor is None
            or name in graph_inputs
            or tensor.dtype not in _FLOAT_DTYPES
            or len(tensor.shape) < 2
        ):
            continue
        axes = {
            (use.node.op_type, _reduction_axis(use.node, use.idx, len(tensor.shape))) for use in value.uses()
        }
        prunable = {entry for entry in axes if entry[1] is not None}
        if not prunable:
            continue
        if prunable != axes:
            others = sorted({op for op, axis in axes if axis is None})
            notes.append(
                f"{name} is left dense: besides {prunable.pop()[0]} it also feeds {', '.join(others)}"
            )
            continue
        if len({axis for _, axis in prunable}) > 1:
            notes.append(f"{name} is left dense: its consumers reduce over different dims")
            continue
        op_type, axis = sorted(prunable)[0]
        assert axis is not None
        weights.append(_Weight(value, op_type, axis, tensor.numpy()))
    constant_weights = sum(
        1
        for node in graph
        for index, weight in enumerate(node.inputs)
        if weight is not None
        and (producer := weight.producer()) is not None
        and producer.op_type == "Constant"
        and _reduction_axis(node, index, 2) is not None
    )
    if constant_weights:
        notes.append(
            f"{constant_weights} weight(s) held in Constant nodes were not pruned; "
            "`hone optimize` lifts them to initializers first"
        )
    return weights, notes


def _reduction_axis(node: ir.Node, index: int, rank: int) -> int | None:
    """The dim of this weight that the op sums over, or None when it is not a prunable weight input."""
    kind = (node.domain or "", node.op_type)
    if kind in _CONV_OPS and index == 1:
        return 1  # W[O, I/group, kh, kw]: input channels
    if kind in _GEMM_OPS and index == 1 and rank == 2:
        trans_b = node.attributes.get("transB")
        return 1 if trans_b is not None and trans_b.as_int() else 0
    if kind in _MATMUL_OPS and index in (0, 1):
        other = node.inputs[1 - index]
        if other is None or other.const_value is not None:
            return None  # both constant: constant folding's business, not a weight
        return rank - 1 if index == 0 else rank - 2  # A[..., M, K] @ B[..., K, N]
    return None


def global_magnitude_masks(weights: Sequence[_Weight], sparsity: float) -> dict[str, np.ndarray]:
    """Keep-masks zeroing exactly ``round(sparsity * n)`` weights of smallest |w| over all layers."""
    magnitudes = np.concatenate([np.abs(w.array.astype(np.float32)).ravel() for w in weights])
    return _split_masks(weights, _keep_mask(magnitudes, round(sparsity * magnitudes.size)))


def per_layer_magnitude_masks(weights: Sequence[_Weight], sparsity: float) -> dict[str, np.ndarray]:
    """Keep-masks zeroing ``round(sparsity * n_layer)`` weights of smallest |w| in every layer."""
    masks = {}
    for weight in weights:
        magnitudes = np.abs(weight.array.astype(np.float32)).ravel()
        masks[weight.name] = _keep_mask(magnitudes, round(sparsity * magnitudes.size)).reshape(
            weight.array.shape
        )
    return masks


def two_four_masks(weights: Sequence[_Weight]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Keep-masks holding the 2 largest |w| of every 4 consecutive weights along the reduction dim."""
    masks, notes = {}, []
    for weight in weights:
        mask, tail = two_four_mask(weight.array, weight.reduction_axis)
        masks[weight.name] = mask
        if tail:
            reduction = weight.array.shape[weight.reduction_axis]
            where = f"{weight.name} ({weight.op_type} {list(weight.array.shape)})"
            notes.append(
                f"{where} stays dense: its reduction dim {reduction} holds no full group of {GROUP_SIZE}"
                if tail == reduction
                else (
                    f"{where}: reduction dim {reduction} is not a multiple of {GROUP_SIZE}; its last {tail} "
                    "weight(s) per row stay dense"
                )
            )
    return masks, notes


def two_four_mask(array: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """The 2:4 keep-mask of ``array`` with groups along ``axis``, and how many trailing weights stay dense."""
    moved = np.moveaxis(np.abs(array.astype(np.float32)), axis, -1)
    reduction = moved.shape[-1]
    full = reduction - reduction % GROUP_SIZE
    keep = np.ones(moved.shape, dtype=bool)
    if full:
        groups = moved[..., :full].reshape(*moved.shape[:-1], full // GROUP_SIZE, GROUP_SIZE)
        smallest = np.argsort(groups, axis=-1, kind="stable")[..., : GROUP_SIZE - KEPT_PER_GROUP]
        group_keep = np.ones(groups.shape, dtype=bool)
        np.put_along_axis(group_keep, smallest, False, axis=-1)
        keep[..., :full] = group_keep.reshape(*moved.shape[:-1], full)
    return np.moveaxis(keep, -1, axis), reduction - full


def layer_sparsities(model_ir: ir.Model, weights: Sequence[_Weight]) -> list[LayerSparsity]:
    """Zeros before (from the arrays the weights held) and after (from ``model_ir``) per weight."""
    layers = []
    for weight in weights:
        name = weight.name
        tensor = model_ir.graph.initializers[name].const_value
        assert tensor is not None
        after = tensor.numpy()
        zeros_after = int(np.count_nonzero(after == 0))
        layers.append(
            LayerSparsity(
                name,
                weight.op_type,
                list(weight.array.shape),
                int(weight.array.size),
                int(np.count_nonzero(weight.array == 0)),
                zeros_after,
                zeros_after / max(1, weight.array.size),
            )
        )
    return layers


def _keep_mask(magnitudes: np.ndarray, count: int) -> np.ndarray:
    """A flat keep-mask with exactly ``count`` False entries, at the smallest magnitudes."""
    keep = np.ones(magnitudes.size, dtype=bool)
    if count > 0:
        keep[np.argsort(magnitudes, kind="stable")[:count]] = False
    return keep


def _split_masks(weights: Sequence[_Weight], flat_keep: np.ndarray) -> dict[str, np.ndarray]:
    masks, offset = {}, 0
    for weight in weights:
        size = weight.array.size
        masks[weight.name] = flat_keep[offset : offset + size].reshape(weight.array.shape)
        offset += size
    return masks


def _check_options(
    sparsity: float | None, pattern_text: str, scope_text: str, fine_tune: bool, epochs: int, samples: int
) -> tuple[float, Pattern, Scope]:
    """Validate the options; returns the target sparsity, the pattern and the scope."""
    pattern = checked_choice(pattern_text, PATTERNS, "pattern")
    scope = checked_choice(scope_text, SCOPES, "scope")
    if pattern == "2:4":
        if sparsity is not None and sparsity != 0.5:
            raise OptionError(
                f"pattern 2:4 prunes exactly 50% (sparsity 0.5), got sparsity {sparsity!r}; "
                "omit --sparsity or use --pattern unstructured"
            )
        target = 0.5
    else:
        if sparsity is None:
            raise OptionError("unstructured pruning needs a sparsity in [0, 1), e.g. --sparsity 0.5")
        target = sparsity
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target < 1:
        raise OptionError(
            f"sparsity must be a number in [0, 1) (the share of weights set to zero), got {sparsity!r}"
        )
    if fine_tune and epochs < 1:
        raise OptionError(f"fine_tune_epochs must be at least 1, got {epochs}")
    if samples < 1:
        raise OptionError(f"samples must be at least 1, got {samples}")
    return float(target), pattern, scope


def _without_excluded(weights: list[_Weight], exclude: Sequence[str]) -> list[_Weight]:
    names = {w.name for w in weights}
    unknown = [name for name in exclude if name not in names]
    if unknown:
        shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
        raise OptionError(f"cannot exclude {', '.join(unknown)}: not a prunable weight (these are: {shown})")
    return [w for w in weights if w.name not in set(exclude)]


def _first_and_last_notes(
    model_ir: ir.Model, weights: Sequence[_Weight], exclude: Sequence[str]
) -> list[str]:
    """Name the first and last pruned layers in graph order: often the most sensitive ones."""
    names = {w.name for w in weights}
    order: list[str] = []
    for node in model_ir.graph:
        for value in node.inputs:
            if (
                value is not None
                and value.name is not None
                and value.name in names
                and value.name not in order
            ):
                order.append(value.name)
    if not order or exclude:
        return []
    ends = order[0] if len(order) == 1 else f"{order[0]} and the last, {order[-1]},"
    return [
        f"the first layer, {ends} are pruned like the others (often the most sensitive; "
        "exclude them to keep them dense)"
    ]


def _float_report(pruned: AccuracyReport) -> AccuracyReport:
    """The float model judged on the same plan: its outputs are the plan's reference, so it scores
    its own float value (top-1) or a perfect 1.0 (agreement, cosine) without running again."""
    return replace(
        pruned,
        candidate_value=pruned.float_value,
        passed=True,
        cosine_min=1.0 if pruned.metric == "cosine" else None,
    )


def _gate_note(result: PruneResult) -> str:
    report = result.accuracy_after
    if report is None:
        return "not judged by the accuracy gate"
    measured = (
        f"{report.float_value:.2f} -> {report.candidate_value:.2f}"
        if report.metric == "top1"
        else f"{report.candidate_value:.4f}"
    )
    verdict = "within" if report.passed else "outside"
    remedy = "fine-tune longer" if result.fine_tuned else "fine-tune"
    tail = (
        ""
        if report.passed
        else (f"; nothing was rolled back: lower the sparsity, {remedy}, or exclude sensitive layers")
    )
    return f"accuracy gate: {report.metric} {measured}, {verdict} the budget ({report.budget}){tail}"


def _saved_sizes(model_ir: ir.Model) -> tuple[int, int]:
    """Bytes of the saved model (the .onnx, plus its external data when large) and of their zlib stream."""
    weight_bytes = sum(
        v.const_value.nbytes for v in model_ir.graph.initializers.values() if v.const_value is not None
    )
    if weight_bytes <= _IN_MEMORY_LIMIT_BYTES:
        data = ir.to_proto(model_ir).SerializeToString()
        return len(data), len(zlib.compress(data, _ZLIB_LEVEL))
    with tempfile.TemporaryDirectory(prefix="hone-prune-") as folder:
        path = Path(folder) / "model.onnx"
        ir.save(model_ir, path, external_data="model.onnx.data")
        size = compressed = 0
        for file in sorted(Path(folder).iterdir()):
            compressor = zlib.compressobj(_ZLIB_LEVEL)
            with file.open("rb") as stream:
                while chunk := stream.read(1 << 24):
                    size += len(chunk)
                    compressed += len(compressor.compress(chunk))
            compressed += len(compressor.flush())
        return size, compressed


def _measure_speed(original: Model, pruned: Model, result: PruneResult) -> None:
    """p50 latency at batch 1 under onnxruntime ORT_ENABLE_ALL, in this run: the float and the
    pruned model raced in one interleaved comparison (``hone.bench.compare``: blocks alternating,
    round by round), so that a slow start or a busy neighbour hits both alike."""
    from hone.bench.compare import Contender, compare

    race = compare(
        [Contender(_FLOAT_LABEL, original), Contender(_PRUNED_LABEL, pruned)],
        baseline=_FLOAT_LABEL,
        batches=[1],
        threads=result.threads,
        budget_s=_BENCH_BUDGET_S,
    )
    before, after = race.config(_FLOAT_LABEL, 1), race.config(_PRUNED_LABEL, 1)
    assert before is not None and after is not None
    result.threads = race.threads
    result.latency_ms_before, result.latency_ms_after = before.p50_ms, after.p50_ms
    result.speedup = after.speedup_vs_baseline
    if not (before.stable and after.stable):
        result.notes.append(
            f"latency not stable within {_BENCH_BUDGET_S:g} s per model "
            f"(median CI ±{100 * max(before.median_ci_rel, after.median_ci_rel):.1f}%)"
        )
    result.notes.append(
        "onnxruntime's CPU kernels are dense: zeros cost the same time as other weights, "
        "so expect a speedup near 1.0x; the gain is the compressed size"
    )


def _write(
    pruned: Model, result: PruneResult, output: str | os.PathLike[str], *, force: bool, ignore_budget: bool
) -> None:
    """Save ``pruned`` to ``output`` unless it is outside the budget and ``ignore_budget`` is off;
    the result says which, and why."""
    if result.passed is False and not ignore_budget:
        assert result.accuracy_after is not None
        result.not_written = (
            f"the pruned model is outside the accuracy budget ({result.accuracy_after.budget}); {output} was"
            " not written: lower --sparsity, add --fine-tune, widen --budget, or pass --ignore-budget to"
            " write it anyway"
        )
        return
    pruned.save(output, force=force)
    result.written_to = str(output)


# --- fine-tuning --------------------------------------------------------------------------------


def _training_data_description(model: Model) -> str:
    data = zoo_train_set(model)
    assert data is not None  # checked before fine-tuning (_check_fine_tunable)
    return f"{data.description} ({len(data.labels)} images, disjoint from the held-out split the gate uses)"


def _check_fine_tunable(model: Model) -> None:
    if model.torch_factory is None or zoo_train_set(model) is None:
        raise OptionError(_NO_FINE_TUNE)
    if model.steps:
        raise OptionError(
            f"{_NO_FINE_TUNE}, as exported: this one was changed since ({', '.join(model.steps)})"
        )


def _fine_tuned(original: Model, masks: dict[str, np.ndarray], epochs: int, step: str) -> Model:
    """Apply ``masks`` to the torch module, retrain with them fixed, and export it again."""
    import torch

    from hone import torch_export
    from hone.model import load_onnx_file

    assert original.torch_factory is not None
    module = original.torch_factory()
    parameters = dict(module.named_parameters())
    torch_masks: dict[str, torch.Tensor] = {}
    for name, keep in masks.items():
        parameter = parameters.get(name)
        if parameter is None or tuple(parameter.shape) != keep.shape:
            raise OptionError(
                f"{_NO_FINE_TUNE}: ONNX weight {name!r} {list(keep.shape)} has no torch parameter "
                "of that name and shape"
            )
        torch_masks[name] = torch.from_numpy(np.ascontiguousarray(keep))
    data = zoo_train_set(original)
    assert data is not None
    feeds, labels = data.inputs, data.labels
    input_name = original.inputs[0].name
    _train_masked(
        module, parameters, torch_masks, torch.from_numpy(feeds[input_name]), torch.from_numpy(labels), epochs
    )
    output_names = [spec.name for spec in original.outputs]
    with tempfile.TemporaryDirectory(prefix="hone-prune-") as folder:
        path = Path(folder) / f"{original.name}.onnx"
        torch_export.export_module(module, original.inputs, output_names, path, dims=original.default_dims)
        exported = load_onnx_file(path)
        ir.external_data.load_to_model(exported.ir)
    for name, keep in masks.items():
        value = exported.ir.graph.initializers.get(name)
        if value is None or value.const_value is None:
            raise ExecutionError(
                f"the re-exported {original.name} has no initializer {name!r}; "
                "fine-tuning cannot keep the masks"
            )
        array = value.const_value.numpy()
        if np.count_nonzero(array[~keep]):
            raise ExecutionError(f"the re-exported weight {name!r} lost its mask; this is a bug in hone")
    state = {key: tensor.detach().clone() for key, tensor in module.state_dict().items()}
    tuned = original.with_graph(exported.ir, f"{step} + fine-tune {epochs} epochs")
    tuned.torch_factory = _factory_with_state(original.torch_factory, state)
    return tuned


def _train_masked(
    module: torch.nn.Module,
    parameters: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
) -> None:
    """Adam on cross-entropy, seeded and on one thread; pruned weights are zeroed after every step."""
    import torch

    def apply_masks() -> None:
        with torch.no_grad():
            for name, keep in masks.items():
                parameters[name].masked_fill_(~keep, 0.0)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FINE_TUNE_SEED)
            generator = torch.Generator().manual_seed(FINE_TUNE_SEED)
            optimizer = torch.optim.Adam(module.parameters(), lr=FINE_TUNE_LEARNING_RATE)
            loss_fn = torch.nn.CrossEntropyLoss()
            apply_masks()
            module.train()
            for _ in range(epochs):
                order = torch.randperm(len(images), generator=generator)
                for start in range(0, len(order), FINE_TUNE_BATCH_SIZE):
                    batch = order[start : start + FINE_TUNE_BATCH_SIZE]
                    optimizer.zero_grad()
                    loss_fn(module(images[batch]), labels[batch]).backward()
                    optimizer.step()
                    apply_masks()
    finally:
        module.eval()
        torch.set_num_threads(threads_before)


def _factory_with_state(
    factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor]
) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        module = factory()
        module.load_state_dict(state)
        return module.eval()

    return build


__all__ = [
    "PATTERNS",
    "PRUNABLE_OPS",
    "SCOPES",
    "LayerSparsity",
    "PruneResult",
    "global_magnitude_masks",
    "layer_sparsities",
    "per_layer_magnitude_masks",
    "prunable_weights",
    "prune",
    "two_four_mask",
    "two_four_masks",
]
