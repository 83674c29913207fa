"""One exported decoder under onnxruntime: a forward step over a batch, with the cache as arrays.

``Decoder`` knows nothing of scheduling; ``hone.generate.engine`` decides what each step holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hone.errors import InvalidModelError
from hone.generate.tokenizer import Tokenizer
from hone.generate.types import (
    ATTENTION_MASK,
    CHAT_TEMPLATE_KEY,
    INPUT_IDS,
    LAYOUT_KEY,
    POSITION_IDS,
    TOKENIZER_KEY,
    DecoderLayout,
)
from hone.model import Model, load_onnx_file
from hone.runtime import Session, SessionConfig


def is_generative(model: Model) -> bool:
    return LAYOUT_KEY in model.ir.metadata_props


def read_layout(model: Model) -> DecoderLayout:
    text = model.ir.metadata_props.get(LAYOUT_KEY)
    if text is None:
        raise InvalidModelError(
            f"{model.name} has no KV-cache interface; export it with `hone export MODEL --target generate`",
            model=model.name,
        )
    return DecoderLayout.from_json(text)


@dataclass
class StepOutput:
    """Logits of each row's last new token, and the whole cache after the step (past + new)."""

    last_logits: np.ndarray  # [batch, vocab]
    presents: list[np.ndarray]  # per past name: [batch, kv_heads, past + new, head_dim]
    all_logits: np.ndarray | None = None  # [batch, new, vocab] when asked for (perplexity)


class Decoder:
    """An exported decoder (``hone export --target generate``) in an onnxruntime session."""

    def __init__(self, model: Model, *, threads: int | None = None) -> None:
        self.model = model
        self.layout = read_layout(model)
        self.session = Session(model, SessionConfig(threads=threads))
        tokenizer_json = model.ir.metadata_props.get(TOKENIZER_KEY)
        self.tokenizer = Tokenizer.from_json(tokenizer_json) if tokenizer_json else None
        self.chat_template = model.ir.metadata_props.get(CHAT_TEMPLATE_KEY)
        self._past_names = self.layout.past_names

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> Decoder:
        return cls(load_onnx_file(Path(path)), threads=threads)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.layout.kv_heads, 0, self.layout.head_dim)
        return [np.zeros(shape, np.float32) for _ in self._past_names]

    def step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: list[np.ndarray],
        *,
        keep_all_logits: bool = False,
    ) -> StepOutput:
        feeds = {
            INPUT_IDS: np.ascontiguousarray(input_ids, dtype=np.int64),
            ATTENTION_MASK: np.ascontiguousarray(attention_mask, dtype=np.int64),
            POSITION_IDS: np.ascontiguousarray(position_ids, dtype=np.int64),
            **dict(zip(self._past_names, past, strict=True)),
        }
        outputs = self.session.run(feeds)
        logits = outputs[0]
        return StepOutput(logits[:, -1, :], outputs[1:], logits if keep_all_logits else None)

    def greedy(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
        """Greedy continuation of each prompt by ``steps`` tokens, the prompts batched with left padding
        (what the server does), without stopping at end-of-sequence tokens."""
        from hone.generate.padding import left_pad

        ids, mask = left_pad(prompts)
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        past = self.empty_past(len(prompts))
        generated: list[list[int]] = [[] for _ in prompts]
        for _ in range(steps):
            out = self.step(ids, mask, positions, past)
            tokens = out.last_logits.argmax(axis=-1)
            for row, token in enumerate(tokens):
                generated[row].append(int(token))
            past = out.presents
            ids = tokens[:, None].astype(np.int64)
            positions = positions[:, -1:] + 1
            mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], axis=1)
        return generated


__all__ = ["Decoder", "StepOutput", "is_generative", "read_layout"]
