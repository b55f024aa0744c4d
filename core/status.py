"""`softadastra-cloud status`: the pipeline at a glance, from Redis and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from core import streams
from core.config import Settings
from core.metrics import read_stream_stats

__all__ = ["URLS_FILE", "print_status", "read_urls_file", "write_urls_file"]

URLS_FILE = "urls.json"


def write_urls_file(settings: Settings) -> None:
    """Record the servers `up` uses, so `status` and `dead-letters` find embedded ones."""
    path = settings.data_dir / URLS_FILE
    path.write_text(
        json.dumps({"database_url": settings.database_url, "redis_url": settings.redis_url})
    )
    path.chmod(0o600)


def read_urls_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / URLS_FILE
    if not path.is_file():
        return {}
    values = json.loads(path.read_text())
    return {name: value for name, value in values.items() if isinstance(value, str)}


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


async def _consumers(redis: aioredis.Redis, shards: int) -> list[tuple[str, int, float]]:
    rows = []
    for shard in range(shards):
        try:
            infos = await redis.xinfo_consumers(
                streams.StreamKeys(shard).events, streams.CONSUMER_GROUP
            )
        except aioredis.ResponseError:  # stream or group not created yet
            continue
        for info in infos:
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            rows.append((name, int(info["pending"]), int(info["idle"]) / 1000))
    return rows


async def _runs_in_flight(conn: asyncpg.Connection, redis: aioredis.Redis, shards: int) -> int:
    accepted: dict[str, int] = {}
    for shard in range(shards):
        for run_id, count in (await redis.hgetall(streams.StreamKeys(shard).accepted)).items():
            accepted[run_id.decode()] = int(count)
    if not accepted:
        return 0
    rows = await conn.fetch(
        """
        SELECT r.public_id, s.processed_events FROM runs r JOIN run_scores s ON s.run_id = r.id
        WHERE r.public_id = ANY($1::text[])
        """,
        list(accepted),
    )
    return sum(1 for row in rows if accepted[row["public_id"]] > row["processed_events"])


async def print_status(settings: Settings) -> int:
    """Print backlog, pending, dead letters and consumers; return 1 if a server is down."""
    assert settings.database_url and settings.redis_url
    redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL {_masked(settings.database_url)}: unreachable ({exc})")
        await redis.aclose()
        return 1
    try:
        print(f"PostgreSQL {_masked(settings.database_url)}")
        print(f"Redis      {_masked(settings.redis_url)}")
        print()
        header = ("shard", "backlog events", "stream entries", "pending entries", "dead entries")
        print("{:>5} {:>15} {:>15} {:>16} {:>13}".format(*header))
        for item in await read_stream_stats(redis, settings.stream_shards):
            print(
                f"{item.shard:>5} {item.backlog_events:>15} {item.stream_entries:>15} "
                f"{item.pending_entries:>16} {item.dead_entries:>13}"
            )
        print()
        consumers = await _consumers(redis, settings.stream_shards)
        print(f"consumers: {len(consumers)}")
        for name, pending, idle_s in consumers:
            print(f"  {name:<40} pending {pending:>6}  idle {idle_s:>8.1f} s")
        dead_events = await conn.fetchval("SELECT count(*) FROM dead_events")
        open_runs = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE status NOT IN ('finished', 'failed', 'cancelled')"
        )
        in_flight = await _runs_in_flight(conn, redis, settings.stream_shards)
        print()
        print(f"dead events in PostgreSQL: {dead_events}")
        print(f"runs open: {open_runs}; runs with events not yet persisted: {in_flight}")
    except BrokenPipeError:
        raise  # stdout closed (`status | head`), not a Redis problem
    except (OSError, aioredis.RedisError) as exc:
        print(f"Redis {_masked(settings.redis_url)}: unreachable ({exc})")
        return 1
    finally:
        await conn.close()
        await redis.aclose()
    return 0
