"""2. Persist alone: 1, 2 and 4 worker processes draining a pre-filled stream.

The streams are filled with the code ingest runs for a request, without HTTP:
`ingest.events.parse_events` turns a body into the same stream entry, and
`core.streams.append_batch` runs the same Lua script, which also counts the backlog
and the run's accepted events. The workers are started first and paused (SIGSTOP)
while the streams fill, so the clock starts at SIGCONT and process start-up is not
timed. The clock stops when the backlog is 0 and the runs' `processed_events` reach
the total.

The ceiling inserts the same rows with `INSERT … SELECT FROM unnest(…) ON CONFLICT
DO NOTHING RETURNING`, the statement workers used before they switched to COPY
into a staging table. It runs on one asyncpg connection, in
statements of at most as many rows as one worker read takes
(`CLOUD_STREAM_BATCH_SIZE` entries), without Redis and without score updates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
import redis.asyncio as aioredis

from benchmarks import fixtures
from benchmarks.harness import SHARDS, CpuMeter, ServiceProcess, stop_processes
from benchmarks.loadgen import BatchBodies
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat, ratios
from core import streams
from ingest.events import now_utc, parse_events
from schema.structs import StreamEntry, decode_entry, entry_events

__all__ = ["NOTES", "SECTION", "run"]

SECTION = "2. Persist alone"
NOTES = (
    "Events/s from SIGCONT of the paused workers until the backlog is 0 and every event is "
    "counted in `run_scores.processed_events`. Each worker process runs one consumer per "
    "shard (4 shards). The ceiling has no Redis reads, acknowledgements, entry claims or "
    "score updates, but it inserts on one connection while a worker process uses one per "
    "shard. So a ratio above 1 is possible: on 2 cores PostgreSQL is the limit for both."
)
STREAM_BATCH_SIZE = 200  # the default CLOUD_STREAM_BATCH_SIZE: entries per worker read
MAX_PAUSE_S = 4.0  # workers' Redis reads time out after stream_block_ms + 5 s

_INSERT = """
INSERT INTO events (public_id, run_id, event_id, event_type, severity, message, payload,
                    occurred_at, received_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::jsonb[], $8::timestamptz[], $9::timestamptz[])
ON CONFLICT (run_id, event_id) DO NOTHING
RETURNING run_id, event_type, severity
"""


@dataclasses.dataclass(frozen=True)
class Entry:
    run_id: str
    count: int
    field: str
    encoded: bytes
    batch: StreamEntry  # decoded as a worker decodes it


def build_entries(
    runs: list[fixtures.Run], total_events: int, entry_events: int, tag: str
) -> list[Entry]:
    """Stream entries of `entry_events` events each, spread round-robin over the runs."""
    bodies = [BatchBodies(entry_events, f"{tag}-{index}") for index in range(len(runs))]
    entries = []
    for number in range(total_events // entry_events):
        run = runs[number % len(runs)]
        body = bodies[number % len(runs)].next_body()
        parsed = parse_events(body, run_id=run.public_id, received_at=now_utc())
        batch = decode_entry({parsed.field.encode(): parsed.entry})
        entries.append(Entry(run.public_id, parsed.count, parsed.field, parsed.entry, batch))
    return entries


async def append_entries(
    redis: aioredis.Redis, entries: list[Entry], project_key: int, concurrency: int = 32
) -> None:
    """Append entries with ingest's script, `concurrency` calls in flight."""
    queue = list(reversed(entries))

    async def appender() -> None:
        while queue:
            entry = queue.pop()
            outcome, detail = await streams.append_batch(
                redis,
                streams.StreamKeys.for_run(entry.run_id, SHARDS),
                run_id=entry.run_id,
                project_key=project_key,
                event_count=entry.count,
                backlog_limit=10**12,
                field=entry.field,
                entry=entry.encoded,
            )
            if outcome is not streams.AppendOutcome.APPENDED:
                raise RuntimeError(f"append to run {entry.run_id} failed: {outcome} {detail}")

    await asyncio.gather(*(appender() for _ in range(concurrency)))


