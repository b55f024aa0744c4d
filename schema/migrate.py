"""Apply the SQL files in `schema/migrations` in name order, each once.

Applied versions are recorded in `schema_migrations`. An advisory lock makes
concurrent runs (several services starting at once) wait for each other instead of
applying a file twice, so running the migrations again is a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

__all__ = ["MIGRATIONS_DIR", "apply_migrations", "pending_migrations"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every process that migrates this database.
_ADVISORY_LOCK_ID = 0x5AC10D


def _migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("*.sql"))


async def _applied_versions(conn: asyncpg.Connection) -> set[str]:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    text PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return {row["version"] for row in rows}


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    applied = await _applied_versions(conn)
    return [path.stem for path in _migration_files() if path.stem not in applied]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their versions."""
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_ID)
    try:
        applied = await _applied_versions(conn)
        done: list[str] = []
        for path in _migration_files():
            if path.stem in applied:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text(encoding="utf-8"))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            log.info("applied migration %s", path.stem)
            done.append(path.stem)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_ID)
