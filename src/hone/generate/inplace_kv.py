"""An in-place KV cache: each layer's keys and values in one preallocated buffer that a decode step
appends to where it lies, instead of copying the whole cache through the graph's Concat.

Why: the padded cache (``batch_cache.py``) is the graph's own interface -- ``present = Concat(past,
new)`` -- so every decode step copies every row's whole cache, and every row attends over the
longest row's width. On tiny_gpt at 32 rows over 160 past tokens that Concat was 42% of the step
(onnxruntime's profile). onnxruntime's CPU ``GroupQueryAttention`` instead reads and writes the cache
in one buffer when ``past`` and ``present`` are bound to the same memory, with each row's length
given (``seqlens_k``): a row's tokens sit at its start, the new one is written after them, and a
row attends over its own length only.

The serving form is made from a decoder that ``hone optimize`` fused (one MultiHeadAttention per
layer over the cache's Concat): each MultiHeadAttention and its Concats become one
GroupQueryAttention, the mask input goes (causality and lengths are GroupQueryAttention's), and two
inputs come in (``seqlens_k``, ``total_sequence_length``). It is made in memory when a server starts,
never written, and used only if its greedy tokens equal the padded graph's on a batch of prompts of
different lengths; otherwise the padded cache serves, and the ready line says which.

onnxruntime's CPU GroupQueryAttention refuses new tokens over a past for more than one row at once,
but takes them for one row. So a prompt is prefilled straight into its row (a view of the buffers,
one row long, bound in place), and a chunk of a long prompt continues over the row's earlier chunks
the same way (chunked prefill). Joining prompts of about the same length are cheaper together: they
run as one batch from an empty past (GroupQueryAttention's "first prompt" form, right padded) and
their caches are copied into free rows. ``prefill_groups`` decides, sorting the prompts by length and
splitting them where the padding would cost more than another call (measured on tiny_gpt: a call
costs about what 16 prompt tokens do). Decode steps run one token for every row; a row whose prompt
is still being prefilled writes its step's token where its next chunk will write (so it is
overwritten) and does not advance. Memory: rows x context x the model's bytes per token, allocated as
rows are first needed (bounded by ``--max-sequences``).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from hone.generate.decoder import Decoder
from hone.generate.padding import prefill_groups
from hone.generate.types import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS
from hone.model import Model

logger = logging.getLogger(__name__)

SEQLENS_K = "seqlens_k"  # int32 [batch]: each row's length after this step, minus one
TOTAL_SEQUENCE_LENGTH = "total_sequence_length"  # int32 scalar: the longest row's length after it
LOGITS_ROWS = "logits_rows"  # int64 [batch]: which token of the flattened (batch x new) each row's logits are
MS_DOMAIN = "com.microsoft"


class NotApplicable(Exception):
    """Why a decoder cannot be served with the in-place cache (said on the ready line)."""


def inplace_graph(model: Model) -> Model:
    """The GroupQueryAttention form of a fused decoder (see the module docstring); NotApplicable
    says why not."""
    from hone.generate.decoder import read_layout

    layout = read_layout(model)
    copy = model.clone("inplace_kv")
    graph = copy.ir.graph
    attentions = [n for n in graph if n.op_type == "MultiHeadAttention" and n.domain == MS_DOMAIN]
    if len(attentions) != layout.layers:
        raise NotApplicable(
            f"{len(attentions)} MultiHeadAttention for {layout.layers} layers (run hone optimize first)"
        )
    past_inputs = {v.name: v for v in graph.inputs if v.name is not None and v.name in set(layout.past_names)}
    seqlens = ir.Value(name=SEQLENS_K, type=ir.TensorType(ir.DataType.INT32), shape=ir.Shape(["batch"]))
    total = ir.Value(name=TOTAL_SEQUENCE_LENGTH, type=ir.TensorType(ir.DataType.INT32), shape=ir.Shape([]))
    for attention in attentions:
        if len(attention.inputs) > 6 and any(v is not None for v in attention.inputs[6:]):
            raise NotApplicable("a MultiHeadAttention already takes a past")
        query, keys, values = attention.inputs[0], attention.inputs[1], attention.inputs[2]
        if query is None or keys is None or values is None:
            raise NotApplicable("a MultiHeadAttention has no query, key or value")
        key_cat, value_cat = _cache_concat(keys, past_inputs), _cache_concat(values, past_inputs)
        heads = _int_attr(attention, "num_heads")
        new_keys, kv_heads = _merged(graph, attention, key_cat.inputs[1], "key")
        new_values, _ = _merged(graph, attention, value_cat.inputs[1], "value")
        if heads % kv_heads:
            raise NotApplicable(f"{heads} query heads are not a multiple of {kv_heads} key heads")
        attributes: dict[str, int | float] = {"num_heads": heads, "kv_num_heads": kv_heads}
        if "scale" in attention.attributes:
            attributes["scale"] = attention.attributes["scale"].as_float()
        fused = ir.node(
            "GroupQueryAttention",
            [query, new_keys, new_values, key_cat.inputs[0], value_cat.inputs[0], seqlens, total],
            attributes=attributes,
            domain=MS_DOMAIN,
            num_outputs=3,
            name=f"{attention.name}_inplace",
        )
        graph.insert_before(attention, fused)
        out = attention.outputs[0]
        fused.outputs[0].shape = out.shape
        fused.outputs[0].dtype = out.dtype or ir.DataType.FLOAT
        out.replace_all_uses_with(fused.outputs[0], replace_graph_outputs=True)
        for concat, present in ((key_cat, fused.outputs[1]), (value_cat, fused.outputs[2])):
            old = concat.outputs[0]
            name = old.name
            present.dtype = old.dtype or ir.DataType.FLOAT
            present.shape = (
                ir.Shape([old.shape[0], old.shape[1], "cache_sequence", old.shape[3]]) if old.shape else None
            )
            graph.outputs[graph.outputs.index(old)] = present
            old.name = f"{name}_unused"
            present.name = name
    graph.inputs.extend([seqlens, total])
    _last_token_logits(graph)
    ir.passes.common.RemoveUnusedNodesPass()(copy.ir)
    for unused in [v for v in graph.inputs if not v.uses() and v.name == ATTENTION_MASK]:
        graph.inputs.remove(unused)
    graph.sort()
    return copy


def _last_token_logits(graph: ir.Graph) -> None:
    """The LM head on one token per row (``logits_rows`` picks it) instead of on every new token: a
    step only samples each row's last, and a prefill's other logits were 14% of its multiply-adds on
    tiny_gpt. Left as it is unless ``logits`` is ``MatMul(hidden, W)`` (or that plus a bias) with a
    known hidden width."""
    logits = next((v for v in graph.outputs if v.name == LOGITS), None)
    head = logits.producer() if logits is not None else None
    if head is not None and head.op_type == "Add" and head.inputs[0] is not None:
        head = head.inputs[0].producer()  # the bias
    if head is None or head.op_type != "MatMul" or head.inputs[0] is None:
        return
    hidden = head.inputs[0]
    width = hidden.shape[-1] if hidden.shape is not None and len(hidden.shape) == 3 else None
    if not isinstance(width, int):
        return
    rows = ir.Value(name=LOGITS_ROWS, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape(["batch"]))
    flat_shape = _int64_initializer(graph, "logits_rows_flat_shape", [-1, width])
    axes = _int64_initializer(graph, "logits_rows_axes", [1])
    flat = ir.node("Reshape", [hidden, flat_shape], name="logits_rows_flat")
    picked = ir.node("Gather", [flat.outputs[0], rows], attributes={"axis": 0}, name="logits_rows_pick")
    back = ir.node("Unsqueeze", [picked.outputs[0], axes], name="logits_rows_unsqueeze")
    graph.insert_before(head, [flat, picked, back])
    head.replace_input_with(0, back.outputs[0])
    graph.inputs.append(rows)


def _int64_initializer(graph: ir.Graph, name: str, values: list[int]) -> ir.Value:
    """A 1-D int64 initializer (a shape or axes). ``passes.graph.add_constant`` does this for the
    passes; generate cannot import passes, which imports generate."""
    value = ir.Value(name=name, const_value=ir.tensor(np.array(values, np.int64)))
    value.shape, value.dtype = ir.Shape([len(values)]), ir.DataType.INT64
    graph.initializers.add(value)
    return value


def _cache_concat(value: ir.Value, past_inputs: dict[str, ir.Value]) -> ir.Node:
    """The ``Concat(past, new)`` a MultiHeadAttention's 4-D key or value comes from, through the
    Unsqueeze/Expand/Reshape of grouped-query attention's repetition."""
    node = value.producer()
    while (
        node is not None and node.op_type in ("Reshape", "Expand", "Unsqueeze") and node.inputs[0] is not None
    ):
        node = node.inputs[0].producer()
    if node is None or node.op_type != "Concat" or len(node.inputs) != 2:
        raise NotApplicable("a MultiHeadAttention's keys do not come from the cache's Concat")
    past = node.inputs[0]
    if past is None or past_inputs.get(past.name or "") is not past or not node.outputs[0].is_graph_output():
        raise NotApplicable("the cache Concat does not join a past input to a present output")
    return node


