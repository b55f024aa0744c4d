"""What operators use: the status and dead-letters commands, and /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from core import streams
from core.config import Settings
from core.errors import TooManyRequests
from core.logs import ACCESS_LOGGER
from core.ratelimit import LeasedLimit, Limit
from core.script_connection import ScriptConnection
from core.streams import RedisScript
from tests.faults import serve
from tests.helpers import create_run, new_agent
from workers.consumer import ShardConsumer

ROOT = Path(__file__).resolve().parent.parent


async def run_cli(settings: Settings, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ)
    env.update(
        CLOUD_DATABASE_URL=settings.database_url or "",
        CLOUD_REDIS_URL=settings.redis_url or "",
        CLOUD_STREAM_SHARDS=str(settings.stream_shards),
        CLOUD_DATA_DIR=str(tmp_path / "data"),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_status_prints_every_shard(settings: Settings, tmp_path: Path, clean: None) -> None:
    code, output = await run_cli(settings, tmp_path, "status")
    assert code == 0, output
    assert "backlog events" in output
    for shard in range(settings.stream_shards):
        assert f"\n{shard:>5} " in output
    assert "dead events in PostgreSQL: 0" in output


async def test_status_into_closed_pipe_exits_quietly(
    settings: Settings, tmp_path: Path, clean: None
) -> None:
    """`status | head -1`: the reader has gone before status writes its table."""
    env = dict(os.environ)
    env.update(
        CLOUD_DATABASE_URL=settings.database_url or "",
        CLOUD_REDIS_URL=settings.redis_url or "",
        CLOUD_DATA_DIR=str(tmp_path / "data"),
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "core.cli", "status", cwd=ROOT, env=env,
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, errors = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert b"Traceback" not in errors
    assert b"unreachable" not in errors


async def test_status_without_servers_explains(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLOUD_")}
    env["CLOUD_DATA_DIR"] = str(tmp_path / "empty")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.cli", "status", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert b"CLOUD_DATABASE_URL" in output


@pytest.mark.parametrize("field", ["batch", "body"])
async def test_dead_letter_replay_restores_entry(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    tmp_path: Path,
    clean: None,
    field: str,
) -> None:
    consumer = ShardConsumer(shard=0, settings=settings, pool=pool, redis=redis)
    keys = consumer.keys
    await consumer.ensure_group()
    await redis.xadd(keys.events, {"n": "4", field: b"not json"})
    await redis.incrby(keys.backlog, 4)
    consumer.wake_for_pending()
    await consumer.step()
    await consumer.step()
    assert await redis.xlen(keys.dead) == 1
    assert int(await redis.get(keys.backlog)) == 0

    code, listed = await run_cli(settings, tmp_path, "dead-letters", "list")
    assert code == 0, listed
    assert "dead-letter entries: 1" in listed
    assert "undecodable" in listed

    code, replayed = await run_cli(settings, tmp_path, "dead-letters", "replay", "--all")
    assert code == 0, replayed
    assert "replayed 1 entries" in replayed
    assert await redis.xlen(keys.dead) == 0
    [(_, restored)] = await redis.xrange(keys.events)
    assert restored == {b"n": b"4", field.encode(): b"not json"}
    assert int(await redis.get(keys.backlog)) == 4


async def test_access_log_line_per_request(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        forged = await client.get("/health%0A2026-01-01T00:00:00 INFO forged")
        health = await client.get("/health")
        await asyncio.sleep(0.05)  # the lines are written after the event-loop pass
    finally:
        access.setLevel(level)
    lines = [line for line in capsys.readouterr().err.splitlines() if ACCESS_LOGGER in line]
    assert len(lines) == 2
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO softadastra\.access"
    forged_id = forged.headers["x-request-id"]
    forged_path = r"/health\\n2026-01-01T00:00:00 INFO forged"
    assert re.fullmatch(rf"{stamp} {forged_id} GET {forged_path} 404 \d+\.\dms", lines[0])
    health_id = health.headers["x-request-id"]
    assert re.fullmatch(rf"{stamp} {health_id} GET /health 200 \d+\.\dms", lines[1])


async def test_metrics_count_accepted_events(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    before = await client.get("/metrics")
    await client.post(
        f"/api/runs/{run_id}/events",
        json={"events": [{"event_type": "request_sent"}] * 3},
        headers=agent.headers,
    )
    after = await client.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    assert accepted_total(after.text) - accepted_total(before.text) == 3
    assert (
        'softadastra_http_requests_total{method="POST",role="all-in-one",status="202"}'
        in after.text
    )


def accepted_total(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("softadastra_events_accepted_total "):
            return float(line.split()[1])
    raise AssertionError("softadastra_events_accepted_total missing from /metrics")


async def test_stream_keys_share_hash_tag() -> None:
    keys = streams.StreamKeys(3)
    tags = {
        key.split("}")[0]
        for key in (keys.events, keys.runs, keys.accepted, keys.backlog, keys.dead)
    }
    assert tags == {"sa:{s3"}


async def test_agent_rate_limit_answers_429(settings: Settings, clean: None) -> None:
    limited = dataclasses.replace(settings, agent_rate_per_s=1, agent_rate_burst=5)
    async with serve(limited) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        agent = await new_agent(client)
        other = await new_agent(client)
        run_id = await create_run(client, agent)
        statuses = []
        for _ in range(10):
            response = await client.post(
                f"/api/runs/{run_id}/events",
                json={"event_type": "request_sent"},
                headers=agent.headers,
            )
            statuses.append(response.status_code)
        other_run = await client.post(
            "/api/runs",
            json={"target_url": "https://x.test", "scenario": "ab"},
            headers=other.headers,
        )
    assert statuses.count(429) >= 4
    assert 202 in statuses
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert other_run.status_code == 201


async def test_deleted_key_expires_on_other_processes(settings: Settings, clean: None) -> None:
    """A process that cached a key accepts it for at most CLOUD_AGENT_CACHE_TTL_S more."""
    short_ttl = dataclasses.replace(settings, agent_cache_ttl_s=1)
    async with (
        serve(short_ttl) as first_url,
        serve(short_ttl) as second_url,
        httpx.AsyncClient(base_url=first_url, timeout=30) as first,
        httpx.AsyncClient(base_url=second_url, timeout=30) as second,
    ):
        agent = await new_agent(first)
        run_id = await create_run(second, agent)  # the second process caches the key
        deleted = await first.delete(f"/api/agents/{agent.agent_id}", headers=agent.user)
        assert deleted.status_code == 200
        on_first = await first.get(f"/api/runs/{run_id}", headers=agent.headers)
        await asyncio.sleep(1.2)
        on_second = await second.post(
            f"/api/runs/{run_id}/events", json={"event_type": "request_sent"}, headers=agent.headers
        )
    assert on_first.status_code == 401
    assert on_second.status_code == 401
    assert on_second.json()["error"] == "unauthorized"


@pytest.mark.parametrize("kind", ["pipeline", "connection"])
async def test_leased_limit_concurrent_takes_keep_tokens(
    redis: aioredis.Redis, settings: Settings, clean: None, kind: str
) -> None:
    assert settings.redis_url
    limit = LeasedLimit(Limit("test", per_s=0.001, burst=100), lease=10)
    scripts: streams.ScriptCaller = (
        ScriptConnection(settings.redis_url, timeout_s=5)
        if kind == "connection"
        else streams.ScriptPipeline(redis)
    )
    try:
        results = await asyncio.gather(
            *(limit.take(scripts, "agent", what="requests") for _ in range(100)),
            return_exceptions=True,
        )
        assert [r for r in results if r is not None] == []
        with pytest.raises(TooManyRequests):
            await limit.take(scripts, "agent", what="requests")
    finally:
        if isinstance(scripts, ScriptConnection):
            await scripts.close()


async def test_leased_limit_failed_lease_fails_waiters_together() -> None:
    """Requests waiting for a lease that fails all fail with it, after one Redis call."""
    calls = 0

    async def no_reply(script: RedisScript, keys: Sequence[str], args: Sequence[object]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        raise redis.exceptions.TimeoutError("Redis did not reply within 0.2 s")

    limit = LeasedLimit(Limit("test", per_s=100, burst=100), lease=10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    results = await asyncio.gather(
        *(limit.take(no_reply, "agent", what="requests") for _ in range(30)),
        return_exceptions=True,
    )
    assert calls == 1
    assert loop.time() - began < 1.5
    for result in results:
        assert isinstance(result, redis.exceptions.TimeoutError)


@pytest.mark.parametrize("command", ["up", "ingest"])
async def test_taken_port_fails_before_starting(tmp_path: Path, command: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLOUD_")}
    env.update(SERVER_HOST="127.0.0.1", SERVER_PORT=str(port), CLOUD_DATA_DIR=str(tmp_path))
    if command == "ingest":
        env.update(
            CLOUD_DATABASE_URL="postgresql://127.0.0.1:1/none",
            CLOUD_REDIS_URL="redis://127.0.0.1:1",
        )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "core.cli", command, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        listener.close()
    assert process.returncode == 2, output
    assert f"cannot listen on 127.0.0.1:{port}".encode() in output
    assert b"set SERVER_PORT" in output
    assert not (tmp_path / "postgres").exists()
