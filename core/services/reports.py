from __future__ import annotations

import asyncpg
import msgspec

from core.errors import NotFound
from core.repositories import reports as reports_repo
from core.repositories.runs import RunScope
from core.security import new_id
from core.services.ids import require_public_id
from schema.responses import ReportOut
from schema.structs import ReportIn

__all__ = ["load_report", "load_report_for_run", "report_json", "submit_report"]


def report_json(row: asyncpg.Record) -> ReportOut:
    return ReportOut(
        id=row["public_id"],
        run_id=row["run_id"],
        summary=row["summary"],
        raw_json=msgspec.Raw(row["raw_json"].encode()),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def submit_report(
    conn: asyncpg.Connection, *, run: asyncpg.Record, body: ReportIn
) -> tuple[asyncpg.Record, bool]:
    assert body.raw_json is not msgspec.UNSET
    return await reports_repo.upsert_report(
        conn,
        public_id=new_id("rpt"),
        run_key=run["id"],
        summary=body.summary,
        raw_json=bytes(body.raw_json).decode(),
    )


async def load_report_for_run(conn: asyncpg.Connection, *, run: asyncpg.Record) -> asyncpg.Record:
    row = await reports_repo.get_report_for_run(conn, run_key=run["id"])
    if row is None:
        raise NotFound("report", hint=f"run {run['public_id']!r} has no report yet; submit one")
    return row


async def load_report(conn: asyncpg.Connection, scope: RunScope, public_id: str) -> asyncpg.Record:
    require_public_id("report", public_id)
    row = await reports_repo.get_report(conn, scope, public_id)
    if row is None:
        raise NotFound("report", public_id)
    return row
