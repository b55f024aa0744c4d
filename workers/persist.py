"""Persist decoded stream entries into PostgreSQL and update run scores, in one transaction.

Idempotent at two levels. The entry id goes into `stream_entries_done` first, so an
entry redelivered after a commit (the worker died before acknowledging) is skipped
whole. Each event then inserts with `ON CONFLICT (run_id, event_id) DO NOTHING`, so an
agent re-sending an event with the same id stores it once. Only rows really inserted
change the score counters.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Sequence

import asyncpg
import msgspec

from core.scoring import Counters, score_counters
from core.services.scores import counters_from_row
from schema.structs import StreamEntry, entry_events

__all__ = ["PersistResult", "persist_entries", "prune_done_entries"]

log = logging.getLogger(__name__)

_COUNTER_FIELDS = tuple(Counters.__struct_fields__)
_NULL = b"null"


class PersistResult(msgspec.Struct, kw_only=True):
    entries: int = 0  # entries newly processed (not seen before)
    skipped_entries: int = 0  # entries already committed earlier
    inserted: int = 0  # events inserted
    duplicates: int = 0  # events whose (run, event id) already existed
    discarded: int = 0  # events of runs deleted meanwhile
    dead_lettered: int = 0  # events PostgreSQL refused, kept in dead_events


async def _claim_entries(conn: asyncpg.Connection, stream: str, entry_ids: list[str]) -> set[str]:
    rows = await conn.fetch(
        """
        INSERT INTO stream_entries_done (stream, entry_id)
        SELECT $1, unnest($2::text[])
        ON CONFLICT DO NOTHING
        RETURNING entry_id
        """,
        stream,
        entry_ids,
    )
    return {row["entry_id"] for row in rows}


async def _run_keys(conn: asyncpg.Connection, run_ids: set[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT id, public_id FROM runs WHERE public_id = ANY($1::text[])", list(run_ids)
    )
    return {row["public_id"]: row["id"] for row in rows}


# COPY has no ON CONFLICT, so rows are copied into this per-session table and moved
# into `events` by one INSERT. ON COMMIT DELETE ROWS empties it at every commit, and
# the INSERT deletes what it reads, so a rolled-back or repeated insert finds it empty.
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staged_events (
    public_id text, run_id bigint, event_id text, event_type text, severity text,
    message text, payload text, occurred_at timestamptz, received_at timestamptz
) ON COMMIT DELETE ROWS
"""
_STAGED_COLUMNS = (
    "public_id",
    "run_id",
    "event_id",
    "event_type",
    "severity",
    "message",
    "payload",
    "occurred_at",
    "received_at",
)
# Counts the inserted rows per run, type and severity, which is all the score needs,
# instead of returning every row. SQL promises no order here, but PostgreSQL's
# sequential scan of the temporary table returns rows in the order COPY wrote them,
# so event ids follow the stream, as `test_persist_keeps_stream_order` checks.
_INSERT_STAGED = """
WITH staged AS (DELETE FROM staged_events RETURNING *),
inserted AS (
    INSERT INTO events (public_id, run_id, event_id, event_type, severity, message, payload,
                        occurred_at, received_at)
    SELECT public_id, run_id, event_id, event_type, severity, message, payload::json,
           occurred_at, received_at
    FROM staged
    ON CONFLICT (run_id, event_id) DO NOTHING
    RETURNING run_id, event_type, severity
)
SELECT run_id, event_type, severity, count(*) AS inserted
FROM inserted
GROUP BY run_id, event_type, severity
"""

EventRow = tuple[str, int, str, str, str, str, str | None, dt.datetime | None, dt.datetime]


def _event_rows(
    entries: Sequence[tuple[str, StreamEntry]], run_keys: dict[str, int]
) -> tuple[list[EventRow], list[str], int]:
    """Turn the events of existing runs into rows of `staged_events`.

    Returns the rows, the entry id of each row, and how many events belonged to
    runs that no longer exist.
    """
    rows: list[EventRow] = []
    row_entries: list[str] = []
    seen: set[tuple[int, str]] = set()
    discarded = 0
    for entry_id, batch in entries:
        run_key = run_keys.get(batch.run_id)
        if run_key is None:
            discarded += len(batch.events)
            continue
        received_at = batch.received_at
        for public_id, event_id, event in entry_events(batch):
            key = (run_key, event_id)
            if key in seen:
                continue
            seen.add(key)
            payload = bytes(event.payload)
            rows.append(
                (
                    public_id,
                    run_key,
                    event_id,
                    event.event_type,
                    event.severity,
                    event.message,
                    None if payload == _NULL else payload.decode(),
                    event.occurred_at,
                    received_at,
                )
            )
            row_entries.append(entry_id)
    return rows, row_entries, discarded


async def _insert_events(conn: asyncpg.Connection, rows: list[EventRow]) -> list[asyncpg.Record]:
    """Insert rows except known `(run, event_id)` pairs, and count the inserted ones.

    The counts come back as rows of `(run_id, event_type, severity, inserted)`.
    """
    await conn.execute(_CREATE_STAGING)
    await conn.copy_records_to_table("staged_events", records=rows, columns=_STAGED_COLUMNS)
    return await conn.fetch(_INSERT_STAGED)


