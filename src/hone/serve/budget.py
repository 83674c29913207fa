"""ByteBudget: a bound on the bytes of every request the server holds at once.

The queue is bounded in requests (``max_queue_size`` per priority), but one request may be up to
``max_body_bytes``, so a count alone lets a few clients hold gigabytes. Every infer request, over
HTTP and gRPC, therefore holds a reservation on one server-wide budget (``--max-inflight-bytes``)
from the first byte of its body until its answer is written:

- the body, as it arrives (not its declared length: a slow sender holds only what it sent);
- while a JSON request is parsed, ``JSON_PARSE_FACTOR`` times its JSON part (Python's list of
  floats costs about 32 bytes per number written in 8-12 characters);
- its decoded input tensors, queued or in flight (a binary tensor that is a view of the body is
  counted twice: the bound errs on the safe side);
- its output tensors, once computed, while the answer is encoded and written (an answer that
  would pass the budget is refused with 503 too: the memory bound holds even for a model whose
  outputs are far larger than its inputs).

A reservation that would pass the budget fails at once with ``ServerBusyError`` (503, like a full
queue); the request's bytes are released, so the server keeps serving the others. One lock guards
the count: the HTTP and gRPC servers share it from the same event loop, the decode threads too.
"""

from __future__ import annotations

import threading
from types import TracebackType

from hone.errors import ServerBusyError

# Below 256 MiB with room for what the budget does not see (allocator slack, Python objects): 8
# clients each holding a 34 MiB unfinished body raised the server's RSS by 258 MB under a 256 MiB
# budget (benchmarks/serve_abuse.py).
DEFAULT_MAX_INFLIGHT_BYTES = 192 * 1024 * 1024
JSON_PARSE_FACTOR = 4
# Requests above this (or compressed ones) are inflated and decoded, and answers above it encoded,
# in a worker thread, at most DECODE_THREADS at a time per server (HTTP and gRPC each), so health
# checks and small requests keep answering while a large one is processed.
DECODE_ON_LOOP_BYTES = 64 * 1024
DECODE_THREADS = 2


class ByteBudget:
    """``limit`` bytes shared by every request the server holds; see the module docstring."""

    def __init__(self, limit: int = DEFAULT_MAX_INFLIGHT_BYTES) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight byte budget must be at least 1 byte, got {limit}")
        self.limit = limit
        self._held = 0
        self._peak = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    @property
    def peak(self) -> int:
        return self._peak

    def hold(self) -> Reservation:
        """An empty reservation, released on exit from its ``with`` block."""
        return Reservation(self)

    def _take(self, nbytes: int, what: str) -> None:
        with self._lock:
            if self._held + nbytes > self.limit:
                held = self._held
                raise ServerBusyError(
                    f"the server holds {held / 2**20:.1f} MiB of requests and {what} needs "
                    f"{nbytes / 2**20:.1f} MiB more, above its budget of {self.limit / 2**20:.0f} MiB "
                    "(--max-inflight-bytes); retry later"
                )
            self._held += nbytes
            self._peak = max(self._peak, self._held)

    def _give(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes


class Reservation:
    """The bytes one request holds on a ByteBudget; grows as the request does, released at once."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.nbytes = 0

    def grow(self, nbytes: int, what: str) -> None:
        """Hold ``nbytes`` more, or raise ServerBusyError (holding nothing more)."""
        if nbytes > 0:
            self._budget._take(nbytes, what)
            self.nbytes += nbytes

    def shrink(self, nbytes: int) -> None:
        """Give back ``nbytes`` (e.g. a parser's working memory once it is done)."""
        nbytes = min(nbytes, self.nbytes)
        if nbytes > 0:
            self._budget._give(nbytes)
            self.nbytes -= nbytes

    def release(self) -> None:
        self.shrink(self.nbytes)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
