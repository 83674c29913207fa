"""The KV cache of the sequences running together: one padded array per layer and part, and a mask.

Why padded and not paged: onnxruntime's CPU attention takes the cache as one dense
[batch, heads, length, head_dim] tensor per layer, so a paged cache would be gathered into exactly
this form before every step. Keeping it in that form means a decode step copies nothing but what the
graph's own Concat writes (its ``present`` outputs become the next step's ``past``); only a join or a
leave re-lays rows. Each row's tokens sit at the right, left padding is masked, and columns that
every row pads are dropped when a sequence leaves, so the width stays that of the longest sequence.
"""

from __future__ import annotations

import numpy as np


class BatchCache:
    """Rows = sequences (by id), each with its cache, mask and next position."""

    def __init__(self, past: list[np.ndarray], mask: np.ndarray, positions: np.ndarray, ids: list[int]):
        self.past = past  # per past name: [rows, kv_heads, width, head_dim]
        self.mask = mask  # [rows, width] int64
        self.positions = positions  # [rows] int64: the position of each row's next token
        self.ids = ids  # the sequence id of each row

    @classmethod
    def empty(cls, names: int, kv_heads: int, head_dim: int) -> BatchCache:
        past = [np.zeros((0, kv_heads, 0, head_dim), np.float32) for _ in range(names)]
        return cls(past, np.zeros((0, 0), np.int64), np.zeros((0,), np.int64), [])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def tokens(self) -> int:
        """Real (unpadded) tokens held."""
        return int(self.mask.sum())

    def nbytes(self) -> int:
        return sum(int(p.nbytes) for p in self.past)

    def decode_inputs(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask, position_ids for one new token per row."""
        rows = len(self.ids)
        mask = np.concatenate([self.mask, np.ones((rows, 1), np.int64)], axis=1)
        return tokens.reshape(rows, 1).astype(np.int64), mask, self.positions.reshape(rows, 1)

    def advance(self, presents: list[np.ndarray], new_mask: np.ndarray, new_tokens: int = 1) -> None:
        """After a step: the graph's presents are the cache, ``new_mask`` its mask."""
        self.past = presents
        self.mask = new_mask
        self.positions = self.positions + new_tokens

    def remove(self, sequence_ids: set[int]) -> None:
        keep = [i for i, sid in enumerate(self.ids) if sid not in sequence_ids]
        if len(keep) == len(self.ids):
            return
        index = np.asarray(keep, dtype=np.int64)
        self.ids = [self.ids[i] for i in keep]
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        used = self.mask.any(axis=0)
        first = int(used.argmax()) if used.any() else self.mask.shape[1]
        self.mask = np.ascontiguousarray(self.mask[:, first:])
        self.past = [np.ascontiguousarray(p[index][:, :, first:]) for p in self.past]

    def merge(self, other: BatchCache) -> None:
        """Append ``other``'s rows; the narrower side is padded on the left."""
        if not other.ids:
            return
        if not self.ids:
            self.past, self.mask, self.positions, self.ids = (
                other.past,
                other.mask,
                other.positions,
                list(other.ids),
            )
            return
        width = max(self.width, other.width)
        self.past = [
            np.concatenate([_pad_left(a, width, axis=2), _pad_left(b, width, axis=2)], axis=0)
            for a, b in zip(self.past, other.past, strict=True)
        ]
        self.mask = np.concatenate([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)])
        self.positions = np.concatenate([self.positions, other.positions])
        self.ids = self.ids + list(other.ids)


def _pad_left(array: np.ndarray, width: int, axis: int) -> np.ndarray:
    missing = width - array.shape[axis]
    if missing == 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (missing, 0)
    return np.pad(array, pad)


__all__ = ["BatchCache"]