def _merged(graph: ir.Graph, before: ir.Node, heads4: ir.Value | None, role: str) -> tuple[ir.Value, int]:
    """The new keys or values as (B, S, kvH*D), and kvH: the head split's source when there is one,
    else ``Reshape(Transpose(x, [0,2,1,3]), [0, 0, kvH*D])`` inserted before ``before``."""
    if heads4 is None or heads4.shape is None or len(heads4.shape) != 4:
        raise NotApplicable(f"the new {role}s are not 4-D")
    kv_heads, head_dim = heads4.shape[1], heads4.shape[3]
    if not isinstance(kv_heads, int) or not isinstance(head_dim, int):
        raise NotApplicable(f"the new {role}s' heads are not known numbers")
    transpose = heads4.producer()
    if transpose is not None and transpose.op_type == "Transpose" and transpose.inputs[0] is not None:
        perm = transpose.attributes.get("perm")
        reshape = transpose.inputs[0].producer()
        if perm is not None and tuple(perm.as_ints()) == (0, 2, 1, 3) and reshape is not None:
            source = reshape.inputs[0]
            if (
                reshape.op_type == "Reshape"
                and source is not None
                and source.shape is not None
                and len(source.shape) == 3
            ):
                return source, kv_heads
    back = ir.node(
        "Transpose", [heads4], attributes={"perm": [0, 2, 1, 3]}, name=f"{before.name}_{role}_bshd"
    )
    target = _int64_initializer(graph, f"{before.name}_{role}_merged_shape", [0, 0, kv_heads * head_dim])
    merge = ir.node("Reshape", [back.outputs[0], target], name=f"{before.name}_{role}_merged")
    graph.insert_before(before, [back, merge])
    return merge.outputs[0], kv_heads


