"""Inspect and replay dead letters: stream entries and events that could not be persisted.

Entries that could not be decoded, or failed `max_deliveries` times, are in each
shard's dead-letter stream. Events that PostgreSQL refused are in the `dead_events`
table, next to the rest of their entry, which was persisted.
"""

from __future__ import annotations

import asyncpg
import msgspec
import redis.asyncio as aioredis

from core import streams
from core.config import Settings

__all__ = [
    "DeadEntry",
    "list_dead_entries",
    "list_dead_events",
    "print_dead_letters",
    "replay_command",
    "replay_dead_entries",
]


class DeadEntry(msgspec.Struct):
    shard: int
    dead_id: str
    source_id: str
    reason: str
    events: int


# Put an entry back at the end of its stream (with its `batch` or `body` field), count
# its events in the backlog again, and remove it from the dead-letter stream, atomically.
_REPLAY = streams.RedisScript(
    """
local fields = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #fields == 0 then return 0 end
local values = fields[1][2]
local n, field, batch = '0', nil, nil
for i = 1, #values, 2 do
  if values[i] == 'entry.n' then n = values[i + 1] end
  if values[i] == 'entry.batch' or values[i] == 'entry.body' then
    field, batch = string.sub(values[i], 7), values[i + 1]
  end
end
if not batch then return -1 end
redis.call('XADD', KEYS[1], '*', 'n', n, field, batch)
redis.call('INCRBY', KEYS[3], tonumber(n) or 0)
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
"""
)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def list_dead_entries(redis: aioredis.Redis, *, shards: int, limit: int) -> list[DeadEntry]:
    entries: list[DeadEntry] = []
    for shard in range(shards):
        keys = streams.StreamKeys(shard)
        for dead_id, fields in await redis.xrange(keys.dead, count=limit):
            try:
                events = int(fields.get(b"entry.n", b"0"))
            except ValueError:
                events = 0
            entries.append(
                DeadEntry(
                    shard=shard,
                    dead_id=_text(dead_id),
                    source_id=_text(fields.get(b"source_id")),
                    reason=_text(fields.get(b"reason")),
                    events=events,
                )
            )
    return entries


async def replay_dead_entries(
    redis: aioredis.Redis, *, shards: int, dead_ids: list[str] | None
) -> tuple[int, int]:
    """Move dead entries back to their streams; return (replayed, entries without a batch).

    `dead_ids` None replays every dead entry of every shard.
    """
    replayed = unusable = 0
    for shard in range(shards):
        keys = streams.StreamKeys(shard)
        ids = [_text(dead_id) for dead_id, _ in await redis.xrange(keys.dead)]
        for dead_id in ids:
            if dead_ids is not None and dead_id not in dead_ids:
                continue
            result = await _REPLAY(redis, (keys.events, keys.dead, keys.backlog), (dead_id,))
            if int(result) == 1:
                replayed += 1
            elif int(result) == -1:
                unusable += 1
    return replayed, unusable


async def list_dead_events(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT d.id, r.public_id AS run_id, d.entry_id, d.reason, d.created_at
        FROM dead_events d JOIN runs r ON r.id = d.run_id
        ORDER BY d.id DESC LIMIT $1
        """,
        limit,
    )


async def print_dead_letters(settings: Settings, *, limit: int) -> int:
    assert settings.database_url and settings.redis_url
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10)
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        entries = await list_dead_entries(redis, shards=settings.stream_shards, limit=limit)
        events = await list_dead_events(conn, limit=limit)
    finally:
        await conn.close()
        await redis.aclose()
    print(f"dead-letter entries: {len(entries)}")
    for entry in entries:
        print(
            f"  shard {entry.shard}  {entry.dead_id}  (was {entry.source_id}, "
            f"{entry.events} events)  {entry.reason[:160]}"
        )
    print(f"dead events in PostgreSQL (newest {limit}): {len(events)}")
    for row in events:
        print(f"  {row['id']}  run {row['run_id']}  entry {row['entry_id']}  {row['reason'][:160]}")
    return 0


async def replay_command(settings: Settings, dead_ids: list[str] | None) -> int:
    assert settings.redis_url
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        replayed, unusable = await replay_dead_entries(
            redis, shards=settings.stream_shards, dead_ids=dead_ids
        )
    finally:
        await redis.aclose()
    print(f"replayed {replayed} entries; {unusable} had no batch to replay and were left")
    return 0
