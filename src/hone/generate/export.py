"""A transformers causal LM to one ONNX graph with explicit KV-cache inputs and outputs.

The module is wrapped so that the graph takes the cache as plain tensors (``past_key_values.{i}.*``)
and a 2-D ``attention_mask``; the wrapper builds the 4-D additive mask itself (causal by column
index, padding masked), so every architecture gets the same interface and any padding layout works.
Attention is exported in its eager form: the fusions (``hone optimize``) decide what to fuse and
verify it. The TorchScript exporter is used, as for every other hone export (``hone.torch_export``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from hone.errors import FactoryError
from hone.generate.types import (
    ATTENTION_MASK,
    CHAT_TEMPLATE_KEY,
    INPUT_IDS,
    LAYOUT_KEY,
    LOGITS,
    POSITION_IDS,
    TOKENIZER_KEY,
    DecoderLayout,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True)
class DecoderSource:
    """A causal LM in PyTorch with what travels with it: its tokenizer and chat template, if any."""

    model: Any  # a transformers PreTrainedModel with a causal LM head, in eval mode
    label: str
    tokenizer_json: str | None = None
    chat_template: str | None = None


def decoder_source(model: object, label: str) -> DecoderSource:
    """What a ``file.py:factory`` returned -- a causal LM, or ``(model, tokenizer)`` -- checked."""
    import torch

    tokenizer: object = None
    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise FactoryError(
            f"{label} returned {type(model).__name__}, not a transformers causal LM "
            "(a PreTrainedModel such as GPT2LMHeadModel, or a (model, tokenizer) pair); "
            "any other module is exported with --input-shape (hone run, optimize, quantize, export)"
        )
    tokenizer_json, chat_template = _tokenizer_parts(tokenizer, label)
    model.eval()
    return DecoderSource(model, label, tokenizer_json, chat_template)


def _tokenizer_parts(tokenizer: object, label: str) -> tuple[str | None, str | None]:
    if tokenizer is None:
        return None, None
    if isinstance(tokenizer, str):
        return tokenizer, None
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # a transformers fast tokenizer
    to_str = getattr(backend, "to_str", None)
    if not callable(to_str):
        raise FactoryError(
            f"{label}'s tokenizer is a {type(tokenizer).__name__}; hone needs a fast tokenizer "
            "(tokenizers.Tokenizer or a transformers *TokenizerFast)"
        )
    template = getattr(tokenizer, "chat_template", None)
    return str(to_str()), template if isinstance(template, str) else None


def layout_of(model: Any) -> DecoderLayout:
    """The KV-cache layout of ``model``, read from one real forward step (not guessed from config)."""
    import torch

    config = model.config
    vocab = int(config.vocab_size)
    with torch.inference_mode():
        out = model(input_ids=torch.zeros((1, 1), dtype=torch.long), use_cache=True)
    cache = out.past_key_values
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        raise FactoryError(
            f"{type(model).__name__} returns no key/value cache; hone exports decoders with a "
            "transformers DynamicCache (GPT-2, Llama, Qwen2, Phi, ...)"
        )
    keys = layers[0].keys
    max_context = int(
        getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
    )
    return DecoderLayout(
        architecture=type(model).__name__,
        layers=len(layers),
        kv_heads=int(keys.shape[1]),
        head_dim=int(keys.shape[3]),
        vocab_size=vocab,
        max_context=max_context,
        eos_token_ids=_eos_ids(model, vocab),
    )


def _eos_ids(model: Any, vocab: int) -> tuple[int, ...]:
    generation = getattr(model, "generation_config", None)
    raw = getattr(generation, "eos_token_id", None)
    if raw is None:
        raw = getattr(model.config, "eos_token_id", None)
    ids = [raw] if isinstance(raw, int) else list(raw or [])
    return tuple(int(i) for i in ids if 0 <= int(i) < vocab)  # ids outside the vocabulary never occur


def kv_cache_module(model: Any, layers: int) -> torch.nn.Module:
    import torch
    from transformers import DynamicCache

    class KVCacheDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            # column index of every key, and of every new token (the last `sequence` columns)
            columns = torch.cumsum(torch.ones_like(attention_mask), dim=1) - 1
            query_columns = columns[:, columns.shape[1] - input_ids.shape[1] :]
            allowed = (columns[:, None, None, :] <= query_columns[:, None, :, None]) & (
                attention_mask[:, None, None, :] > 0
            )
            zero = torch.zeros((), dtype=torch.float32)
            blocked = torch.full((), torch.finfo(torch.float32).min)
            mask = torch.where(allowed, zero, blocked)
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            presents = []
            for layer in out.past_key_values.layers:
                presents += [layer.keys, layer.values]
            return (out.logits, *presents)

    return KVCacheDecoder().eval()


def use_eager_attention(model: Any) -> None:
    """Eager attention: the form whose 4-D mask the wrapper builds (and whose ops hone can fuse)."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("eager")
            return
        except (ValueError, TypeError, AttributeError):  # older transformers: set it on the config
            pass
    model.config._attn_implementation = "eager"


