"""A description of the machine and the software versions a benchmark ran on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

__all__ = ["describe_machine", "load_average"]

_PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "asyncpg",
    "redis",
    "hiredis",
)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def describe_machine(
    conn: asyncpg.Connection, redis: aioredis.Redis, code_version: str
) -> list[tuple[str, str]]:
    """Return (name, value) pairs: CPU, cores, memory, OS, versions and `code_version`."""
    postgres = await conn.fetchval("SHOW server_version")
    settings = [
        f"{name}={await conn.fetchval('SELECT current_setting($1)', name)}"
        for name in ("fsync", "synchronous_commit", "shared_buffers")
    ]
    redis_info = await redis.info("server")
    libraries = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    return [
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", f"{_memory_gib():.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("PostgreSQL", f"{postgres} (embedded; {', '.join(settings)})"),
        ("Redis", f"{redis_info['redis_version']} (embedded, appendonly everysec)"),
        ("libraries", libraries),
        ("service code", code_version),
    ]
