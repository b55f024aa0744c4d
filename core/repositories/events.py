from __future__ import annotations

import asyncpg

__all__ = ["count_events", "get_event", "list_events"]

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


async def get_event(
    conn: asyncpg.Connection, *, user_key: int, public_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _SELECT
        + "JOIN projects p ON p.id = r.project_id WHERE e.public_id = $1 AND p.user_id = $2",
        public_id,
        user_key,
    )
