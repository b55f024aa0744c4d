"""`parse_events` against its fully checked path, body by body.

The fast path must give every body the same result as decoding each event with
`EventIn`: the same count, events and rejections, or the same error message.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ValidationFailed
from core.security import is_public_id
from ingest.events import _decode_common, _parse_checked, parse_events
from schema.structs import (
    MAX_PAYLOAD_BYTES,
    SEVERITIES,
    _has_oversized_number,
    decode_entry,
    entry_events,
)

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
    # A run of 1001 digits and points may hold 1001 digits, so it takes the checked path.
    "1000 digits around a point": _events_text(
        b'{"event_type":"ab","payload":' + b"7" * 500 + b"." + b"7" * 500 + b"}"
    ),
    "1200 digits around a point": _events_text(
        b'{"event_type":"ab","payload":{"n":' + b"9" * 600 + b"." + b"9" * 600 + b"}}"
    ),
    "1200 digits and an e1000 string": _events_text(
        b'{"event_type":"ab","payload":{"k":"e1000","n":' + b"9" * 600 + b"." + b"9" * 600 + b"}}"
    ),
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


def test_padded_body_is_listed() -> None:
    """A body far larger than its events would take Redis memory the backlog limit misses."""
    body = b'{"events":[{"event_type":"request_sent"}' + b" " * MAX_PAYLOAD_BYTES * 2 + b"]}"
    parsed = parse_events(body, run_id=RUN_ID, received_at=RECEIVED_AT)
    assert (parsed.field, parsed.count) == ("batch", 1)
    assert len(parsed.entry) < 1000


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


# Strategies for `test_generated_bodies_match_checked_path`. They build raw JSON text,
# so that a body can contain escapes and bytes that msgspec never writes. The base
# strategies give events in the common form that `EventIn` accepts, and the edits give
# values on or past each limit.
_CHARACTERS = st.one_of(
    st.sampled_from('ab_-./ "\\\n\t\x7fé✓\u2028😀'),
    st.characters(codec="utf-8", min_codepoint=0x20),
)


def _strings(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.text(_CHARACTERS, min_size=min_size, max_size=max_size).map(msgspec.json.encode)


def _repeated(sizes: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    """Build JSON strings of one repeated character, for lengths near a limit."""
    return st.builds(lambda char, size: msgspec.json.encode(char * size), _CHARACTERS, sizes)


_ODD_STRINGS = st.sampled_from(
    [
        b'"a\\u0000b"',
        b'"\\ud800"',
        b'"x\\udc00y"',
        b'"\\udc00\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"\\u00e9\\u0041"',
        b'"caf\xe9"',
        b'"\xed\xa0\x80"',
        b'"\\/\\b\\f"',
        b"null",
        b"12",
        b"[]",
        b"{}",
    ]
)
_SAFE_NUMBERS = st.one_of(
    st.integers().map(lambda number: str(number).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda number: repr(number).encode()),
    st.sampled_from([b"1e300", b"-2.5E-300", b"1E999", b"1e-0999", b"7" * 1000, b"-0.0"]),
)
_BIG_EXPONENTS = st.sampled_from(
    [b"1e1000", b"1E-1000", b"1e1001", b"1E+1001", b"-1e-01001", b"1e00000000001001", b"2.5e9999"]
)
_LONG_NUMBERS = st.sampled_from(
    [
        b"7" * 1000,
        b"7" * 1001,
        b"-" + b"7" * 1001,
        b"0." + b"7" * 1001,
        b"7" * 500 + b"." + b"7" * 501,
        b"1" * 1000 + b"e5",
    ]
)
_EDGE_NUMBERS = st.one_of(_BIG_EXPONENTS, _LONG_NUMBERS)


def _json_values(leaves: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    keys = st.tuples(_strings(0, 8), st.sampled_from([b":", b" : "]))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda items: b"[" + b",".join(items) + b"]"),
            st.lists(st.tuples(keys, children), max_size=4).map(
                lambda items: b"{" + b", ".join(k + c + v for (k, c), v in items) + b"}"
            ),
        ),
        max_leaves=6,
    )


_SAFE_LEAVES = st.one_of(
    st.sampled_from([b"null", b"true", b"false"]), _SAFE_NUMBERS, _strings(0, 20)
)
_EDGE_LEAVES = st.one_of(_SAFE_LEAVES, _EDGE_NUMBERS, _ODD_STRINGS)


def _times(min_year: int, max_year: int, zones: list[str]) -> st.SearchStrategy[bytes]:
    moments = st.datetimes(dt.datetime(min_year, 1, 1), dt.datetime(max_year, 12, 31))
    return st.builds(
        lambda moment, zone: f'"{moment.isoformat()}{zone}"'.encode(),
        moments,
        st.sampled_from(zones),
    )


_ZONE_SUFFIXES = ["Z", "+05:30", "-01:00"]
_EDGE_TIMES = st.one_of(
    st.sampled_from(
        [
            b'"1970-01-01T00:00:00Z"',
            b'"1969-12-31T23:59:59.999999Z"',
            b'"1970-01-01T00:30:00+01:00"',
            b'"8999-12-31T23:59:59Z"',
            b'"9000-01-01T00:00:00Z"',
            b'"8999-12-31T23:30:00-01:00"',
            b'"0001-01-01T00:30:00+01:00"',
            b'"9999-12-31T23:30:00-01:00"',
        ]
    ),
    _times(1, 1969, _ZONE_SUFFIXES),
    _times(9000, 9999, _ZONE_SUFFIXES),
)
_ODD_TIMES = st.one_of(
    st.sampled_from([b'"2025-06-01 12:00:00z"', b'"2025-06-01"', b'"yesterday"', b"0"]),
    _times(1, 9999, ["", "+00:00"]),
)
# A value of None leaves the field out of the event.
BASE_FIELDS: dict[str, st.SearchStrategy[bytes | None]] = {
    "event_type": st.one_of(_strings(2, 16), _repeated(st.integers(2, 120))),
    "severity": st.sampled_from([None, *(f'"{name}"'.encode() for name in SEVERITIES)]),
    "message": st.one_of(st.none(), _strings(0, 24), _repeated(st.integers(990, 1000))),
    "payload": st.one_of(st.none(), st.just(b"null"), _json_values(_SAFE_LEAVES)),
    "occurred_at": st.one_of(
        st.none(), st.just(b"null"), _times(1971, 8998, ["Z", "+05:30", "-01:00", "+00:00"])
    ),
}
NOT_EVENTS = st.sampled_from([b"[1]", b"null", b'"ab"', b"{}", b"{"])
# Edits that set one field of an event to an edge value. An edit without a field name
# replaces the whole event with text that is not an event object.
Edit = tuple[str | None, st.SearchStrategy[bytes | None]]
EDGE_EDITS: list[Edit] = [
    ("event_type", st.one_of(st.none(), _strings(0, 125), _repeated(st.integers(119, 122)))),
    ("event_type", _ODD_STRINGS),
    ("severity", st.sampled_from([b'"WARN"', b'"warn"', b'"Error"', b'""', b'"fatal"'])),
    ("severity", st.sampled_from([b'"\\u0069nfo"', b"null", b"1"])),
    ("message", st.one_of(_repeated(st.integers(1001, 1005)), _ODD_STRINGS)),
    ("payload", st.one_of(_json_values(_EDGE_LEAVES), st.just(b"[" * 3000 + b"]" * 3000))),
    (
        "event_id",
        st.sampled_from([b'""', b'"' + b"i" * 101 + b'"', b'"' + "é".encode() * 100 + b'"']),
    ),
    ("event_id", _ODD_STRINGS),
    ("occurred_at", st.one_of(_EDGE_TIMES, _ODD_TIMES)),
    ("agent_version", _json_values(_EDGE_LEAVES)),
    ("EVENT_TYPE", _strings(0, 4)),
    (None, NOT_EVENTS),
]
_ESCAPED_STRINGS = st.sampled_from(
    [b'"a\\u0000b"', b'"\\u00e9\\u0041"', b'"ab\\ud83d\\ude00"', b'"\\/\\b\\f"']
)
# Edits to values that `CommonEventIn` decodes, so that only `common_events_valid`
# can send their body to the checked path.
BODY_CHECK_EDITS: list[Edit] = [
    ("event_type", _ESCAPED_STRINGS),
    ("message", _ESCAPED_STRINGS),
    ("event_id", _ESCAPED_STRINGS),
    ("payload", _BIG_EXPONENTS),
    ("payload", _json_values(_BIG_EXPONENTS)),
    ("payload", _LONG_NUMBERS),
    ("payload", _json_values(_LONG_NUMBERS)),
    ("payload", _ODD_STRINGS),
    ("payload", _json_values(_ODD_STRINGS)),
    ("payload", st.sampled_from([b'"caf\xe9"', b'["\xed\xa0\x80", 1]', b'{"\xff": 1}'])),
    ("occurred_at", _EDGE_TIMES),
    ("agent_version", _json_values(_EDGE_LEAVES)),
]
# Event ids by kind. The `%d` of a distinct id becomes the event's index.
EVENT_IDS = {
    "none": [None, b"null"],
    "distinct": [b'"e-%d"', b'"\xc3\xa9-%d"', b'"' + b"i" * 94 + b'%06d"'],
    "repeated": [b'"a"', b'"b"', b'"\xc3\xa9"'],
}


@st.composite
def _event_ids(draw: st.DrawFn, count: int) -> list[bytes | None]:
    """Draw the event ids of a batch, which are missing, distinct, repeated or a mix."""
    kinds = draw(st.lists(st.sampled_from(sorted(EVENT_IDS)), min_size=1, max_size=3))
    choices = [event_id for kind in kinds for event_id in EVENT_IDS[kind]]
    ids = []
    for index in range(count):
        event_id = choices[draw(st.integers(0, len(choices) - 1))]
        if event_id is not None and b"%" in event_id:
            event_id %= index
        ids.append(event_id)
    return ids


@st.composite
def _events(draw: st.DrawFn, count: int) -> list[dict[str, bytes | None] | bytes]:
    """Draw `count` events in the common form, and edit one or two values in most bodies.

    The events cycle through up to three drawn templates, because drawing every
    event of a 30-event batch would make each example many times slower.
    """
    templates = [
        {name: draw(values) for name, values in BASE_FIELDS.items()}
        for _ in range(draw(st.integers(1, 3)))
    ]
    events: list[dict[str, bytes | None] | bytes] = [
        {**templates[index % len(templates)], "event_id": event_id}
        for index, event_id in enumerate(draw(_event_ids(count)))
    ]
    edits = draw(st.sampled_from([[], BODY_CHECK_EDITS, BODY_CHECK_EDITS, EDGE_EDITS]))
    for _ in range(draw(st.integers(1, 2)) if edits and count else 0):
        index = draw(st.integers(0, count - 1))
        name, values = edits[draw(st.integers(0, len(edits) - 1))]
        event = events[index]
        if name is None:
            events[index] = draw(NOT_EVENTS)
        elif isinstance(event, dict):
            event[name] = draw(values)
    return events


def _object_text(members: Iterable[tuple[str, bytes | None]], comma: bytes, colon: bytes) -> bytes:
    texts = [f'"{name}"'.encode() + colon + value for name, value in members if value is not None]
    return b"{" + comma.join(texts) + b"}"


def _escape_non_ascii(body: bytes) -> bytes:
    """Write each non-ASCII character of a body as `\\u` escapes, keeping invalid UTF-8 bytes."""
    # Decoding with surrogateescape turns each invalid byte into one of U+DC80..U+DCFF,
    # which stays as it is, so that encoding gives back the same byte.
    chars = []
    for char in body.decode("utf-8", "surrogateescape"):
        if char.isascii() or "\udc80" <= char <= "\udcff":
            chars.append(char)
        else:
            chars.append(json.dumps(char)[1:-1])  # Gives a surrogate pair above U+FFFF.
    return "".join(chars).encode("utf-8", "surrogateescape")


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    """Draw a body of 1 to 30 events.

    Now and then the body is an empty batch, a bare event or a batch with an extra
    top-level field instead.
    """
    comma, colon = draw(st.sampled_from([(b",", b":"), (b", ", b": "), (b"\n ,", b" :\t")]))
    shape = draw(st.sampled_from(["batch"] * 14 + ["single", "empty", "extra field"]))
    count = {"single": 1, "empty": 0}.get(shape, draw(st.integers(1, 30)))
    order = draw(st.permutations(sorted({name for name, _ in EDGE_EDITS if name})))
    texts = []
    for event in draw(_events(count)):
        if isinstance(event, dict):
            fields = sorted(event.items(), key=lambda item: order.index(item[0]))
            event = _object_text(fields, comma, colon)
        texts.append(event)
    members = [("events", b"[" + comma.join(texts) + b"]")]
    if shape == "extra field":
        members.insert(draw(st.integers(0, 1)), ("run", b'"x"'))
    body = texts[0] if shape == "single" else _object_text(members, comma, colon)
    return _escape_non_ascii(body) if draw(st.sampled_from([False] * 5 + [True])) else body


@settings(max_examples=400, deadline=None, derandomize=True)
@given(body=_bodies())
def test_generated_bodies_match_checked_path(body: bytes) -> None:
    """Bodies on both sides of each fast-path check get the checked path's outcome."""
    assert _parsed_outcome(body) == _checked_outcome(body)


