from __future__ import annotations

import asyncpg
import msgspec

from core.repositories.runs import RunScope

__all__ = [
    "EVERY_EVENT",
    "EventFilter",
    "count_events",
    "count_scope_events",
    "get_event",
    "list_events",
    "list_scope_events",
]

_SELECT = """
SELECT e.public_id, e.event_id, e.event_type, e.severity, e.message, e.payload::text AS payload,
       e.occurred_at, e.received_at, e.created_at, r.public_id AS run_id
FROM events e JOIN runs r ON r.id = e.run_id
"""


class EventFilter(msgspec.Struct, frozen=True):
    """The event type and severity a run's event listing keeps; None keeps every value."""

    event_type: str | None = None
    severity: str | None = None

    def where(self, run_param: int) -> tuple[str, list[str]]:
        """Return a condition on `events e` for run `$run_param`, with the values it adds."""
        condition = f"e.run_id = ${run_param}"
        values: list[str] = []
        for column in ("event_type", "severity"):
            value = getattr(self, column)
            if value is not None:
                values.append(value)
                condition += f" AND e.{column} = ${run_param + len(values)}"
        return condition, values


EVERY_EVENT = EventFilter()


async def list_events(
    conn: asyncpg.Connection,
    *,
    run_key: int,
    limit: int,
    offset: int,
    only: EventFilter = EVERY_EVENT,
) -> list[asyncpg.Record]:
    """List a run's events oldest first, in the order they were persisted."""
    condition, values = only.where(3)
    return await conn.fetch(
        _SELECT + f"WHERE {condition} ORDER BY e.id LIMIT $1 OFFSET $2",
        limit,
        offset,
        run_key,
        *values,
    )


async def count_events(
    conn: asyncpg.Connection, *, run_key: int, only: EventFilter = EVERY_EVENT
) -> int:
    condition, values = only.where(1)
    return await conn.fetchval(f"SELECT count(*) FROM events e WHERE {condition}", run_key, *values)


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
