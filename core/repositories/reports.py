from __future__ import annotations

import asyncpg

from core.repositories.runs import RunScope

__all__ = [
    "count_reports",
    "delete_report",
    "get_report",
    "get_report_for_run",
    "list_reports",
    "upsert_report",
]

_SELECT = """
SELECT rp.id, rp.public_id, rp.summary, rp.raw_json::text AS raw_json, rp.created_at,
       rp.updated_at, r.public_id AS run_id
FROM reports rp JOIN runs r ON r.id = rp.run_id JOIN projects p ON p.id = r.project_id
"""


async def upsert_report(
    conn: asyncpg.Connection, *, public_id: str, run_key: int, summary: str, raw_json: str
) -> tuple[asyncpg.Record, bool]:
    """Create or replace a run's report, keeping its id; return it and whether it is new."""
    row = await conn.fetchrow(
        """
        INSERT INTO reports (public_id, run_id, summary, raw_json) VALUES ($1, $2, $3, $4)
        ON CONFLICT (run_id) DO UPDATE
            SET summary = EXCLUDED.summary, raw_json = EXCLUDED.raw_json, updated_at = now()
        RETURNING id, (xmax = 0) AS created
        """,
        public_id,
        run_key,
        summary,
        raw_json,
    )
    report = await conn.fetchrow(_SELECT + "WHERE rp.id = $1", row["id"])
    return report, row["created"]


async def get_report_for_run(conn: asyncpg.Connection, *, run_key: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_SELECT + "WHERE rp.run_id = $1", run_key)


async def get_report(
    conn: asyncpg.Connection, scope: RunScope, public_id: str
) -> asyncpg.Record | None:
    condition, params = scope.where(2)
    return await conn.fetchrow(
        _SELECT + f"WHERE rp.public_id = $1 AND {condition}", public_id, *params
    )


async def list_reports(
    conn: asyncpg.Connection, scope: RunScope, *, project_key: int | None, limit: int, offset: int
) -> list[asyncpg.Record]:
    condition, params = scope.where(4)
    return await conn.fetch(
        _SELECT
        + f"""
        WHERE {condition} AND ($1::bigint IS NULL OR r.project_id = $1)
        ORDER BY rp.id DESC LIMIT $2 OFFSET $3
        """,
        project_key,
        limit,
        offset,
        *params,
    )


async def count_reports(
    conn: asyncpg.Connection, scope: RunScope, *, project_key: int | None
) -> int:
    condition, params = scope.where(2)
    return await conn.fetchval(
        f"""
        SELECT count(*) FROM reports rp JOIN runs r ON r.id = rp.run_id
        JOIN projects p ON p.id = r.project_id
        WHERE {condition} AND ($1::bigint IS NULL OR r.project_id = $1)
        """,
        project_key,
        *params,
    )


async def delete_report(conn: asyncpg.Connection, *, report_key: int) -> None:
    await conn.execute("DELETE FROM reports WHERE id = $1", report_key)
