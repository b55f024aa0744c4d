"""4. The naive baseline (`naive_app`) under the loads of sections 3 and 5.

Sustained rate: the same agents send batches of 100 closed-loop for `plan.e2e_s`
seconds. The naive app inserts before it responds, so an event is in its score at
the 202 and the rate needs no drain. Score reads: the same readers and paced write
load as section 5, against a run of 10 events and one of `plan.big_run_events`
events. The big run's rows are inserted with one SQL statement, since only the
read path is measured there.
"""

from __future__ import annotations

from benchmarks import fixtures
from benchmarks.bench_score_reads import (
    WRITE_LOAD_SHARE,
    ReadTarget,
    read_figures,
    reads_during_writes,
)
from benchmarks.loadgen import LoadResult, closed_loop
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat, percentile

__all__ = ["NOTES", "SECTION", "run"]

SECTION = "4. Naive baseline (one INSERT per event, score counted on read)"
NOTES = (
    "The naive app responds 202 only after every INSERT committed, so its 202-to-scored "
    "time is 0 by construction. Its cost shows in the request latency and in score reads, "
    "which count the run's events on every request. Its reads also wait for one of the "
    "pool's 10 connections (asyncpg's default), which the writing agents hold for a whole "
    "batch of INSERTs."
)
NAIVE_APP = "benchmarks.naive_app:app"
_BULK_FILL = """
INSERT INTO naive_events (run_id, event_id, event_type, severity, message, payload)
SELECT $1, 'bulk-' || n,
       CASE WHEN n % 20 IN (13, 15) THEN 'request_timeout' ELSE 'request_sent' END,
       CASE WHEN n % 20 IN (13, 15, 17) THEN 'warning' ELSE 'info' END,
       'POST /orders order-' || n, '{"attempt": 1}'
FROM generate_series(1, $2) AS n
"""


async def _sustained(session: Session, port: int) -> list[LoadResult]:
    plan = session.plan
    results = []
    for index in range(plan.repetitions):
        runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
        result = await closed_loop(
            port,
            fixtures.targets(runs),
            batch_size=plan.e2e_batch,
            duration_s=plan.e2e_s,
            max_events=plan.max_events,
            tag=f"naive-r{index}",
        )
        if result.errors:
            progress("  WARNING: naive app answered errors: %s", dict(result.errors))
        results.append(result)
        progress(
            "naive rep %d: %.0f events/s stored, request p99 %.1f ms",
            index + 1,
            result.events_per_s,
            percentile(result.latencies_s, 0.99) * 1000,
        )
    return results


async def _read_targets(session: Session, port: int) -> list[ReadTarget]:
    plan = session.plan
    small, big = await fixtures.create_runs(
        session.control_ingest.url, session.account.agent_keys[:2]
    )
    await closed_loop(
        port,
        fixtures.targets([small]),
        batch_size=10,
        duration_s=30.0,
        max_events=10,
        tag="naive-small",
    )
    await session.conn.execute(_BULK_FILL, big.public_id, plan.big_run_events)
    await session.conn.execute("ANALYZE naive_events")
    return [
        ReadTarget("run of 10 events", port, small),
        ReadTarget(f"run of {plan.big_run_events:,} events", port, big),
    ]


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    assert session.e2e_events_per_s is not None
    naive = await session.backends.start_uvicorn_app("naive", NAIVE_APP)
    assert naive.port is not None
    try:
        sustained = await _sustained(session, naive.port)
        targets = await _read_targets(session, naive.port)
        write_rate = WRITE_LOAD_SHARE * session.e2e_events_per_s
        by_label: dict[str, list[LoadResult]] = {target.label: [] for target in targets}
        writes: list[float] = []
        for index in range(plan.repetitions):
            results, write_result, _ = await reads_during_writes(
                session,
                write_port=naive.port,
                read_targets=targets,
                write_rate=write_rate,
                tag=f"naive-scores-r{index}",
            )
            writes.append(write_result.events_per_s)
            for label, result in results.items():
                by_label[label].append(result)
                progress(
                    "naive score reads, %s, rep %d: %.0f requests/s, p99 %.1f ms "
                    "(writes %.0f events/s)",
                    label,
                    index + 1,
                    result.requests_per_s,
                    percentile(result.latencies_s, 0.99) * 1000,
                    write_result.events_per_s,
                )
    finally:
        naive.stop()
    service_rate = session.e2e_events_per_s
    naive_rate = Stat.of([r.events_per_s for r in sustained])
    figures = [
        Figure(
            SECTION,
            "sustained events/s, stored at the 202",
            "events/s",
            naive_rate,
            note=f"pipeline (section 3): {service_rate:,.0f} events/s, "
            f"{service_rate / naive_rate.median:.1f}× the naive rate",
        ),
        Figure(
            SECTION,
            "request latency p50 (closed loop)",
            "ms",
            Stat.of([percentile(r.latencies_s, 0.5) * 1000 for r in sustained]),
        ),
        Figure(
            SECTION,
            "request latency p99 (closed loop)",
            "ms",
            Stat.of([percentile(r.latencies_s, 0.99) * 1000 for r in sustained]),
        ),
    ]
    note = (
        f"{plan.score_readers} readers per run, both runs at once; "
        f"writes offered {write_rate:,.0f} events/s, "
        f"accepted {Stat.of(writes).median:,.0f}"
    )
    for label, results in by_label.items():
        figures.extend(read_figures(SECTION, label, results, note))
    return figures
