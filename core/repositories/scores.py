from __future__ import annotations

import asyncpg

__all__ = ["get_score_row", "recount_events"]


async def get_score_row(conn: asyncpg.Connection, *, run_key: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT s.*, r.status FROM run_scores s JOIN runs r ON r.id = s.run_id WHERE s.run_id = $1
        """,
        run_key,
    )


async def recount_events(conn: asyncpg.Connection, *, run_key: int) -> list[asyncpg.Record]:
    """Count a run's events by type and severity from the events table itself."""
    return await conn.fetch(
        """
        SELECT event_type, severity, count(*) AS n FROM events WHERE run_id = $1
        GROUP BY event_type, severity
        """,
        run_key,
    )
