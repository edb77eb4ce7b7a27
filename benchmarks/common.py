"""Timing helpers shared by the benchmarks: best-of-N wall time, and one result row format."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil  # installed with accelerate


@dataclass
class Result:
    """Our figure, the reference figure measured in the same run, and their ratio (ours / reference)."""

    name: str
    ours: float
    reference: float
    unit: str
    target: str  # e.g. "ratio <= 1.02"
    detail: dict = field(default_factory=dict)  # what else the run measured (every sample, memory, load), for the JSON

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    def line(self) -> str:
        return (f"{self.name:<48} ours {self.ours:9.4f} {self.unit:<6} reference {self.reference:9.4f} {self.unit:<6} "
                f"ratio {self.ratio:6.3f}  (target {self.target})")


def interleaved_best(fn_a, fn_b, repeats: int = 3) -> tuple[float, float]:
    """Best times of two functions measured alternately, so machine load hits both alike."""
    fn_a(), fn_b()
    a = b = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn_a()
        a = min(a, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn_b()
        b = min(b, time.perf_counter() - t0)
    return a, b


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every `interval` seconds (MB).

    `rise` is the peak minus the memory at entry: what one call adds on top of what is already held.
    """

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.start = interval, 0.0, 0.0
        self._proc, self._stop = psutil.Process(), threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.peak = self._proc.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)

    @property
    def rise(self) -> float:
        return self.peak - self.start
