"""Accounts, agents and runs made through the service's own HTTP routes, and drain checks."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Iterable, Sequence

import asyncpg
import httpx
import redis.asyncio as aioredis

from benchmarks.harness import SHARDS
from benchmarks.loadgen import AgentTarget
from core import streams

__all__ = [
    "Account",
    "Run",
    "backlog_events",
    "create_account",
    "create_runs",
    "finish_runs",
    "run_keys",
    "score_of",
    "targets",
    "wait_drained",
]

_TIMEOUT = httpx.Timeout(30.0)


@dataclasses.dataclass(frozen=True)
class Account:
    token: str
    project_id: str
    agent_keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Run:
    public_id: str
    agent_key: str


def _data(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} returned "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response.json()["data"]  # type: ignore[no-any-return]


async def create_account(api_url: str, *, agents: int) -> Account:
    """Register a user, create a project and `agents` agents; return their keys."""
    async with httpx.AsyncClient(base_url=api_url, timeout=_TIMEOUT) as client:
        account = _data(
            await client.post(
                "/api/auth/register",
                json={
                    "email": f"bench-{secrets.token_hex(4)}@example.com",
                    "password": secrets.token_urlsafe(16),
                    "name": "Benchmark",
                },
            )
        )
        auth = {"Authorization": f"Bearer {account['token']}"}
        project = _data(
            await client.post("/api/projects", json={"name": "Benchmark project"}, headers=auth)
        )
        keys = []
        for index in range(agents):
            created = _data(
                await client.post(
                    f"/api/projects/{project['id']}/agents",
                    json={"name": f"agent {index}"},
                    headers=auth,
                )
            )
            keys.append(created["api_key"])
    return Account(token=account["token"], project_id=project["id"], agent_keys=tuple(keys))


async def create_runs(ingest_url: str, agent_keys: Iterable[str]) -> list[Run]:
    """Create one open run per agent key, through the ingest route agents use."""
    async with httpx.AsyncClient(base_url=ingest_url, timeout=_TIMEOUT) as client:

        async def create(key: str) -> Run:
            run = _data(
                await client.post(
                    "/api/runs",
                    json={"target_url": "https://orders.example.com/orders", "scenario": "bench"},
                    headers={"X-Agent-Key": key},
                )
            )
            return Run(public_id=run["id"], agent_key=key)

        return list(await asyncio.gather(*(create(key) for key in agent_keys)))


async def finish_runs(ingest_url: str, runs: Sequence[Run]) -> None:
    async with httpx.AsyncClient(base_url=ingest_url, timeout=_TIMEOUT) as client:

        async def finish(run: Run) -> None:
            _data(
                await client.post(
                    f"/api/runs/{run.public_id}/finish", headers={"X-Agent-Key": run.agent_key}
                )
            )

        await asyncio.gather(*(finish(run) for run in runs))


async def score_of(api_url: str, run: Run) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=api_url, timeout=_TIMEOUT) as client:
        return _data(
            await client.get(
                f"/api/runs/{run.public_id}/score", headers={"X-Agent-Key": run.agent_key}
            )
        )


def targets(runs: Sequence[Run]) -> list[AgentTarget]:
    """One load-generator agent per run, posting to the run's events route."""
    return [
        AgentTarget(
            run_id=run.public_id,
            path=f"/api/runs/{run.public_id}/events",
            headers=f"X-Agent-Key: {run.agent_key}\r\n",
        )
        for run in runs
    ]


async def run_keys(conn: asyncpg.Connection, runs: Sequence[Run]) -> dict[str, int]:
    """Map public run ids to the internal keys that `run_scores` and `events` use."""
    rows = await conn.fetch(
        "SELECT id, public_id FROM runs WHERE public_id = ANY($1::text[])",
        [run.public_id for run in runs],
    )
    return {row["public_id"]: row["id"] for row in rows}


async def backlog_events(redis: aioredis.Redis) -> int:
    """Events accepted by ingest and not yet acknowledged by a worker, over all shards."""
    values = await redis.mget([streams.StreamKeys(shard).backlog for shard in range(SHARDS)])
    return sum(int(value) for value in values if value is not None)


async def processed_events(conn: asyncpg.Connection, keys: Iterable[int]) -> int:
    value = await conn.fetchval(
        "SELECT coalesce(sum(processed_events), 0) FROM run_scores WHERE run_id = ANY($1)",
        list(keys),
    )
    return int(value)


async def wait_drained(
    redis: aioredis.Redis,
    conn: asyncpg.Connection,
    keys: Iterable[int],
    *,
    expected: int,
    timeout_s: float,
    poll_s: float = 0.01,
) -> float:
    """Poll until the backlog is empty and the runs' processed events reach `expected`.

    Returns the `time.perf_counter()` at which both held. Workers acknowledge an
    entry only after its transaction committed, so an empty backlog already means
    committed. The PostgreSQL check confirms the count.
    """
    key_list = list(keys)
    deadline = time.perf_counter() + timeout_s
    while True:
        now = time.perf_counter()
        if await backlog_events(redis) == 0:
            done = await processed_events(conn, key_list)
            if done >= expected:
                return now
        if now > deadline:
            done = await processed_events(conn, key_list)
            raise TimeoutError(
                f"not drained within {timeout_s:.0f} s: {await backlog_events(redis)} events in "
                f"the backlog, {done} of {expected} processed"
            )
        await asyncio.sleep(poll_s)
