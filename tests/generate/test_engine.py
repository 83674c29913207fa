"""The scheduler: batched sequences give the same tokens as alone, and every bound holds."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from hone.errors import InputError, QueueFullError
from hone.generate.decoder import Decoder
from hone.generate.engine import Engine, EngineConfig, GenerationRequest, TokenEvent
from hone.generate.sampling import SamplingParams


class Collector:
    def __init__(self, count: int) -> None:
        self.tokens: dict[int, list[int]] = {i: [] for i in range(count)}
        self.reasons: dict[int, str | None] = {}
        self.done = threading.Event()
        self.count = count

    def deliver(self, index: int):  # type: ignore[no-untyped-def]
        def on_event(event: TokenEvent) -> None:
            if event.token is not None:
                self.tokens[index].append(event.token)
            else:
                self.reasons[index] = event.finish_reason
                if len(self.reasons) == self.count:
                    self.done.set()

        return on_event


def workload(count: int, seed: int = 0) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [
        ([rng.randrange(1, 300) for _ in range(rng.randint(2, 40))], rng.randint(1, 60)) for _ in range(count)
    ]


CACHES = [("gpt2", "padded"), ("gpt2", "in-place"), ("llama", "in-place")]


@pytest.mark.parametrize("budget", [1024, 16], ids=["whole-prompts", "chunked-prefill"])
@pytest.mark.parametrize("policy", ["continuous", "static", "sequential"])
@pytest.mark.parametrize("model, kv_cache", CACHES, ids=[f"{m}-{k}" for m, k in CACHES])
def test_every_policy_gives_each_request_its_own_greedy_tokens(
    fused_decoders: dict[str, Decoder], policy: str, model: str, kv_cache: str, budget: int
) -> None:
    decoder = fused_decoders[model]
    requests = workload(30)
    reference = [decoder.greedy([prompt], n)[0] for prompt, n in requests]  # alone, the graph's own cache
    config = EngineConfig(
        policy=policy,  # type: ignore[arg-type]
        max_sequences=8,
        max_cached_tokens=800,
        max_batched_tokens=budget,  # 16: prompts of up to 40 tokens are prefilled in chunks
        kv_cache=kv_cache,  # type: ignore[arg-type]
    )
    engine = Engine(decoder, config)
    assert engine.kv_cache == kv_cache
    collector = Collector(len(requests))
    for i, (prompt, n) in enumerate(requests):
        engine.submit(GenerationRequest(prompt, n, stop_token_ids=frozenset()), collector.deliver(i))
    assert collector.done.wait(60)
    engine.close()
    assert [collector.tokens[i] for i in range(len(requests))] == reference
    assert set(collector.reasons.values()) == {"length"}
    # nothing leaks: no reservation, no cached token, no array left
    assert (engine.stats.reserved_tokens, engine.stats.cached_tokens, engine.stats.cache_bytes) == (0, 0, 0)
    assert engine.stats.generation_tokens == sum(n for _, n in requests)
    if policy == "continuous":  # requests joined running batches: far fewer steps than tokens
        assert engine.stats.steps < engine.stats.generation_tokens / 3


def test_sequences_join_and_leave_between_decode_steps(gpt2_decoder: Decoder) -> None:
    engine = Engine(gpt2_decoder, EngineConfig(max_sequences=4))
    long = Collector(1)
    engine.submit(GenerationRequest([5, 6, 7], 150, stop_token_ids=frozenset()), long.deliver(0))
    while len(long.tokens[0]) < 5:
        time.sleep(0.001)
    short = Collector(1)
    engine.submit(GenerationRequest([9, 9], 3, stop_token_ids=frozenset()), short.deliver(0))
    assert short.done.wait(10)
    # the short request finished while the long one was still decoding
    assert not long.done.is_set()
    assert long.done.wait(30)
    engine.close()
    assert long.tokens[0] == gpt2_decoder.greedy([[5, 6, 7]], 150)[0]
    assert short.tokens[0] == gpt2_decoder.greedy([[9, 9]], 3)[0]


def test_stop_token_ends_the_sequence(gpt2_decoder: Decoder) -> None:
    alone = gpt2_decoder.greedy([[5, 6, 7, 8]], 20)[0]
    stop = alone[4]
    engine = Engine(gpt2_decoder)
    collector = Collector(1)
    engine.submit(GenerationRequest([5, 6, 7, 8], 20, stop_token_ids=frozenset({stop})), collector.deliver(0))
    assert collector.done.wait(10)
    engine.close()
    assert collector.tokens[0] == alone[: alone.index(stop)]
    assert collector.reasons[0] == "stop"


@pytest.mark.parametrize("kv_cache", ["padded", "in-place"])
def test_cancel_frees_the_cache_and_others_continue(
    fused_decoders: dict[str, Decoder], kv_cache: str
) -> None:
    gpt2_decoder = fused_decoders["gpt2"]
    engine = Engine(gpt2_decoder, EngineConfig(max_sequences=4, kv_cache=kv_cache))  # type: ignore[arg-type]
    assert engine.kv_cache == kv_cache
    victim, other = Collector(1), Collector(1)
    victim_id = engine.submit(
        GenerationRequest([1, 2, 3], 200, stop_token_ids=frozenset()), victim.deliver(0)
    )
    engine.submit(GenerationRequest([4, 5, 6], 40, stop_token_ids=frozenset()), other.deliver(0))
    while len(victim.tokens[0]) < 3:
        time.sleep(0.001)
    engine.cancel(victim_id)
    assert victim.done.wait(10) and victim.reasons[0] == "cancelled"
    assert other.done.wait(10) and other.reasons[0] == "length"
    assert len(victim.tokens[0]) < 200
    assert other.tokens[0] == gpt2_decoder.greedy([[4, 5, 6]], 40)[0]
    engine.close()
    assert engine.stats.reserved_tokens == 0 and engine.stats.cached_tokens == 0
    assert engine.stats.cache_bytes == 0  # the in-place buffers go when no sequence runs


def test_bounds_are_clear_errors(gpt2_decoder: Decoder) -> None:
    engine = Engine(gpt2_decoder, EngineConfig(max_sequences=1, max_cached_tokens=100, max_waiting=2))
    sink = Collector(10)
    with pytest.raises(InputError, match="context is 256"):
        engine.submit(GenerationRequest([1] * 300, 5), sink.deliver(0))
    with pytest.raises(InputError, match="lower max_tokens to at most 246"):
        engine.submit(GenerationRequest([1] * 10, 250), sink.deliver(0))
    with pytest.raises(InputError, match="KV cache of 100 tokens"):
        engine.submit(GenerationRequest([1] * 10, 95), sink.deliver(0))
    with pytest.raises(InputError, match="prompt is empty"):
        engine.submit(GenerationRequest([], 5), sink.deliver(0))
    with pytest.raises(InputError, match="token ids must be in"):
        engine.submit(GenerationRequest([99999], 5), sink.deliver(0))
    # one running, two waiting: the next is refused with a 503
    engine.submit(GenerationRequest([1, 2], 80, stop_token_ids=frozenset()), sink.deliver(0))
    while engine.stats.running < 1:
        time.sleep(0.001)
    for i in (1, 2):
        engine.submit(GenerationRequest([1, 2], 80, stop_token_ids=frozenset()), sink.deliver(i))
    with pytest.raises(QueueFullError, match="already waiting") as refused:
        engine.submit(GenerationRequest([1, 2], 80, stop_token_ids=frozenset()), sink.deliver(3))
    assert refused.value.http_status == 503
    engine.close(drain=False)


def test_priority_zero_is_admitted_first_and_waiters_time_out(gpt2_decoder: Decoder) -> None:
    engine = Engine(gpt2_decoder, EngineConfig(max_sequences=1))
    order: list[str] = []
    blocker = Collector(1)
    engine.submit(GenerationRequest([1, 2], 240, stop_token_ids=frozenset()), blocker.deliver(0))
    while engine.stats.running < 1:
        time.sleep(0.001)

    def mark(label: str):  # type: ignore[no-untyped-def]
        def on_event(event: TokenEvent) -> None:
            if event.finish_reason is not None:
                order.append(f"{label}:{event.finish_reason}")

        return on_event

    engine.submit(GenerationRequest([3], 2, priority=1), mark("low"))
    engine.submit(GenerationRequest([3], 2, priority=0), mark("high"))
    engine.submit(GenerationRequest([3], 2, priority=1, timeout_s=0.001), mark("impatient"))
    assert not blocker.done.is_set()  # all three waited behind it
    assert blocker.done.wait(10)
    deadline = time.time() + 10
    while len(order) < 3 and time.time() < deadline:
        time.sleep(0.01)
    engine.close()
    assert order[0] == "impatient:timeout"
    assert order[1:] == ["high:length", "low:length"]


def test_sampling_with_a_seed_repeats(gpt2_decoder: Decoder) -> None:
    engine = Engine(gpt2_decoder)
    runs = []
    for seed in (7, 7, 8):
        collector = Collector(1)
        params = SamplingParams(temperature=1.5, top_p=0.9, seed=seed)
        engine.submit(GenerationRequest([5, 6], 30, params, stop_token_ids=frozenset()), collector.deliver(0))
        assert collector.done.wait(10)
        runs.append(collector.tokens[0])
    engine.close()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0] != gpt2_decoder.greedy([[5, 6]], 30)[0]


def test_a_join_reuses_a_free_slot_in_place_and_compaction_drops_free_rows() -> None:
    from hone.generate.batch_cache import BatchCache

    def rows(ids: list[int | None], width: int, fill: float) -> BatchCache:
        past = [np.full((len(ids), 2, width, 3), fill, np.float32) for _ in range(2)]
        return BatchCache(past, np.ones((len(ids), width), np.int64), np.full(len(ids), width), ids)

    batch = rows([1, 2, 3, 4], 6, 1.0)
    batch.remove({2})
    assert batch.ids == [1, None, 3, 4] and len(batch) == 4  # freed, nothing moved
    arrays = [id(p) for p in batch.past]
    batch.merge(rows([9], 4, 7.0))  # narrower: written into slot 1, left padded
    assert batch.ids == [1, 9, 3, 4] and [id(p) for p in batch.past] == arrays
    assert batch.mask[1].tolist() == [0, 0, 1, 1, 1, 1] and batch.positions[1] == 4
    assert (batch.past[0][1, :, :2] == 0).all() and (batch.past[0][1, :, 2:] == 7.0).all()
    assert batch.tokens() == 6 * 3 + 4
    batch.merge(rows([10], 8, 5.0))  # wider than the batch: re-laid, one copy
    assert batch.ids == [1, 9, 3, 4, 10] and batch.width == 8
    assert batch.mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    batch.remove({1, 3, 4})  # more than half free: compacted, the all-pad columns dropped
    assert batch.ids == [9, 10] and batch.width == 8  # row 10 uses every column
    batch.remove({10})
    assert batch.ids == [9, None]  # half free: kept for the next join
    batch.compact()
    assert batch.ids == [9] and batch.width == 4 and batch.mask.tolist() == [[1, 1, 1, 1]]


def test_leading_columns_no_live_row_uses_are_dropped_when_the_longest_leaves() -> None:
    from hone.generate.batch_cache import BatchCache

    rng = np.random.default_rng(0)
    past = [rng.standard_normal((3, 2, 40, 3)).astype(np.float32) for _ in range(2)]
    mask = np.zeros((3, 40), np.int64)
    mask[0] = 1  # the long-lived row uses all 40 columns
    mask[1, 30:] = 1  # two rows that joined later use the last 10 and 12
    mask[2, 28:] = 1
    batch = BatchCache([p.copy() for p in past], mask.copy(), np.asarray([40, 10, 12]), [1, 2, 3])
    batch.remove({1})  # one slot of three free: not compacted, but 28 leading columns are unused
    assert batch.ids == [None, 2, 3] and batch.width == 12
    for kept, original in zip(batch.past, past, strict=True):
        np.testing.assert_array_equal(kept[1:], original[1:, :, 28:])  # the live rows' caches, intact
        assert kept.flags.c_contiguous
    assert batch.mask[1:].tolist() == mask[1:, 28:].tolist() and batch.tokens() == 22
    batch.remove({3})  # two of three free: compacted to row 2 and its own 10 columns
    assert batch.ids == [2] and batch.width == 10
    np.testing.assert_array_equal(batch.past[0][0], past[0][1, :, 30:])


def test_the_in_place_cache_needs_a_fused_graph_and_says_so(gpt2_decoder: Decoder) -> None:
    engine = Engine(gpt2_decoder, EngineConfig(max_sequences=2))  # the exported graph, not optimized
    assert engine.kv_cache.startswith("padded (in-place not used: 0 MultiHeadAttention for 2 layers")
    engine.close()
    with pytest.raises(InputError, match="the in-place KV cache cannot serve .*run hone optimize first"):
        Engine(gpt2_decoder, EngineConfig(kv_cache="in-place"))


def test_the_in_place_graph_writes_each_rows_new_token_after_its_own_length(
    fused_decoders: dict[str, Decoder],
) -> None:
    from hone.generate.inplace_kv import InPlaceCache, inplace_graph

    decoder = fused_decoders["llama"]
    graph = Decoder(inplace_graph(decoder.model), threads=2)
    ops = [n.op_type for n in graph.model.ir.graph]
    assert ops.count("GroupQueryAttention") == 2 and "MultiHeadAttention" not in ops and "Concat" not in ops
    assert "logits_rows" in graph.session.input_names  # the LM head runs on each row's last token only
    cache = InPlaceCache(decoder, graph, max_rows=4)
    cache.prefill([[5, 6, 7, 8, 9], [3, 4]], [10, 11])
    five, two = cache.ids.index(10), cache.ids.index(11)  # the cache places rows (by prompt length)
    before = [b.copy() for b in cache._buffers]
    logits = cache.decode(np.asarray([1, 2]))
    assert logits.shape == (2, decoder.layout.vocab_size)
    assert cache.lengths[five] == 6 and cache.lengths[two] == 3
    for after, old in zip(cache._buffers, before, strict=True):
        np.testing.assert_array_equal(after[five, :, :5], old[five, :, :5])  # the past stays where it is
        np.testing.assert_array_equal(after[two, :, :2], old[two, :, :2])
        assert np.abs(after[five, :, 5]).sum() > 0 and np.abs(after[two, :, 2]).sum() > 0  # in place
        assert not after[two, :, 3:].any()  # nothing past the row's own length
    cache.remove({11})
    assert [sid for sid in cache.ids if sid is not None] == [10] and cache.tokens() == 6


@pytest.mark.parametrize("kv_cache", ["padded", "in-place"])
def test_a_long_prompt_is_prefilled_in_chunks_while_the_others_keep_decoding(
    fused_decoders: dict[str, Decoder], kv_cache: str
) -> None:
    decoder = fused_decoders["gpt2"]
    config = EngineConfig(max_sequences=4, max_batched_tokens=16, kv_cache=kv_cache)  # type: ignore[arg-type]
    engine = Engine(decoder, config)
    order: list[str] = []  # who got a token, in the engine's order
    running, joining = Collector(1), Collector(1)

    def log(name: str, collector: Collector):  # type: ignore[no-untyped-def]
        inner = collector.deliver(0)

        def on_event(event: TokenEvent) -> None:
            if event.token is not None:
                order.append(name)
            inner(event)

        return on_event

    engine.submit(GenerationRequest([5, 6, 7], 120, stop_token_ids=frozenset()), log("running", running))
    while len(running.tokens[0]) < 3:
        time.sleep(0.001)
    prompt = [(7 * i) % 250 + 1 for i in range(100)]
    engine.submit(GenerationRequest(prompt, 10, stop_token_ids=frozenset()), log("joining", joining))
    assert joining.done.wait(30) and running.done.wait(30)
    engine.close()
    # 100 prompt tokens at 15 an iteration (16 less the running sequence's token): 7 iterations, and
    # the running sequence got a token in each before the joining one's first token came
    before_first = order[: order.index("joining")]
    assert before_first.count("running") >= 3 + 6
    assert joining.tokens[0] == decoder.greedy([prompt], 10)[0]
    assert running.tokens[0] == decoder.greedy([[5, 6, 7]], 120)[0]
    assert (engine.stats.reserved_tokens, engine.stats.cached_tokens, engine.stats.cache_bytes) == (0, 0, 0)


@pytest.mark.parametrize("kv_cache", ["padded", "in-place"])
def test_cancelling_a_prompt_mid_prefill_frees_its_cache(
    fused_decoders: dict[str, Decoder], kv_cache: str
) -> None:
    decoder = fused_decoders["gpt2"]
    engine = Engine(decoder, EngineConfig(max_sequences=4, max_batched_tokens=16, kv_cache=kv_cache))  # type: ignore[arg-type]
    running, victim = Collector(1), Collector(1)
    engine.submit(GenerationRequest([5, 6, 7], 200, stop_token_ids=frozenset()), running.deliver(0))
    while len(running.tokens[0]) < 2:
        time.sleep(0.001)
    victim_id = engine.submit(
        GenerationRequest(list(range(1, 201)), 5, stop_token_ids=frozenset()), victim.deliver(0)
    )
    while engine.stats.running < 2:  # admitted: its first chunks are in the cache
        time.sleep(0.0005)
    engine.cancel(victim_id)
    assert victim.done.wait(10) and victim.reasons[0] == "cancelled" and victim.tokens[0] == []
    assert running.done.wait(30) and running.tokens[0] == decoder.greedy([[5, 6, 7]], 200)[0]
    engine.close()
    assert (engine.stats.reserved_tokens, engine.stats.cached_tokens, engine.stats.cache_bytes) == (0, 0, 0)


def test_prefill_groups_pad_only_where_it_costs_less_than_another_call() -> None:
    from hone.generate.padding import CALL_TOKENS, prefill_groups

    assert prefill_groups([8] * 32) == [list(range(32))]  # equal lengths: one batch
    assert prefill_groups([96, 8, 8, 8]) == [[1, 2, 3], [0]]  # 3 x 96 padding would cost more than a call
    assert prefill_groups([5, 6]) == [[0, 1]]  # one padded token is cheaper than a call
    assert prefill_groups([1, 1 + 2 * CALL_TOKENS]) == [[0], [1]]
    mixed = [8, 32, 96, 8, 32, 96, 96, 8, 32, 32]
    groups = prefill_groups(mixed)
    assert sorted(i for g in groups for i in g) == list(range(len(mixed)))
    assert [sorted({mixed[i] for i in g}) for g in groups] == [[8], [32], [96]]


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_a_failed_prefill_ends_its_requests_with_an_error_and_the_engine_serves_on(
    gpt2_decoder: Decoder, chunked: bool
) -> None:
    engine = Engine(gpt2_decoder, EngineConfig(max_batched_tokens=16 if chunked else 1024))
    method = "extend" if chunked else "prefill"
    real = getattr(engine._kv, method)
    calls = []

    def fails_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    setattr(engine._kv, method, fails_once)
    failed, later = Collector(1), Collector(1)
    prompt = list(range(1, 41))  # 40 tokens: chunked at 16
    engine.submit(GenerationRequest(prompt, 5, stop_token_ids=frozenset()), failed.deliver(0))
    assert failed.done.wait(10), "the request admitted in the failed step never ended"
    assert failed.reasons[0] == "error"
    engine.submit(GenerationRequest(prompt, 5, stop_token_ids=frozenset()), later.deliver(0))
    assert later.done.wait(10) and later.reasons[0] == "length"
    engine.close()
    assert later.tokens[0] == gpt2_decoder.greedy([prompt], 5)[0]
    assert (engine.stats.reserved_tokens, engine.stats.cached_tokens) == (0, 0)