def _int_attr(node: ir.Node, name: str) -> int:
    attribute = node.attributes.get(name)
    if attribute is None:
        raise NotApplicable(f"{node.op_type} has no {name}")
    return attribute.as_int()


class InPlaceCache:
    """The running sequences' caches in buffers [rows, kv_heads, context, head_dim] per layer and part,
    appended to in place by the GroupQueryAttention form; rows are slots (a sequence id or None)."""

    name = "in-place"

    def __init__(self, decoder: Decoder, graph: Decoder, max_rows: int) -> None:
        self.decoder, self.graph = decoder, graph
        layout = decoder.layout
        self._shape = (layout.kv_heads, layout.max_context, layout.head_dim)
        self._names = layout.past_names
        self._presents = layout.present_names
        self._max_rows = max_rows
        self._buffers = [np.zeros((0, *self._shape), np.float32) for _ in self._names]
        self.ids: list[int | None] = []
        self.lengths = np.zeros(0, np.int64)  # tokens in each row's cache
        self._prefilling: set[int] = set()  # sequences whose prompt is not all in the cache yet
        self._takes_mask = ATTENTION_MASK in graph.session.input_names
        self._picks_rows = LOGITS_ROWS in graph.session.input_names  # logits [rows, 1, vocab]
        self._views: tuple[int, dict[str, tuple[str, np.ndarray]]] = (-1, {})  # decode's, by row count

    # what the engine reads
    def tokens(self) -> int:
        return int(sum(int(n) for n, sid in zip(self.lengths, self.ids, strict=True) if sid is not None))

    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self._buffers)

    def live(self) -> int:
        return sum(sid is not None for sid in self.ids)

    def reset(self) -> None:
        """No sequence left: the buffers go too (they come back, zeroed, as rows are needed)."""
        self.ids = []
        self.lengths = np.zeros(0, np.int64)
        self._prefilling = set()
        self._buffers = [np.zeros((0, *self._shape), np.float32) for _ in self._names]
        self._views = (-1, {})  # nothing keeps the old buffers alive
        self.graph.session.release_in_place()

    def remove(self, sequence_ids: set[int]) -> None:
        """Free the rows of ``sequence_ids``; trailing free rows leave the steps."""
        for row, sid in enumerate(self.ids):
            if sid in sequence_ids:
                self.ids[row] = None
                self.lengths[row] = 0
        self._prefilling -= sequence_ids
        while self.ids and self.ids[-1] is None:
            self.ids.pop()
        self.lengths = self.lengths[: len(self.ids)]

    def prefill(self, prompts: list[list[int]], sequence_ids: list[int]) -> np.ndarray:
        """Put the joining prompts' caches into free rows, in the groups ``prefill_groups`` picks;
        returns the logits of each prompt's last token [joining, vocab]."""
        found: list[np.ndarray | None] = [None] * len(prompts)
        for group in prefill_groups([len(p) for p in prompts]):
            if len(group) == 1:
                (i,) = group
                found[i] = self.extend(sequence_ids[i], prompts[i], 0, last=True)
                continue
            logits = self._prefill_batch([prompts[i] for i in group], [sequence_ids[i] for i in group])
            for i, row_logits in zip(group, logits, strict=True):
                found[i] = row_logits
        return np.stack([f for f in found if f is not None])

    def extend(self, sequence_id: int, tokens: list[int], start: int, *, last: bool) -> np.ndarray:
        """Prefill ``tokens`` of a sequence's prompt from position ``start`` (its earlier chunks are in
        its row; a new sequence takes a free row), straight into its row; ``last``: the prompt is all
        in, the row decodes from the next step. Returns the logits of the chunk's last token [vocab]."""
        if start == 0:
            (row,) = self._rows_for(1)
            self.ids[row] = sequence_id
            self.lengths[row] = 0
        else:
            row = self.ids.index(sequence_id)
        if int(self.lengths[row]) != start:
            raise ValueError(f"sequence {sequence_id} has {self.lengths[row]} tokens cached, not {start}")
        count = len(tokens)
        feeds = self._feeds(
            np.asarray([tokens], np.int64),
            np.arange(start, start + count, dtype=np.int64).reshape(1, count),
            np.asarray([start + count], np.int64),
            last=np.asarray([count - 1], np.int64),
        )
        in_place = {
            name: (present, buffer[row : row + 1])
            for name, present, buffer in zip(self._names, self._presents, self._buffers, strict=True)
        }
        (logits,) = self.graph.session.run_in_place(feeds, in_place, [LOGITS])
        self.lengths[row] = start + count
        if last:
            self._prefilling.discard(sequence_id)
        else:
            self._prefilling.add(sequence_id)
        return logits[0, -1, :]

    def _prefill_batch(self, prompts: list[list[int]], sequence_ids: list[int]) -> np.ndarray:
        """Run prompts together from an empty past (right padded), copy their caches into free rows."""
        lengths = np.asarray([len(p) for p in prompts], np.int64)
        width = int(lengths.max())
        ids = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt  # right padded: GroupQueryAttention's rows start at 0
        feeds = self._feeds(
            ids, np.tile(np.arange(width, dtype=np.int64), (len(prompts), 1)), lengths, last=lengths - 1
        )
        empty = np.zeros((len(prompts), self._shape[0], 0, self._shape[2]), np.float32)
        outputs = self.graph.session.run({**feeds, **dict.fromkeys(self._names, empty)})
        logits, presents = outputs[0], outputs[1:]
        if self._picks_rows:
            logits = logits[:, 0, :]
        else:
            logits = logits[np.arange(len(prompts)), lengths - 1]
        rows = self._rows_for(len(prompts))
        for joined, (row, sid) in enumerate(zip(rows, sequence_ids, strict=True)):
            length = int(lengths[joined])
            for buffer, present in zip(self._buffers, presents, strict=True):
                buffer[row, :, :length] = present[joined, :, :length]
            self.ids[row] = sid
            self.lengths[row] = length
        return logits

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """One token for every row (free rows and rows still prefilling too, unused); returns
        [rows, vocab]. A row writes its token after its cached tokens; only decoding rows keep it."""
        rows = len(self.ids)
        decoding = np.asarray([sid is not None and sid not in self._prefilling for sid in self.ids], bool)
        positions = self.lengths.copy()  # a free row's length is 0
        feeds = self._feeds(
            tokens.reshape(rows, 1).astype(np.int64),
            positions.reshape(rows, 1),
            positions + 1,
            last=np.zeros(rows, np.int64),
        )
        (logits,) = self.graph.session.run_in_place(feeds, self._decode_views(rows), [LOGITS])
        self.lengths = np.where(decoding, self.lengths + 1, self.lengths)
        return logits[:, -1, :]

    def _decode_views(self, rows: int) -> dict[str, tuple[str, np.ndarray]]:
        """The buffers' first ``rows`` rows, the same view objects from step to step until the rows
        or the buffers change (so the session reuses their OrtValues)."""
        count, views = self._views
        first = next(iter(views.values()), None)
        if count != rows or first is None or first[1].base is not self._buffers[0]:
            views = {
                name: (present, buffer[:rows])
                for name, present, buffer in zip(self._names, self._presents, self._buffers, strict=True)
            }
            self._views = (rows, views)
        return views

    def _feeds(
        self, ids: np.ndarray, positions: np.ndarray, lengths: np.ndarray, *, last: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The step's inputs; ``last``: which new token of each row its logits are for."""
        feeds = {
            INPUT_IDS: np.ascontiguousarray(ids),
            POSITION_IDS: np.ascontiguousarray(positions),
            SEQLENS_K: (lengths - 1).astype(np.int32),
            TOTAL_SEQUENCE_LENGTH: np.asarray(int(lengths.max()), np.int32),
        }
        if self._takes_mask:  # not used by the graph's attention any more; fed as the graph asks
            feeds[ATTENTION_MASK] = np.ones((ids.shape[0], int(lengths.max())), np.int64)
        if self._picks_rows:  # the flattened (row, new token) index of each row's logits
            feeds[LOGITS_ROWS] = np.arange(ids.shape[0], dtype=np.int64) * ids.shape[1] + last
        return feeds

    def _rows_for(self, count: int) -> list[int]:
        """``count`` free rows: the free slots first, then new rows (buffers grown, doubling)."""
        free = [row for row, sid in enumerate(self.ids) if sid is None][:count]
        needed = count - len(free)
        start = len(self.ids)
        self.ids += [None] * needed
        self.lengths = np.concatenate([self.lengths, np.zeros(needed, np.int64)])
        if len(self.ids) > self._buffers[0].shape[0]:
            capacity = min(self._max_rows, max(len(self.ids), 2 * self._buffers[0].shape[0], 4))
            capacity = max(capacity, len(self.ids))
            grown = []
            for buffer in self._buffers:
                bigger = np.zeros((capacity, *self._shape), np.float32)
                bigger[: buffer.shape[0]] = buffer
                grown.append(bigger)
            self._buffers = grown
        return free + list(range(start, start + needed))


def inplace_cache(decoder: Decoder, max_rows: int, *, threads: int | None = None) -> InPlaceCache | str:
    """The in-place cache for ``decoder``, or the one-line reason it is not used: not applicable to
    the graph, or its greedy tokens differ from the padded graph's (checked on 4 prompts of different
    lengths, filled in the three ways the engine fills rows, 12 steps)."""
    try:
        graph = Decoder(inplace_graph(decoder.model), threads=threads)
    except NotApplicable as reason:
        return str(reason)
    except Exception as exc:  # noqa: BLE001 - onnxruntime may refuse the new graph; the padded cache serves
        return f"the in-place form does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    prompts = [[3, 1, 4, 1, 5, 9, 2], [6], [5, 3, 5], [8, 9, 7, 9, 3]]
    prompts = [[t % decoder.layout.vocab_size for t in p] for p in prompts]
    steps = min(12, decoder.layout.max_context - max(len(p) for p in prompts) - 1)
    cache = InPlaceCache(decoder, graph, max_rows=max(max_rows, len(prompts)))
    got = _greedy(cache, prompts, steps)
    if got != decoder.greedy(prompts, steps):
        return "its greedy tokens differ from the padded graph's"
    cache.reset()
    return cache


def _greedy(cache: InPlaceCache, prompts: list[list[int]], steps: int) -> list[list[int]]:
    generated: list[list[int]] = [[] for _ in prompts]
    # the three ways the engine fills rows: two prompts as one padded batch, one in two chunks
    # (prefill over its own earlier chunk), one alone straight into its row
    together = cache.prefill(prompts[:2], [0, 1])
    cache.extend(2, prompts[2][:1], 0, last=False)
    chunked = cache.extend(2, prompts[2][1:], 1, last=True)
    alone = cache.prefill(prompts[3:], [3])
    # sequence i's logits; rows are the cache's to place (grouping sorts prompts by length)
    by_sequence = np.concatenate([together, chunked[None], alone])
    for _ in range(steps):
        tokens = by_sequence.argmax(axis=-1)
        for sid, token in enumerate(tokens):
            generated[sid].append(int(token))
        row_tokens = np.asarray([0 if sid is None else tokens[sid] for sid in cache.ids], np.int64)
        logits = cache.decode(row_tokens)
        by_sequence = logits[[cache.ids.index(sid) for sid in range(len(prompts))]]
    return generated


__all__ = ["InPlaceCache", "NotApplicable", "inplace_cache", "inplace_graph"]
