"""What a generative (decoder) ONNX model is to hone: its KV-cache layout, read from the file itself.

``hone export --target generate`` writes ``DecoderLayout`` as JSON in the model's metadata_props under
``LAYOUT_KEY`` (and the tokenizer's JSON under ``TOKENIZER_KEY``), so that every later command
(optimize, quantize, serve) knows the graph's interface without the PyTorch checkpoint.

The interface (Optimum's names, one graph for prefill and decode)::

    input_ids        int64 [batch, sequence]            the new tokens
    attention_mask   int64 [batch, past_sequence + sequence]   1 = a real token, 0 = padding
    position_ids     int64 [batch, sequence]            each new token's position in its sequence
    past_key_values.{i}.key / .value   float32 [batch, kv_heads, past_sequence, head_dim]
    -> logits        float32 [batch, sequence, vocab]
    -> present.{i}.key / .value        float32 [batch, kv_heads, past_sequence + sequence, head_dim]

Causality is by column index: a new token at column c of the mask attends to the columns <= c
whose mask is 1. Padding may therefore sit anywhere (hone's batches pad on the left).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

LAYOUT_KEY = "hone.generate"
TOKENIZER_KEY = "hone.tokenizer"
CHAT_TEMPLATE_KEY = "hone.chat_template"

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]


@dataclass(frozen=True)
class DecoderLayout:
    """A decoder's KV cache and vocabulary, as its exported graph has them."""

    architecture: str  # the transformers class, e.g. "GPT2LMHeadModel"
    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int  # positions the model was trained for: prompt + generated tokens
    eos_token_ids: tuple[int, ...] = ()

    @property
    def past_names(self) -> list[str]:
        return past_names(self.layers)

    @property
    def present_names(self) -> list[str]:
        return present_names(self.layers)

    def bytes_per_token(self) -> int:
        """float32 keys and values of one token over all layers."""
        return self.layers * 2 * self.kv_heads * self.head_dim * 4

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DecoderLayout:
        data = json.loads(text)
        data["eos_token_ids"] = tuple(data.get("eos_token_ids", ()))
        return cls(**data)


__all__ = [
    "ATTENTION_MASK",
    "CHAT_TEMPLATE_KEY",
    "INPUT_IDS",
    "LAYOUT_KEY",
    "LOGITS",
    "POSITION_IDS",
    "TOKENIZER_KEY",
    "DecoderLayout",
    "past_names",
    "present_names",
]
