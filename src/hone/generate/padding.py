"""Left padding: token rows of different lengths as one [batch, width] array and its mask, and which
prompts are worth padding to each other (``prefill_groups``)."""

from __future__ import annotations

import numpy as np

# one more prefill call costs about what this many prompt tokens do: measured on tiny_gpt, 0.7 ms a
# call against 0.045 ms a token (10 prompts of 8-96 tokens, alone vs as one padded batch)
CALL_TOKENS = 16


def left_pad(rows: list[list[int]], *, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` right-aligned in an int64 array, and the mask (1 = real token, 0 = padding)."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
    return ids, mask


def prefill_groups(lengths: list[int], call_tokens: int = CALL_TOKENS) -> list[list[int]]:
    """The prompts (by index) split into groups run as one padded batch each: sorted by length, cut
    where ``call_tokens`` per call + rows x the group's longest prompt is least (dynamic programming)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[k]: the cost of the first k prompts
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        width = lengths[order[end - 1]]
        for begin in range(end):
            cost = best[begin] + call_tokens + (end - begin) * width
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    groups: list[list[int]] = []
    end = len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


__all__ = ["CALL_TOKENS", "left_pad", "prefill_groups"]
