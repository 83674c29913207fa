"""Batcher: requests in, batches out; dynamic batching in front of a ModelRunner, on asyncio.

Admission (``submit``). A request is checked against the model (``ModelRunner.validate``) and
queued in the bounded FIFO queue of its priority (0 is the highest). A full queue refuses at once
with ``QueueFullError``: memory stays bounded by ``max_queue_size`` requests per priority. A request
that carries more samples than ``max_batch_size`` is refused (it is never split).

Forming a batch. Whenever an instance is free, the scheduler takes the oldest request of the
highest waiting priority as the head and gathers, by priority then arrival, the requests whose
non-batch input shapes and dtypes equal the head's (only those can be concatenated), stopping at
the first one that would pass ``max_batch_size``, so order holds within a priority. The gathered
requests go as one batch

- when the oldest of them has waited ``max_queue_delay_ms``, or the batcher is draining: all of them;
- else, with ``preferred_batch_sizes``, at the largest preferred size reached at a request boundary,
  or just before the request that passes the largest preferred size (Triton's rule);
- else when they fill ``max_batch_size`` (or the next request of the group does not fit);

otherwise the scheduler sleeps until the delay runs out or another request arrives. With batching
off (``max_batch_size`` 0 or 1) every request is a batch of its own, through the same queue.

Sequential traffic does not wait. Triton waits ``max_queue_delay_ms`` for company even when a lone
client sends one request after the other, which adds the whole delay to every request. Here a
request goes at once when it arrived with nothing running or queued, is still alone, and the
previous batch held a single request: waiting would most likely bring nobody. As soon as requests
overlap (one arrives while another runs or waits, or a batch of several ran), the delay applies.
``idle_dispatch=False`` restores Triton's rule.

Running. A batch's inputs are concatenated along axis 0 and run in a thread pool with one worker
per runner instance (``loop.run_in_executor``), so up to N batches run at once while the event loop
keeps admitting. The outputs are split back by each request's sample count after checking that
every output has as many rows as the batch has samples (a message quotes both when not; both in
``batch_rows``, which Ray's replicas share). When the
run of a batch of several requests fails, each of its requests is run again alone, in the same
instance slot, so only the requests that fail alone fail (one poisoned request never takes its
batch mates down). A request that fails alone gets ``InferenceInputError`` (400) when onnxruntime
refused its data (INVALID_ARGUMENT: an index out of range) and ``InferenceExecutionError`` (500,
one logged traceback) otherwise; the batcher goes on with the next batch.

Timeouts, cancellation, shutdown. A request's queue timeout (its own ``timeout_ms`` or
``default_timeout_ms``, the smaller) removes it from the queue when it expires and fails it with
``RequestTimeoutError``; it never runs. A client that goes away (its ``submit`` cancelled) takes
its request out of the queue. ``stop()`` refuses new requests (``ServerShuttingDownError``), runs
every request already accepted, then returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from hone.errors import (
    HoneError,
    InferenceExecutionError,
    InferenceInputError,
    ModelNotReadyError,
    OptionError,
    QueueFullError,
    RequestTimeoutError,
    ServerShuttingDownError,
    ServingError,
)
from hone.serve.batch_rows import Outputs, batch_key, concatenate, split_rows
from hone.serve.config import BatchConfig
from hone.serve.model_runner import ModelRunner

logger = logging.getLogger(__name__)

# At most one warning per this many seconds for failures a client's data causes (with a count of
# the ones held back); the client's error answer and the failure metrics count every one.
CLIENT_WARNING_INTERVAL_S = 10.0

# created -> running (start) -> stopping (stop: drains) -> stopped
BatcherState = Literal["created", "running", "stopping", "stopped"]


class BatchObserver(Protocol):
    """Told about every batch run and every request answered (the metrics module implements it).

    Called on the event loop's thread; it must not block.
    """

    def on_batch(self, size: int, queue_ns: Sequence[int], compute_ns: int) -> None:
        """A batch of ``size`` samples ran; ``queue_ns`` holds each request's wait in the queue."""

    def on_request(self, success: bool, latency_ns: int) -> None:
        """A request was answered, ``latency_ns`` after it was submitted."""


