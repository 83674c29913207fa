"""Generative serving: continuous batching against static batching, one request at a time and
PyTorch eager generation (transformers' ``generate``), on the zoo's trained tiny_gpt.

Run: .venv/bin/python benchmarks/generate.py [--concurrency 1,8,32] [--requests-per-client 3]

Same model, same run, loopback, 2 intra-op threads everywhere:

- ``continuous``, ``static``, ``sequential``: ``hone serve tiny_gpt --batching X --threads 2``, one
  server process per mode, all started before the first measurement and idle while others run;
  loaded through the Triton generate extension (``/v2/models/tiny_gpt/generate_stream``, server-sent
  events) by an asyncio client (aiohttp) in this process;
- ``continuous-int4``: the same continuous server on the int4 decoder that passed
  ``hone quantize``'s generative gate (perplexity and greedy tokens; its speed race is not used here,
  this benchmark measures the speed itself); the rows are shown only if a candidate passed;
- ``torch-generate``: the baseline a user starts from: the PyTorch model's ``generate`` (greedy,
  its own KV cache) called for one request at a time by a worker thread in this process, with the
  same clients queueing on it; TTFT and ITL come from a streamer that records each token's time.

Each level runs ``--rounds`` interleaved rounds (A B C D E, A B C D E, ...); the row shown for a
mode is its median round by tokens/s (its latencies are that round's); every round is in the JSON.

Requests: prompts cut from Python's held-out documentation (tokenized), lengths drawn (seeded per level) from
a fixed mix: prompt 8 / 32 / 96 tokens, output 16 / 48 / 128 tokens (``ignore_eos``, so every
mode produces the same token count). A closed loop: ``c`` clients, each sends its next request when
the last one ends, ``c x requests-per-client`` requests in all (at least ``--min-requests``). Levels
interleave the modes (A B C D E at c=1, then at c=8, ...). "after start" is the TTFT p99 without each
client's first request: the loop starts with all ``c`` prompts at once, a burst whose prefill alone
takes a multiple of one prompt's; the goal is computed over every request, the column is beside it.

The servers run hone optimize's decoder (``--form optimized``, the default: attention over the cache,
SkipLayerNorm fused; what ``hone run`` ships), its greedy tokens checked equal to the exported
graph's first; ``--form exported`` serves the exported graph as it is.

Also measured: one decode step at batch 1 (past 64 tokens) of the exported ONNX graph under
onnxruntime against the same step in PyTorch eager (``model(input_ids, past_key_values=cache)``),
interleaved blocks of 200 steps.

Goals (issue 21): continuous >= 3x sequential tokens/s at c=32 with TTFT p99 <= 2x its c=1 value,
and >= 1.5x static at c=32; INT4 >= 1.5x fp32 tokens/s at c=1 with the gate passed; the ONNX
decode step >= 2x PyTorch eager at batch 1.

Prints tables and writes benchmarks/results/generate-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from rich.console import Console
from rich.table import Table

from hone.generate import loadtest
from hone.generate.loadtest import GenerationLevel, Timing

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
MODEL = "tiny_gpt"
PROMPT_LENGTHS = (8, 32, 96)
OUTPUT_LENGTHS = (16, 48, 128)
READY = re.compile(r"hone serve: ready: .* on (?P<url>http://127\.0\.0\.1:\d+) ")
SERVED_MODES = ("continuous", "static", "sequential")

console = Console(width=150)


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int


@dataclass(frozen=True)
class Level(GenerationLevel):
    """hone.generate.loadtest's level, with the mode and the failed requests."""

    mode: str = ""
    errors: int = 0


