"""The targets the pipeline is held to, checked against the figures of one run.

Each target is a ratio of two medians of the same run. A target whose figures were
not measured (a run with `--only`) is listed as not checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from benchmarks.stats import Figure

__all__ = ["Check", "check_targets", "render_targets"]

INGEST = "1. Ingest alone"
PERSIST = "2. Persist alone"
END_TO_END = "3. End to end"
NAIVE = "4. Naive baseline"
SCORE_READS = "5. Score reads"
MEMORY = "6. Memory"
# Growth of RSS between the normal and the 10 times longer run still counted as flat.
FLAT_GROWTH = 1.10


@dataclasses.dataclass(frozen=True)
class Check:
    target: str
    measured: str
    met: bool | None  # None when a figure it needs was not measured


def _median(figures: Sequence[Figure], section: str, name: str) -> float | None:
    for figure in figures:
        if figure.section.startswith(section) and figure.name == name:
            return figure.stat.median
    return None


def _ratio_to_ceiling(figures: Sequence[Figure], name: str) -> float | None:
    for figure in figures:
        if figure.section.startswith(INGEST) or figure.section.startswith(PERSIST):
            if figure.name == name and figure.ratio is not None:
                return figure.ratio.median
    return None


def _check(target: str, value: float | None, goal: float, *, at_most: bool = False) -> Check:
    if value is None:
        return Check(target, "not measured", None)
    met = value <= goal if at_most else value >= goal
    return Check(target, f"{value:.2f}", met)


def _quotient(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def check_targets(figures: Sequence[Figure]) -> list[Check]:
    """Check every target against `figures`, in the order the targets are listed."""
    naive = _median(figures, NAIVE, "sustained events/s, stored at the 202")
    batch_100 = _median(figures, INGEST, "batch 100: accepted events/s")
    one_worker = _median(figures, PERSIST, "1 worker process: events persisted/s")
    two_workers = _median(figures, PERSIST, "2 worker processes: events persisted/s")
    end_to_end = _median(figures, END_TO_END, "sustained events/s, accepted until all settled")
    small_p99 = _median(figures, SCORE_READS, "run of 10 events: read latency p99")
    large_p99 = _median(figures, SCORE_READS, "run of 100,000 events: read latency p99")
    checks = [
        _check(
            "ingest, batches of 100: ≥ 0.80 of its ceiling",
            _ratio_to_ceiling(figures, "batch 100: accepted events/s"),
            0.8,
        ),
        _check("ingest, batches of 100: ≥ 40× the naive baseline", _quotient(batch_100, naive), 40),
        _check(
            "ingest, batches of 1: ≥ 0.80 of its ceiling",
            _ratio_to_ceiling(figures, "batch 1: accepted events/s"),
            0.8,
        ),
        _check(
            "one worker: ≥ 0.85 of its ceiling",
            _ratio_to_ceiling(figures, "1 worker process: events persisted/s"),
            0.85,
        ),
        _check("2 workers: ≥ 1.6× one worker", _quotient(two_workers, one_worker), 1.6),
        _check(
            "end to end, nothing lost: ≥ 10× the naive baseline", _quotient(end_to_end, naive), 10
        ),
        _check(
            "score reads: p99 of a 100,000-event run ≤ 1.2× that of a 10-event run",
            _quotient(large_p99, small_p99),
            1.2,
            at_most=True,
        ),
    ]
    for process in ("ingest", "worker"):
        normal = _median(figures, MEMORY, f"normal run: {process} RSS at the end")
        longer = _median(figures, MEMORY, f"10× longer run: {process} RSS at the end")
        checks.append(
            _check(
                f"{process} memory flat over a 10× longer run (RSS ≤ {FLAT_GROWTH:.2f}×)",
                _quotient(longer, normal),
                FLAT_GROWTH,
                at_most=True,
            )
        )
    return checks


def render_targets(checks: Sequence[Check]) -> list[str]:
    """Render the checks as a Markdown table."""
    lines = ["| target | measured ratio | met |", "|---|---:|---|"]
    for check in checks:
        if check.met is None:
            met = "not checked"
        else:
            met = "yes" if check.met else "no"
        lines.append(f"| {check.target} | {check.measured} | {met} |")
    return lines
