from __future__ import annotations

import asyncpg
import msgspec

from schema.responses import EventOut

__all__ = ["event_json"]


def event_json(row: asyncpg.Record) -> EventOut:
    payload = row["payload"]
    return EventOut(
        id=row["public_id"],
        run_id=row["run_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        severity=row["severity"],
        message=row["message"],
        # The stored JSON text, sent as it is instead of being decoded and re-encoded.
        payload=msgspec.Raw(payload.encode()) if payload is not None else None,
        occurred_at=row["occurred_at"],
        received_at=row["received_at"],
        created_at=row["created_at"],
    )
