"""Latency samples and their summary (median, p95, p99, min), all in milliseconds."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    key: str  # stable name for ratios and breakdowns
    label: str
    samples_ms: tuple[float, ...]
    target_ms: float | None = None  # p50 target printed beside the figure

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..1)."""
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def min(self) -> float:
        return min(self.samples_ms)


def summarize(
    key: str, label: str, samples_ms: Sequence[float], target_ms: float | None = None
) -> Summary:
    if not samples_ms:
        raise ValueError(f"no samples for {label!r}")
    return Summary(key, label, tuple(samples_ms), target_ms)


def timed_ms[T](fn: Callable[[], T]) -> tuple[T, float]:
    """Call fn once; return its result and the elapsed wall time in ms (perf_counter)."""
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000
