from __future__ import annotations

import asyncpg

__all__ = ["project_totals", "recent_run_scores"]


async def recent_run_scores(
    conn: asyncpg.Connection, *, project_key: int, limit: int
) -> list[asyncpg.Record]:
    """Return the newest runs of a project with their stored scores, newest first."""
    return await conn.fetch(
        """
        SELECT r.public_id AS run_id, r.status, r.scenario, r.created_at, r.finished_at,
               s.score, s.grade, s.data_loss, s.duplicate, s.timeout, s.recovery
        FROM runs r JOIN run_scores s ON s.run_id = r.id
        WHERE r.project_id = $1
        ORDER BY r.id DESC LIMIT $2
        """,
        project_key,
        limit,
    )


async def project_totals(conn: asyncpg.Connection, *, project_key: int) -> asyncpg.Record:
    """Count a project's runs, its finished or failed runs, and its runs per risk flag."""
    return await conn.fetchrow(
        """
        SELECT count(*) AS runs,
               count(*) FILTER (WHERE r.status IN ('finished', 'failed')) AS final_runs,
               count(*) FILTER (WHERE s.data_loss > 0) AS data_loss,
               count(*) FILTER (WHERE s.duplicate > 0) AS duplicate,
               count(*) FILTER (WHERE s.timeout > 0) AS timeout,
               count(*) FILTER (WHERE s.recovery > 0) AS recovery
        FROM runs r JOIN run_scores s ON s.run_id = r.id
        WHERE r.project_id = $1
        """,
        project_key,
    )