@dataclass
class BatcherStats:
    """Counters since start, in the terms of Triton's statistics extension.

    Triton attributes a batch's compute time to every request in it, and so do ``compute_*_ns``
    here (a batch of 4 requests that ran 1 ms adds 4 ms). ``queue_depth`` and ``in_flight`` are
    the requests waiting and running at the moment the stats were taken.
    """

    request_success: int = 0
    request_failure: int = 0
    success_ns: int = 0  # submit-to-answer time of successful requests, summed
    failure_ns: int = 0
    inference_count: int = 0  # samples run
    execution_count: int = 0  # batches run
    queue_ns: int = 0  # time the requests that ran waited in the queue, summed
    compute_input_ns: int = 0  # concatenating inputs
    compute_infer_ns: int = 0  # onnxruntime
    compute_output_ns: int = 0  # checking and splitting outputs
    batch_sizes: dict[int, int] = field(default_factory=dict)  # samples in a batch -> batches run
    last_inference_ms: int = 0  # wall-clock ms since the epoch when the last batch ran; 0: none
    queue_depth: int = 0
    in_flight: int = 0

    @property
    def compute_ns(self) -> int:
        return self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns


@dataclass(eq=False)
class _Request:
    feeds: Mapping[str, np.ndarray]
    samples: int
    group: Hashable  # requests of one group can be concatenated
    priority: int
    submitted_ns: int
    timeout_ms: float | None
    future: asyncio.Future[Outputs]
    queued: bool = True
    timer: asyncio.TimerHandle | None = None
    overlapped: bool = True  # it arrived while another request ran or waited

    def expired(self, now_ns: int) -> bool:
        return self.timeout_ms is not None and now_ns - self.submitted_ns >= self.timeout_ms * 1e6


@dataclass(frozen=True)
class _Timing:
    input_ns: int
    infer_ns: int
    output_ns: int


