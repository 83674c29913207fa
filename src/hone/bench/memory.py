"""Peak resident memory of this process while a block runs, sampled by a background thread.

A sampler (not ``ru_maxrss``) because ``ru_maxrss`` is a lifetime maximum that cannot be reset
between configurations of one benchmark. Samples every ``interval_s``; short spikes between two
samples can be missed, so the figure is a lower bound on the true peak.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

_MB = 1024 * 1024


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak_mb`` and ``mem.delta_mb`` (above the start)."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self._interval_s = interval_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start_bytes = 0
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        self.start_bytes = self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / _MB

    @property
    def delta_mb(self) -> float:
        return (self.peak_bytes - self.start_bytes) / _MB
