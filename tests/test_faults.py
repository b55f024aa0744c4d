"""The delivery guarantees under real faults: killed workers, stopped servers, re-sends.

Each test runs real worker processes and stops or kills real servers, then checks
that every accepted event is in PostgreSQL exactly once and that the stored score
equals a recount of the events table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from core import streams
from core.config import Settings
from core.embedded import EmbeddedPostgres, EmbeddedRedis
from core.scoring import Counters
from schema.migrate import apply_migrations
from tests.faults import WorkerProcess, send_events, serve
from tests.helpers import create_run, new_agent, wait_settled

pytestmark = pytest.mark.timeout(300)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.05)


async def stored_events(conn: asyncpg.Connection, run_id: str) -> tuple[int, int]:
    """Return (events stored, distinct event ids) of a run."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS stored, count(DISTINCT e.event_id) AS distinct_ids
        FROM events e JOIN runs r ON r.id = e.run_id WHERE r.public_id = $1
        """,
        run_id,
    )
    return row["stored"], row["distinct_ids"]


async def assert_counters_match_recount(conn: asyncpg.Connection, run_id: str) -> None:
    rows = await conn.fetch(
        """
        SELECT e.event_type, e.severity FROM events e JOIN runs r ON r.id = e.run_id
        WHERE r.public_id = $1
        """,
        run_id,
    )
    recount = Counters.from_events((row["event_type"], row["severity"]) for row in rows)
    stored = await conn.fetchrow(
        "SELECT s.* FROM run_scores s JOIN runs r ON r.id = s.run_id WHERE r.public_id = $1", run_id
    )
    assert Counters(**{name: stored[name] for name in Counters.__struct_fields__}) == recount


async def pending_of(redis: aioredis.Redis, settings: Settings, pid: int) -> int:
    """Entries read but not acknowledged by the consumers of process `pid`."""
    total = 0
    for shard in range(settings.stream_shards):
        summary = await redis.xpending(streams.StreamKeys(shard).events, streams.CONSUMER_GROUP)
        for consumer in summary.get("consumers") or []:
            name = (
                consumer["name"].decode()
                if isinstance(consumer["name"], bytes)
                else consumer["name"]
            )
            if f"-{pid}-s" in name:
                total += int(consumer["pending"])
    return total


async def finish(client: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> None:
    for _ in range(100):
        response = await client.post(f"/api/runs/{run_id}/finish", headers=headers)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 200, response.text


async def kill_while_pending(
    worker: WorkerProcess, redis: aioredis.Redis, settings: Settings
) -> int:
    """Freeze the worker until it has unacknowledged entries, then SIGKILL it."""
    pid = worker.process.pid
    for _ in range(400):
        os.kill(pid, signal.SIGSTOP)
        pending = await pending_of(redis, settings, pid)
        if pending:
            worker.kill()
            return pending
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never held pending entries while events streamed in")


async def test_killed_worker_loses_and_repeats_nothing(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    settings = dataclasses.replace(settings, stream_batch_size=20)
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    first = WorkerProcess(settings, tmp_path, "worker-a")
    second = None
    try:
        sender = asyncio.create_task(
            send_events(client, run_id, agent.headers, first=0, count=20_000)
        )

        async def some_persisted() -> bool:
            row = await pool.fetchrow(
                "SELECT s.processed_events FROM run_scores s JOIN runs r ON r.id = s.run_id "
                "WHERE r.public_id = $1",
                run_id,
            )
            return row["processed_events"] >= 2000

        await wait_until(some_persisted, timeout_s=60, what="worker A to persist 2000 events")
        pending_at_kill = await kill_while_pending(first, redis, settings)
        second = WorkerProcess(settings, tmp_path, "worker-b")
        accepted = await sender
        await finish(client, run_id, agent.headers)
        score = await wait_settled(client, run_id, agent.headers, timeout_s=120)
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.output()[-3000:]
    async with pool.acquire() as conn:
        stored, distinct_ids = await stored_events(conn, run_id)
        await assert_counters_match_recount(conn, run_id)
    print(f"sent 20000, accepted {accepted}, pending at kill {pending_at_kill}, persisted {stored}")
    assert pending_at_kill > 0
    assert accepted == 20_000
    assert stored == 20_000
    assert distinct_ids == 20_000
    assert score["counts"]["total"] == 20_000
    assert "reclaimed" in second.output()


async def test_resent_batches_count_once(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    worker = WorkerProcess(settings, tmp_path, "worker")
    try:
        accepted = 0
        for first in range(0, 5000, 100):
            for _ in range(2):
                accepted += await send_events(client, run_id, agent.headers, first=first, count=100)
        await finish(client, run_id, agent.headers)
        score = await wait_settled(client, run_id, agent.headers, timeout_s=60)
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    async with pool.acquire() as conn:
        stored, _ = await stored_events(conn, run_id)
        await assert_counters_match_recount(conn, run_id)
    print(f"sent 10000 (5000 twice), accepted {accepted}, persisted {stored}")
    assert accepted == 10_000
    assert stored == 5000
    assert score["counts"]["total"] == 5000
    # One timeout event in ten: the timeout penalty plus the capped warning penalty.
    assert score["score"] == 75


async def test_postgres_outage_buffers_then_drains(
    settings: Settings, redis: aioredis.Redis, tmp_path: Path, clean: None
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "postgres")
    dsn = postgres.start()
    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn)
    await conn.close()
    settings = dataclasses.replace(
        settings, database_url=dsn, backlog_limit_events=3000, agent_cache_ttl_s=1
    )
    worker = None
    try:
        async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            agent = await new_agent(client)
            run_id = await create_run(client, agent)
            worker = WorkerProcess(settings, tmp_path, "worker")
            accepted = await send_events(client, run_id, agent.headers, first=0, count=1000)

            async def worker_persisted() -> bool:
                response = await client.get(f"/api/runs/{run_id}/score", headers=agent.headers)
                return bool(response.json()["data"]["counts"]["total"] == 1000)

            await wait_until(
                worker_persisted, timeout_s=60, what="the worker to persist 1000 events"
            )
            postgres.stop()
            refused = None
            for first in range(1000, 20_000, 100):
                events = [
                    {"event_id": f"e{n}", "event_type": "request_sent"}
                    for n in range(first, first + 100)
                ]
                response = await client.post(
                    f"/api/runs/{run_id}/events", json={"events": events}, headers=agent.headers
                )
                if response.status_code != 202:
                    refused = response
                    break
                accepted += response.json()["data"]["accepted"]
            assert refused is not None, "ingest never reported a full backlog"
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "backlog_full"
            assert int(refused.headers["Retry-After"]) >= 1
            postgres.start()
            await finish(client, run_id, agent.headers)
            score = await wait_settled(client, run_id, agent.headers, timeout_s=120)
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.output()[-3000:]
        postgres.stop()
    print(f"accepted {accepted} before the backlog filled; persisted {score['counts']['total']}")
    assert accepted >= 3000
    assert score["counts"]["total"] == accepted


async def test_redis_restart_keeps_accepted_events(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, clean: None
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis")
    redis_url = own_redis.start()
    settings = dataclasses.replace(settings, redis_url=redis_url)
    worker = None
    try:
        async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            agent = await new_agent(client)
            run_id = await create_run(client, agent)
            worker = WorkerProcess(settings, tmp_path, "worker")
            accepted = await send_events(client, run_id, agent.headers, first=0, count=2000)
            # The worker must be running, not starting, when Redis goes away.
            deadline = time.monotonic() + 60
            async with pool.acquire() as conn:
                while (await stored_events(conn, run_id))[0] < accepted:
                    assert time.monotonic() < deadline, worker.output()[-3000:]
                    await asyncio.sleep(0.1)
            port = own_redis.port
            own_redis.stop()
            # Longer than the worker's arq poll interval, so its poll meets the outage too.
            await asyncio.sleep(2)
            while_down = await client.post(
                f"/api/runs/{run_id}/events",
                json={"event_id": "down", "event_type": "request_sent"},
                headers=agent.headers,
            )
            own_redis.start(port=port)
            accepted += await send_events(client, run_id, agent.headers, first=2000, count=2000)
            await finish(client, run_id, agent.headers)
            score = await wait_settled(client, run_id, agent.headers, timeout_s=120)
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.output()[-3000:]
        own_redis.stop()
    async with pool.acquire() as conn:
        stored, _ = await stored_events(conn, run_id)
    print(f"accepted {accepted} around a Redis restart; persisted {stored}")
    assert while_down.status_code == 503
    assert while_down.json()["error"] == "service_unavailable"
    assert int(while_down.headers["Retry-After"]) >= 1
    assert accepted == 4000
    assert stored == 4000
    assert score["counts"]["total"] == 4000


async def test_undecodable_entry_goes_to_dead_letters(
    settings: Settings, redis: aioredis.Redis, tmp_path: Path, clean: None
) -> None:
    keys = streams.StreamKeys(0)
    await redis.xgroup_create(keys.events, streams.CONSUMER_GROUP, id="0", mkstream=True)
    await redis.xadd(keys.events, {"n": "2", "batch": b'["not", "a batch"'})
    await redis.incrby(keys.backlog, 2)
    worker = WorkerProcess(settings, tmp_path, "worker")
    try:

        async def dead_lettered() -> bool:
            return await redis.xlen(keys.dead) == 1

        await wait_until(dead_lettered, timeout_s=30, what="the entry to be dead-lettered")
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    assert await redis.xlen(keys.events) == 0
    assert int(await redis.get(keys.backlog)) == 0
    print("sent 1 undecodable entry, persisted 0, dead-lettered 1")


async def test_sigterm_worker_acknowledges_before_exit(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    first = WorkerProcess(settings, tmp_path, "worker-a")
    second = None
    try:
        sender = asyncio.create_task(
            send_events(client, run_id, agent.headers, first=0, count=10_000)
        )

        async def some_persisted() -> bool:
            response = await client.get(f"/api/runs/{run_id}/score", headers=agent.headers)
            return bool(response.json()["data"]["counts"]["total"] >= 1000)

        await wait_until(some_persisted, timeout_s=60, what="worker A to persist 1000 events")
        exit_code = first.stop()
        left_pending = await pending_of(redis, settings, first.process.pid)
        second = WorkerProcess(settings, tmp_path, "worker-b")
        accepted = await sender
        await finish(client, run_id, agent.headers)
        score = await wait_settled(client, run_id, agent.headers, timeout_s=60)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    print(f"sent 10000, accepted {accepted}, persisted {score['counts']['total']}, "
          f"pending after SIGTERM {left_pending}")  # fmt: skip
    assert exit_code == 0, first.output()[-3000:]
    assert left_pending == 0
    assert "worker stopped" in first.output()
    assert score["counts"]["total"] == 10_000


async def test_two_workers_share_without_double_counts(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = dataclasses.replace(settings, stream_batch_size=10)
    agent = await new_agent(client)
    runs = [await create_run(client, agent) for _ in range(4)]
    workers = [WorkerProcess(settings, tmp_path, f"worker-{n}") for n in range(2)]
    try:
        accepted = sum(
            await asyncio.gather(
                *(
                    send_events(client, run_id, agent.headers, first=0, count=5000)
                    for run_id in runs
                )
            )
        )
        for run_id in runs:
            await finish(client, run_id, agent.headers)
        scores = [
            await wait_settled(client, run_id, agent.headers, timeout_s=90) for run_id in runs
        ]
    finally:
        codes = [worker.stop() for worker in workers]
    async with pool.acquire() as conn:
        for run_id in runs:
            await assert_counters_match_recount(conn, run_id)
    print(f"sent 20000 over 4 runs, accepted {accepted}, persisted "
          f"{sum(s['counts']['total'] for s in scores)}, worker exit codes {codes}")  # fmt: skip
    assert codes == [0, 0]
    assert accepted == 20_000
    assert [score["counts"]["total"] for score in scores] == [5000] * 4
    assert "deadlock" not in "".join(worker.output().lower() for worker in workers)
