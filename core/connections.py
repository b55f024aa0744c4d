"""PostgreSQL pools and Redis clients, created by each service at start-up."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import hiredis
import redis.asyncio as aioredis
import redis.exceptions

from core import streams
from core.config import Settings
from core.script_connection import ScriptConnection

__all__ = [
    "check_redis_durability",
    "connect_scripts",
    "connect_postgres",
    "connect_redis",
    "redis_socket_timeout_s",
]

log = logging.getLogger(__name__)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON travels as text both ways: payloads are stored as the agent sent them and
    # served as raw JSON, never decoded into Python objects.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=str, decoder=str, schema="pg_catalog", format="text"
        )


async def connect_postgres(dsn: str, *, min_size: int = 0, max_size: int = 10) -> asyncpg.Pool:
    """Create a pool that connects on first use.

    With no connection made up front, a service starts while PostgreSQL is down and
    recovers by itself when it comes back; /ready reports the outage meanwhile.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        # Fail fast while PostgreSQL is down instead of holding requests for a minute.
        timeout=5,
    )
    assert pool is not None
    return pool


def redis_socket_timeout_s(settings: Settings) -> float:
    # A blocking XREADGROUP waits up to stream_block_ms; the socket must wait longer,
    # or redis-py would report a timeout on a healthy but idle stream.
    return settings.stream_block_ms / 1000 + 5.0


class HiredisPackingConnection(aioredis.Connection):
    """A TCP connection that encodes commands with hiredis instead of redis-py's Python.

    An append script call has 13 arguments; packing it took 27 µs in Python and 3 µs
    with `hiredis.pack_command`, which writes the same bytes.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # redis-py splits command names such as "CONFIG GET" into two arguments.
        if isinstance(args[0], str) and " " in args[0]:
            return super().pack_command(*args)
        return [hiredis.pack_command(args)]


def connect_redis(url: str, settings: Settings, *, socket_timeout: bool = True) -> aioredis.Redis:
    """Create a client whose commands time out after `redis_socket_timeout_s`.

    With `socket_timeout` False they have no timeout, and the caller must bound them
    (`ScriptPipeline` does).
    """
    pool = aioredis.ConnectionPool.from_url(
        url,
        socket_timeout=redis_socket_timeout_s(settings) if socket_timeout else None,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        max_connections=64,
    )
    # TLS and Unix socket URLs keep the connection class redis-py chose for them.
    if pool.connection_class is aioredis.Connection:
        pool.connection_class = HiredisPackingConnection
    return aioredis.Redis.from_pool(pool)


def connect_scripts(url: str, settings: Settings) -> ScriptConnection | streams.ScriptPipeline:
    """Create what sends ingest's script calls, bounded by `redis_socket_timeout_s`.

    A `redis://` URL gets a `ScriptConnection`. TLS and Unix socket URLs get a
    `ScriptPipeline` on a redis-py client of its own, without a socket timeout,
    since the pipeline bounds its calls as a whole.
    """
    timeout_s = redis_socket_timeout_s(settings)
    if ScriptConnection.supports(url):
        return ScriptConnection(url, timeout_s=timeout_s)
    client = connect_redis(url, settings, socket_timeout=False)
    return streams.ScriptPipeline(client, timeout_s=timeout_s)


async def check_redis_durability(client: aioredis.Redis) -> None:
    """Log a warning when Redis could lose or evict accepted events.

    The stream is the only copy of an accepted event until a worker persists it, so
    Redis should keep an append-only file and never evict keys. Servers that forbid
    CONFIG GET (some managed offerings) are not checked.
    """
    try:
        appendonly = await client.config_get("appendonly")
        policy = await client.config_get("maxmemory-policy")
    except redis.exceptions.ResponseError as exc:
        log.info("cannot read the Redis configuration (%s); durability not checked", exc)
        return
    if appendonly.get("appendonly") != "yes":
        log.warning(
            "Redis runs without an append-only file: a Redis restart loses accepted events "
            "that workers have not persisted yet; set appendonly yes"
        )
    if policy.get("maxmemory-policy") != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %s: under memory pressure it may evict stream "
            "entries; set maxmemory-policy noeviction",
            policy.get("maxmemory-policy"),
        )
