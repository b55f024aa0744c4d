from __future__ import annotations

import asyncpg

from schema.migrate import apply_migrations, pending_migrations

EXPECTED_TABLES = {
    "users",
    "projects",
    "agents",
    "runs",
    "run_scores",
    "events",
    "reports",
    "stream_entries_done",
    "schema_migrations",
}


async def test_migrations_create_every_table(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert EXPECTED_TABLES <= {row["tablename"] for row in rows}


async def test_migrations_twice_is_noop(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await apply_migrations(conn) == []
        assert await pending_migrations(conn) == []


async def test_migrations_create_indexes(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    names = {row["indexname"] for row in rows}
    for index in (
        "events_run_event_id_key",
        "events_run_id_idx",
        "runs_project_id_idx",
        "users_email_key",
        "projects_user_slug_key",
    ):
        assert index in names


async def test_events_cascade_with_run(pool: asyncpg.Pool) -> None:
    rule = await pool.fetchval(
        """
        SELECT confdeltype::text FROM pg_constraint
        WHERE conrelid = 'events'::regclass AND contype = 'f'
        """
    )
    assert rule == "c"
