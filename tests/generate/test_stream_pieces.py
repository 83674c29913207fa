"""A stream's pieces: one token per event while the stream keeps up with the engine, the tokens
already waiting in one event when it has fallen behind; never a token held back to wait for more."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from hone.generate.engine import GenerationRequest, TokenEvent
from hone.serve.generate_http import Generation, GenerationService, Piece
from hone.serve.generate_protocol import ParsedRequest


class _Decoder:
    tokenizer = None  # ids only: the pieces carry no text


class _Engine:
    """Delivers ``tokens`` then the end, either all at once at submit or from a thread with gaps."""

    def __init__(self, tokens: list[int], gap_s: float | None) -> None:
        self.tokens, self.gap_s = tokens, gap_s
        self.cancelled: list[int] = []

    def submit(self, request: GenerationRequest, deliver: Callable[[TokenEvent], None]) -> int:
        events = [TokenEvent(t) for t in self.tokens] + [TokenEvent(None, "length")]
        if self.gap_s is None:
            for event in events:
                deliver(event)
        else:

            def slowly() -> None:
                for event in events:
                    time.sleep(self.gap_s)  # type: ignore[arg-type]
                    deliver(event)

            threading.Thread(target=slowly, daemon=True).start()
        return 7

    def cancel(self, ident: int) -> None:
        self.cancelled.append(ident)


def _pieces(engine: _Engine) -> list[Piece]:
    async def run() -> list[Piece]:
        service: Any = GenerationService("m", _Decoder(), engine, metrics=None)  # type: ignore[arg-type]
        request = GenerationRequest(prompt=[1, 2], max_tokens=len(engine.tokens))
        generation = Generation(service, ParsedRequest(request, stop=(), stream=True))

        async def connected() -> bool:
            return False

        return [piece async for piece in generation.pieces(connected)]

    return asyncio.run(run())


def test_tokens_already_waiting_go_in_one_piece() -> None:
    pieces = _pieces(_Engine([5, 6, 7, 8], gap_s=None))
    assert [p.tokens for p in pieces] == [(5, 6, 7, 8)]
    assert pieces[-1].finish_reason == "length"


def test_a_stream_that_keeps_up_sends_one_token_per_piece() -> None:
    pieces = _pieces(_Engine([5, 6, 7], gap_s=0.05))
    assert [p.tokens for p in pieces] == [(5,), (6,), (7,), ()]
    assert pieces[-1].finish_reason == "length"
