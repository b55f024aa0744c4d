"""PostgreSQL and Redis servers for the tests, from the first source that works.

1. `CLOUD_TEST_DATABASE_URL` / `CLOUD_TEST_REDIS_URL`, when set (CI points them at
   the machine's own servers).
2. testcontainers, when a Docker engine responds.
3. The embedded servers that `softadastra-cloud up` uses.

Each source is chosen per server, so one may come from the environment and the other
be embedded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.embedded import EmbeddedPostgres, EmbeddedRedis

__all__ = ["database_with_name", "postgres_server", "redis_server"]

log = logging.getLogger(__name__)


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception as exc:  # any failure means "no usable engine"
        log.info("no Docker engine (%s); using embedded servers", type(exc).__name__)
        return False


def database_with_name(dsn: str, name: str) -> str:
    """Return `dsn` pointing at database `name` on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """Yield `(dsn, source)` of a PostgreSQL server that allows CREATE DATABASE."""
    if url := os.environ.get("CLOUD_TEST_DATABASE_URL"):
        yield url, "environment"
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
        return
    server = EmbeddedPostgres(workdir / "postgres")
    dsn = server.start()
    try:
        yield dsn, "embedded"
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, str]]:
    if url := os.environ.get("CLOUD_TEST_REDIS_URL"):
        yield url, "environment"
        return
    if _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0", "testcontainers"
        return
    server = EmbeddedRedis(workdir / "redis")
    url = server.start()
    try:
        yield url, "embedded"
    finally:
        server.stop()