async def _insert_isolating(
    conn: asyncpg.Connection, stream: str, rows: list[EventRow], row_entries: list[str]
) -> tuple[list[asyncpg.Record], dict[int, int]]:
    """Insert events; if PostgreSQL refuses a value, find and dead-letter the bad rows.

    Ingest rejects the values that PostgreSQL is known to refuse, so this path is a
    safety net: the rows go one by one, each in a savepoint, and a refused row goes to
    `dead_events` with the reason. Returns the inserted counts and, per run, how many
    rows were dead-lettered.
    """
    try:
        async with conn.transaction():
            return await _insert_events(conn, rows), {}
    except asyncpg.DataError as exc:
        log.warning("batch insert into %s failed (%r); retrying its events one by one", stream, exc)
    inserted: list[asyncpg.Record] = []
    dead: dict[int, int] = defaultdict(int)
    for row, entry_id in zip(rows, row_entries, strict=True):
        try:
            async with conn.transaction():
                inserted.extend(await _insert_events(conn, [row]))
        except asyncpg.DataError as exc:
            run_key = row[1]
            await conn.execute(
                """
                INSERT INTO dead_events (run_id, stream, entry_id, event, reason)
                VALUES ($1, $2, $3, $4, $5)
                """,
                run_key,
                stream,
                entry_id,
                msgspec.json.encode(row).decode(),
                repr(exc),
            )
            dead[run_key] += 1
            log.error("dead-lettered event %s of entry %s: %r", row[0], entry_id, exc)
    return inserted, dead


async def _update_scores(
    conn: asyncpg.Connection,
    deltas: dict[int, Counters],
    processed: dict[int, int],
    dead: dict[int, int],
) -> None:
    run_keys = sorted(processed)
    # Every transaction locks score rows in run order (ORDER BY run_id FOR UPDATE), so
    # two workers touching the same runs wait for each other instead of deadlocking.
    rows = await conn.fetch(
        "SELECT * FROM run_scores WHERE run_id = ANY($1::bigint[]) ORDER BY run_id FOR UPDATE",
        run_keys,
    )
    updates: list[tuple[object, ...]] = []
    for row in rows:
        counters = counters_from_row(row)
        delta = deltas.get(row["run_id"])
        if delta is not None:
            for name in _COUNTER_FIELDS:
                setattr(counters, name, getattr(counters, name) + getattr(delta, name))
        score = score_counters(counters)
        updates.append(
            (
                row["run_id"],
                row["processed_events"] + processed[row["run_id"]],
                row["dead_lettered_events"] + dead.get(row["run_id"], 0),
                *(getattr(counters, name) for name in _COUNTER_FIELDS),
                score.score,
                score.grade,
            )
        )
    await conn.executemany(
        f"""
        UPDATE run_scores SET processed_events = $2, dead_lettered_events = $3,
            {", ".join(f"{name} = ${i + 4}" for i, name in enumerate(_COUNTER_FIELDS))},
            score = ${len(_COUNTER_FIELDS) + 4}, grade = ${len(_COUNTER_FIELDS) + 5},
            updated_at = now()
        WHERE run_id = $1
        """,
        updates,
    )


async def persist_entries(
    conn: asyncpg.Connection, stream: str, entries: Sequence[tuple[str, StreamEntry]]
) -> PersistResult:
    """Persist `(entry id, batch)` pairs of one stream in one transaction."""
    result = PersistResult()
    async with conn.transaction():
        new_ids = await _claim_entries(conn, stream, [entry_id for entry_id, _ in entries])
        result.skipped_entries = len(entries) - len(new_ids)
        fresh = [(entry_id, batch) for entry_id, batch in entries if entry_id in new_ids]
        result.entries = len(fresh)
        if not fresh:
            return result
        batches = [batch for _, batch in fresh]
        run_keys = await _run_keys(conn, {batch.run_id for batch in batches})
        rows, row_entries, result.discarded = _event_rows(fresh, run_keys)
        inserted, dead = [], {}
        if rows:
            inserted, dead = await _insert_isolating(conn, stream, rows, row_entries)
        result.dead_lettered = sum(dead.values())
        deltas: dict[int, Counters] = defaultdict(Counters)
        for row in inserted:
            deltas[row["run_id"]].add(row["event_type"], row["severity"], row["inserted"])
            result.inserted += row["inserted"]
        processed: dict[int, int] = defaultdict(int)
        for batch in batches:
            if (run_key := run_keys.get(batch.run_id)) is not None:
                processed[run_key] += len(batch.events)
        result.duplicates = sum(processed.values()) - result.inserted - result.dead_lettered
        if processed:
            await _update_scores(conn, deltas, processed, dead)
    if result.discarded:
        log.info("discarded %d events of deleted runs from %s", result.discarded, stream)
    return result


# Entry ids are "<milliseconds>-<sequence>", so they compare as a pair of numbers.
_PRUNE_DONE = """
DELETE FROM stream_entries_done
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM stream_entries_done
    WHERE stream = $1
      AND created_at < now() - make_interval(secs => $2)
      AND (split_part(entry_id, '-', 1)::bigint, split_part(entry_id, '-', 2)::bigint)
          < ($3::bigint, $4::bigint)
    LIMIT $5
))
"""


async def prune_done_entries(
    conn: asyncpg.Connection,
    stream: str,
    *,
    before_id: tuple[int, int],
    min_age_s: float,
    limit: int,
) -> int:
    """Delete up to `limit` records of entries of `stream` with ids below `before_id`
    and recorded at least `min_age_s` ago; return how many were deleted."""
    status = await conn.execute(_PRUNE_DONE, stream, min_age_s, *before_id, limit)
    return int(status.split()[-1])
