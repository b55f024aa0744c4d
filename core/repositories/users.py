from __future__ import annotations

import asyncpg

__all__ = ["get_user_by_email", "get_user_by_public_id", "insert_user"]

_COLUMNS = "id, public_id, email, name, password_hash, created_at"


async def insert_user(
    conn: asyncpg.Connection, *, public_id: str, email: str, name: str, password_hash: str
) -> asyncpg.Record | None:
    """Insert a user; return None when the email is already registered."""
    return await conn.fetchrow(
        f"""
        INSERT INTO users (public_id, email, name, password_hash)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT ((lower(email))) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        public_id,
        email,
        name,
        password_hash,
    )


async def get_user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
    )


async def get_user_by_public_id(conn: asyncpg.Connection, public_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE public_id = $1", public_id)
