"""PostgreSQL pools and Redis clients, created by each service at start-up."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from core.config import Settings

__all__ = ["connect_postgres", "connect_redis", "redis_socket_timeout_s"]


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as its JSON text both ways: payloads are stored as the agent sent
    # them and served as raw JSON, never decoded into Python objects.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=str, decoder=str, schema="pg_catalog", format="text"
        )


async def connect_postgres(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
    )
    assert pool is not None
    return pool


def redis_socket_timeout_s(settings: Settings) -> float:
    # A blocking XREADGROUP waits up to stream_block_ms; the socket must wait longer,
    # or redis-py would report a timeout on a healthy but idle stream.
    return settings.stream_block_ms / 1000 + 5.0


def connect_redis(url: str, settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=redis_socket_timeout_s(settings),
        socket_connect_timeout=5.0,
        health_check_interval=30,
        max_connections=64,
    )
