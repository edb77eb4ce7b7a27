"""Timing helpers shared by the benchmarks: best-of-N wall time, and one result row format."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Result:
    """Our figure, the reference figure measured in the same run, and their ratio (ours / reference)."""

    name: str
    ours: float
    reference: float
    unit: str
    target: str  # e.g. "ratio <= 1.02"

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
