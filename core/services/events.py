from __future__ import annotations

import asyncpg
import msgspec
from starlette.requests import Request

from core.errors import ValidationFailed
from core.http import query_param
from core.repositories.events import EventFilter
from schema.responses import EventOut
from schema.structs import SEVERITIES

__all__ = ["event_filter", "event_json"]

MAX_EVENT_TYPE_CHARS = 120


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


def event_filter(request: Request) -> EventFilter:
    """Read the `event_type` and `severity` query parameters of an event listing.

    `event_type` follows the rule ingest applies to stored types (at most 120
    characters, no U+0000), so every stored type can be filtered on.
    """
    event_type = query_param(request, "event_type")
    if event_type is not None and (len(event_type) > MAX_EVENT_TYPE_CHARS or "\x00" in event_type):
        raise ValidationFailed(
            f"Query parameter `event_type` must be at most {MAX_EVENT_TYPE_CHARS} characters "
            "without U+0000, such as request_timeout"
        )
    severity = query_param(request, "severity")
    if severity is not None and severity not in SEVERITIES:
        raise ValidationFailed(f"Query parameter `severity` must be one of {', '.join(SEVERITIES)}")
    return EventFilter(event_type=event_type, severity=severity)
