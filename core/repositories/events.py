from __future__ import annotations

import asyncpg

from core.repositories.runs import RunScope

__all__ = ["count_events", "count_scope_events", "get_event", "list_events", "list_scope_events"]

_SELECT = """
SELECT e.public_id, e.event_id, e.event_type, e.severity, e.message, e.payload::text AS payload,
       e.occurred_at, e.received_at, e.created_at, r.public_id AS run_id
FROM events e JOIN runs r ON r.id = e.run_id
"""


async def list_events(
    conn: asyncpg.Connection, *, run_key: int, limit: int, offset: int
) -> list[asyncpg.Record]:
    """List a run's events oldest first, in the order they were persisted."""
    return await conn.fetch(
        _SELECT + "WHERE e.run_id = $1 ORDER BY e.id LIMIT $2 OFFSET $3", run_key, limit, offset
    )


async def count_events(conn: asyncpg.Connection, *, run_key: int) -> int:
    return await conn.fetchval("SELECT count(*) FROM events WHERE run_id = $1", run_key)


async def list_scope_events(
    conn: asyncpg.Connection, scope: RunScope, *, limit: int, offset: int
) -> list[asyncpg.Record]:
    """List the events of every run in scope, newest first."""
    condition, params = scope.where(3)
    return await conn.fetch(
        _SELECT
        + f"""
        JOIN projects p ON p.id = r.project_id
        WHERE {condition} ORDER BY e.id DESC LIMIT $1 OFFSET $2
        """,
        limit,
        offset,
        *params,
    )


async def count_scope_events(conn: asyncpg.Connection, scope: RunScope) -> int:
    # Summed from the score counters, one row per run, instead of counting events.
    condition, params = scope.where(1)
    return await conn.fetchval(
        f"""
        SELECT coalesce(sum(s.info + s.warning + s.error + s.critical), 0)::bigint
        FROM run_scores s JOIN runs r ON r.id = s.run_id JOIN projects p ON p.id = r.project_id
        WHERE {condition}
        """,
        *params,
    )


async def get_event(
    conn: asyncpg.Connection, scope: RunScope, public_id: str
) -> asyncpg.Record | None:
    condition, params = scope.where(2)
    return await conn.fetchrow(
        _SELECT + f"JOIN projects p ON p.id = r.project_id WHERE e.public_id = $1 AND {condition}",
        public_id,
        *params,
    )