class Batcher:
    """Dynamic batching for one ModelRunner; see the module docstring for the rules."""

    def __init__(
        self,
        runner: ModelRunner,
        config: BatchConfig,
        *,
        observer: BatchObserver | None = None,
    ) -> None:
        if max(1, config.max_batch_size) != max(1, runner.max_batch_size):
            raise OptionError(
                f"the batcher's max_batch_size ({config.max_batch_size}) must equal the runner's "
                f"({runner.max_batch_size}), which validates requests and warmed up those sizes"
            )
        self.runner = runner
        self.config = config
        self.observer = observer
        self._queues: list[deque[_Request]] = [deque() for _ in range(config.priority_levels)]
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(runner.instances)
        self._running: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._state: BatcherState = "created"
        self._stats = BatcherStats()
        self._in_flight = 0
        self._last_batch_requests = 1
        self._client_warnings = _Throttle(CLIENT_WARNING_INTERVAL_S)  # warnings a client's bad data causes

    @property
    def stats(self) -> BatcherStats:
        """A snapshot of the counters, with the queue depth and in-flight requests of now."""
        return replace(
            self._stats,
            batch_sizes=dict(self._stats.batch_sizes),
            queue_depth=sum(len(waiting) for waiting in self._queues),
            in_flight=self._in_flight,
        )

    @property
    def accepting(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        """Start the scheduler on the running event loop."""
        if self._state == "running":
            return
        if self._state != "created":
            raise ServerShuttingDownError(f"model {self.runner.name!r} was stopped; it cannot restart")
        self._executor = ThreadPoolExecutor(
            self.runner.instances, thread_name_prefix=f"hone-serve-{self.runner.name}"
        )
        self._scheduler = asyncio.create_task(self._schedule(), name=f"hone-batcher-{self.runner.name}")
        self._scheduler.add_done_callback(self._scheduler_done)
        self._state = "running"

    async def stop(self) -> None:
        """Refuse new requests, run every accepted one, then return (safe to call twice)."""
        if self._state == "created":
            self._state = "stopped"
            return
        if self._state == "running":
            self._state = "stopping"
            self._arrived.set()
            logger.info("%s: stopping; %d request(s) queued", self.runner.name, self.stats.queue_depth)
        if self._scheduler is not None:
            await asyncio.wait([self._scheduler])
        while self._running:
            await asyncio.wait(set(self._running))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._state = "stopped"

    async def submit(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        priority: int = 0,
        timeout_ms: float | None = None,
    ) -> Outputs:
        """Queue one request and wait for its outputs (name -> array, this request's rows only).

        Raises a ServingError: InferenceInputError, QueueFullError, ModelNotReadyError or
        ServerShuttingDownError at once; RequestTimeoutError or InferenceExecutionError later.
        """
        submitted_ns = time.monotonic_ns()
        try:
            request = self._admit(feeds, priority, timeout_ms, submitted_ns)
        except ServingError:
            self._record_request(False, time.monotonic_ns() - submitted_ns)
            raise
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    # -- admission -------------------------------------------------------------------------------

    def _admit(
        self,
        feeds: Mapping[str, np.ndarray],
        priority: int,
        timeout_ms: float | None,
        submitted_ns: int,
    ) -> _Request:
        name = self.runner.name
        if self._state == "created":
            raise ModelNotReadyError(f"model {name!r} is not ready: its batcher has not started", model=name)
        if self._state != "running":
            raise ServerShuttingDownError(
                f"model {name!r} is shutting down and takes no new requests; retry on another replica",
                model=name,
            )
        levels = self.config.priority_levels
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority < levels:
            raise InferenceInputError(
                f"priority must be an integer from 0 (highest) to {levels - 1}, got {priority!r}",
                model=name,
            )
        samples = self.runner.validate(feeds)
        waiting = self._queues[priority]
        if len(waiting) >= self.config.max_queue_size:
            raise QueueFullError(
                f"model {name!r} already has {len(waiting)} requests waiting at priority {priority} "
                f"(max_queue_size {self.config.max_queue_size}); retry later",
                model=name,
                priority=priority,
            )
        loop = asyncio.get_running_loop()
        request = _Request(
            feeds=feeds,
            samples=samples,
            group=batch_key(feeds) if self.runner.batching else None,
            priority=priority,
            submitted_ns=submitted_ns,
            timeout_ms=self._queue_timeout_ms(timeout_ms),
            future=loop.create_future(),
            overlapped=self._in_flight > 0 or any(self._queues),
        )
        waiting.append(request)
        if request.timeout_ms is not None:
            request.timer = loop.call_later(request.timeout_ms / 1000, self._expire, request)
        self._arrived.set()
        return request

    def _queue_timeout_ms(self, timeout_ms: float | None) -> float | None:
        """The request's own timeout or the default, whichever is smaller."""
        if timeout_ms is None:
            return self.config.default_timeout_ms
        valid = not isinstance(timeout_ms, bool) and isinstance(timeout_ms, (int, float))
        if not valid or not math.isfinite(timeout_ms) or timeout_ms <= 0:
            raise InferenceInputError(
                f"timeout must be a number of milliseconds above 0, got {timeout_ms!r}",
                model=self.runner.name,
            )
        default = self.config.default_timeout_ms
        return float(timeout_ms) if default is None else min(float(timeout_ms), default)

    def _expire(self, request: _Request) -> None:
        if not request.queued:
            return
        self._dequeue(request)
        waited_ms = (time.monotonic_ns() - request.submitted_ns) / 1e6
        self._finish(
            request,
            error=RequestTimeoutError(
                f"request to model {self.runner.name!r} waited {waited_ms:.1f} ms in the queue, past "
                f"its timeout of {request.timeout_ms:g} ms, and did not run; retry, allow a longer "
                "timeout, or add instances",
                model=self.runner.name,
                timeout_ms=request.timeout_ms,
            ),
        )

    def _withdraw(self, request: _Request) -> None:
        """Its client went away: drop it from the queue if it is still there."""
        if not request.future.cancelled():  # answered (and counted) just before the client left
            return
        if request.timer is not None:
            request.timer.cancel()
        if request.queued:
            self._dequeue(request)
            logger.debug("%s: request withdrawn by its client", self.runner.name)
        self._record_request(False, time.monotonic_ns() - request.submitted_ns)

    def _dequeue(self, request: _Request) -> None:
        waiting = self._queues[request.priority]
        if waiting and waiting[0] is request:
            waiting.popleft()
        else:
            waiting.remove(request)
        request.queued = False

    # -- scheduling ------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        """Form a batch whenever an instance is free; return once draining found nothing left."""
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if batch is None:
                self._slots.release()
                return
            self._in_flight += len(batch)  # counted from now: a request arriving now overlaps it
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Request] | None:
        while True:
            self._arrived.clear()
            now_ns = time.monotonic_ns()
            gathered, full = self._gather(now_ns)
            if not gathered:
                if self._state != "running":
                    return None
                await self._arrived.wait()
                continue
            batch, wait_ns = self._close(gathered, full, now_ns)
            if batch:
                self._last_batch_requests = len(batch)
                for request in batch:
                    self._dequeue(request)
                    if request.timer is not None:
                        request.timer.cancel()
                return batch
            try:
                await asyncio.wait_for(self._arrived.wait(), wait_ns / 1e9)
            except TimeoutError:
                pass

    def _gather(self, now_ns: int) -> tuple[list[_Request], bool]:
        """The head's group by priority then arrival, up to max_batch_size; and whether it is full."""
        limit = max(1, self.config.max_batch_size)
        gathered: list[_Request] = []
        expired: list[_Request] = []
        samples = 0
        full = False
        for waiting in self._queues:
            for request in waiting:
                if request.expired(now_ns):
                    expired.append(request)
                    continue
                if gathered and request.group != gathered[0].group:
                    continue
                if samples + request.samples > limit:
                    full = True
                    break
                gathered.append(request)
                samples += request.samples
                if samples == limit:
                    full = True
                    break
            if full:
                break
        for request in expired:
            self._expire(request)
        return gathered, full

    def _close(self, gathered: list[_Request], full: bool, now_ns: int) -> tuple[list[_Request], int]:
        """The requests to run now (empty: wait), and how long to wait for more, in ns."""
        oldest_ns = min(request.submitted_ns for request in gathered)
        wait_ns = int(self.config.max_queue_delay_ms * 1e6) - (now_ns - oldest_ns)
        if wait_ns <= 0 or self._state != "running" or not self.runner.batching:
            return gathered, 0
        lone = len(gathered) == 1 and not gathered[0].overlapped and self._last_batch_requests == 1
        if lone and self.config.idle_dispatch:
            return gathered, 0  # sequential traffic: nobody to wait for (see the module notes)
        preferred = self._preferred_cut(gathered)
        if preferred:
            return gathered[:preferred], 0
        if full:
            return gathered, 0
        return [], wait_ns

    def _preferred_cut(self, gathered: list[_Request]) -> int:
        """How many requests make the preferred batch (0: none yet), as Triton picks it."""
        preferred = self.config.preferred_batch_sizes
        if not preferred:
            return 0
        largest = preferred[-1]
        best = 0
        samples = 0
        for count, request in enumerate(gathered, start=1):
            if count > 1 and samples + request.samples > largest:
                return best or count - 1
            samples += request.samples
            if samples in preferred:
                best = count
        return best or (len(gathered) if samples >= largest else 0)

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        """A scheduler that died of a bug must not leave requests waiting forever."""
        if task.cancelled() or task.exception() is None:
            return
        logger.error("%s: the batch scheduler failed", self.runner.name, exc_info=task.exception())
        self._state = "stopping"
        for waiting in self._queues:
            for request in list(waiting):
                self._dequeue(request)
                self._finish(
                    request,
                    error=ServerShuttingDownError(
                        f"the batch scheduler of model {self.runner.name!r} failed "
                        f"({task.exception()}); the model takes no more requests",
                        model=self.runner.name,
                    ),
                )

    # -- running ---------------------------------------------------------------------------------

    async def _execute(self, batch: list[_Request]) -> None:
        started_ns = time.monotonic_ns()
        queue_ns = [started_ns - request.submitted_ns for request in batch]
        samples = [request.samples for request in batch]
        loop = asyncio.get_running_loop()
        try:
            outputs, timing = await loop.run_in_executor(
                self._executor, self._run_batch, [request.feeds for request in batch], samples
            )
        except Exception as exc:  # noqa: BLE001 - any failure in the run fails this batch, never the batcher
            if len(batch) == 1:
                self._fail_batch(batch, sum(samples), exc)
            else:
                await self._retry_alone(batch, exc)
        else:
            self._record_batch(sum(samples), queue_ns, timing, len(batch))
            for request, result in zip(batch, outputs, strict=False):
                self._finish(request, result=result)
        finally:
            self._in_flight -= len(batch)
            self._slots.release()

    async def _retry_alone(self, batch: list[_Request], exc: Exception) -> None:
        """A batch of several failed: run each request by itself (in this batch's instance slot),
        so only the requests that fail alone fail, and the others get their answers."""
        if (held_back := self._client_warnings.due()) is not None:
            logger.warning(
                "%s: a batch of %d requests failed (%s); running each alone so only the guilty fail%s",
                self.runner.name,
                len(batch),
                _reason(exc),
                _held_back(held_back),
            )
        loop = asyncio.get_running_loop()
        for request in batch:
            if request.future.done():
                continue
            try:
                outputs, timing = await loop.run_in_executor(
                    self._executor, self._run_batch, [request.feeds], [request.samples]
                )
            except Exception as alone:  # noqa: BLE001 - this request's own failure, answered to it
                self._fail_batch([request], request.samples, alone)
            else:
                self._record_batch(request.samples, [time.monotonic_ns() - request.submitted_ns], timing, 1)
                self._finish(request, result=outputs[0])

    def _run_batch(
        self, feeds_list: list[Mapping[str, np.ndarray]], samples: list[int]
    ) -> tuple[list[Outputs], _Timing]:
        """Concatenate, run and split one batch (on an executor thread)."""
        start_ns = time.perf_counter_ns()
        feeds = concatenate(feeds_list)
        inputs_ns = time.perf_counter_ns()
        outputs = self.runner.run(feeds)
        infer_ns = time.perf_counter_ns()
        parts = split_rows(outputs, samples, self.runner.name) if self.runner.batching else [outputs]
        end_ns = time.perf_counter_ns()
        return parts, _Timing(inputs_ns - start_ns, infer_ns - inputs_ns, end_ns - infer_ns)

    def _fail_batch(self, batch: list[_Request], samples: int, exc: Exception) -> None:
        """Fail ``batch`` (one request, or several when the batcher itself failed them together).
        onnxruntime's INVALID_ARGUMENT on a request run alone is that request's data: a 400 with
        onnxruntime's line, logged as a warning; anything else is a 500 with one traceback."""
        reason = _reason(exc)
        if len(batch) == 1 and _is_invalid_argument(exc):
            if (held_back := self._client_warnings.due()) is not None:
                logger.warning(
                    "%s: a request's data does not fit the model: %r%s",
                    self.runner.name,
                    reason,
                    _held_back(held_back),
                )
            error: ServingError = InferenceInputError(
                f"the request's data does not fit model {self.runner.name!r}: {reason}",
                model=self.runner.name,
            )
            error.__cause__ = exc
            self._finish(batch[0], error=error)
            return
        logger.error(
            "%s: a batch of %d request(s), %d sample(s) failed: %s",
            self.runner.name,
            len(batch),
            samples,
            reason,
            exc_info=None if isinstance(exc, HoneError) else exc,
        )
        message = (
            reason
            if isinstance(exc, InferenceExecutionError) or len(batch) == 1
            else f"the batch of {len(batch)} request(s) this request ran in failed: {reason}"
        )
        for request in batch:
            error = InferenceExecutionError(message, model=self.runner.name, batch_samples=samples)
            error.__cause__ = exc
            self._finish(request, error=error)

    # -- answers and counters --------------------------------------------------------------------

    def _finish(
        self, request: _Request, *, result: Outputs | None = None, error: ServingError | None = None
    ) -> None:
        if request.timer is not None:
            request.timer.cancel()
        if request.future.done():  # cancelled: its client went away and was counted then
            return
        if error is None:
            request.future.set_result(result if result is not None else {})
        else:
            request.future.set_exception(error)
        self._record_request(error is None, time.monotonic_ns() - request.submitted_ns)

    def _record_request(self, success: bool, latency_ns: int) -> None:
        if success:
            self._stats.request_success += 1
            self._stats.success_ns += latency_ns
        else:
            self._stats.request_failure += 1
            self._stats.failure_ns += latency_ns
        self._notify("on_request", success, latency_ns)

    def _record_batch(self, samples: int, queue_ns: list[int], timing: _Timing, requests: int) -> None:
        stats = self._stats
        stats.execution_count += 1
        stats.inference_count += samples
        stats.batch_sizes[samples] = stats.batch_sizes.get(samples, 0) + 1
        stats.queue_ns += sum(queue_ns)
        stats.compute_input_ns += timing.input_ns * requests
        stats.compute_infer_ns += timing.infer_ns * requests
        stats.compute_output_ns += timing.output_ns * requests
        stats.last_inference_ms = time.time_ns() // 1_000_000
        self._notify("on_batch", samples, queue_ns, timing.input_ns + timing.infer_ns + timing.output_ns)

    def _notify(self, event: str, *args: object) -> None:
        """Tell the observer; a failing observer is logged and never fails a request."""
        if self.observer is None:
            return
        try:
            getattr(self.observer, event)(*args)
        except Exception:
            logger.exception("%s: the batch observer failed in %s", self.runner.name, event)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, HoneError) else f"{type(exc).__name__}: {exc}"


def _is_invalid_argument(exc: BaseException) -> bool:
    """Whether onnxruntime refused the run's data (its INVALID_ARGUMENT status: an index out of
    range, a shape its kernels reject), as opposed to failing on its own."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "InvalidArgument" or "INVALID_ARGUMENT" in str(seen):
            return True
        seen = seen.__cause__
    return False


class _Throttle:
    """Lets one log line through per ``seconds`` and counts the ones it held back: a client sending
    bad requests in a loop must not make the server spend its time writing warnings."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = -math.inf
        self._held = 0

    def due(self) -> int | None:
        """None: stay quiet (counted); else how many were held back since the last line."""
        now = time.monotonic()
        if now - self._last < self.seconds:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


def _held_back(count: int) -> str:
    return f" ({count} similar warning(s) held back in the last interval)" if count else ""
