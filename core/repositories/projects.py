from __future__ import annotations

import asyncpg

__all__ = [
    "count_projects",
    "delete_project",
    "get_project",
    "insert_project",
    "list_projects",
    "taken_slugs",
    "update_project",
]

_COLUMNS = "id, public_id, name, slug, description, base_url, created_at, updated_at"


async def taken_slugs(conn: asyncpg.Connection, *, user_key: int, base: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT slug FROM projects WHERE user_id = $1 AND (slug = $2 OR slug LIKE $3)",
        user_key,
        base,
        base + "-%",
    )
    return {row["slug"] for row in rows}


async def insert_project(
    conn: asyncpg.Connection,
    *,
    public_id: str,
    user_key: int,
    name: str,
    slug: str,
    description: str,
    base_url: str,
) -> asyncpg.Record | None:
    """Insert a project; return None when the slug was taken in the meantime."""
    return await conn.fetchrow(
        f"""
        INSERT INTO projects (public_id, user_id, name, slug, description, base_url)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (user_id, slug) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        public_id,
        user_key,
        name,
        slug,
        description,
        base_url,
    )


async def get_project(
    conn: asyncpg.Connection, *, user_key: int, public_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM projects WHERE public_id = $1 AND user_id = $2",
        public_id,
        user_key,
    )


async def list_projects(
    conn: asyncpg.Connection, *, user_key: int, limit: int, offset: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM projects WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
        user_key,
        limit,
        offset,
    )


async def count_projects(conn: asyncpg.Connection, *, user_key: int) -> int:
    return await conn.fetchval("SELECT count(*) FROM projects WHERE user_id = $1", user_key)


async def update_project(
    conn: asyncpg.Connection, *, project_key: int, name: str, description: str, base_url: str
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""
        UPDATE projects SET name = $2, description = $3, base_url = $4, updated_at = now()
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        project_key,
        name,
        description,
        base_url,
    )


async def delete_project(conn: asyncpg.Connection, *, project_key: int) -> list[str]:
    """Delete a project with its agents, runs, events and reports; return its run ids."""
    run_ids = await conn.fetch("SELECT public_id FROM runs WHERE project_id = $1", project_key)
    await conn.execute("DELETE FROM projects WHERE id = $1", project_key)
    return [row["public_id"] for row in run_ids]
