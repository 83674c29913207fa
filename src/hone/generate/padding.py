"""Left padding: token rows of different lengths as one [batch, width] array and its mask."""

from __future__ import annotations

import numpy as np


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


__all__ = ["left_pad"]
