"""Persistence of stream entries: idempotence, exact counters, and refused values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import Settings
from core.repositories.runs import insert_run
from core.scoring import Counters, score_counters
from core.security import is_public_id, new_id
from ingest.events import parse_events
from schema.structs import SEVERITIES, StreamBatch, StreamEvent, decode_entry
from workers import consumer as consumer_module
from workers import worker as worker_module
from workers.consumer import DeadLetterFlood, ShardConsumer, _chunks_by_events
from workers.persist import persist_entries

STREAM = "sa:{s0}:events"
EVENT_TYPES = (
    "request_sent",
    "request_timeout",
    "duplicate_detected",
    "data_loss_risk_detected",
    "recovery_failed",
    "retry_started",
)
_entry_ids = itertools.count(1)


async def make_run(conn: asyncpg.Connection) -> str:
    user_key = await conn.fetchval(
        """
        INSERT INTO users (public_id, email, name, password_hash)
        VALUES ($1, $2, 'u', 'x') RETURNING id
        """,
        new_id("usr"),
        f"{new_id('usr')}@example.com",
    )
    project_key = await conn.fetchval(
        """
        INSERT INTO projects (public_id, user_id, name, slug)
        VALUES ($1, $2, 'p', $1) RETURNING id
        """,
        new_id("prj"),
        user_key,
    )
    row = await insert_run(
        conn,
        public_id=new_id("run"),
        project_key=project_key,
        agent_key=None,
        status="running",
        target_url="https://x.test",
        method="GET",
        scenario="persist test",
    )
    return str(row["public_id"])


def stream_event(
    event_id: str, event_type: str, severity: str, payload: bytes = b"null"
) -> StreamEvent:
    return StreamEvent(
        public_id=new_id("evt"),
        event_id=event_id,
        event_type=event_type,
        severity=severity,
        message="",
        payload=msgspec.Raw(payload),
        occurred_at=None,
    )


def entry(run_id: str, events: list[StreamEvent]) -> tuple[str, StreamBatch]:
    batch = StreamBatch(run_id=run_id, received_at=dt.datetime.now(dt.UTC), events=events)
    return f"{next(_entry_ids)}-0", batch


async def stored_counters(conn: asyncpg.Connection, run_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT s.* FROM run_scores s JOIN runs r ON r.id = s.run_id WHERE r.public_id = $1", run_id
    )


async def recounted(conn: asyncpg.Connection, run_id: str) -> Counters:
    rows = await conn.fetch(
        """
        SELECT e.event_type, e.severity FROM events e JOIN runs r ON r.id = e.run_id
        WHERE r.public_id = $1
        """,
        run_id,
    )
    return Counters.from_events((row["event_type"], row["severity"]) for row in rows)


async def test_persist_redelivered_entry_counts_once(pool: asyncpg.Pool, clean: None) -> None:
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        pair = entry(run_id, [stream_event("a", "request_timeout", "warning")])
        first = await persist_entries(conn, STREAM, [pair])
        second = await persist_entries(conn, STREAM, [pair])
        row = await stored_counters(conn, run_id)
    assert first.inserted == 1
    assert second.skipped_entries == 1
    assert second.inserted == 0
    assert row["processed_events"] == 1
    assert row["timeout"] == 1
    assert row["score"] == 87


async def test_sent_and_listed_entries_match(pool: asyncpg.Pool, clean: None) -> None:
    """A body that travels as sent and one listed event by event give the same rows."""
    events = [
        {"event_type": "request_timeout", "severity": "warning", "event_id": "t-1"},
        {"event_type": "request_sent", "message": "POST /orders", "payload": {"n": 1}},
        {"event_type": "duplicate_detected", "occurred_at": "2026-01-02T03:04:05+01:00"},
    ]
    received_at = dt.datetime.now(dt.UTC)
    stored: dict[str, list[tuple[object, ...]]] = {}
    async with pool.acquire() as conn:
        for extra, field in (([], "body"), ([events[0]], "batch")):
            run_id = await make_run(conn)
            body = msgspec.json.encode({"events": [*events, *extra]})
            parsed = parse_events(body, run_id=run_id, received_at=received_at)
            assert parsed.field == field
            batch = decode_entry({field.encode(): parsed.entry})
            result = await persist_entries(conn, STREAM, [(f"{next(_entry_ids)}-0", batch)])
            assert result.inserted == 3
            rows = await conn.fetch(
                """
                SELECT e.public_id, e.event_id, e.event_type, e.severity, e.message,
                       e.payload, e.occurred_at, e.received_at
                FROM events e JOIN runs r ON r.id = e.run_id WHERE r.public_id = $1
                ORDER BY e.id
                """,
                run_id,
            )
            assert all(is_public_id(row["public_id"], "evt") for row in rows)
            assert rows[0]["event_id"] == "t-1"
            assert [row["event_id"] for row in rows[1:]] == [row["public_id"] for row in rows[1:]]
            stored[field] = [tuple(row)[2:] for row in rows]
            assert (await stored_counters(conn, run_id))["processed_events"] == 3
    assert stored["body"] == stored["batch"]
    assert stored["body"][2][4] == dt.datetime(2026, 1, 2, 2, 4, 5, tzinfo=dt.UTC)


async def test_persist_refused_value_dead_letters_only_it(pool: asyncpg.Pool, clean: None) -> None:
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        events = [
            stream_event("good-1", "request_sent", "info"),
            # Ingest never lets invalid JSON through; here it stands for any value
            # PostgreSQL refuses.
            stream_event("bad", "request_sent", "error", payload=b"{not json"),
            stream_event("good-2", "request_timeout", "warning"),
        ]
        result = await persist_entries(conn, STREAM, [entry(run_id, events)])
        row = await stored_counters(conn, run_id)
        dead = await conn.fetch("SELECT reason, event FROM dead_events")
    assert result.inserted == 2
    assert result.dead_lettered == 1
    assert row["processed_events"] == 3
    assert row["dead_lettered_events"] == 1
    assert row["error"] == 0
    assert len(dead) == 1
    assert "bad" in dead[0]["event"]


async def test_persist_nul_text_dead_letters_only_it(pool: asyncpg.Pool, clean: None) -> None:
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        bad = stream_event("bad", "request_sent", "error")
        bad = msgspec.structs.replace(bad, message="a\x00b")
        events = [stream_event("good-1", "request_sent", "info"), bad]
        result = await persist_entries(conn, STREAM, [entry(run_id, events)])
        stored = await conn.fetch("SELECT event_id FROM events")
        dead = await conn.fetch("SELECT event FROM dead_events")
    assert result.inserted == 1
    assert result.dead_lettered == 1
    assert [row["event_id"] for row in stored] == ["good-1"]
    assert len(dead) == 1


async def test_persist_keeps_stream_order(pool: asyncpg.Pool, clean: None) -> None:
    event_ids = [f"e{number}" for number in reversed(range(300))]
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        first = [stream_event(event_id, "request_sent", "info") for event_id in event_ids[:150]]
        second = [stream_event(event_id, "request_sent", "info") for event_id in event_ids[150:]]
        await persist_entries(conn, STREAM, [entry(run_id, first), entry(run_id, second)])
        stored = await conn.fetch("SELECT event_id FROM events ORDER BY id")
    assert [row["event_id"] for row in stored] == event_ids


async def test_persist_deleted_run_is_discarded(pool: asyncpg.Pool, clean: None) -> None:
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        await conn.execute("DELETE FROM runs WHERE public_id = $1", run_id)
        result = await persist_entries(
            conn, STREAM, [entry(run_id, [stream_event("a", "x_y", "info")])]
        )
    assert result.discarded == 1
    assert result.inserted == 0


event_strategy = st.tuples(
    st.integers(min_value=0, max_value=30),  # event id: small, so ids repeat
    st.sampled_from(EVENT_TYPES),
    st.sampled_from(SEVERITIES),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.lists(event_strategy, min_size=1, max_size=12), min_size=1, max_size=8),
    redeliver=st.lists(st.integers(min_value=0, max_value=7), max_size=4),
)
async def test_incremental_counters_equal_recount(
    pool: asyncpg.Pool, batches: list[list[tuple[int, str, str]]], redeliver: list[int]
) -> None:
    """Counters kept batch by batch equal a count of the events table, whatever is re-sent.

    A repeated event id is a re-send of the same event, so it keeps its first type
    and severity, as an agent re-sending an event would.
    """
    first_seen: dict[int, tuple[str, str]] = {}
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
        pairs = []
        for batch in batches:
            events = []
            for number, event_type, severity in batch:
                event_type, severity = first_seen.setdefault(number, (event_type, severity))
                events.append(stream_event(f"e{number}", event_type, severity))
            pairs.append(entry(run_id, events))
        for index, pair in enumerate(pairs):
            await persist_entries(conn, STREAM, [pair])
            if index in redeliver:
                await persist_entries(conn, STREAM, [pair])
        row = await stored_counters(conn, run_id)
        counts = await recounted(conn, run_id)
    stored = Counters(**{name: row[name] for name in Counters.__struct_fields__})
    assert stored == counts
    assert counts.total == len(first_seen)
    assert row["score"] == score_counters(counts).score
    assert row["grade"] == score_counters(counts).grade
    assert row["processed_events"] == sum(len(batch) for batch in batches)


async def test_consumer_dead_letters_undecodable_entry(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, clean: None
) -> None:
    consumer = ShardConsumer(shard=0, settings=settings, pool=pool, redis=redis)
    keys = consumer.keys
    await consumer.ensure_group()
    await redis.xadd(keys.events, {"n": "3", "batch": b"\xff not json"})
    await redis.incrby(keys.backlog, 3)
    consumer.wake_for_pending()
    assert await consumer.step() == 0  # its own pending list is empty; then it reads new entries
    assert await consumer.step() == 1
    dead = await redis.xrange(keys.dead)
    assert len(dead) == 1
    assert b"undecodable" in dead[0][1][b"reason"]
    assert await redis.xlen(keys.events) == 0
    assert int(await redis.get(keys.backlog)) == 0
    assert consumer.dead_lettered == 1


async def test_consumer_stops_on_dead_letter_flood(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, clean: None
) -> None:
    flood_settings = dataclasses.replace(settings, dead_letter_flood_limit=2)
    consumer = ShardConsumer(shard=0, settings=flood_settings, pool=pool, redis=redis)
    await consumer.ensure_group()
    for _ in range(3):
        await redis.xadd(consumer.keys.events, {"n": "1", "batch": b"garbage"})
    consumer.wake_for_pending()
    await consumer.step()
    with pytest.raises(DeadLetterFlood):
        await consumer.step()
    assert await redis.xlen(consumer.keys.dead) == 2
    assert await redis.xlen(consumer.keys.events) == 1


async def test_consumer_isolates_undecodable_payload(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, clean: None
) -> None:
    """Bytes that pass the stream decode but fail in the worker poison only their entry."""
    one_try = dataclasses.replace(settings, max_deliveries=1)
    consumer = ShardConsumer(shard=0, settings=one_try, pool=pool, redis=redis)
    await consumer.ensure_group()
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
    good = msgspec.json.encode(entry(run_id, [stream_event("g", "request_sent", "info")])[1])
    bad = msgspec.json.encode(entry(run_id, [stream_event("b", "request_sent", "info")])[1])
    bad = bad.replace(b"null,null]]]", b'"caf\xe9",null]]]')
    await redis.xadd(consumer.keys.events, {"n": "1", "batch": good})
    await redis.xadd(consumer.keys.events, {"n": "1", "batch": bad})
    consumer.wake_for_pending()
    for _ in range(4):
        await consumer.step()
    async with pool.acquire() as conn:
        row = await stored_counters(conn, run_id)
    assert row["processed_events"] == 1
    assert await redis.xlen(consumer.keys.dead) == 1
    assert await redis.xlen(consumer.keys.events) == 0


def test_chunks_by_events_bounds_each_chunk() -> None:
    entries = [
        (b"1-0", {b"n": b"4"}),
        (b"2-0", {b"n": b"5"}),
        (b"3-0", {b"n": b"12"}),
        (b"4-0", {}),
        (b"5-0", {b"n": b"x"}),
        (b"6-0", {b"n": b"3"}),
    ]
    chunks = list(_chunks_by_events(entries, 10))
    assert [[entry_id for entry_id, _ in chunk] for chunk in chunks] == [
        [b"1-0", b"2-0"],
        [b"3-0", b"4-0", b"5-0"],
        [b"6-0"],
    ]


async def test_consumer_persists_large_read_in_chunks(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    clean: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "MAX_TRANSACTION_EVENTS", 5)
    consumer = ShardConsumer(shard=0, settings=settings, pool=pool, redis=redis)
    await consumer.ensure_group()
    async with pool.acquire() as conn:
        run_id = await make_run(conn)
    for number in range(6):
        events = [stream_event(f"e{number}-{index}", "request_sent", "info") for index in range(3)]
        batch = msgspec.json.encode(entry(run_id, events)[1])
        await redis.xadd(consumer.keys.events, {"n": "3", "batch": batch})
    await redis.incrby(consumer.keys.backlog, 18)
    consumer.wake_for_pending()
    assert await consumer.step() == 0
    assert await consumer.step() == 6
    async with pool.acquire() as conn:
        row = await stored_counters(conn, run_id)
    assert row["processed_events"] == 18
    assert row["info"] == 18
    assert consumer.totals.entries == 6
    assert await redis.xlen(consumer.keys.events) == 0
    assert int(await redis.get(consumer.keys.backlog)) == 0


async def test_prune_done_entries_keeps_redeliverable(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    clean: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records go once their entry has left the stream and an hour has passed, in chunks."""
    consumers = [
        ShardConsumer(shard=shard, settings=settings, pool=pool, redis=redis) for shard in range(2)
    ]
    first, empty = (consumer.keys.events for consumer in consumers)
    await redis.xadd(first, {"n": 1}, id="5000-3")

    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    records = [
        (first, "1000-0", old),
        (first, "4999-99", old),
        (first, "5000-2", old),
        (first, "5000-3", old),  # still in the stream
        (first, "6000-0", old),  # after the first entry left in the stream
        (first, "2000-0", recent),  # too recent
        (empty, "1000-0", old),
        (empty, "9000-0", old),
        (empty, "9500-0", recent),
    ]
    await pool.executemany(
        "INSERT INTO stream_entries_done (stream, entry_id, created_at) VALUES ($1, $2, $3)",
        records,
    )

    monkeypatch.setattr(worker_module, "_PRUNE_CHUNK", 2)
    ctx = {"consumers": consumers, "stream_redis": redis, "pool": pool}
    deleted = await worker_module.prune_done_entries(ctx)

    rows = await pool.fetch("SELECT stream, entry_id FROM stream_entries_done")
    assert deleted == 5
    assert {(row["stream"], row["entry_id"]) for row in rows} == {
        (first, "5000-3"),
        (first, "6000-0"),
        (first, "2000-0"),
        (empty, "9500-0"),
    }
