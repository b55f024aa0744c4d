"""The benchmark's target checks, on figures with known medians."""

from __future__ import annotations

from benchmarks import (
    bench_end_to_end,
    bench_ingest,
    bench_memory,
    bench_naive,
    bench_persist,
    bench_score_reads,
)
from benchmarks.stats import Figure, Stat
from benchmarks.targets import check_targets, render_targets


def _figure(section: str, name: str, value: float, ratio: float | None = None) -> Figure:
    return Figure(
        section=section,
        name=name,
        unit="",
        stat=Stat.of([value]),
        ceiling=None if ratio is None else Stat.of([value / ratio]),
        ratio=None if ratio is None else Stat.of([ratio]),
    )


FIGURES = [
    _figure(bench_ingest.SECTION, "batch 1: accepted events/s", 3_000, ratio=0.7),
    _figure(bench_ingest.SECTION, "batch 100: accepted events/s", 200_000, ratio=0.85),
    _figure(bench_persist.SECTION, "1 worker process: events persisted/s", 40_000, ratio=1.5),
    _figure(bench_persist.SECTION, "2 worker processes: events persisted/s", 46_000),
    _figure(bench_end_to_end.SECTION, "sustained events/s, accepted until all settled", 41_000),
    _figure(bench_naive.SECTION, "sustained events/s, stored at the 202", 4_000),
    # The naive section has score reads too; only those of section 5 count.
    _figure(bench_naive.SECTION, "run of 10 events: read latency p99", 500),
    _figure(bench_score_reads.SECTION, "run of 10 events: read latency p99", 60),
    _figure(bench_score_reads.SECTION, "run of 100,000 events: read latency p99", 66),
    _figure(bench_memory.SECTION, "normal run: ingest RSS at the end", 50),
    _figure(bench_memory.SECTION, "10× longer run: ingest RSS at the end", 51),
]


def test_targets_checked_from_medians() -> None:
    measured = [(check.measured, check.met) for check in check_targets(FIGURES)]
    assert measured == [
        ("0.85", True),  # batch 100 to its ceiling
        ("50.00", True),  # batch 100 to naive
        ("0.70", False),  # batch 1 to its ceiling
        ("1.50", True),  # one worker to its ceiling
        ("1.15", False),  # 2 workers to one
        ("10.25", True),  # end to end to naive
        ("1.10", True),  # score read p99, large to small run
        ("1.02", True),  # ingest memory
        ("not measured", None),  # worker memory
    ]


def test_targets_table_lists_every_check() -> None:
    lines = render_targets(check_targets(FIGURES))
    assert lines[0] == "| target | measured ratio | met |"
    assert len(lines) == 2 + 9
    assert lines[-1].endswith("| not measured | not checked |")
