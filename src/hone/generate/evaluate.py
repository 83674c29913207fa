"""How well a decoder predicts held-out text, and how closely a candidate follows the float model.

Two measurements, both on real text tokenized by the model's own tokenizer:

- **perplexity**: exp of the mean next-token loss over windows of held-out text, each window scored
  in one prefill from an empty cache;
- **greedy-token agreement**: the float model's greedy continuation of N prompts is computed once;
  a candidate is then fed each prompt plus that continuation in one step (teacher forcing) and its
  argmax at every continuation position is compared with the float model's token. One early
  difference therefore counts as one token, not as the whole tail it would change when running
  free. The share of equal tokens is the agreement.

The text is ``--data`` (a .txt file, or a folder of them) or, without it, the held-out documents of
Python's own documentation (``hone.zoo.tiny_gpt``'s held-out split, never trained on there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hone.errors import OptionError
from hone.generate.decoder import Decoder

WINDOW = 128  # tokens per perplexity window (fewer when the context is shorter)
WINDOWS = 24
PROMPTS = 16
PROMPT_TOKENS = 16
CONTINUATION = 32
_BATCH = 8


@dataclass(frozen=True)
class EvalText:
    """Token windows for perplexity and prompts for agreement, with where the text came from."""

    windows: np.ndarray  # [n, window] int64
    prompts: np.ndarray  # [PROMPTS, PROMPT_TOKENS] int64
    description: str


@dataclass(frozen=True)
class Reference:
    """The float model's numbers the candidates are judged against."""

    perplexity: float
    continuations: np.ndarray  # [PROMPTS, CONTINUATION] the float model's greedy tokens


@dataclass(frozen=True)
class Quality:
    perplexity: float
    perplexity_increase: float  # relative to the reference: 0.02 = +2%
    agreement: float  # share of continuation tokens equal to the float model's greedy ones


def read_texts(data: str | None) -> tuple[list[str], str]:
    """The documents of ``--data`` (a .txt file or a folder of .txt files), or Python's held-out docs."""
    if data is None:
        from hone.generate.tiny_gpt import heldout_texts

        texts = heldout_texts()
        return texts, f"{len(texts)} held-out documents of Python's own documentation"
    path = Path(data).expanduser()
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise OptionError(f"--data {data}: give a .txt file or a folder of .txt files of held-out text")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    return texts, f"{sum(len(t) for t in texts)} characters of text from {data}"


def eval_text(decoder: Decoder, data: str | None) -> EvalText:
    """Windows and prompts from the text, tokenized by the decoder's own tokenizer."""
    if decoder.tokenizer is None:
        raise OptionError(
            f"{decoder.model.name} carries no tokenizer, so hone cannot turn text into its tokens; "
            "export it with its tokenizer (a factory returning (model, tokenizer))"
        )
    texts, description = read_texts(data)
    eos = decoder.layout.eos_token_ids[:1]
    stream: list[int] = []
    for text in texts:
        stream += [*decoder.tokenizer.encode(text), *eos]
    window = min(WINDOW, decoder.layout.max_context)
    count = min(WINDOWS, len(stream) // window)
    needed = PROMPTS * (PROMPT_TOKENS + CONTINUATION)
    if count < 2 or len(stream) < needed:
        raise OptionError(
            f"the text gives {len(stream)} tokens; hone needs at least {max(2 * window, needed)} to "
            "measure perplexity and agreement; give more text with --data"
        )
    windows = np.asarray(stream[: count * window], np.int64).reshape(count, window)
    # prompts from evenly spaced places in the stream
    starts = np.linspace(0, len(stream) - PROMPT_TOKENS - 1, PROMPTS).astype(int)
    prompts = np.stack([np.asarray(stream[s : s + PROMPT_TOKENS], np.int64) for s in starts])
    return EvalText(windows, prompts, f"{description}: {windows.size} tokens, {PROMPTS} prompts")


def _logits(decoder: Decoder, ids: np.ndarray) -> np.ndarray:
    """All positions' logits of ``ids`` [batch, n] in one prefill from an empty cache."""
    batch, length = ids.shape
    mask = np.ones((batch, length), np.int64)
    positions = np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length))
    out = decoder.step(ids, mask, positions, decoder.empty_past(batch), keep_all_logits=True)
    assert out.all_logits is not None
    return out.all_logits


def perplexity(decoder: Decoder, windows: np.ndarray) -> float:
    total, count = 0.0, 0
    for start in range(0, len(windows), _BATCH):
        ids = windows[start : start + _BATCH]
        logits = _logits(decoder, ids)[:, :-1].astype(np.float64)
        peak = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[..., 0]
        picked = np.take_along_axis(logits, ids[:, 1:, None], axis=-1)[..., 0]
        total += float((log_norm - picked).sum())
        count += picked.size
    return math.exp(total / count)


def reference(decoder: Decoder, text: EvalText) -> Reference:
    continuations = np.asarray(decoder.greedy(text.prompts.tolist(), CONTINUATION), np.int64)
    return Reference(perplexity(decoder, text.windows), continuations)


def agreement(decoder: Decoder, text: EvalText, ref: Reference) -> float:
    """Teacher-forced greedy agreement with the float model's continuations."""
    equal, total = 0, 0
    for start in range(0, len(text.prompts), _BATCH):
        prompts = text.prompts[start : start + _BATCH]
        expected = ref.continuations[start : start + _BATCH]
        ids = np.concatenate([prompts, expected[:, :-1]], axis=1)
        predicted = _logits(decoder, ids)[:, PROMPT_TOKENS - 1 :].argmax(axis=-1)
        equal += int((predicted == expected).sum())
        total += expected.size
    return equal / total


def quality(decoder: Decoder, text: EvalText, ref: Reference) -> Quality:
    ppl = perplexity(decoder, text.windows)
    return Quality(ppl, ppl / ref.perplexity - 1.0, agreement(decoder, text, ref))


def decode_seconds(decoder: Decoder, prompt: list[int], tokens: int) -> float:
    """Seconds to generate ``tokens`` greedy tokens for one prompt (prefill included): c=1 speed."""
    started = time.perf_counter()
    decoder.greedy([prompt], tokens)
    return time.perf_counter() - started


__all__ = [
    "EvalText",
    "Quality",
    "Reference",
    "agreement",
    "decode_seconds",
    "eval_text",
    "perplexity",
    "quality",
    "read_texts",
    "reference",
]