OVERSIZED_NUMBERS = {
    b"1e1000": False,
    b"1e1001": True,
    b"1E+1001": True,
    b"-1e-01001": True,
    b"1e00000000001001": True,
    b"2.5e9999": True,
    b"1e-1000": False,
    b"1e0999": False,
    b"[1e999, 1e1001]": True,
    b"7" * 1000: False,
    b"7" * 1001: True,
    b"-" + b"7" * 1001: True,
    b"0." + b"7" * 999: False,
    b"0." + b"7" * 1000: True,
    b"7" * 500 + b"." + b"7" * 501: True,
    b'"' + b"7" * 2000 + b'"': False,
    b'["1e5000", "a\\"1e5000", true, 1e3]': False,
    b"[1e" + b"0" * 1001 + b", 1E+" + b"0" * 1001 + b", 1e-" + b"0" * 1001 + b"]": False,
}


@pytest.mark.parametrize(
    ("text", "oversized"), OVERSIZED_NUMBERS.items(), ids=lambda value: repr(value)[:30]
)
def test_oversized_numbers_found_exactly(text: bytes, oversized: bool) -> None:
    assert _has_oversized_number(text) is oversized


@pytest.mark.parametrize("name", ["1200 digits around a point", "1200 digits and an e1000 string"])
def test_long_mantissa_rejected(name: str) -> None:
    parsed = parse_events(OTHER_BODIES[name], run_id=RUN_ID, received_at=RECEIVED_AT)
    assert parsed.accepted == 0
    assert [rejection.index for rejection in parsed.rejected] == [0]
    assert "more than 1000 digits" in parsed.rejected[0].message
