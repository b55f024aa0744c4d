"""Figures of a benchmark: the median of repetitions with their min and max."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

__all__ = ["Figure", "Stat", "percentile", "ratios"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile, `fraction` in 0..1; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclasses.dataclass(frozen=True)
class Stat:
    """The median, min and max of one figure over its repetitions."""

    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        if not samples:
            raise ValueError("a figure needs at least one repetition")
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))


def ratios(values: Sequence[float], ceilings: Sequence[float]) -> list[float]:
    """Per-repetition ratios of a figure to its ceiling measured in the same repetition."""
    return [
        value / ceiling if ceiling else math.nan
        for value, ceiling in zip(values, ceilings, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One row of a results table.

    `ratio` is the figure divided by its ceiling, repetition by repetition. For
    latencies and memory a ratio above 1 means the service costs more than the
    ceiling.
    """

    section: str
    name: str
    unit: str
    stat: Stat
    ceiling: Stat | None = None
    ratio: Stat | None = None
    note: str = ""
