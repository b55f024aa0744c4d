"""msgspec Structs of every request body and stream entry.

Decoding a body with one of these validates it: lengths are counted in characters,
and `__post_init__` normalises case-insensitive values and rejects text containing
U+0000. msgspec itself rejects invalid UTF-8 and lone surrogates while decoding.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "AgentCreate",
    "CommonEventIn",
    "EventBatch",
    "EventIn",
    "FINAL_STATUSES",
    "LoginIn",
    "MAX_BATCH_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "METHODS",
    "ProjectIn",
    "ProjectPatch",
    "RUN_STATUSES",
    "RegisterIn",
    "ReportIn",
    "RunCreate",
    "RunFinish",
    "RunStatusIn",
    "SEVERITIES",
    "CommonBatch",
    "SentBatch",
    "StreamBatch",
    "StreamEntry",
    "StreamEvent",
    "check_payload_text",
    "common_events_valid",
    "decode_entry",
    "entry_events",
    "sent_event_id",
]

MAX_BATCH_EVENTS = 1000
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 5 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RUN_STATUSES = ("created", "running", "finished", "failed", "cancelled")
FINAL_STATUSES = ("finished", "failed", "cancelled")
SEVERITIES = ("info", "warning", "error", "critical")
_SEVERITY_ALIASES = {"warn": "warning"}

Name = Annotated[str, msgspec.Meta(min_length=2, max_length=120)]
_EMAIL = re.compile(r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f.]+(\.[^@\s\x00-\x1f.]+)+$")
# Event times outside this range are almost surely a broken clock, and PostgreSQL
# cannot store some of them at all.
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def _check_time(field: str, value: dt.datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"`{field}` has no time zone; send RFC 3339 with Z or an offset")
    try:
        in_range = _EARLIEST <= value.astimezone(dt.UTC) < _LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError(f"`{field}` must be between 1970 and 9000 in UTC, got {value.isoformat()}")


def _reject_nul(field: str, value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"`{field}` contains U+0000; remove the NUL character")


def _check_http_url(field: str, value: str, *, allow_empty: bool) -> None:
    if not value and allow_empty:
        return
    problem = f"`{field}` must be an absolute http:// or https:// URL, got {value[:80]!r}"
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{problem}; it contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535
    except ValueError as exc:
        raise ValueError(f"{problem} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)


def _check_name(field: str, value: str) -> None:
    _reject_nul(field, value)
    if len(value.strip()) < 2:
        raise ValueError(f"`{field}` must have at least 2 characters besides spaces")


def _walk_for_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# Payloads are stored as sent, but a reader that parses them (a dashboard, a query
# casting to jsonb) would choke on numbers far beyond these, and jsonb's `numeric`
# refuses some outright. Only a payload that matches the cheap pattern is tokenised
# to look at its numbers.
MAX_NUMBER_DIGITS = 1000
MAX_NUMBER_EXPONENT = 1000
# Each pattern starts with a literal byte, which lets `re` skip ahead quickly. The
# lookbehind starts a digit run only at its first digit, so the scan stays linear
# instead of retrying a long run at each of its digits.
_LARGE_EXPONENTS = (
    re.compile(rb"e[+-]?0*[1-9][0-9]{3}"),
    re.compile(rb"E[+-]?0*[1-9][0-9]{3}"),
)
# A mantissa of more than 1000 digits is a run of more than 1000 digits and points.
_LONG_DIGIT_RUN = re.compile(rb"(?<![0-9.])[0-9.]{1001}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
# An exponent beyond ±1000: 1001-1099, 1100-1999, 2000-9999, or five digits and more.
# Once strings are blanked, an `e` followed by digits can only start an exponent.
_EXPONENT_BEYOND = re.compile(
    rb"e[+-]?0*(?:100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-9][0-9]{3}|[1-9][0-9]{4,})"
)
_LOWER_E = bytes.maketrans(b"E", b"e")
_RUN_SHAPE = bytes.maketrans(b"0123456789.", b"0" * 11)
_RUN = re.compile(rb"0+")


def _suspicious_numbers(raw: bytes) -> bool:
    if any(pattern.search(raw) for pattern in _LARGE_EXPONENTS):
        return True
    return len(raw) > MAX_NUMBER_DIGITS and _LONG_DIGIT_RUN.search(raw) is not None


def _has_oversized_number(raw: bytes) -> bool:
    """Return whether the JSON text `raw` has a number past the digit or exponent limit.

    Strings are blanked first, so only numbers and punctuation are left to search.
    The searches run in C: a few tens of milliseconds per MiB of numbers, where the
    Python loop over every number that they replace took over half a second.
    """
    numbers = _STRING.sub(b'""', raw)
    if _EXPONENT_BEYOND.search(numbers.translate(_LOWER_E)):
        return True
    # Runs of more than 1000 digits and points, found by a substring search.
    shape = numbers.translate(_RUN_SHAPE)
    long_run = b"0" * (MAX_NUMBER_DIGITS + 1)
    start = shape.find(long_run)
    while start != -1:
        run = _RUN.match(shape, start)
        assert run is not None
        end = run.end()
        # A run right after `e`, `e+` or `e-` is an exponent, checked above.
        before = numbers[max(0, start - 2) : start]
        is_exponent = before[-1:] in (b"e", b"E", b"+") or before in (b"e-", b"E-")
        digits = end - start - numbers.count(b".", start, end)
        if not is_exponent and digits > MAX_NUMBER_DIGITS:
            return True
        start = shape.find(long_run, end)
    return False


def _check_numbers(field: str, raw: bytes) -> None:
    if _suspicious_numbers(raw) and _has_oversized_number(raw):
        raise ValueError(
            f"`{field}` contains a number with more than {MAX_NUMBER_DIGITS} digits or an "
            f"exponent beyond ±{MAX_NUMBER_EXPONENT}; send it as a string"
        )


def check_payload_text(field: str, raw: bytes) -> None:
    """Reject a raw JSON value that is not valid UTF-8 or that readers could not use.

    That is text containing U+0000 or lone surrogates, which PostgreSQL's text types
    and jsonb refuse, and numbers beyond `MAX_NUMBER_DIGITS`/`MAX_NUMBER_EXPONENT`.
    Checking here gives the agent a 400 instead of failing in the worker. Only
    payloads with a `\\u` escape can hold U+0000 or a surrogate, so the rest skip the
    full decode.
    """
    # msgspec does not check the UTF-8 of a Raw value; PostgreSQL would refuse it.
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"`{field}` is not valid UTF-8 (byte {exc.start}); send UTF-8 text"
        ) from None
    _check_numbers(field, raw)
    if b"\\u" not in raw:
        return
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ValueError(
            f"`{field}` contains an invalid \\u escape (a lone surrogate); send valid UTF-8 text"
        ) from None
    except RecursionError:
        raise ValueError(f"`{field}` is nested too deeply; flatten it") from None
    if _walk_for_nul(value):
        raise ValueError(f"`{field}` contains U+0000 in a string; remove the NUL character")


class RegisterIn(msgspec.Struct):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
    name: Name

    def __post_init__(self) -> None:
        _reject_nul("password", self.password)
        _check_name("name", self.name)
        if not _EMAIL.fullmatch(self.email):
            raise ValueError(
                f"`email` {self.email[:80]!r} is not a valid email address; use name@domain.tld"
            )


class LoginIn(msgspec.Struct):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]

    def __post_init__(self) -> None:
        _reject_nul("email", self.email)
        _reject_nul("password", self.password)


class ProjectIn(msgspec.Struct):
    name: Name
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""
    base_url: Annotated[str, msgspec.Meta(max_length=2048)] = ""

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        _reject_nul("description", self.description)
        _check_http_url("base_url", self.base_url, allow_empty=True)


class ProjectPatch(msgspec.Struct):
    """A partial project update: only the fields sent change."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    base_url: Annotated[str, msgspec.Meta(max_length=2048)] | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.name is not msgspec.UNSET:
            _check_name("name", self.name)
        if self.description is not msgspec.UNSET:
            _reject_nul("description", self.description)
        if self.base_url is not msgspec.UNSET:
            _check_http_url("base_url", self.base_url, allow_empty=True)