def export_decoder(source: DecoderSource, path: Path) -> DecoderLayout:
    """Export ``source`` to ``path``: prefill and decode in one graph, the layout in its metadata."""
    import torch

    from hone.generate.types import past_names, present_names

    model = source.model
    use_eager_attention(model)
    layout = layout_of(model)
    batch, past, new = 2, 3, 2
    past_tensors = [
        torch.zeros((batch, layout.kv_heads, past, layout.head_dim)) for _ in range(2 * layout.layers)
    ]
    args = (
        torch.ones((batch, new), dtype=torch.long),
        torch.ones((batch, past + new), dtype=torch.long),
        torch.arange(past, past + new).repeat(batch, 1),
        *past_tensors,
    )
    inputs = [INPUT_IDS, ATTENTION_MASK, POSITION_IDS, *past_names(layout.layers)]
    outputs = [LOGITS, *present_names(layout.layers)]
    dynamic: dict[str, dict[int, str]] = {
        INPUT_IDS: {0: "batch", 1: "sequence"},
        ATTENTION_MASK: {0: "batch", 1: "total_sequence"},
        POSITION_IDS: {0: "batch", 1: "sequence"},
        LOGITS: {0: "batch", 1: "sequence"},
    }
    dynamic.update({name: {0: "batch", 2: "past_sequence"} for name in past_names(layout.layers)})
    dynamic.update({name: {0: "batch", 2: "total_sequence"} for name in present_names(layout.layers)})
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                kv_cache_module(model, layout.layers),
                args,
                str(path),
                dynamo=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=OPSET,
            )
    except Exception as exc:  # torch.onnx raises many types; the user gets one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FactoryError(
            f"torch.onnx could not export {source.label} with a KV cache ({type(exc).__name__}: {first})"
        ) from exc
    write_metadata(path, layout, source.tokenizer_json, source.chat_template)
    logger.info(
        "exported %s: %d layers, %d kv heads x %d",
        source.label,
        layout.layers,
        layout.kv_heads,
        layout.head_dim,
    )
    return layout


def write_metadata(
    path: Path, layout: DecoderLayout, tokenizer_json: str | None, chat_template: str | None
) -> None:
    proto = onnx.load(str(path))
    entries = {LAYOUT_KEY: layout.to_json()}
    if tokenizer_json:
        entries[TOKENIZER_KEY] = tokenizer_json
    if chat_template:
        entries[CHAT_TEMPLATE_KEY] = chat_template
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    _record_invented_inputs(path, layout)


# Consistent lengths for invented inputs (total = past + new), so that hone optimize, profile and
# bench can run a decoder without --dim; and the ranges its integer inputs take.
INVENTED_DIMS = {"sequence": 8, "past_sequence": 4, "total_sequence": 12}


def _record_invented_inputs(path: Path, layout: DecoderLayout) -> None:
    from dataclasses import replace

    from hone.model import load_onnx_file

    ranges = {
        INPUT_IDS: (0, layout.vocab_size),
        ATTENTION_MASK: (1, 2),
        POSITION_IDS: (0, min(layout.max_context, 64)),
    }
    model = load_onnx_file(path)
    model.default_dims = dict(INVENTED_DIMS)
    model.inputs = tuple(replace(s, value_range=ranges.get(s.name, s.value_range)) for s in model.inputs)
    model.save(path, force=True)


@dataclass(frozen=True)
class CheckedExport:
    path: Path
    layout: DecoderLayout
    prompts: int
    steps: int

    def line(self) -> str:
        layout = self.layout
        return (
            f"exported {layout.architecture} to {self.path}: {layout.layers} layers, {layout.kv_heads} "
            f"kv heads x {layout.head_dim}, context {layout.max_context}; greedy tokens identical to "
            f"PyTorch on {self.prompts} prompts x {self.steps} steps, alone and batched"
        )


def export_checked(source: DecoderSource, path: Path, *, prompts: int = 3, steps: int = 16) -> CheckedExport:
    """Export, then refuse (and remove the file) unless the graph's greedy tokens, batched with left
    padding, equal PyTorch's own (the whole sequence recomputed each step) on invented prompts."""
    import numpy as np
    import torch

    from hone.errors import ExecutionError
    from hone.generate.decoder import Decoder

    layout = export_decoder(source, path)
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, layout.vocab_size, size=n).tolist() for n in (2, 5, 9)[:prompts]]
    steps = min(steps, layout.max_context - max(len(r) for r in rows))
    got = Decoder.load(path).greedy(rows, steps)
    for row, tokens in zip(rows, got, strict=True):
        ids = torch.tensor([row])
        with torch.inference_mode():
            for _ in range(steps):
                token = source.model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, token.view(1, 1)], dim=1)
        if ids[0, len(row) :].tolist() != tokens:
            path.unlink(missing_ok=True)
            raise ExecutionError(
                f"the exported {layout.architecture} does not give PyTorch's greedy tokens; nothing was "
                "written (report this model to hone)"
            )
    return CheckedExport(path, layout, len(rows), steps)


__all__ = [
    "OPSET",
    "CheckedExport",
    "DecoderSource",
    "export_checked",
    "decoder_source",
    "export_decoder",
    "kv_cache_module",
    "layout_of",
    "use_eager_attention",
    "write_metadata",
]
