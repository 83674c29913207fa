"""Requests' rows into one batch, and the batch's output rows back to each request.

The one implementation of batching's array work, for hone's batcher (``batcher``) and for the
replicas of ``hone serve --ray`` (``ray_serve``, under Ray's ``@serve.batch``):

- ``batch_key``: requests can share a batch when every input agrees on dtype and on all dims but
  the first (the batch dim);
- ``concatenate``: their inputs joined along the batch dim, in request order;
- ``split_rows``: each request's rows of every output, after checking that every output has one
  row per sample of the batch; when one does not, the batch fails with an
  ``InferenceExecutionError`` that quotes both counts, the output's rows and the batch's samples
  (as Ray Serve's batching quotes the lengths it got and expected).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from hone.errors import InferenceExecutionError

Outputs = dict[str, np.ndarray]


def batch_key(feeds: Mapping[str, np.ndarray]) -> Hashable:
    """Equal for requests that can be concatenated: each input's dtype and dims after the first."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items()))


def concatenate(feeds_list: Sequence[Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    """One batch's inputs: each input of every request joined along axis 0 (one request: as it is)."""
    if len(feeds_list) == 1:
        return feeds_list[0]
    return {name: np.concatenate([feeds[name] for feeds in feeds_list], axis=0) for name in feeds_list[0]}


def split_rows(outputs: Outputs, samples: Sequence[int], model: str) -> list[Outputs]:
    """Each request's rows of every output, in order (views into the batch's arrays).

    ``samples`` holds each request's sample count. Every output must have ``sum(samples)`` rows;
    otherwise an ``InferenceExecutionError`` names the output, its rows and the batch's samples.
    """
    total = sum(samples)
    for name, array in outputs.items():
        rows = array.shape[0] if array.ndim else None
        if rows != total:
            raise InferenceExecutionError(
                f"model {model!r} returned output {name!r} with "
                f"{'no batch dim' if rows is None else f'{rows} rows'} for a batch of {total} samples "
                f"from {len(samples)} request(s) (its shape: {list(array.shape)}); with batching on every "
                "output's first dim must be the batch dim (serve it with max_batch_size 0, "
                "--max-batch-size 0, to turn batching off)",
                model=model,
                output=name,
            )
    if len(samples) == 1:
        return [outputs]
    offsets = np.cumsum(samples)[:-1]
    pieces = {name: np.split(array, offsets) for name, array in outputs.items()}
    return [{name: pieces[name][index] for name in outputs} for index in range(len(samples))]