def requests_for(stream: list[int], count: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        length = int(rng.choice(PROMPT_LENGTHS))
        start = int(rng.integers(0, len(stream) - length))
        found.append(Request(stream[start : start + length], int(rng.choice(OUTPUT_LENGTHS))))
    return found


def summarize(mode: str, concurrency: int, timings: list[Timing], seconds: float, errors: int) -> Level:
    return Level(**asdict(loadtest.summarize(concurrency, timings, seconds)), mode=mode, errors=errors)


def median_level(rounds: list[Level]) -> Level:
    """The round whose tokens/s is the median (so its latencies are from one real round)."""
    ordered = sorted(rounds, key=lambda level: level.tokens_per_s)
    return ordered[len(ordered) // 2]


# --- hone servers -----------------------------------------------------------------------------


class Server:
    def __init__(self, model: str, batching: str) -> None:
        command = [sys.executable, "-m", "hone.cli", "serve", model, "--batching", batching,
                   "--threads", str(THREADS), "--http-port", "0", "--name", MODEL]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(300, self.process.kill)
        watchdog.start()
        try:
            line = self.process.stdout.readline().strip()  # type: ignore[union-attr]
        finally:
            watchdog.cancel()
        match = READY.match(line)
        if match is None:
            self.process.kill()
            raise SystemExit(f"hone serve {model} --batching {batching} did not start: {line!r}")
        self.url = match["url"]
        self.line = line  # says which KV cache serves

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)


async def _one(client: aiohttp.ClientSession, url: str, request: Request) -> Timing:
    body = {"input_ids": request.prompt, "parameters": {"max_tokens": request.max_tokens, "ignore_eos": True}}
    timing = Timing(time.perf_counter())
    async with client.post(f"{url}/v2/models/{MODEL}/generate_stream", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
        async for line in response.content:  # one server-sent event line at a time
            if line.startswith(b"data: ") and b"output_ids" in line:
                timing.tokens += [time.perf_counter()] * len(json.loads(line[6:])["output_ids"])
    return timing


async def _closed_loop(url: str, requests: list[Request], concurrency: int) -> tuple[list[Timing], int]:
    pending = list(reversed(requests))
    timings: list[Timing] = []
    errors = 0
    # aiohttp, as vLLM's serving benchmark: on these 2 shared cores httpx2 took 0.85 s of CPU per round
    # at 32 clients against aiohttp's 0.38 s, and the server 9% of its tokens/s with it
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal errors
            while pending:
                request = pending.pop()
                try:
                    timings.append(await _one(client, url, request))
                except Exception as exc:  # noqa: BLE001  # counted and shown, the run goes on
                    errors += 1
                    console.print(f"[red]request failed: {exc}[/red]")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return timings, errors


def served_level(mode: str, server: Server, requests: list[Request], concurrency: int) -> Level:
    started = time.perf_counter()
    timings, errors = asyncio.run(_closed_loop(server.url, requests, concurrency))
    return summarize(mode, concurrency, timings, time.perf_counter() - started, errors)


# --- PyTorch eager: transformers' generate, one request at a time -------------------------------


class TorchGenerate:
    def __init__(self, model: Any) -> None:
        import torch
        from transformers.generation.streamers import BaseStreamer

        torch.set_num_threads(THREADS)
        self.model = model
        self.torch = torch

        class Stamps(BaseStreamer):
            def __init__(self, timing: Timing) -> None:
                self.timing, self.first = timing, True

            def put(self, value: Any) -> None:
                if self.first:  # generate() first puts the prompt
                    self.first = False
                    return
                self.timing.tokens.append(time.perf_counter())

            def end(self) -> None:
                pass

        self.stamps = Stamps

    def generate(self, request: Request, timing: Timing) -> None:
        ids = self.torch.tensor([request.prompt])
        with self.torch.inference_mode():
            self.model.generate(
                ids,
                attention_mask=self.torch.ones_like(ids),
                max_new_tokens=request.max_tokens,
                min_new_tokens=request.max_tokens,  # the same token count as the servers' ignore_eos
                do_sample=False,
                pad_token_id=0,
                streamer=self.stamps(timing),
            )

    def level(self, requests: list[Request], concurrency: int) -> Level:
        work: queue.Queue[tuple[Request, Timing, threading.Event] | None] = queue.Queue()

        def serve() -> None:
            while (item := work.get()) is not None:
                request, timing, done = item
                self.generate(request, timing)
                done.set()

        worker = threading.Thread(target=serve, daemon=True)
        worker.start()

        def send(request: Request, timing: Timing) -> None:
            done = threading.Event()
            work.put((request, timing, done))
            done.wait()

        level = loadtest.closed_loop(requests, concurrency, send)
        work.put(None)
        worker.join()
        return Level(**asdict(level), mode="torch-generate", errors=0)


# --- one decode step: ONNX under onnxruntime against PyTorch eager ------------------------------


def optimized_form(exported: Any, folder: Path) -> tuple[Any, str, dict[str, int]]:
    """hone optimize's decoder (what ``hone run`` ships), saved for the servers, with the fusions it
    matched; refused unless its greedy tokens equal the exported graph's."""
    from hone.generate.decoder import Decoder
    from hone.passes import optimize

    optimized, result = optimize(exported, target="ort-cpu")
    prompts = [[17, 40, 3], [5] * 9, [100, 200, 300, 400, 500]]
    if Decoder(optimized, threads=THREADS).greedy(prompts, 32) != Decoder(exported, threads=THREADS).greedy(
        prompts, 32
    ):
        raise SystemExit("hone optimize changed tiny_gpt's greedy tokens; run with --form exported")
    path = folder / "tiny_gpt-optimized.onnx"
    optimized.save(path)
    fusions = {p.name: p.matched for p in result.passes if p.name.startswith("fuse") and p.matched}
    console.print(
        f"serving hone optimize's decoder: {result.nodes_before} -> {result.nodes_after} nodes, {fusions}"
    )
    return optimized, str(path), fusions


def decode_step_race(
    model: Any, onnx_model: Any, past: int = 64, steps: int = 200, rounds: int = 5
) -> dict[str, Any]:
    import torch
    from transformers import DynamicCache

    from hone.generate.decoder import Decoder

    decoder = Decoder(onnx_model, threads=THREADS)
    layout = decoder.layout
    rng = np.random.default_rng(0)
    cache_arrays = [rng.standard_normal((1, layout.kv_heads, past, layout.head_dim)).astype(np.float32)
                    for _ in layout.past_names]  # fmt: skip
    ids = np.asarray([[17]], np.int64)
    mask = np.ones((1, past + 1), np.int64)
    positions = np.asarray([[past]], np.int64)

    def onnx_block() -> float:
        started = time.perf_counter()
        for _ in range(steps):
            decoder.step(ids, mask, positions, cache_arrays)
        return (time.perf_counter() - started) / steps * 1000

    def torch_block() -> float:
        with torch.inference_mode():
            tensors = [torch.from_numpy(a) for a in cache_arrays]
            started = time.perf_counter()
            for _ in range(steps):
                cache = DynamicCache()
                for i in range(layout.layers):
                    cache.update(tensors[2 * i], tensors[2 * i + 1], i)
                model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      position_ids=torch.from_numpy(positions), past_key_values=cache, use_cache=True)  # fmt: skip
            return (time.perf_counter() - started) / steps * 1000

    onnx_block(), torch_block()  # warm-up
    onnx_ms, torch_ms = [], []
    for _ in range(rounds):
        onnx_ms.append(onnx_block())
        torch_ms.append(torch_block())
    return {
        "past_tokens": past,
        "steps_per_block": steps,
        "onnx_ms_per_step": onnx_ms,
        "torch_eager_ms_per_step": torch_ms,
        "onnx_median_ms": float(np.median(onnx_ms)),
        "torch_eager_median_ms": float(np.median(torch_ms)),
        "speedup": float(np.median(np.asarray(torch_ms) / np.asarray(onnx_ms))),
    }


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument(
        "--min-requests", type=int, default=16,
        help="requests per level at least (one client's 3 or 4 requests last a fifth of a second: noise)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level (medians shown)")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--form", choices=("optimized", "exported"), default="optimized",
        help="serve hone optimize's decoder (the default, what hone run ships) or the exported one",
    )  # fmt: skip
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from hone.bench.sweep import machine_summary
    from hone.generate import tiny_gpt
    from hone.generate.decoder import Decoder
    from hone.quantize.generative import quantize_generative
    from hone.sources import load

    exported = load(MODEL)
    trained = tiny_gpt.trained()
    folder = Path(tempfile.mkdtemp(prefix="hone-bench-generate-"))
    fp32, served, fusions = (
        optimized_form(exported, folder) if args.form == "optimized" else (exported, MODEL, {})
    )
    decoder = Decoder(fp32, threads=THREADS)
    assert decoder.tokenizer is not None
    stream = [t for text in tiny_gpt.heldout_texts() for t in decoder.tokenizer.encode(text)]

    console.print("quantizing tiny_gpt to int4 (the generative gate decides)")
    # the accuracy gate only: this benchmark measures the speed itself, at every level
    int4_model, gate = quantize_generative(fp32, mode="int4", threads=THREADS, measure_speed=False)
    int4_path = folder / "tiny_gpt-int4.onnx"
    int4_model.save(int4_path)
    int4_ok = gate.kept != "float"
    console.print(f"gate: kept {gate.kept}; " + "; ".join(
        f"{c.name}: perplexity {c.perplexity_increase:+.2%}, tokens {c.agreement:.1%}, {c.reason}"
        for c in gate.candidates))  # fmt: skip

    steps = {"served": decode_step_race(trained.model, fp32)}
    if args.form == "optimized":
        steps["exported"] = decode_step_race(trained.model, exported)
    for form, race in steps.items():
        console.print(
            f"decode step at batch 1, past {race['past_tokens']} ({form}): onnx {race['onnx_median_ms']:.3f} ms, "
            f"torch eager {race['torch_eager_median_ms']:.3f} ms, {race['speedup']:.2f}x"
        )
    step = steps["served"]

    servers = {mode: Server(served, mode) for mode in SERVED_MODES}
    if int4_ok:
        servers["continuous-int4"] = Server(str(int4_path), "continuous")
    for name, server in servers.items():
        console.print(f"{name}: {server.line}", highlight=False)
    torch_baseline = TorchGenerate(trained.model)
    rows: list[Level] = []
    raw: list[dict[str, Any]] = []
    try:
        for concurrency in levels:
            count = max(concurrency * args.requests_per_client, args.min_requests)
            requests = requests_for(stream, count, seed=concurrency)
            for server in servers.values():
                served_level("warm-up", server, requests[: min(4, len(requests))], concurrency)
            measured: dict[str, list[Level]] = {name: [] for name in [*servers, "torch-generate"]}
            for _ in range(args.rounds):  # A B C D E, A B C D E, ...
                for name, server in servers.items():
                    measured[name].append(served_level(name, server, requests, concurrency))
                measured["torch-generate"].append(torch_baseline.level(requests, concurrency))
            for levels_of_mode in measured.values():
                rows.append(median_level(levels_of_mode))
                console.print(rows[-1])
            raw.extend(asdict(level) for levels_of_mode in measured.values() for level in levels_of_mode)
    finally:
        for server in servers.values():
            server.stop()

    table = Table(title=f"{MODEL}: output tokens/s and latency (loopback, {THREADS} threads)")
    for column in (
        "mode",
        "c",
        "requests",
        "tokens",
        "tokens/s",
        "TTFT p50",
        "TTFT p99",
        "after start",
        "ITL p50",
        "ITL p99",
        "errors",
    ):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in rows:
        table.add_row(r.mode, str(r.concurrency), str(r.requests), str(r.output_tokens), f"{r.tokens_per_s:.0f}",
                      f"{r.ttft_p50_ms:.1f}", f"{r.ttft_p99_ms:.1f}", f"{r.ttft_p99_after_start_ms:.1f}",
                      f"{r.itl_p50_ms:.2f}", f"{r.itl_p99_ms:.2f}",
                      str(r.errors))  # fmt: skip
    console.print(table)

    def row(mode: str, concurrency: int) -> Level | None:
        return next((r for r in rows if r.mode == mode and r.concurrency == concurrency), None)

    goals: dict[str, Any] = {}
    top, low = max(levels), min(levels)
    cont, seq, stat = row("continuous", top), row("sequential", top), row("static", top)
    if cont and seq and stat:
        goals["continuous_vs_sequential_at_top"] = cont.tokens_per_s / seq.tokens_per_s
        goals["continuous_vs_static_at_top"] = cont.tokens_per_s / stat.tokens_per_s
    first = row("continuous", low)
    if cont and first:
        goals["continuous_ttft_p99_top_over_c1"] = cont.ttft_p99_ms / first.ttft_p99_ms
        # shown beside the goal, not instead of it: the p99 without each client's first request
        goals["continuous_ttft_p99_after_start_top_over_c1"] = (
            cont.ttft_p99_after_start_ms / first.ttft_p99_ms
        )
    int4_row, fp32_row = row("continuous-int4", low), row("continuous", low)
    if int4_row and fp32_row:
        goals["int4_vs_fp32_tokens_per_s_at_c1"] = int4_row.tokens_per_s / fp32_row.tokens_per_s
    goals["onnx_decode_step_vs_torch_eager"] = step["speedup"]
    targets = {
        "continuous_vs_sequential_at_top": (">=", 3.0),
        "continuous_vs_static_at_top": (">=", 1.5),
        "continuous_ttft_p99_top_over_c1": ("<=", 2.0),
        "int4_vs_fp32_tokens_per_s_at_c1": (">=", 1.5),
        "onnx_decode_step_vs_torch_eager": (">=", 2.0),
    }
    goal_table = Table(title="goals")
    for column in ("goal", "measured", "target", "met"):
        goal_table.add_column(column)
    for name, (op, target) in targets.items():
        value = goals.get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        goal_table.add_row(name, "-" if value is None else f"{value:.2f}", f"{op} {target}", str(met))
    console.print(goal_table)
    if "continuous_ttft_p99_after_start_top_over_c1" in goals:
        console.print(
            "TTFT p99 at the top level without each client's first request (the start burst), over c=1's "
            f"p99: {goals['continuous_ttft_p99_after_start_top_over_c1']:.2f} (not the goal; the goal counts"
            " every request)"
        )

    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine_summary(),
        "model": MODEL,
        "training": asdict(trained.record),
        "form": args.form,
        "servers": {name: server.line for name, server in servers.items()},
        "fusions": fusions,
        "decode_steps": steps,
        "threads": THREADS,
        "requests_per_client": args.requests_per_client,
        "min_requests": args.min_requests,
        "prompt_lengths": PROMPT_LENGTHS,
        "output_lengths": OUTPUT_LENGTHS,
        "int4_gate": asdict(gate),
        "decode_step": step,
        "rounds": args.rounds,
        "levels": [asdict(r) for r in rows],
        "rounds_measured": raw,
        "goals": goals,
        "targets": {k: f"{op} {t}" for k, (op, t) in targets.items()},
    }
    out = (
        Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"generate-{dt.date.today()}.json"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"json: {out}")


if __name__ == "__main__":
    main()
