"""`hone serve` with a generative model, as a real process: the real `openai` client, an SSE client on
the Triton generate extension, the bad inputs, disconnects, the full cache, and the metrics."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from hone.generate.decoder import Decoder

READY = re.compile(r"hone serve: ready: .* on http://127\.0\.0\.1:(?P<port>\d+) ")


class Server:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hone.cli", "serve", *args, "--http-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        watchdog = threading.Timer(60, self.process.kill)
        watchdog.start()
        try:
            line = self.process.stdout.readline().strip()  # type: ignore[union-attr]
        finally:
            watchdog.cancel()
        match = READY.match(line)
        if match is None:
            self.process.kill()
            _, stderr = self.process.communicate(timeout=10)
            pytest.fail(f"no ready line; stdout {line!r}, stderr {stderr[-2000:]!r}")
        self.line = line
        self.url = f"http://127.0.0.1:{match['port']}"

    def metric(self, name: str) -> float:
        text = httpx2.get(f"{self.url}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr


@pytest.fixture(scope="module")
def server(gpt2_path: Path) -> Iterator[Server]:
    running = Server(
        str(gpt2_path), "--name", "gpt2", "--max-sequences", "4", "--max-waiting", "2",
        "--max-json-bytes", "65536", "--max-header-bytes", "8192",
    )  # fmt: skip
    yield running
    code, stderr = running.stop()
    assert code == 0, stderr[-2000:]


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def expected_text(decoder: Decoder, prompt: str, tokens: int) -> str:
    assert decoder.tokenizer is not None
    ids = decoder.tokenizer.encode(prompt)
    return decoder.tokenizer.decode(decoder.greedy([ids], tokens)[0])


def test_openai_completions_greedy_matches_the_decoder(server: Server, gpt2_decoder: Decoder) -> None:
    answer = client(server).completions.create(
        model="gpt2", prompt="hello world", max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    assert answer.choices[0].text == expected_text(gpt2_decoder, "hello world", 12)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens == len(gpt2_decoder.tokenizer.encode("hello world"))  # type: ignore[union-attr]


def test_openai_stream_gives_the_same_text_in_pieces(server: Server, gpt2_decoder: Decoder) -> None:
    chunks = list(
        client(server).completions.create(
            model="gpt2",
            prompt="the quick",
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    # the pieces join to the whole text; how many there are depends on how far the stream fell
    # behind this small fast model (tokens already waiting go in one event: test_stream_pieces.py)
    assert "".join(texts) == expected_text(gpt2_decoder, "the quick", 20)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


def test_openai_chat_stream_and_stop_strings(server: Server, gpt2_decoder: Decoder) -> None:
    full = client(server).chat.completions.create(
        model="gpt2",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=30,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    text = full.choices[0].message.content or ""
    assert full.choices[0].message.role == "assistant" and len(text) > 5
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip() and stop in text
    chunks = list(
        client(server).chat.completions.create(
            model="gpt2",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=30,
            temperature=0,
            stop=[stop],
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text[: text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"


def test_seeded_sampling_repeats(server: Server) -> None:
    def once(seed: int) -> str:
        answer = client(server).completions.create(
            model="gpt2",
            prompt="hello",
            max_tokens=16,
            temperature=1.2,
            top_p=0.9,
            seed=seed,
            extra_body={"ignore_eos": True},
        )
        return answer.choices[0].text

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_triton_generate_and_generate_stream(server: Server, gpt2_decoder: Decoder) -> None:
    body = {"text_input": "hello world", "parameters": {"max_tokens": 10, "ignore_eos": True}}
    answer = httpx2.post(f"{server.url}/v2/models/gpt2/generate", json=body).json()
    assert answer["text_output"] == expected_text(gpt2_decoder, "hello world", 10)
    events = []
    with httpx2.stream("POST", f"{server.url}/v2/models/gpt2/generate_stream", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    # ten tokens, then the end with its reason; tokens already waiting share an event
    assert sum(len(e.get("output_ids", [])) for e in events) == 10
    assert [t for e in events for t in e.get("output_ids", [])] == answer["output_ids"]
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
    assert events[-1]["finish_reason"] == "length" and events[-1]["usage"]["completion_tokens"] == 10


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/completions", {"model": "gpt2", "prompt": list(range(1, 300))}, "context is 256"),
        ("/v1/completions", {"model": "gpt2", "prompt": "hi", "max_tokens": 1000}, "lower max_tokens"),
        ("/v1/completions", {"model": "gpt2", "prompt": "hi", "temperature": "hot"}, "must be a number"),
        ("/v1/completions", {"model": "other", "prompt": "hi"}, "not served"),
        ("/v1/chat/completions", {"model": "gpt2", "messages": []}, "non-empty list"),
        ("/v1/chat/completions", {"model": "gpt2", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
        ("/v1/chat/completions", {"model": "gpt2", "messages": [{"role": "user", "content": 3}]}, "string"),
        ("/v2/models/gpt2/generate", {"parameters": {}}, "text_input"),
    ],
)
def test_bad_requests_are_one_line_4xx(server: Server, route: str, body: dict, message: str) -> None:
    response = httpx2.post(f"{server.url}{route}", json=body)
    assert 400 <= response.status_code < 500
    assert message in response.json()["error"]


def test_not_json_is_a_400(server: Server) -> None:
    response = httpx2.post(
        f"{server.url}/v1/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def _stream_lines(url: str, body: dict, lines: list[str], stop_after: int | None = None) -> None:
    with httpx2.stream("POST", url, json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
            if stop_after is not None and len(lines) >= stop_after:
                return  # leaving the block closes the connection mid-stream


def test_disconnect_cancels_full_cache_503_and_nothing_leaks(server: Server, gpt2_decoder: Decoder) -> None:
    url = f"{server.url}/v1/completions"
    long = {"model": "gpt2", "prompt": "hello", "max_tokens": 240, "stream": True, "ignore_eos": True}
    long["temperature"] = 0
    # a client that goes away after 5 chunks, while another keeps streaming
    keeper: list[str] = []
    keeper_thread = threading.Thread(target=_stream_lines, args=(url, long, keeper))
    keeper_thread.start()
    quitter: list[str] = []
    _stream_lines(url, long, quitter, stop_after=5)
    keeper_thread.join(60)
    assert keeper[-1] == "data: [DONE]"
    streamed = "".join(json.loads(line[6:])["choices"][0]["text"] for line in keeper[:-1])
    assert streamed == expected_text(gpt2_decoder, "hello", 240)
    # 4 sequences running, 2 waiting: of 12 sent at once, the ones beyond get a 503, the others
    # their full text
    barrier = threading.Barrier(12)
    answers: list[httpx2.Response] = []

    def send() -> None:
        with httpx2.Client(timeout=60) as http:
            barrier.wait()
            answers.append(http.post(url, json={**long, "stream": False}))

    threads = [threading.Thread(target=send) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    codes = sorted(a.status_code for a in answers)
    assert len(codes) == 12 and set(codes) == {200, 503}
    assert codes.count(200) >= 3  # at least the waiting room and one running (arrival order races)
    refused = [a for a in answers if a.status_code == 503]
    assert all("already waiting" in a.json()["error"] for a in refused)
    texts = {a.json()["choices"][0]["text"] for a in answers if a.status_code == 200}
    assert texts == {streamed}
    # the cache is empty again: nothing reserved, nothing running, the quitter counted as aborted
    deadline = time.time() + 10
    while server.metric("vllm:num_requests_running") > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert server.metric("vllm:kv_cache_usage_perc") == 0.0
    assert server.metric("hone_kv_cache_bytes") == 0.0
    assert server.metric("vllm:num_requests_waiting") == 0.0
    metrics = httpx2.get(f"{server.url}/metrics").text
    assert 'vllm:request_success_total{finished_reason="cancelled",model_name="gpt2"}' in metrics
    assert "vllm:time_to_first_token_seconds_count" in metrics
    assert "vllm:inter_token_latency_seconds_bucket" in metrics
    # every finished stream's tokens were counted: the keeper's and each 200's 240, plus the quitter's
    assert server.metric("vllm:generation_tokens_total") >= 240 * (1 + codes.count(200)) + 5


def test_a_token_guards_every_route_but_health(gpt2_path: Path, gpt2_decoder: Decoder) -> None:
    guarded = Server(str(gpt2_path), "--name", "gpt2", "--token", "s3cret")
    try:
        assert httpx2.get(f"{guarded.url}/v2/health/ready").status_code == 200
        for path in ("/v1/models", "/v2/models/gpt2", "/metrics"):
            refused = httpx2.get(f"{guarded.url}{path}")
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
        wrong = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model="gpt2", prompt="hello", max_tokens=4, temperature=0)
        right = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="s3cret", max_retries=0, timeout=30)
        answer = right.completions.create(model="gpt2", prompt="hello", max_tokens=8, temperature=0)
        assert answer.choices[0].text == expected_text(gpt2_decoder, "hello", 8)
    finally:
        code, stderr = guarded.stop()
    assert code == 0, stderr[-2000:]


def test_oversized_requests_are_refused_in_one_line_and_others_keep_streaming(
    server: Server, gpt2_decoder: Decoder
) -> None:
    url = f"{server.url}/v1/completions"
    big = {"model": "gpt2", "prompt": "x" * 100_000, "max_tokens": 2}
    declared = httpx2.post(url, json=big, timeout=30)
    assert declared.status_code == 413
    assert "over 65536 bytes" in declared.json()["error"]
    assert "\n" not in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"model": "gpt2", "prompt": "'
        for _ in range(40):
            yield b"y" * 4096
        yield b'", "max_tokens": 2}'

    streamed = httpx2.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert streamed.status_code == 413
    header = httpx2.post(url, json={"model": "gpt2", "prompt": "a", "max_tokens": 1},
                         headers={"x-padding": "z" * 16_000}, timeout=30)  # fmt: skip
    assert header.status_code == 431
    answer = client(server).completions.create(
        model="gpt2", prompt="the quick", max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
    )
    assert answer.choices[0].text == expected_text(gpt2_decoder, "the quick", 8)


def test_kserve_only_options_are_refused_for_a_generative_model(gpt2_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hone.cli", "serve", str(gpt2_path), "--grpc-port", "9001", "--instances", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--grpc-port, --instances apply to KServe models" in done.stdout + done.stderr


def test_the_ready_line_says_which_kv_cache_serves_and_in_place_is_refused_when_it_cannot(
    server: Server, gpt2_path: Path
) -> None:
    # the module's server runs the exported graph, not fused by hone optimize: the padded cache
    assert "padded (in-place not used: 0 MultiHeadAttention for 2 layers" in server.line
    done = subprocess.run(
        [sys.executable, "-m", "hone.cli", "serve", str(gpt2_path), "--kv-cache", "in-place", "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0
    assert "the in-place KV cache cannot serve" in output and "run hone optimize first" in output
    assert "Traceback" not in output


def test_the_benchmarks_streaming_client_counts_every_token(server: Server) -> None:
    """benchmarks/generate.py's aiohttp client against a real server: each request's tokens counted
    once (an event may carry several)."""
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_generate", Path(__file__).resolve().parents[2] / "benchmarks" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    bench.MODEL = "gpt2"
    deadline = time.monotonic() + 30  # the shared server may still be finishing an earlier test's streams
    while server.metric("vllm:num_requests_running") + server.metric("vllm:num_requests_waiting") > 0:
        assert time.monotonic() < deadline, "the server did not become idle"
        time.sleep(0.05)
    requests = [bench.Request([5 + i, 6, 7][: 1 + i % 3], 10 + 7 * i) for i in range(8)]
    # 2 clients: the shared server's waiting room is 2 (--max-waiting), and requests may all arrive
    # between two iterations
    timings, errors = asyncio.run(bench._closed_loop(server.url, requests, 2))
    assert errors == 0
    assert sorted(len(t.tokens) for t in timings) == sorted(r.max_tokens for r in requests)
    assert all(t.tokens[0] >= t.sent for t in timings)