def event_columns(entries: list[Entry], keys: dict[str, int]) -> list[list[object]]:
    """Build the nine column arrays of the workers' insert from these entries' events."""
    columns: list[list[object]] = [[] for _ in range(9)]
    for entry in entries:
        for public_id, event_id, event in entry_events(entry.batch):
            payload = bytes(event.payload)
            row = (
                public_id,
                keys[entry.run_id],
                event_id,
                event.event_type,
                event.severity,
                event.message,
                None if payload == b"null" else payload.decode(),
                event.occurred_at,
                entry.batch.received_at,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    return columns


async def ceiling_rate(session: Session, runs: list[fixtures.Run], entries: list[Entry]) -> float:
    """Insert the entries' rows on one connection; return rows inserted per second."""
    keys = await fixtures.run_keys(session.conn, runs)
    chunks = [
        event_columns(entries[start : start + STREAM_BATCH_SIZE], keys)
        for start in range(0, len(entries), STREAM_BATCH_SIZE)
    ]
    conn: asyncpg.Connection = await session.backends.connect()
    try:
        inserted = 0
        began = time.perf_counter()
        for columns in chunks:
            inserted += len(await conn.fetch(_INSERT, *columns))
        elapsed = time.perf_counter() - began
    finally:
        await conn.close()
    expected = sum(entry.count for entry in entries)
    if inserted != expected:
        raise RuntimeError(f"ceiling inserted {inserted} rows, expected {expected}")
    return inserted / elapsed


async def _project_key(session: Session, run: fixtures.Run) -> int:
    return int(
        await session.conn.fetchval(
            "SELECT project_id FROM runs WHERE public_id = $1", run.public_id
        )
    )


async def drain_rate(
    session: Session, workers: list[ServiceProcess], tag: str
) -> tuple[float, float]:
    """Fill the streams while the workers are paused; return (events/s, busy cores)."""
    plan = session.plan
    runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
    keys = await fixtures.run_keys(session.conn, runs)
    entries = build_entries(runs, plan.persist_events, plan.persist_entry_events, tag)
    total = sum(entry.count for entry in entries)
    project_key = await _project_key(session, runs[0])

    paused_at = time.perf_counter()
    for worker in workers:
        worker.pause()
    try:
        await append_entries(session.redis, entries, project_key)
    finally:
        for worker in workers:
            worker.resume()
    began = time.perf_counter()
    if began - paused_at > MAX_PAUSE_S:
        progress(
            "  WARNING: workers were paused %.1f s; their Redis reads may have timed out",
            began - paused_at,
        )

    cpu = CpuMeter().start()
    finished = await fixtures.wait_drained(
        session.redis, session.conn, keys.values(), expected=total, timeout_s=plan.drain_timeout_s
    )
    busy = cpu.busy_cores()
    stored = await session.conn.fetchval(
        "SELECT count(*) FROM events WHERE run_id = ANY($1)", list(keys.values())
    )
    if stored != total:
        raise RuntimeError(f"workers stored {stored} events of {total}")
    return total / (finished - began), busy


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    figures: list[Figure] = []
    for count in plan.persist_workers:
        workers = await session.backends.start_workers(count, session.redis)
        rates: list[float] = []
        ceilings: list[float] = []
        busy: list[float] = []
        try:
            for index in range(plan.repetitions):
                rate, cores = await drain_rate(session, workers, f"per-w{count}-r{index}")
                rates.append(rate)
                busy.append(cores)
                ceiling_runs = await fixtures.create_runs(
                    session.control_ingest.url, session.account.agent_keys
                )
                ceiling_entries = build_entries(
                    ceiling_runs,
                    plan.persist_events,
                    plan.persist_entry_events,
                    f"ceil-{count}-{index}",
                )
                ceilings.append(await ceiling_rate(session, ceiling_runs, ceiling_entries))
                progress(
                    "persist %d worker(s) rep %d: %.0f events/s (ceiling %.0f), "
                    "machine busy %.2f cores",
                    count,
                    index + 1,
                    rate,
                    ceilings[-1],
                    cores,
                )
        finally:
            stop_processes(workers)
        figures.append(
            Figure(
                section=SECTION,
                name=f"{count} worker process{'es' if count > 1 else ''}: events persisted/s",
                unit="events/s",
                stat=Stat.of(rates),
                ceiling=Stat.of(ceilings),
                ratio=Stat.of(ratios(rates, ceilings)),
                note=f"machine busy {Stat.of(busy).median:.2f} of 2 cores while draining",
            )
        )
    return figures
