from __future__ import annotations

import asyncpg

__all__ = ["project_totals", "recent_run_scores"]


async def recent_run_scores(
    conn: asyncpg.Connection, *, project_key: int, limit: int
) -> list[asyncpg.Record]:
    """Return the newest runs of a project with their stored scores, newest first.

    The ids come first from the project's index, then only those rows are joined to
    their scores (see `runs.list_runs`).
    """
    return await conn.fetch(
        """
        WITH recent AS MATERIALIZED (
            SELECT id FROM runs WHERE project_id = $1 ORDER BY id DESC LIMIT $2
        )
        SELECT r.public_id AS run_id, r.status, r.scenario, r.created_at, r.finished_at,
               s.score, s.grade, s.data_loss, s.duplicate, s.timeout, s.recovery
        FROM recent JOIN runs r ON r.id = recent.id JOIN run_scores s ON s.run_id = r.id
        ORDER BY r.id DESC
        """,
        project_key,
        limit,
    )


async def project_totals(conn: asyncpg.Connection, *, project_key: int) -> asyncpg.Record:
    """Count a project's runs, its finished runs, and its runs per risk flag.

    Each count reads one index of the project's entries: `runs_status_idx` and
    `run_scores_project_flags_idx`.
    """
    return await conn.fetchrow(
        """
        SELECT runs.*, flags.*
        FROM (SELECT count(*) AS runs,
                     count(*) FILTER (WHERE status = 'finished') AS finished_runs
              FROM runs WHERE project_id = $1) AS runs,
             (SELECT count(*) FILTER (WHERE data_loss > 0) AS data_loss,
                     count(*) FILTER (WHERE duplicate > 0) AS duplicate,
                     count(*) FILTER (WHERE timeout > 0) AS timeout,
                     count(*) FILTER (WHERE recovery > 0) AS recovery
              FROM run_scores WHERE project_id = $1) AS flags
        """,
        project_key,
    )
