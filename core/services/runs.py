from __future__ import annotations

import datetime as dt

import asyncpg
import redis.asyncio as aioredis

from core import streams
from core.auth import AgentIdentity
from core.errors import Conflict, NotFound, ValidationFailed
from core.repositories import runs as runs_repo
from core.repositories.runs import RunScope
from core.scoring import RISK_FLAGS
from core.security import new_id
from core.services.ids import require_public_id
from schema.responses import RunOut
from schema.structs import FINAL_STATUSES, RunCreate

__all__ = ["create_run", "delete_run", "finish_run", "load_run", "run_json", "set_run_status"]


def run_json(row: asyncpg.Record) -> RunOut:
    return RunOut(
        id=row["public_id"],
        project_id=row["project_id"],
        agent_id=row["agent_id"],
        status=row["status"],
        target_url=row["target_url"],
        method=row["method"],
        scenario=row["scenario"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        score=row["score"],
        grade=row["grade"],
        risks={flag: row[flag] > 0 for flag in RISK_FLAGS},
    )


async def load_run(conn: asyncpg.Connection, scope: RunScope, public_id: str) -> asyncpg.Record:
    require_public_id("run", public_id)
    row = await runs_repo.get_run(conn, scope, public_id)
    if row is None:
        raise NotFound("run", public_id)
    return row


async def _agent_key_for(
    conn: asyncpg.Connection, agent: AgentIdentity, agent_id: str | None
) -> int:
    if agent_id is None or agent_id == agent.agent_id:
        return agent.agent_key
    require_public_id("agent", agent_id)
    key = await conn.fetchval(
        "SELECT id FROM agents WHERE public_id = $1 AND project_id = $2",
        agent_id,
        agent.project_key,
    )
    if key is None:
        raise NotFound("agent", agent_id)
    return key


async def create_run(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    agent: AgentIdentity,
    body: RunCreate,
    shards: int,
) -> asyncpg.Record:
    """Create a run in the agent key's project and open it for events."""
    if body.project_id is not None and body.project_id != agent.project_id:
        raise NotFound(
            "project", body.project_id, hint="an agent key creates runs only in its own project"
        )
    agent_key = await _agent_key_for(conn, agent, body.agent_id)
    row = await runs_repo.insert_run(
        conn,
        public_id=new_id("run"),
        project_key=agent.project_key,
        agent_key=agent_key,
        status=body.status,
        target_url=body.target_url,
        method=body.method,
        scenario=body.scenario,
    )
    keys = streams.StreamKeys.for_run(row["public_id"], shards)
    await streams.set_run_state(
        redis, keys, run_id=row["public_id"], project_key=agent.project_key, final=False
    )
    return row


async def _close_in_redis(redis: aioredis.Redis, run: asyncpg.Record, shards: int) -> None:
    # Closed in Redis before PostgreSQL: once the state is final, the append script
    # accepts nothing more, so every event accepted before is already in the stream.
    keys = streams.StreamKeys.for_run(run["public_id"], shards)
    await streams.set_run_state(
        redis, keys, run_id=run["public_id"], project_key=run["project_key"], final=True
    )


async def set_run_status(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    run: asyncpg.Record,
    status: str,
    shards: int,
) -> asyncpg.Record:
    if run["status"] in FINAL_STATUSES:
        raise Conflict(
            f"Run {run['public_id']!r} is {run['status']}, which is final; create a new run",
            code="run_finished",
        )
    final = status in FINAL_STATUSES
    if final:
        await _close_in_redis(redis, run, shards)
    now = dt.datetime.now(dt.UTC)
    updated = await runs_repo.update_run_status(
        conn, run_key=run["id"], status=status, final=final, now=now
    )
    if updated is None:
        raise Conflict(f"Run {run['public_id']!r} was finished meanwhile", code="run_finished")
    return updated


async def finish_run(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    run: asyncpg.Record,
    status: str,
    shards: int,
) -> tuple[asyncpg.Record, bool]:
    """Finish a run; return the run and whether this call changed it."""
    if run["status"] in FINAL_STATUSES:
        return run, False
    if status not in FINAL_STATUSES:
        raise ValidationFailed(f"`status` must be one of {', '.join(FINAL_STATUSES)}")
    await _close_in_redis(redis, run, shards)
    now = dt.datetime.now(dt.UTC)
    updated = await runs_repo.update_run_status(
        conn, run_key=run["id"], status=status, final=True, now=now
    )
    if updated is None:
        return await runs_repo.get_run(
            conn, RunScope(project_key=run["project_key"]), run["public_id"]
        ), False
    return updated, True


async def delete_run(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, run: asyncpg.Record, shards: int
) -> None:
    """Delete a run with its events, report and score; stop accepting its events."""
    keys = streams.StreamKeys.for_run(run["public_id"], shards)
    await streams.set_run_state(
        redis, keys, run_id=run["public_id"], project_key=run["project_key"], final=True
    )
    await runs_repo.delete_run(conn, run_key=run["id"])
    await streams.forget_run(redis, keys, run["public_id"])
