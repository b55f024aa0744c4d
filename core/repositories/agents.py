from __future__ import annotations

import asyncpg

__all__ = [
    "count_agents",
    "delete_agent",
    "get_agent",
    "get_identity_by_key_hash",
    "insert_agent",
    "list_agents",
    "update_agent_key",
]

_SELECT = """
SELECT a.id, a.public_id, a.name, a.last_seen_at, a.created_at, a.updated_at,
       p.public_id AS project_id, p.id AS project_key
FROM agents a JOIN projects p ON p.id = a.project_id
"""


async def insert_agent(
    conn: asyncpg.Connection, *, public_id: str, project_key: int, name: str, key_hash: str
) -> asyncpg.Record:
    agent_key = await conn.fetchval(
        """
        INSERT INTO agents (public_id, project_id, name, key_hash)
        VALUES ($1, $2, $3, $4) RETURNING id
        """,
        public_id,
        project_key,
        name,
        key_hash,
    )
    return await conn.fetchrow(_SELECT + "WHERE a.id = $1", agent_key)


async def get_agent(
    conn: asyncpg.Connection, *, user_key: int, public_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _SELECT + "WHERE a.public_id = $1 AND p.user_id = $2", public_id, user_key
    )


async def list_agents(
    conn: asyncpg.Connection, *, user_key: int, project_key: int | None, limit: int, offset: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        _SELECT
        + """
        WHERE p.user_id = $1 AND ($2::bigint IS NULL OR a.project_id = $2)
        ORDER BY a.id DESC LIMIT $3 OFFSET $4
        """,
        user_key,
        project_key,
        limit,
        offset,
    )


async def count_agents(conn: asyncpg.Connection, *, user_key: int, project_key: int | None) -> int:
    return await conn.fetchval(
        """
        SELECT count(*) FROM agents a JOIN projects p ON p.id = a.project_id
        WHERE p.user_id = $1 AND ($2::bigint IS NULL OR a.project_id = $2)
        """,
        user_key,
        project_key,
    )


async def update_agent_key(
    conn: asyncpg.Connection, *, agent_key: int, key_hash: str
) -> asyncpg.Record:
    await conn.execute(
        "UPDATE agents SET key_hash = $2, updated_at = now() WHERE id = $1", agent_key, key_hash
    )
    return await conn.fetchrow(_SELECT + "WHERE a.id = $1", agent_key)


async def delete_agent(conn: asyncpg.Connection, *, agent_key: int) -> None:
    await conn.execute("DELETE FROM agents WHERE id = $1", agent_key)


async def get_identity_by_key_hash(
    conn: asyncpg.Connection, key_hash: str
) -> asyncpg.Record | None:
    """Find the agent owning a key and mark it seen, in one statement."""
    return await conn.fetchrow(
        """
        UPDATE agents a SET last_seen_at = now()
        FROM projects p
        WHERE a.key_hash = $1 AND p.id = a.project_id
        RETURNING a.id AS agent_key, a.public_id AS agent_id,
                  p.id AS project_key, p.public_id AS project_id
        """,
        key_hash,
    )
