"""1. Ingest alone: accepted events/s, request latency and peak RSS of one ingest process.

No worker runs, so the streams only grow; they are trimmed after every repetition
to keep the backlog far below `CLOUD_BACKLOG_LIMIT_EVENTS`. Each repetition starts
a fresh ingest process and a fresh ceiling process (`ceiling_ingest_app`), warms
both up, then loads them one after the other with the same agents and bodies. The
order alternates between repetitions. Quick mode starts one pair for all
repetitions and batch sizes instead.

Peak RSS is VmHWM over the process's lifetime, start-up included. RSS is VmRSS
right after its load.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import redis.asyncio as aioredis

from benchmarks import fixtures
from benchmarks.harness import SHARDS, ServiceProcess, stop_processes
from benchmarks.loadgen import AgentTarget, closed_loop
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat, percentile, ratios
from core import streams

__all__ = ["NOTES", "SECTION", "run"]

SECTION = "1. Ingest alone (no workers)"
NOTES = (
    "One ingest process, closed loop. Latency is per request at that saturating load, so "
    "it is about agents / throughput. The ceiling is `ceiling_ingest_app`: msgspec decode "
    "and one XADD, without authentication, run-state check, backlog limit, per-event "
    "validation, stream entry envelope or access log. The ceiling awaits one redis-py "
    "command per request, while ingest pipelines the script calls of concurrent requests "
    "on a Redis connection of its own (`core/script_connection.py`), so ingest can pass "
    "its ceiling. For latency and memory a ratio above 1 means the service costs more "
    "than the ceiling."
)
CEILING_APP = "benchmarks.ceiling_ingest_app:app"


@dataclasses.dataclass(frozen=True)
class Repetition:
    events_per_s: float
    p50_ms: float
    p99_ms: float
    peak_rss_mib: float
    rss_mib: float  # resident right after the load
    server_cpu: float  # share of one core used by the server process
    client_cpu: float  # share of one core used by the load generator


async def trim_streams(redis: aioredis.Redis) -> None:
    """Empty the event streams and reset the backlog counters, keeping consumer groups."""
    for shard in range(SHARDS):
        keys = streams.StreamKeys(shard)
        await redis.xtrim(keys.events, maxlen=0, approximate=False)
        await redis.set(keys.backlog, 0)
        await redis.delete(f"bench:ceiling:{{s{shard}}}")


async def measure(
    process: ServiceProcess,
    targets: list[AgentTarget],
    *,
    batch_size: int,
    session: Session,
    tag: str,
) -> Repetition:
    """Warm a process up, then load it closed-loop for `plan.ingest_s` seconds."""
    plan = session.plan
    assert process.port is not None
    await closed_loop(
        process.port,
        targets,
        batch_size=batch_size,
        duration_s=plan.warmup_s,
        max_events=plan.max_events,
        tag=f"{tag}-warm",
    )
    cpu_before = process.cpu_seconds()
    result = await closed_loop(
        process.port,
        targets,
        batch_size=batch_size,
        duration_s=plan.ingest_s,
        max_events=plan.max_events,
        tag=tag,
    )
    server_cpu = (process.cpu_seconds() - cpu_before) / result.elapsed_s
    if result.errors:
        progress("  WARNING: %s answered errors: %s", process.name, dict(result.errors))
    if not result.events:
        raise RuntimeError(f"{process.name} accepted no events; see {process.log_path}")
    return Repetition(
        events_per_s=result.events_per_s,
        p50_ms=percentile(result.latencies_s, 0.50) * 1000,
        p99_ms=percentile(result.latencies_s, 0.99) * 1000,
        peak_rss_mib=process.peak_rss_kib() / 1024,
        rss_mib=process.rss_kib() / 1024,
        server_cpu=server_cpu,
        client_cpu=result.client_cpu_s / result.elapsed_s,
    )


Pair = tuple[Repetition, Repetition]  # (ingest, ceiling) measured in one repetition


async def _repetitions(
    session: Session, targets: list[AgentTarget], batch_sizes: Sequence[int], indexes: range
) -> dict[int, list[Pair]]:
    """Measure ingest and the ceiling for each batch size and index on one pair of processes."""
    backends = session.backends
    ingest, ceiling = await asyncio.gather(
        backends.start_http_service("ingest"),
        backends.start_uvicorn_app("ceiling-ingest", CEILING_APP),
    )
    pairs: dict[int, list[Pair]] = {batch_size: [] for batch_size in batch_sizes}
    try:
        for batch_size in batch_sizes:
            for index in indexes:
                measured: dict[str, Repetition] = {}
                order = [ingest, ceiling] if index % 2 == 0 else [ceiling, ingest]
                for process in order:
                    tag = f"ing-b{batch_size}-r{index}-{process.name}"
                    measured[process.name] = await measure(
                        process, targets, batch_size=batch_size, session=session, tag=tag
                    )
                    await trim_streams(session.redis)
                pair = (measured["ingest"], measured["ceiling-ingest"])
                pairs[batch_size].append(pair)
                _print_repetition(batch_size, index, *pair)
    finally:
        stop_processes([ingest, ceiling])
    return pairs


def _print_repetition(batch_size: int, index: int, measured: Repetition, bare: Repetition) -> None:
    progress(
        "ingest batch %d rep %d: %.0f events/s (ceiling %.0f), p99 %.1f ms, "
        "VmHWM %.0f MiB, ingest CPU %.0f%%, load generator CPU %.0f%%",
        batch_size,
        index + 1,
        measured.events_per_s,
        bare.events_per_s,
        measured.p99_ms,
        measured.peak_rss_mib,
        measured.server_cpu * 100,
        measured.client_cpu * 100,
    )


def _figures(batch_size: int, service: list[Repetition], ceiling: list[Repetition]) -> list[Figure]:
    rows: list[Figure] = []
    cpu_note = (
        f"ingest CPU {Stat.of([r.server_cpu for r in service]).median:.0%} of a core, "
        f"ceiling {Stat.of([r.server_cpu for r in ceiling]).median:.0%}, "
        f"load generator {Stat.of([r.client_cpu for r in service]).median:.0%}"
    )
    for field, name, unit in (
        ("events_per_s", "accepted events/s", "events/s"),
        ("p50_ms", "request latency p50", "ms"),
        ("p99_ms", "request latency p99", "ms"),
        ("peak_rss_mib", "peak RSS (VmHWM)", "MiB"),
        ("rss_mib", "RSS after the load (VmRSS)", "MiB"),
    ):
        values = [getattr(r, field) for r in service]
        ceilings = [getattr(r, field) for r in ceiling]
        rows.append(
            Figure(
                section=SECTION,
                name=f"batch {batch_size}: {name}",
                unit=unit,
                stat=Stat.of(values),
                ceiling=Stat.of(ceilings),
                ratio=Stat.of(ratios(values, ceilings)),
                note=cpu_note if field == "events_per_s" else "",
            )
        )
    return rows


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
    targets = fixtures.targets(runs)
    pairs: dict[int, list[Pair]] = {batch_size: [] for batch_size in plan.ingest_batches}
    if plan.fresh_ingest_per_repetition:
        for batch_size in plan.ingest_batches:
            for index in range(plan.repetitions):
                measured = await _repetitions(
                    session, targets, [batch_size], range(index, index + 1)
                )
                pairs[batch_size].extend(measured[batch_size])
    else:
        pairs = await _repetitions(session, targets, plan.ingest_batches, range(plan.repetitions))
    figures: list[Figure] = []
    for batch_size, measured_pairs in pairs.items():
        service = [measured for measured, _ in measured_pairs]
        ceiling = [bare for _, bare in measured_pairs]
        figures.extend(_figures(batch_size, service, ceiling))
    return figures
