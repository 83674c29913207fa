"""A decoder .onnx that hone did not export (Optimum's, or the user's own) made servable by hone.

``hone export decoder.onnx --target generate -o out.onnx`` reads the KV-cache layout off the graph's
interface instead of a PyTorch checkpoint. The file must speak the interface of
``hone.generate.types`` (Optimum's names, one graph for prefill and decode)::

    input_ids, attention_mask, position_ids             int64 [batch, ...]
    past_key_values.{i}.key / .value                    float32 [batch, kv_heads, past, head_dim]
    -> logits [batch, sequence, vocab], present.{i}.key / .value   (in this order)

kv_heads, head_dim and vocab must be static. What the graph cannot say comes from the files beside
it, as Optimum and transformers write them: the context length (``--context``, else config.json's
``max_position_embeddings`` / ``n_positions`` / ``n_ctx``), the end-of-sequence ids
(generation_config.json, else config.json), the tokenizer (tokenizer.json) and the chat template
(tokenizer_config.json).

Refused, each in one line: other inputs (a merged decoder's ``use_cache_branch``,
``token_type_ids``), no ``position_ids`` (hone pads batches on the left, so positions must be given),
a non-float32 cache, dynamic head sizes, an unknown context. Then the copy is checked before it is
kept: greedy tokens through the KV cache, batched with left padding, must equal those of recomputing
the whole sequence at every step (``hone.generate.loadtest.cache_check``); otherwise nothing is
written. The user's file is only read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hone.errors import InvalidModelError, OptionError
from hone.generate.types import (
    ATTENTION_MASK,
    CHAT_TEMPLATE_KEY,
    INPUT_IDS,
    LAYOUT_KEY,
    LOGITS,
    POSITION_IDS,
    TOKENIZER_KEY,
    DecoderLayout,
    past_names,
    present_names,
)
from hone.model import Model, load_onnx_file
from hone.specs import TensorSpec

# config.json keys that hold the trained context, in the order transformers' configs use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
# Lengths for invented inputs (total = past + new), as hone's own exports record them.
INVENTED = {"sequence": 8, "past": 4, "total": 12}


@dataclass(frozen=True)
class Adopted:
    path: Path
    layout: DecoderLayout
    prompts: int
    steps: int
    found_beside: tuple[str, ...]  # the files beside the model that were read

    def line(self) -> str:
        layout = self.layout
        beside = ", ".join(self.found_beside) or "no files beside it"
        return (
            f"adopted {layout.architecture} as {self.path}: {layout.layers} layers, {layout.kv_heads} kv "
            f"heads x {layout.head_dim}, vocab {layout.vocab_size}, context {layout.max_context} (read "
            f"{beside}); greedy tokens through the KV cache identical to recomputing the whole sequence "
            f"on {self.prompts} prompts x {self.steps} steps, batched with left padding"
        )


def adopt(source: Path, target: Path, *, context: int | None = None, force: bool = False) -> Adopted:
    """Copy ``source`` to ``target`` with hone's decoder metadata, checked; refuse in one line."""
    from hone.generate.decoder import Decoder
    from hone.generate.loadtest import cache_check

    if target.resolve() == source.resolve():
        raise OptionError(f"-o {target} is the model itself; hone never overwrites it, choose another path")
    model = load_onnx_file(source)
    if LAYOUT_KEY in model.ir.metadata_props:
        raise InvalidModelError(
            f"{source} already has hone's KV-cache layout; serve or optimize it as it is", path=str(source)
        )
    layers, kv_heads, head_dim, vocab, dims = _interface(model, source)
    config, found = _beside(source)
    layout = DecoderLayout(
        architecture=_architecture(config, source),
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_context=_context(context, config, source),
        eos_token_ids=_eos_ids(config, vocab),
    )
    model.ir.metadata_props[LAYOUT_KEY] = layout.to_json()
    if config.get("tokenizer.json"):
        model.ir.metadata_props[TOKENIZER_KEY] = config["tokenizer.json"]
    if config.get("chat_template"):
        model.ir.metadata_props[CHAT_TEMPLATE_KEY] = config["chat_template"]
    model.default_dims = {name: INVENTED[role] for role, name in dims.items()}
    ranges = {INPUT_IDS: (0, vocab), ATTENTION_MASK: (1, 2), POSITION_IDS: (0, min(layout.max_context, 64))}
    model.inputs = tuple(replace(s, value_range=ranges.get(s.name, s.value_range)) for s in model.inputs)
    written = model.save(target, force=force)
    check = cache_check(Decoder.load(written))
    if not check.equal:
        written.unlink(missing_ok=True)
        raise InvalidModelError(
            f"{source}'s KV-cache path does not give the tokens of recomputing the whole sequence "
            f"({check.first_difference}); its past/present or position handling is not the interface "
            "hone serves, nothing was written",
            path=str(source),
        )
    return Adopted(written, layout, check.prompts, check.steps, found)


