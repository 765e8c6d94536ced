"""Wall-clock timing with warm-up, a repeat/time budget, median and IQR.

Each sample is one call, bracketed by ``sync`` (``torch.cuda.synchronize`` on
CUDA, nothing on CPU) and ``time.perf_counter``. Sampling stops once both
``repeat`` samples and ``min_time`` seconds are reached, or at ``max_time``
seconds (so a slow contender cannot blow the run's budget), whichever first.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["Budget", "Timing", "measure", "summarize"]


@dataclass(frozen=True)
class Budget:
    repeat: int = 10  # minimum number of samples
    min_time: float = 0.2  # minimum seconds of sampling
    max_time: float = 1.0  # cap on seconds of sampling (checked after each sample)
    warmup: int = 2  # warm-up calls (fewer if they exceed max_time / 4)
    max_samples: int = 100_000
    # A contender whose forward+backward call takes longer than this (seconds)
    # is reported "too slow" and not timed (see runner). None: no cap.
    max_call: float | None = None

    def as_dict(self) -> dict:
        d = {
            "repeat": self.repeat, "min_time_s": self.min_time,
            "max_time_s": self.max_time, "warmup": self.warmup,
        }
        if self.max_call is not None:
            d["max_call_s"] = self.max_call
        return d


@dataclass(frozen=True)
class Timing:
    median: float  # seconds
    q1: float
    q3: float
    min: float
    n: int  # samples
    total: float  # seconds spent sampling

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def as_dict(self) -> dict:
        return {
            "median_s": self.median, "iqr_s": self.iqr, "q1_s": self.q1, "q3_s": self.q3,
            "min_s": self.min, "samples": self.n, "sampling_s": self.total,
        }


def summarize(samples: list[float], total: float) -> Timing:
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = s[0]
    return Timing(median=statistics.median(s), q1=q1, q3=q3, min=s[0], n=len(s), total=total)


def _noop() -> None:
    return None


def measure(step: Callable[[], object], budget: Budget, sync: Callable[[], None] = _noop) -> Timing:
    """Time ``step()``: warm up, then sample until the budget says stop."""
    clock = time.perf_counter
    start = clock()
    for _ in range(max(budget.warmup, 0)):
        step()
        sync()
        if clock() - start > budget.max_time / 4:
            break

    # No gc.collect() first: with torch loaded it costs ~0.1 s per call here.
    # Disabling the collector is what keeps collections out of the samples.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    samples: list[float] = []
    try:
        start = clock()
        while True:
            sync()
            t0 = clock()
            step()
            sync()
            t1 = clock()
            samples.append(t1 - t0)
            elapsed = t1 - start
            if len(samples) >= budget.repeat and elapsed >= budget.min_time:
                break
            if elapsed >= budget.max_time or len(samples) >= budget.max_samples:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(samples, clock() - start)
