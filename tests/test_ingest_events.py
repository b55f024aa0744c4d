"""`parse_events` against its fully checked path, body by body.

The fast path must give every body the same result as decoding each event with
`EventIn`: the same count, events and rejections, or the same error message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec
import pytest

from core.errors import ValidationFailed
from core.security import is_public_id
from ingest.events import _decode_common, _parse_checked, parse_events
from schema.structs import MAX_PAYLOAD_BYTES, decode_entry, entry_events

Outcome = tuple[int, list[tuple[object, ...]], list[tuple[int, str, str]]] | str


def _event(**fields: object) -> dict[str, object]:
    return {"event_type": "request_sent", **fields}


def _batch(*events: object) -> bytes:
    return msgspec.json.encode({"events": list(events)})


def _events_text(*events: bytes) -> bytes:
    return b'{"events":[' + b",".join(events) + b"]}"


RUN_ID = "run_" + "0" * 32
RECEIVED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _rows(events: Iterable[tuple[str, str, object]]) -> list[tuple[object, ...]]:
    """Rows of an outcome, without the random public ids but noting where one is the id."""
    return [
        (
            "<public id>" if event_id == public_id else event_id,
            event.event_type,  # type: ignore[attr-defined]
            event.severity,  # type: ignore[attr-defined]
            event.message,  # type: ignore[attr-defined]
            bytes(event.payload),  # type: ignore[attr-defined]
            event.occurred_at,  # type: ignore[attr-defined]
        )
        for public_id, event_id, event in events
    ]


def _checked_outcome(body: bytes) -> Outcome:
    try:
        accepted, events, rejected = _parse_checked(body)
    except ValidationFailed as exc:
        return exc.message
    rows = _rows((event.public_id, event.event_id, event) for event in events)
    return accepted, rows, [(r.index, r.error, r.message) for r in rejected]


def _parsed_outcome(body: bytes) -> Outcome:
    """Parse a body and decode its stream entry as a worker does."""
    try:
        parsed = parse_events(body, run_id=RUN_ID, received_at=RECEIVED_AT)
    except ValidationFailed as exc:
        return exc.message
    rows: list[tuple[object, ...]] = []
    if parsed.count:
        batch = decode_entry({parsed.field.encode(): parsed.entry})
        assert (batch.run_id, batch.received_at) == (RUN_ID, RECEIVED_AT)
        rows = _rows(entry_events(batch))
    assert len(rows) == parsed.count
    return parsed.accepted, rows, [(r.index, r.error, r.message) for r in parsed.rejected]


COMMON_BODIES = {
    "plain batch": _batch(
        _event(
            event_id="e-1",
            severity="warning",
            message="POST /orders order-00001",
            payload={"marker": "order-00001", "attempt": 1},
            occurred_at="2025-06-01T12:00:00Z",
        ),
        _event(event_id="e-2", payload=None),
        _event(),
    ),
    "repeated event id": _batch(_event(event_id="same"), _event(event_id="same")),
    "ids and no ids": _batch(_event(event_id="a"), _event(), _event(event_id="b"), _event()),
    "repeat among no ids": _batch(_event(), _event(event_id="a"), _event(), _event(event_id="a")),
    "non-ASCII text": _batch(_event(message="café ✓", payload={"note": "naïve"})),
    "escaped quote": _batch(_event(message='say "hi"\n')),
    "large number in a message only": _batch(_event(message="node e1234 of 1e5000")),
    "exponent of 300": _events_text(b'{"event_type":"ab","payload":[1e300, -2.5E-300]}'),
    "unknown event field": _batch(_event(agent_version="1.2")),
    "time with an offset": _batch(_event(occurred_at="2025-06-01T12:00:00+05:30")),
    "1000 digits": _events_text(b'{"event_type":"ab","payload":' + b"7" * 1000 + b"}"),
    "payload of exactly 1 MiB": _batch(_event(payload="a" * (MAX_PAYLOAD_BYTES - 2))),
}

OTHER_BODIES = {
    "WARN severity": _batch(_event(severity="WARN")),
    "capitalised severity": _batch(_event(severity="Error")),
    "empty severity": _batch(_event(severity="")),
    "unknown severity": _batch(_event(severity="fatal"), _event()),
    "time without a zone": _batch(_event(occurred_at="2025-06-01T12:00:00")),
    "time before 1970": _batch(_event(occurred_at="1969-12-31T23:59:59Z")),
    "time after 9000": _batch(_event(occurred_at="9000-01-01T00:00:00Z")),
    "time near year 1": _batch(_event(occurred_at="0001-01-01T00:30:00+01:00")),
    "time near year 9999": _batch(_event(occurred_at="9999-12-31T23:30:00-01:00")),
    "NUL in message": _batch(_event(message="a\x00b")),
    "NUL in event type": _batch(_event(event_type="ab\x00")),
    "NUL in event id": _batch(_event(event_id="\x00")),
    "NUL in payload": _batch(_event(payload={"k": "a\x00"})),
    "NUL in payload key": _batch(_event(payload={"a\x00": 1})),
    "escaped backslash u": _batch(_event(message="C:\\users")),
    "surrogate pair": _events_text(b'{"event_type":"ab","message":"\\ud83d\\ude00"}'),
    "lone surrogate in payload": _events_text(b'{"event_type":"ab","payload":"\\ud800"}'),
    "lone surrogate in message": _events_text(b'{"event_type":"ab","message":"\\udc00"}'),
    "invalid UTF-8 in payload": _events_text(
        b'{"event_type":"ab"}', b'{"event_type":"ab","payload":{"note":"caf\xe9"}}'
    ),
    "invalid UTF-8 in message": _events_text(b'{"event_type":"ab","message":"caf\xe9"}'),
    "exponent of 1000": _events_text(b'{"event_type":"ab","payload":[1E1000, 1e-1000]}'),
    "exponent beyond 1000": _events_text(b'{"event_type":"ab","payload":[1e1001]}'),
    "negative exponent beyond 1000": _events_text(b'{"event_type":"ab","payload":1E-01001}'),
    "1001 digits": _events_text(b'{"event_type":"ab","payload":' + b"7" * 1001 + b"}"),
    "payload over 1 MiB": _batch(_event(payload="a" * MAX_PAYLOAD_BYTES)),
    "short event type": _batch(_event(event_type="a"), _event()),
    "missing event type": _batch({"message": "m"}),
    "long message": _batch(_event(message="m" * 1001)),
    "empty event id": _batch(_event(event_id="")),
    "long event id": _batch(_event(event_id="i" * 101)),
    "event not an object": _events_text(b'{"event_type":"ab"}', b"[1]"),
    "deep payload": _events_text(b'{"event_type":"ab","payload":' + b"[" * 5000 + b"]" * 5000),
    "extra top-level field": msgspec.json.encode({"events": [_event()], "run": "x"}),
    "events not an array": b'{"events":{"event_type":"ab"}}',
    "no events": _batch(),
    "1001 events": _batch(*[_event()] * 1001),
    "single event": msgspec.json.encode(_event(severity="WARN", payload=[1])),
    "single invalid event": msgspec.json.encode(_event(severity="fatal")),
    "bare array": b"[]",
    "empty body": b"",
    "invalid JSON": b'{"events":[',
}


@pytest.mark.parametrize("body", COMMON_BODIES.values(), ids=COMMON_BODIES.keys())
def test_common_body_takes_fast_path(body: bytes) -> None:
    assert _decode_common(body) is not None


@pytest.mark.parametrize("body", OTHER_BODIES.values(), ids=OTHER_BODIES.keys())
def test_other_body_takes_checked_path(body: bytes) -> None:
    assert _decode_common(body) is None


@pytest.mark.parametrize(
    "body",
    [*COMMON_BODIES.values(), *OTHER_BODIES.values()],
    ids=[*COMMON_BODIES.keys(), *OTHER_BODIES.keys()],
)
def test_parse_events_matches_checked_path(body: bytes) -> None:
    assert _parsed_outcome(body) == _checked_outcome(body)


def test_common_body_travels_as_sent() -> None:
    body = COMMON_BODIES["plain batch"]
    parsed = parse_events(body, run_id=RUN_ID, received_at=RECEIVED_AT)
    assert parsed.field == "body"
    assert body in parsed.entry


@pytest.mark.parametrize(
    ("name", "travelling"),
    [("plain batch", ("body", 3, 3)), ("ids and no ids", ("body", 4, 4)),
     ("repeated event id", ("batch", 2, 1)), ("repeat among no ids", ("batch", 4, 3))],
)  # fmt: skip
def test_repeated_event_id_travels_once(name: str, travelling: tuple[str, int, int]) -> None:
    parsed = parse_events(COMMON_BODIES[name], run_id=RUN_ID, received_at=RECEIVED_AT)
    assert (parsed.field, parsed.accepted, parsed.count) == travelling


SAME_ID = {"event_id": "same"}
PUBLIC_ID_BATCHES = {
    "no event ids (sent as is)": [_event()] * 1000,
    "own event ids (sent as is)": [_event(event_id=f"e-{i}") for i in range(1000)],
    "a repeated event id (listed)": [_event(**SAME_ID), *[_event()] * 998, _event(**SAME_ID)],
}


@pytest.mark.parametrize("events", PUBLIC_ID_BATCHES.values(), ids=PUBLIC_ID_BATCHES.keys())
def test_parse_events_gives_distinct_public_ids(events: list[dict[str, object]]) -> None:
    parsed = parse_events(_batch(*events), run_id=RUN_ID, received_at=RECEIVED_AT)
    batch = decode_entry({parsed.field.encode(): parsed.entry})
    public_ids = {public_id for public_id, _, _ in entry_events(batch)}
    assert len(public_ids) == parsed.count >= 999
    assert all(is_public_id(public_id, "evt") for public_id in public_ids)