def _interface(model: Model, source: Path) -> tuple[int, int, int, int, dict[str, str]]:
    """layers, kv_heads, head_dim, vocab, and the file's own names of its sequence, past and total
    dims; InvalidModelError naming the first thing that is not hone's decoder interface."""
    inputs = {s.name: s for s in model.inputs}
    layers = sum(1 for name in inputs if name.startswith("past_key_values.")) // 2
    if not layers:
        raise InvalidModelError(
            f"{source} has no past_key_values.{{i}}.key/value inputs: not a decoder with a KV cache "
            "(export one with Optimum's --task text-generation-with-past, or give file.py:factory)",
            path=str(source),
        )
    expected = [INPUT_IDS, ATTENTION_MASK, POSITION_IDS, *past_names(layers)]
    others = sorted(set(inputs) - set(expected))
    if others:
        raise InvalidModelError(
            f"{source} has inputs hone cannot feed: {', '.join(others)}; hone serves decoders whose "
            "inputs are exactly input_ids, attention_mask, position_ids and past_key_values.{i}.key/value "
            "(one graph, not a merged decoder: Optimum's default export, without --legacy)",
            path=str(source),
        )
    if POSITION_IDS not in inputs:
        raise InvalidModelError(
            f"{source} takes no position_ids; hone batches prompts with left padding and must give each "
            "token's position (re-export it with position_ids: Optimum's default export, without --legacy)",
            path=str(source),
        )
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InvalidModelError(
            f"{source} has no {', '.join(missing)}; a decoder's inputs are input_ids, attention_mask, "
            "position_ids and past_key_values.{i}.key/value for every layer",
            path=str(source),
        )
    outputs = [s.name for s in model.outputs]
    if outputs != [LOGITS, *present_names(layers)]:
        raise InvalidModelError(
            f"{source}'s outputs are {', '.join(outputs[:4])}{', ...' if len(outputs) > 4 else ''}; hone "
            f"needs logits then present.{{i}}.key/value for its {layers} layers, in that order",
            path=str(source),
        )
    for name in (INPUT_IDS, ATTENTION_MASK, POSITION_IDS):
        if inputs[name].dtype != "int64" or len(inputs[name].shape) != 2:
            raise InvalidModelError(
                f"{source}'s {name} is {inputs[name].dtype} {inputs[name].shape_text()}; hone feeds int64 "
                "[batch, length]",
                path=str(source),
            )
    first = inputs[past_names(layers)[0]]
    for name in past_names(layers):
        spec = inputs[name]
        if spec.dtype != "float32" or len(spec.shape) != 4:
            raise InvalidModelError(
                f"{source}'s {name} is {spec.dtype} {spec.shape_text()}; hone's cache is float32 "
                "[batch, kv_heads, past, head_dim] (export the decoder in float32)",
                path=str(source),
            )
        if spec.shape != first.shape:
            raise InvalidModelError(
                f"{source}'s {name} is {spec.shape_text()} but {first.name} is {first.shape_text()}; "
                "hone needs one cache shape for every layer",
                path=str(source),
            )
    kv_heads, head_dim = first.shape[1], first.shape[3]
    logits = model.outputs[0]
    vocab = logits.shape[-1] if len(logits.shape) == 3 else None
    if not isinstance(kv_heads, int) or not isinstance(head_dim, int) or not isinstance(vocab, int):
        raise InvalidModelError(
            f"{source}'s cache is {first.shape_text()} and its logits {logits.shape_text()}; hone needs "
            "static kv_heads, head_dim and vocab dims",
            path=str(source),
        )
    return layers, kv_heads, head_dim, vocab, _dim_names(inputs, first)


def _dim_names(inputs: dict[str, TensorSpec], past: TensorSpec) -> dict[str, str]:
    """The file's names of its new, past and total sequence dims, where each is a distinct symbol."""
    found = {
        "sequence": inputs[INPUT_IDS].shape[1],
        "past": past.shape[2],
        "total": inputs[ATTENTION_MASK].shape[1],
    }
    names = {role: name for role, name in found.items() if isinstance(name, str)}
    if len(set(names.values())) != len(names):
        return {}  # two roles share one name: no consistent lengths to record
    return names


def _beside(source: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """config.json's and generation_config.json's entries (the latter win), tokenizer.json's text
    and tokenizer_config.json's chat template, from the model's folder; the file names read."""
    folder = source.parent
    merged: dict[str, Any] = {}
    found = []
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidModelError(
                f"{path} is not readable JSON ({exc}); fix or remove it", path=str(path)
            ) from exc
        if not isinstance(data, dict):
            raise InvalidModelError(f"{path} is not a JSON object; fix or remove it", path=str(path))
        if name == "tokenizer_config.json":
            template = data.get("chat_template")
            if isinstance(template, str):
                merged["chat_template"] = template
        else:
            merged.update(data)
        found.append(name)
    tokenizer = folder / "tokenizer.json"
    if tokenizer.is_file():
        text = tokenizer.read_text(encoding="utf-8")
        _check_tokenizer(text, tokenizer)
        merged["tokenizer.json"] = text
        found.append("tokenizer.json")
    return merged, tuple(found)


def _check_tokenizer(text: str, path: Path) -> None:
    import tokenizers

    try:
        tokenizers.Tokenizer.from_str(text)
    except Exception as exc:  # the tokenizers library raises its own Exception type
        raise InvalidModelError(
            f"{path} is not a tokenizer the tokenizers library reads ({exc}); fix or remove it",
            path=str(path),
        ) from exc


def _context(given: int | None, config: dict[str, Any], source: Path) -> int:
    if given is not None:
        if given < 2:
            raise OptionError(f"--context {given} is too short; give the tokens the model was trained for")
        return given
    for key in CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
            return value
    raise OptionError(
        f"the context length of {source} is unknown (no config.json beside it with "
        "max_position_embeddings or n_positions); give --context N"
    )


def _eos_ids(config: dict[str, Any], vocab: int) -> tuple[int, ...]:
    value = config.get("eos_token_id")
    ids = value if isinstance(value, list) else [value]
    return tuple(i for i in ids if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab)


def _architecture(config: dict[str, Any], source: Path) -> str:
    names = config.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return source.stem


__all__ = ["Adopted", "adopt"]
