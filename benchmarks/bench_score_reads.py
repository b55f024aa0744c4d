"""5. Score reads: GET /api/runs/{id}/score while ingest and a worker are under load.

Two finished, settled runs are read: one of 10 events and one of
`plan.big_run_events` events, both sent through ingest and persisted by the
worker. During the reads, other agents write paced batches of 100 at half the
sustained end-to-end rate. Readers use the agent key (`X-Agent-Key`) of the run's
agent and keep one request in flight each, closed-loop, against the api process.
Both runs are read at the same time, so their latencies see the same write load
and differ only by the run.
"""

from __future__ import annotations

import asyncio
import dataclasses

from benchmarks import fixtures
from benchmarks.bench_end_to_end import check_settled
from benchmarks.harness import stop_processes
from benchmarks.loadgen import LoadResult, closed_loop, paced_loop, read_loop
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat, percentile

__all__ = ["NOTES", "SECTION", "WRITE_LOAD_SHARE", "ReadTarget", "reads_during_writes", "run"]

SECTION = "5. Score reads under write load"
NOTES = (
    "Writes are paced at half the sustained end-to-end rate of section 3 while the reads "
    "run. The service reads stored counters, so the run's size should not matter."
)
WRITE_LOAD_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class ReadTarget:
    label: str
    port: int
    run: fixtures.Run


async def reads_during_writes(
    session: Session,
    *,
    write_port: int,
    read_targets: list[ReadTarget],
    write_rate: float,
    tag: str,
) -> tuple[dict[str, LoadResult], LoadResult, list[fixtures.Run]]:
    """Read every target's score at once for `plan.score_s` while paced writes run on
    new runs."""
    plan = session.plan
    writer_runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
    write_s = plan.warmup_s + plan.score_s + 0.5
    writer = asyncio.create_task(
        paced_loop(
            write_port,
            fixtures.targets(writer_runs),
            batch_size=100,
            events_per_s=write_rate,
            duration_s=write_s,
            tag=tag,
        )
    )
    try:
        await asyncio.sleep(plan.warmup_s)
        loads = [
            read_loop(
                target.port,
                f"/api/runs/{target.run.public_id}/score",
                headers=f"X-Agent-Key: {target.run.agent_key}\r\n",
                readers=plan.score_readers,
                duration_s=plan.score_s,
                max_requests=plan.max_events,
            )
            for target in read_targets
        ]
        results = {
            target.label: result
            for target, result in zip(read_targets, await asyncio.gather(*loads), strict=True)
        }
        for label, result in results.items():
            if result.errors or not result.requests:
                progress(
                    "  WARNING: score reads of %s: %d answered, errors %s",
                    label,
                    result.requests,
                    dict(result.errors),
                )
    finally:
        write_result = await writer
    return results, write_result, writer_runs


async def fill_run(session: Session, ingest_port: int, run: fixtures.Run, events: int) -> None:
    """Send `events` events to one run through ingest, in batches of up to 1,000."""
    batch = min(events, 1000)
    result = await closed_loop(
        ingest_port,
        fixtures.targets([run]),
        batch_size=batch,
        duration_s=session.plan.drain_timeout_s,
        max_events=events,
        tag=f"fill-{run.public_id}",
    )
    if result.events != events:
        raise RuntimeError(f"filling {run.public_id}: accepted {result.events} of {events}")


def read_figures(section: str, label: str, results: list[LoadResult], note: str) -> list[Figure]:
    return [
        Figure(
            section,
            f"{label}: score reads/s",
            "requests/s",
            Stat.of([r.requests_per_s for r in results]),
            note=note,
        ),
        Figure(
            section,
            f"{label}: read latency p50",
            "ms",
            Stat.of([percentile(r.latencies_s, 0.5) * 1000 for r in results]),
        ),
        Figure(
            section,
            f"{label}: read latency p99",
            "ms",
            Stat.of([percentile(r.latencies_s, 0.99) * 1000 for r in results]),
        ),
    ]


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    assert session.e2e_events_per_s is not None
    write_rate = WRITE_LOAD_SHARE * session.e2e_events_per_s
    ingest, workers = await asyncio.gather(
        session.backends.start_http_service("ingest"),
        session.backends.start_workers(1, session.redis),
    )
    assert ingest.port is not None and session.api.port is not None
    try:
        small, big = await fixtures.create_runs(
            session.control_ingest.url, session.account.agent_keys[:2]
        )
        progress("filling a run of 10 events and one of %d events", plan.big_run_events)
        await fill_run(session, ingest.port, small, 10)
        await fill_run(session, ingest.port, big, plan.big_run_events)
        await fixtures.finish_runs(ingest.url, [small, big])
        keys = await fixtures.run_keys(session.conn, [small, big])
        await fixtures.wait_drained(
            session.redis,
            session.conn,
            keys.values(),
            expected=10 + plan.big_run_events,
            timeout_s=plan.drain_timeout_s,
        )
        await check_settled(session, [small, big])
        targets = [
            ReadTarget("run of 10 events", session.api.port, small),
            ReadTarget(f"run of {plan.big_run_events:,} events", session.api.port, big),
        ]
        by_label: dict[str, list[LoadResult]] = {target.label: [] for target in targets}
        writes: list[float] = []
        for index in range(plan.repetitions):
            results, write_result, writer_runs = await reads_during_writes(
                session,
                write_port=ingest.port,
                read_targets=targets,
                write_rate=write_rate,
                tag=f"scores-r{index}",
            )
            await fixtures.finish_runs(ingest.url, writer_runs)
            writes.append(write_result.events_per_s)
            for label, result in results.items():
                by_label[label].append(result)
                progress(
                    "score reads, %s, rep %d: %.0f requests/s, p99 %.1f ms (writes %.0f events/s)",
                    label,
                    index + 1,
                    result.requests_per_s,
                    percentile(result.latencies_s, 0.99) * 1000,
                    write_result.events_per_s,
                )
    finally:
        stop_processes([ingest, *workers])
    note = (
        f"{plan.score_readers} readers per run, both runs at once; "
        f"writes offered {write_rate:,.0f} events/s, "
        f"accepted {Stat.of(writes).median:,.0f}"
    )
    figures: list[Figure] = []
    for label, results in by_label.items():
        figures.extend(read_figures(SECTION, label, results, note))
    return figures
