from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from core.config import Settings
from core.connections import connect_postgres, connect_redis
from schema.migrate import apply_migrations
from tests.faults import serve
from tests.servers import database_with_name, postgres_server, redis_server
from workers.consumer import ShardConsumer

TEST_DATABASE = "softadastra_test"
TABLES = (
    "users, projects, agents, runs, run_scores, events, reports, stream_entries_done, dead_events"
)


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    workdir = tmp_path_factory.mktemp("servers")
    with postgres_server(workdir) as (admin_dsn, _), redis_server(workdir) as (redis_url, _):
        yield admin_dsn, redis_url


@pytest.fixture(scope="session")
async def database_url(server_urls: tuple[str, str]) -> str:
    """A freshly created and migrated database on the test server."""
    admin_dsn, _ = server_urls
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEST_DATABASE}")
    finally:
        await admin.close()
    dsn = database_with_name(admin_dsn, TEST_DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture(scope="session")
def settings(database_url: str, server_urls: tuple[str, str]) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        redis_url=server_urls[1],
        jwt_secret="test-jwt-secret-" + "x" * 32,
        agent_api_key_secret="test-agent-key-secret-" + "y" * 32,
        stream_shards=2,
        stream_block_ms=100,
        reclaim_idle_ms=1000,
        cors_allowed_origin="http://dashboard.test",
        # Every test signs up its own users from 127.0.0.1.
        register_burst=1_000_000,
    )


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url
    pool = await connect_postgres(settings.database_url, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url
    client = connect_redis(settings.redis_url, settings)
    yield client
    await client.aclose()


@pytest.fixture
async def clean(pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    """Empty every table and the Redis database before a test."""
    await pool.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await redis.flushdb()


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[str]:
    """The all-in-one app served by uvicorn on a free loopback port; yields its URL."""
    async with serve(settings) as url:
        yield url


@pytest.fixture
async def client(server: str, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        yield http


@pytest.fixture
async def consumers(
    settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, clean: None
) -> AsyncIterator[list[ShardConsumer]]:
    """Stream consumers for every shard, running in the test's event loop."""
    running = [
        ShardConsumer(shard=shard, settings=settings, pool=pool, redis=redis)
        for shard in range(settings.stream_shards)
    ]
    for consumer in running:
        await consumer.ensure_group()
    tasks = [asyncio.create_task(consumer.run()) for consumer in running]
    yield running
    for consumer in running:
        consumer.stop()
    await asyncio.gather(*tasks)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the servers, so `-m integration` selects exactly those."""
    for item in items:
        if "server_urls" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
