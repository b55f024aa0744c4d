from __future__ import annotations

import datetime as dt

import asyncpg

from core.scoring import RISK_FLAGS

__all__ = [
    "RunScope",
    "find_agent_key",
    "find_project_key",
    "count_runs",
    "delete_run",
    "get_run",
    "insert_run",
    "list_runs",
    "update_run_status",
]

_SELECT = """
SELECT r.id, r.public_id, r.status, r.target_url, r.method, r.scenario,
       r.started_at, r.finished_at, r.created_at, r.updated_at,
       p.id AS project_key, p.public_id AS project_id, a.public_id AS agent_id,
       s.score, s.grade, s.data_loss, s.duplicate, s.timeout, s.recovery
FROM runs r
JOIN projects p ON p.id = r.project_id
JOIN run_scores s ON s.run_id = r.id
LEFT JOIN agents a ON a.id = r.agent_id
"""


class RunScope:
    """Whose runs a query may see: a user's (every project they own) or one project's."""

    __slots__ = ("project_key", "user_key")

    def __init__(self, *, user_key: int | None = None, project_key: int | None = None) -> None:
        if (user_key is None) == (project_key is None):
            raise ValueError("a run scope needs exactly one of user_key and project_key")
        self.user_key = user_key
        self.project_key = project_key

    def where(self, param: int) -> tuple[str, list[int]]:
        """Return a condition on the `projects p` of a query, with `$param` as its value."""
        if self.user_key is not None:
            return f"p.user_id = ${param}", [self.user_key]
        assert self.project_key is not None
        return f"p.id = ${param}", [self.project_key]


async def find_project_key(conn: asyncpg.Connection, scope: RunScope, public_id: str) -> int | None:
    condition, params = scope.where(2)
    return await conn.fetchval(
        f"SELECT p.id FROM projects p WHERE p.public_id = $1 AND {condition}", public_id, *params
    )


async def find_agent_key(conn: asyncpg.Connection, scope: RunScope, public_id: str) -> int | None:
    condition, params = scope.where(2)
    return await conn.fetchval(
        f"""
        SELECT a.id FROM agents a JOIN projects p ON p.id = a.project_id
        WHERE a.public_id = $1 AND {condition}
        """,
        public_id,
        *params,
    )


async def insert_run(
    conn: asyncpg.Connection,
    *,
    public_id: str,
    project_key: int,
    agent_key: int | None,
    status: str,
    target_url: str,
    method: str,
    scenario: str,
) -> asyncpg.Record:
    """Insert a run with its zeroed score counters."""
    async with conn.transaction():
        run_key = await conn.fetchval(
            """
            INSERT INTO runs (public_id, project_id, agent_id, status, target_url, method, scenario,
                              started_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $4 = 'running' THEN now() END)
            RETURNING id
            """,
            public_id,
            project_key,
            agent_key,
            status,
            target_url,
            method,
            scenario,
        )
        await conn.execute(
            "INSERT INTO run_scores (run_id, project_id) VALUES ($1, $2)", run_key, project_key
        )
    return await conn.fetchrow(_SELECT + "WHERE r.id = $1", run_key)


async def get_run(
    conn: asyncpg.Connection, scope: RunScope, public_id: str
) -> asyncpg.Record | None:
    condition, params = scope.where(2)
    return await conn.fetchrow(
        _SELECT + f"WHERE r.public_id = $1 AND {condition}", public_id, *params
    )


def _run_filters(
    scope: RunScope,
    *,
    project_key: int | None,
    agent_key: int | None,
    status: str | None,
    flag: str | None,
) -> tuple[str, list[object]]:
    """Return the conditions on `runs r`, `projects p` and `run_scores s`, with their values.

    Only the filters given appear in the SQL, so PostgreSQL plans each combination
    with the indexes that fit it: with a flag and a project, the partial index of
    that flag on `run_scores` yields the project's flagged runs newest first.
    """
    condition, values = scope.where(1)
    conditions = [condition]

    def add(template: str, value: object) -> None:
        values.append(value)
        conditions.append(template.replace("?", f"${len(values)}"))

    project = project_key if project_key is not None else scope.project_key
    if project_key is not None:
        add("r.project_id = ?", project_key)
    if agent_key is not None:
        add("r.agent_id = ?", agent_key)
    if status is not None:
        add("r.status = ?", status)
    if flag is not None:
        if flag not in RISK_FLAGS:
            raise ValueError(f"unknown risk flag {flag!r}")
        conditions.append(f"s.{flag} > 0")
        if project is not None:
            add("s.project_id = ?", project)
    return " AND ".join(conditions), values


async def list_runs(
    conn: asyncpg.Connection,
    scope: RunScope,
    *,
    project_key: int | None,
    agent_key: int | None,
    status: str | None,
    flag: str | None,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    conditions, values = _run_filters(
        scope, project_key=project_key, agent_key=agent_key, status=status, flag=flag
    )
    scores_join = "" if flag is None else "JOIN run_scores s ON s.run_id = r.id"
    count = len(values)
    # The page's ids come first, from the indexes alone; only those rows are then
    # joined to their score and agent. Joined in one query, PostgreSQL may walk the
    # score table's primary key from the newest run down to this project's runs.
    return await conn.fetch(
        f"""
        WITH page AS MATERIALIZED (
            SELECT r.id FROM runs r JOIN projects p ON p.id = r.project_id {scores_join}
            WHERE {conditions}
            ORDER BY r.id DESC LIMIT ${count + 1} OFFSET ${count + 2}
        )
        """
        + _SELECT
        + "JOIN page ON page.id = r.id ORDER BY r.id DESC",
        *values,
        limit,
        offset,
    )


async def count_runs(
    conn: asyncpg.Connection,
    scope: RunScope,
    *,
    project_key: int | None,
    agent_key: int | None,
    status: str | None,
    flag: str | None,
) -> int:
    conditions, values = _run_filters(
        scope, project_key=project_key, agent_key=agent_key, status=status, flag=flag
    )
    scores_join = "" if flag is None else "JOIN run_scores s ON s.run_id = r.id"
    return await conn.fetchval(
        f"""
        SELECT count(*) FROM runs r JOIN projects p ON p.id = r.project_id {scores_join}
        WHERE {conditions}
        """,
        *values,
    )


async def update_run_status(
    conn: asyncpg.Connection, *, run_key: int, status: str, final: bool, now: dt.datetime
) -> asyncpg.Record | None:
    """Set a run's status unless it is already final; return None if it was."""
    run = await conn.fetchval(
        """
        UPDATE runs SET status = $2, updated_at = $3,
               started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, $3)
                                 ELSE started_at END,
               finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END
        WHERE id = $1 AND status NOT IN ('finished', 'failed', 'cancelled')
        RETURNING id
        """,
        run_key,
        status,
        now,
        final,
    )
    if run is None:
        return None
    return await conn.fetchrow(_SELECT + "WHERE r.id = $1", run_key)


async def delete_run(conn: asyncpg.Connection, *, run_key: int) -> None:
    await conn.execute("DELETE FROM runs WHERE id = $1", run_key)