class AgentCreate(msgspec.Struct):
    name: Name
    project_id: str | None = None

    def __post_init__(self) -> None:
        _check_name("name", self.name)


class RunCreate(msgspec.Struct):
    target_url: Annotated[
        str, msgspec.Meta(min_length=1, max_length=2048, description="http:// or https:// URL")
    ]
    scenario: Name
    method: Annotated[
        str, msgspec.Meta(description="GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS, any case")
    ] = "GET"
    project_id: (
        Annotated[str, msgspec.Meta(description="Defaults to the agent key's project")] | None
    ) = None
    agent_id: (
        Annotated[str, msgspec.Meta(description="Defaults to the agent of the key")] | None
    ) = None
    status: Annotated[str, msgspec.Meta(description="created or running")] = "running"

    def __post_init__(self) -> None:
        _reject_nul("target_url", self.target_url)
        _check_name("scenario", self.scenario)
        _check_http_url("target_url", self.target_url, allow_empty=False)
        # ASCII only, so that "poſt" does not become POST through Unicode case rules.
        method = (self.method or "GET").upper() if self.method.isascii() else self.method
        if method not in METHODS:
            raise ValueError(
                f"`method` {self.method[:20]!r} is invalid; use one of {', '.join(METHODS)}"
            )
        self.method = method
        if self.status not in ("created", "running"):
            raise ValueError("`status` of a new run must be created or running")


