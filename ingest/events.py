"""Turn an append-events body into a stream entry and per-index rejections.

A body is one event object or `{"events": [...]}` with 1 to 1,000 events. Events of a
batch are validated one by one, so one bad event rejects only itself.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from core.errors import ValidationFailed
from core.http import MAX_NESTING_HINT, decode_error_message, decode_json, validation_message
from schema.responses import Rejection
from schema.structs import (
    MAX_BATCH_EVENTS,
    MAX_PAYLOAD_BYTES,
    CommonBatch,
    CommonEventIn,
    EventIn,
    StreamBatch,
    StreamEvent,
    common_events_valid,
)

__all__ = ["Parsed", "Rejection", "parse_events"]

_SHAPES = 'send one event object, or {"events": [event, ...]} with 1 to 1000 events'
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])
_event = msgspec.json.Decoder(EventIn)
_event_list = msgspec.json.Decoder(list[msgspec.Raw])
_valid_events = msgspec.json.Decoder(list[EventIn])
_NULL = msgspec.Raw(b"null")


# A body travels as sent only while it is at most this large per event, which is an
# event's largest payload plus room for its other fields. Whitespace and unknown fields
# beyond that would otherwise take Redis memory that the backlog limit, counted in
# events, does not see.
MAX_SENT_BYTES_PER_EVENT = MAX_PAYLOAD_BYTES + 64 * 1024
_common_batch = msgspec.json.Decoder(CommonBatch)
_entry_encoder = msgspec.json.Encoder()
_event_id = operator.attrgetter("event_id")


class Parsed(NamedTuple):
    """The result of `parse_events` for one body."""

    accepted: int  # repeats of an `event_id` within the body included
    rejected: list[Rejection]
    field: str  # the stream entry's field: "batch" (a StreamBatch) or "body" (a SentBatch)
    count: int  # events in the entry: each `event_id` travels once
    entry: bytes  # empty when no event was accepted


def _new_event_ids(count: int) -> list[str]:
    """`count` public event ids from one read of the CSPRNG instead of one per event."""
    return ["evt_" + digits for digits in os.urandom(16 * count).hex(" ", -16).split()]


def _top_level_fields(body: bytes) -> dict[str, msgspec.Raw]:
    if not body or body.isspace():
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


def parse_events(body: bytes, *, run_id: str, received_at: dt.datetime) -> Parsed:
    """Validate a body and encode the stream entry of its accepted events.

    Raises `ValidationFailed` for a bad shape or a bad single event. An event whose
    `event_id` repeats an earlier one of the same batch counts as accepted (the
    unique index would drop it anyway) but travels only once.
    """
    common = _decode_common(body)
    if (
        common is not None
        and len(body) <= len(common) * MAX_SENT_BYTES_PER_EVENT
        and _distinct_event_ids(common)
    ):
        # Encoded as the array a `SentBatch` decodes from, with the body copied in.
        sent = (run_id, received_at, os.urandom(12).hex(), msgspec.Raw(body))
        return Parsed(len(common), [], "body", len(common), _entry_encoder.encode(sent))
    if common is not None:
        accepted, events, rejected = len(common), _stream_events(common), []
    else:
        accepted, events, rejected = _parse_checked(body)
    if not events:
        return Parsed(accepted, rejected, "batch", 0, b"")
    entry = _entry_encoder.encode(StreamBatch(run_id, received_at, events))
    return Parsed(accepted, rejected, "batch", len(events), entry)


def _distinct_event_ids(events: list[CommonEventIn]) -> bool:
    """Return whether no two events have the same `event_id` (None is no id)."""
    event_ids = list(map(_event_id, events))  # map() with attrgetter loops in C
    missing = event_ids.count(None)
    distinct = set(event_ids)
    return len(distinct) - (1 if missing else 0) == len(event_ids) - missing


def _parse_checked(body: bytes) -> tuple[int, list[StreamEvent], list[Rejection]]:
    """Validate a body into `(accepted count, distinct events, rejections)`.

    Every event is decoded with `EventIn`'s own checks, so every problem is named.
    """
    fields = _top_level_fields(body)
    if "events" not in fields:
        return 1, _stream_events([decode_json(body, _event)]), []
    if len(fields) > 1:
        extra = sorted(name for name in fields if name != "events")
        raise ValidationFailed(f"Unexpected fields {extra} beside `events`; {_SHAPES}")
    decoded = _decode_batch(fields["events"])
    if not 1 <= len(decoded) <= MAX_BATCH_EVENTS:
        raise ValidationFailed(
            f"`events` has {len(decoded)} events; send 1 to {MAX_BATCH_EVENTS} per request"
        )
    valid = [event for event in decoded if not isinstance(event, Rejection)]
    rejected = [event for event in decoded if isinstance(event, Rejection)]
    return len(valid), _stream_events(valid), rejected


def _decode_common(body: bytes) -> list[CommonEventIn] | None:
    """Decode a batch of valid events in the common form, else return None.

    This fast path of `parse_events` decodes without a Python call per event and then
    runs `common_events_valid`. On None the caller takes the checked path, which
    names every problem.
    """
    try:
        events = _common_batch.decode(body).events
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if not 1 <= len(events) <= MAX_BATCH_EVENTS or not common_events_valid(body, events):
        return None
    return events


def _stream_events(valid: Sequence[EventIn | CommonEventIn]) -> list[StreamEvent]:
    """Give each event a public id and drop repeats of an `event_id` within the batch."""
    events: list[StreamEvent] = []
    seen_ids: set[str] = set()
    for event, public_id in zip(valid, _new_event_ids(len(valid)), strict=True):
        event_id = event.event_id
        if event_id is None:
            event_id = public_id
        elif event_id in seen_ids:
            continue
        else:
            seen_ids.add(event_id)
        payload = event.payload
        events.append(
            StreamEvent(
                public_id,
                event_id,
                event.event_type,
                event.severity,
                event.message,
                _NULL if payload is msgspec.UNSET else payload,
                event.occurred_at,
            )
        )
    return events


def _decode_batch(raw_events: msgspec.Raw) -> list[EventIn] | list[EventIn | Rejection]:
    """Decode `events`, in one pass when all are valid, else one by one for the rejections."""
    try:
        return _valid_events.decode(raw_events)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        pass
    try:
        items = _event_list.decode(raw_events)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        raise ValidationFailed(f"`events` must be an array; {_SHAPES}") from None
    return [_decode_event(raw, index) for index, raw in enumerate(items)]


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
