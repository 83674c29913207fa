"""Split a chain of measured blocks into S contiguous stages so that the slowest stage is fastest.

A stage's time per micro-batch is the compute of its blocks (forward, plus backward when
training) plus the time to hand its output to the next stage over the link (and, when training,
to receive that tensor's gradient back). The step of a pipeline is paced by its slowest stage, so
the partition minimizes that maximum: the linear-partition dynamic programme, O(S * N^2) for N
blocks, exact. Among partitions with the same slowest stage it keeps the one whose stages are most
even (smallest sum of squared stage times).

The link's default comes from ``measure_loopback_link``: TCP over 127.0.0.1 between two threads,
which is what gloo uses between the processes of one machine.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hone.errors import OptionError
from hone.pipeline.blocks import BlockCost
from hone.pipeline.types import Link


@dataclass
class StagePlan:
    """One stage: which blocks, what they cost per micro-batch, what it sends on."""

    index: int
    blocks: list[str]
    first_block: int
    last_block: int  # inclusive
    cost_ms: float  # compute per micro-batch: forward (+ backward when training)
    forward_ms: float
    backward_ms: float
    transfer_ms: float  # sending its output (and, training, receiving the gradient) per micro-batch
    params: int
    activation_bytes: int  # the tensor sent to the next stage per micro-batch (0 for the last)


@dataclass
class Partition:
    stages: list[StagePlan]
    slowest_stage_ms: float  # compute + transfer of the slowest stage, per micro-batch
    imbalance: float  # slowest stage / mean stage; 1.0 is perfectly even
    link: Link


def partition(costs: Sequence[BlockCost], stages: int, *, link: Link, train: bool) -> Partition:
    """The contiguous split of ``costs`` into ``stages`` stages that minimizes the slowest stage."""
    count = len(costs)
    if stages < 1:
        raise OptionError(f"--stages must be at least 1, got {stages}")
    if stages > count:
        names = ", ".join(c.name for c in costs[:6]) + (", ..." if count > 6 else "")
        raise OptionError(
            f"--stages {stages} is more than the {count} blocks of this model ({names}); use "
            f"--stages {count} or fewer, or a model split into finer blocks"
        )
    compute = [c.forward_ms + (c.backward_ms if train else 0.0) for c in costs]
    prefix = [0.0]
    for value in compute:
        prefix.append(prefix[-1] + value)

    def stage_ms(first: int, last: int) -> float:
        return prefix[last + 1] - prefix[first] + _send_ms(costs, last, count, link, train)

    # best[k][j]: (slowest, sum of squares) of the best split of blocks 0..j-1 into k stages.
    inf = (float("inf"), float("inf"))
    best = [[inf] * (count + 1) for _ in range(stages + 1)]
    cut = [[0] * (count + 1) for _ in range(stages + 1)]
    best[0][0] = (0.0, 0.0)
    for k in range(1, stages + 1):
        for j in range(k, count - (stages - k) + 1):
            for i in range(k - 1, j):
                previous = best[k - 1][i]
                if previous == inf:
                    continue
                time_ms = stage_ms(i, j - 1)
                candidate = (max(previous[0], time_ms), previous[1] + time_ms * time_ms)
                if candidate < best[k][j]:
                    best[k][j] = candidate
                    cut[k][j] = i
    bounds = []
    j = count
    for k in range(stages, 0, -1):
        i = cut[k][j]
        bounds.append((i, j - 1))
        j = i
    bounds.reverse()
    plans = []
    for index, (first, last) in enumerate(bounds):
        chosen = costs[first : last + 1]
        plans.append(
            StagePlan(
                index=index,
                blocks=[c.name for c in chosen],
                first_block=first,
                last_block=last,
                cost_ms=prefix[last + 1] - prefix[first],
                forward_ms=sum(c.forward_ms for c in chosen),
                backward_ms=sum(c.backward_ms for c in chosen) if train else 0.0,
                transfer_ms=_send_ms(costs, last, count, link, train),
                params=sum(c.params for c in chosen),
                activation_bytes=costs[last].output_bytes if last < count - 1 else 0,
            )
        )
    times = [p.cost_ms + p.transfer_ms for p in plans]
    slowest = max(times)
    return Partition(plans, slowest, slowest / (sum(times) / len(times)) if slowest else 1.0, link)


def _send_ms(costs: Sequence[BlockCost], last: int, count: int, link: Link, train: bool) -> float:
    if last == count - 1:
        return 0.0
    one_way = link.latency_ms + link.transfer_ms(costs[last].output_bytes)
    return 2 * one_way if train else one_way


def measure_loopback_link(size_bytes: int = 16 << 20, pings: int = 50) -> Link:
    """Bandwidth and one-way latency of TCP over 127.0.0.1, measured between two threads."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    payload = b"\0" * size_bytes

    def echo() -> None:
        connection, _ = server.accept()
        with connection:
            for _ in range(pings):
                connection.sendall(connection.recv(1))
            received = 0
            while received < size_bytes:
                chunk = connection.recv(1 << 20)
                if not chunk:
                    return
                received += len(chunk)
            connection.sendall(b"k")

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            round_trips = []
            for _ in range(pings):
                start = time.perf_counter()
                client.sendall(b"p")
                client.recv(1)
                round_trips.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.sendall(payload)
            client.recv(1)
            seconds = time.perf_counter() - start
    finally:
        thread.join(timeout=10)
        server.close()
    latency_ms = 1000 * statistics.median(round_trips) / 2
    return Link(bandwidth_gbps=size_bytes / seconds / 1e9, latency_ms=latency_ms)