class RunStatusIn(msgspec.Struct):
    status: Annotated[
        str,
        msgspec.Meta(
            description="created, running, finished, failed or cancelled; the last three are "
            "final, and a final run cannot change status"
        ),
    ]

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(
                f"`status` {self.status[:20]!r} is invalid; use one of {', '.join(RUN_STATUSES)}"
            )


class RunFinish(msgspec.Struct):
    status: Annotated[str, msgspec.Meta(description="finished, failed or cancelled")] = "finished"

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(
                f"`status` {self.status[:20]!r} is not final; "
                f"use one of {', '.join(FINAL_STATUSES)}"
            )


class EventIn(msgspec.Struct, omit_defaults=True):
    """One event as an agent sends it."""

    event_type: Annotated[
        str,
        msgspec.Meta(
            min_length=2,
            max_length=120,
            description="Free text; these score: data_loss_risk_detected, duplicate_detected, "
            "request_timeout, recovery_failed",
        ),
    ]
    severity: Annotated[
        str,
        msgspec.Meta(description="info, warning (or warn), error or critical, in any case"),
    ] = "info"
    message: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    payload: Annotated[
        msgspec.Raw | msgspec.UnsetType, msgspec.Meta(description="Any JSON value up to 1 MiB")
    ] = msgspec.UNSET
    event_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=100,
                description="Idempotency key: an event re-sent with the same id is stored once",
            ),
        ]
        | None
    ) = None
    occurred_at: (
        Annotated[
            dt.datetime,
            msgspec.Meta(description="RFC 3339 time with a zone, when the agent saw it"),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        _reject_nul("event_type", self.event_type)
        _reject_nul("message", self.message)
        if self.event_id is not None:
            _reject_nul("event_id", self.event_id)
        severity = (self.severity or "info").lower()
        severity = _SEVERITY_ALIASES.get(severity, severity)
        if severity not in SEVERITIES:
            raise ValueError(
                f"`severity` {self.severity[:20]!r} is invalid; "
                "use info, warning, error or critical"
            )
        self.severity = severity
        if self.payload is not msgspec.UNSET:
            size = len(self.payload)
            if size > MAX_PAYLOAD_BYTES:
                raise ValueError(
                    f"`payload` is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes"
                )
            check_payload_text("payload", bytes(self.payload))
        if self.occurred_at is not None:
            _check_time("occurred_at", self.occurred_at)


class CommonEventIn(msgspec.Struct):
    """An event in the form most agents send, which needs no normalising.

    Whatever this decodes, `EventIn` decodes to the same values, because it accepts
    only the four lower-case severities and times with a zone, under the same length
    limits. It runs none of the per-event checks of `EventIn.__post_init__`, so
    decoded events are valid only once `common_events_valid` has returned True.
    """

    event_type: Annotated[str, msgspec.Meta(min_length=2, max_length=120)]
    severity: Literal["info", "warning", "error", "critical"] = "info"
    message: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    # An absent payload and `null` both travel as the JSON literal `null`.
    payload: msgspec.Raw = msgspec.Raw(b"null")
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


_occurred_at = operator.attrgetter("occurred_at")
_payload = operator.attrgetter("payload")


def common_events_valid(body: bytes, events: list[CommonEventIn]) -> bool:
    """Return whether every event decoded from `body` passes `EventIn`'s checks.

    Most checks run once per body instead of once per event. JSON can hold U+0000 or
    a lone surrogate only as a `\\u` escape, so a body without one has neither, and a
    body that is valid UTF-8 has valid UTF-8 payloads. False means that a check failed
    or could not be ruled out here, and the caller decodes the events with `EventIn`
    to find out which.
    """
    # CPython searches for a one-byte needle with memchr, which is much faster than
    # its search for the two bytes of `\\u`, and most bodies have no backslash.
    if b"\\" in body and b"\\u" in body:
        return False
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
    # map() with attrgetter loops in C, which matters at 1,000 events a body.
    times = [time for time in map(_occurred_at, events) if time is not None]
    if times and not (_EARLIEST <= min(times) and max(times) < _LATEST):
        return False
    payloads = list(map(_payload, events))
    if max(map(len, payloads)) > MAX_NUMBER_DIGITS and not all(map(_plain_size, payloads)):
        return False
    return not _large_exponents(b" ".join(payloads))


def _plain_size(payload: msgspec.Raw) -> bool:
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        return False
    return size <= MAX_NUMBER_DIGITS or _LONG_DIGIT_RUN.search(payload) is None


# A table that turns every digit into 0 and E into e, so `0e` marks a digit followed
# by an exponent.
_EXPONENT_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")


def _large_exponents(payloads: bytes) -> bool:
    """Return whether `payloads`, JSON values joined by spaces, may hold a large exponent.

    In valid JSON the `e` or `E` of a number follows a digit, so text without that
    pair skips the slower patterns. The spaces keep the digits of two values apart.
    """
    if b"0e" not in payloads.translate(_EXPONENT_SHAPE):
        return False
    return any(pattern.search(payloads) for pattern in _LARGE_EXPONENTS)


class EventBatch(msgspec.Struct):
    events: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]


class ReportIn(msgspec.Struct):
    summary: Annotated[str, msgspec.Meta(min_length=2, max_length=2000)]
    raw_json: Annotated[
        msgspec.Raw, msgspec.Meta(description="The full report, any JSON value up to 5 MiB")
    ]

    def __post_init__(self) -> None:
        _reject_nul("summary", self.summary)
        size = len(self.raw_json)
        if size > MAX_REPORT_BYTES:
            raise ValueError(f"`raw_json` is {size} bytes; the limit is {MAX_REPORT_BYTES} bytes")
        check_payload_text("raw_json", bytes(self.raw_json))


class StreamEvent(msgspec.Struct, array_like=True):
    """An accepted event as it travels through the stream."""

    public_id: str
    event_id: str
    event_type: str
    severity: str
    message: str
    # Raw JSON text; the JSON literal `null` when the agent sent no payload.
    payload: msgspec.Raw
    occurred_at: dt.datetime | None


class StreamBatch(msgspec.Struct, array_like=True):
    """One stream entry: the accepted events of one request, all for one run."""

    run_id: str
    received_at: dt.datetime
    events: list[StreamEvent]


class CommonBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A body of events all in the common form."""

    events: list[CommonEventIn]


class SentBatch(msgspec.Struct, array_like=True):
    """One stream entry that carries the agent's body as it was sent.

    Ingest writes this instead of a `StreamBatch` when the body decoded as a
    `CommonBatch`, passed `common_events_valid` and repeats no `event_id`: then its
    events need no change, and copying the bytes costs less than encoding them
    again. The event at index i gets the public id `sent_event_id(id_prefix, i)`.
    """

    run_id: str
    received_at: dt.datetime
    id_prefix: str  # 24 random hex digits
    body: CommonBatch

    @property
    def events(self) -> list[CommonEventIn]:
        return self.body.events


StreamEntry = StreamBatch | SentBatch
_decode_listed = msgspec.json.Decoder(StreamBatch).decode
_decode_sent = msgspec.json.Decoder(SentBatch).decode


def decode_entry(fields: Mapping[bytes, bytes]) -> StreamEntry:
    """Decode the batch of a stream entry from its fields, `body` or `batch`.

    Raises KeyError when it has neither, and msgspec's errors when it does not decode.
    """
    sent = fields.get(b"body")
    if sent is not None:
        return _decode_sent(sent)
    return _decode_listed(fields[b"batch"])


def entry_events(
    batch: StreamEntry,
) -> Iterator[tuple[str, str, StreamEvent | CommonEventIn]]:
    """Yield `(public id, event id, event)` for each event of a stream entry."""
    if isinstance(batch, StreamBatch):
        for event in batch.events:
            yield event.public_id, event.event_id, event
        return
    id_prefix = batch.id_prefix
    for index, common in enumerate(batch.body.events):
        public_id = sent_event_id(id_prefix, index)
        yield public_id, common.event_id or public_id, common


def sent_event_id(id_prefix: str, index: int) -> str:
    """Return the public id of the event at `index` of a `SentBatch` (32 hex digits)."""
    return f"evt_{id_prefix}{index:08x}"
