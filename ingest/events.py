"""Turn an append-events body into stream events and per-index rejections.

A body is one event object or `{"events": [...]}` with 1 to 1,000 events. Events of a
batch are validated one by one, so one bad event rejects only itself.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from core.errors import ValidationFailed
from core.http import MAX_NESTING_HINT, decode_error_message, decode_json, validation_message
from core.security import new_id
from schema.responses import Rejection
from schema.structs import MAX_BATCH_EVENTS, EventIn, StreamEvent

__all__ = ["Rejection", "parse_events"]

_SHAPES = 'send one event object, or {"events": [event, ...]} with 1 to 1000 events'
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])
_event = msgspec.json.Decoder(EventIn)
_event_list = msgspec.json.Decoder(list[msgspec.Raw])
_NULL = msgspec.Raw(b"null")


def _to_stream_event(event: EventIn) -> StreamEvent:
    public_id = new_id("evt")
    return StreamEvent(
        public_id=public_id,
        event_id=event.event_id if event.event_id is not None else public_id,
        event_type=event.event_type,
        severity=event.severity,
        message=event.message,
        payload=event.payload if event.payload is not msgspec.UNSET else _NULL,
        occurred_at=event.occurred_at,
    )


def _top_level_fields(body: bytes) -> dict[str, msgspec.Raw]:
    if not body.strip():
        raise ValidationFailed(f"Request body is empty; {_SHAPES}")
    try:
        return _top_level.decode(body)
    except msgspec.ValidationError:
        raise ValidationFailed(f"Request body must be a JSON object: {_SHAPES}") from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"{decode_error_message(body, exc)}; {_SHAPES}") from None
    except RecursionError:
        raise ValidationFailed(f"Request body is {MAX_NESTING_HINT}") from None


def _decode_event(raw: msgspec.Raw, index: int) -> EventIn | Rejection:
    try:
        return _event.decode(raw)
    except msgspec.ValidationError as exc:
        message = validation_message(str(exc))
    except msgspec.DecodeError as exc:
        message = f"event is not valid JSON text ({exc}); send it in UTF-8"
    except RecursionError:
        message = f"event is {MAX_NESTING_HINT}"
    return Rejection(index, "validation_failed", message)


def parse_events(body: bytes) -> tuple[int, list[StreamEvent], list[Rejection]]:
    """Validate a body into `(accepted count, distinct events, rejections)`.

    Raises `ValidationFailed` for a bad shape or a bad single event. An event whose
    `event_id` repeats an earlier one of the same batch counts as accepted (the
    unique index would drop it anyway) but travels only once.
    """
    fields = _top_level_fields(body)
    if "events" not in fields:
        return 1, [_to_stream_event(decode_json(body, _event))], []
    if len(fields) > 1:
        extra = sorted(name for name in fields if name != "events")
        raise ValidationFailed(f"Unexpected fields {extra} beside `events`; {_SHAPES}")
    try:
        raw_events = _event_list.decode(fields["events"])
    except (msgspec.ValidationError, RecursionError):
        raise ValidationFailed(f"`events` must be an array; {_SHAPES}") from None
    if not 1 <= len(raw_events) <= MAX_BATCH_EVENTS:
        raise ValidationFailed(
            f"`events` has {len(raw_events)} events; send 1 to {MAX_BATCH_EVENTS} per request"
        )
    accepted = 0
    events: list[StreamEvent] = []
    rejected: list[Rejection] = []
    seen_ids: set[str] = set()
    for index, raw in enumerate(raw_events):
        event = _decode_event(raw, index)
        if isinstance(event, Rejection):
            rejected.append(event)
            continue
        accepted += 1
        if event.event_id is not None:
            if event.event_id in seen_ids:
                continue
            seen_ids.add(event.event_id)
        events.append(_to_stream_event(event))
    return accepted, events, rejected


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
