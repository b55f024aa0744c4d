"""Response envelopes, request bodies and query parameters, shared by ingest and api."""

from __future__ import annotations

import asyncio
import functools
import re
import zlib
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from core.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType, ValidationFailed

__all__ = [
    "decode_body",
    "decode_error_message",
    "decode_json",
    "envelope",
    "listing",
    "ok",
    "page_params",
    "query_param",
    "read_body",
    "validation_message",
]

T = TypeVar("T")

# A client that announces a body and then stalls keeps a connection and a task busy,
# so this bounds how long. Uploads of the largest body (5 MiB) take far less on any link
# that can run an agent.
BODY_READ_TIMEOUT_S = 30.0
DEADLINE_CHECK_S = 1.0


class _ReadDeadlines:
    """Deadlines of the body reads in progress on one event loop, enforced by one timer.

    `asyncio.timeout` schedules and cancels a timer handle for every request: about
    12 µs a request under uvloop, measured on a 2-core machine. Here a read only
    records its deadline, and a timer that runs every `DEADLINE_CHECK_S` while reads
    are in progress cancels the reads past theirs. A read so ends at most
    `DEADLINE_CHECK_S` after its deadline.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any], timeout_s: float) -> None:
        self._reads[task] = self.loop.time() + timeout_s
        if self._timer is None:
            self._timer = self.loop.call_later(DEADLINE_CHECK_S, self._cancel_expired)

    def finish(self, task: asyncio.Task[Any]) -> bool:
        """Forget the read of `task`; return whether it was cancelled for its deadline."""
        self._reads.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _cancel_expired(self) -> None:
        now = self.loop.time()
        for task, deadline in list(self._reads.items()):
            if deadline <= now:
                del self._reads[task]
                self._expired.add(task)
                task.cancel()
        self._timer = None
        if self._reads:
            self._timer = self.loop.call_later(DEADLINE_CHECK_S, self._cancel_expired)


_deadlines: _ReadDeadlines | None = None


def _read_deadlines() -> _ReadDeadlines:
    """Return the deadlines of the running loop (a server runs one loop, tests several)."""
    global _deadlines
    deadlines = _deadlines
    loop = asyncio.get_running_loop()
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _deadlines = _ReadDeadlines(loop)
    return deadlines


_encoder = msgspec.json.Encoder()
_CHARSET = re.compile(r"charset\s*=\s*([^;\s]+)", re.IGNORECASE)
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")


def envelope(data: Any, message: str) -> bytes:
    """Encode the body of a successful response."""
    return _encoder.encode({"success": True, "message": message, "data": data})


def ok(data: Any, message: str, *, status: int = 200) -> Response:
    return Response(envelope(data, message), status_code=status, media_type="application/json")


def listing(items: list[Any], *, total: int, limit: int, offset: int, message: str) -> Response:
    body = _encoder.encode(
        {
            "success": True,
            "message": message,
            "data": items,
            "meta": {"total": total, "limit": limit, "offset": offset},
        }
    )
    return Response(body, media_type="application/json")


def _check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    # Long values are checked without the cache, so it stays small.
    if len(content_type) <= 100:
        problem = _content_type_problem(content_type)
    else:
        problem = _content_type_problem.__wrapped__(content_type)
    if problem is not None:
        raise UnsupportedMediaType(problem)


@functools.lru_cache(maxsize=64)
def _content_type_problem(content_type: str) -> str | None:
    """Return why a Content-Type is not accepted, or None; cached, as agents repeat it."""
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    if not _JSON_TYPE.match(media_type):
        return f"Content-Type {media_type!r} is not supported; send application/json"
    charset = _CHARSET.search(parameters)
    if charset and charset[1].strip('"').lower() not in ("utf-8", "utf8"):
        return f"Content-Type charset {charset[1]!r} is not supported; send UTF-8"
    return None


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """Read the body, undoing gzip, and stop as soon as it passes `max_bytes`.

    The limit applies both to the bytes on the wire and to the decompressed bytes,
    so a small gzip body cannot expand without bound.
    """
    _check_content_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    task = asyncio.current_task()
    assert task is not None
    deadlines = _read_deadlines()
    cancelling = task.cancelling()
    deadlines.start(task, BODY_READ_TIMEOUT_S)
    try:
        return await _read_limited(request, encoding=encoding, max_bytes=max_bytes)
    except asyncio.CancelledError:
        # A cancellation from elsewhere stays a cancellation, as with asyncio.timeout.
        if deadlines.finish(task) and task.uncancel() <= cancelling:
            raise RequestTimeout(
                f"Request body did not arrive within {BODY_READ_TIMEOUT_S:g} s; "
                "check Content-Length and resend"
            ) from None
        raise
    finally:
        deadlines.finish(task)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {max_bytes} bytes; send smaller batches")


async def _read_limited(request: Request, *, encoding: str, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    received = 0
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk, max_bytes + 1 - size)
            except zlib.error as exc:
                raise ValidationFailed(f"Request body is not valid gzip: {exc}") from None
            if inflater.unconsumed_tail:
                raise _too_large(max_bytes)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    if inflater is not None and received:
        if not inflater.eof:
            raise ValidationFailed("Request body is truncated gzip; send the complete stream")
        if inflater.unused_data:
            raise ValidationFailed("Request body has bytes after the gzip stream; send one stream")
    return b"".join(chunks)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
MAX_NESTING_HINT = "JSON nested too deeply; keep nesting under a few hundred levels"


def decode_error_message(body: bytes, exc: msgspec.DecodeError) -> str:
    """Explain why a body is not acceptable JSON text."""
    if _SURROGATE_ESCAPE.search(body) and "truncated" in str(exc):
        return "Request body contains a lone surrogate (\\ud800-\\udfff); send valid UTF-16 pairs"
    return f"Request body is not valid JSON ({exc}); send a JSON object in UTF-8"


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode and validate a body, turning msgspec errors into `ValidationFailed`."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(validation_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(decode_error_message(body, exc)) from None
    except RecursionError:
        raise ValidationFailed(f"Request body is {MAX_NESTING_HINT}") from None


async def decode_body(
    request: Request,
    decoder: msgspec.json.Decoder[T],
    *,
    max_bytes: int,
    optional: bool = False,
) -> T | None:
    body = await read_body(request, max_bytes=max_bytes)
    if not body or body.isspace():
        if optional:
            return None
        raise ValidationFailed("Request body is empty; send a JSON object")
    return decode_json(body, decoder)


_LENGTH = re.compile(r"^Expected `str` of length (>=|<=) (\d+) - at `\$\.?(.*)`$")
_TYPE = re.compile(r"^Expected `([^`]+)`, got `([^`]+)` - at `\$\.?(.*)`$")
_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")


_JSON_TYPES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def validation_message(detail: str) -> str:
    """Restate a msgspec validation error in the terms of our API, naming the field."""
    if match := _LENGTH.match(detail):
        bound = "at least" if match[1] == ">=" else "at most"
        return f"`{match[3]}` must have {bound} {match[2]} characters"
    if match := _TYPE.match(detail):
        expected = " or ".join(_JSON_TYPES.get(t, t) for t in match[1].split(" | "))
        return f"`{match[3]}` must be {expected}, got {_JSON_TYPES.get(match[2], match[2])}"
    if detail.startswith("Expected `object`"):
        return f"Request body must be a JSON object: {detail}"
    if detail.startswith("Object missing required field"):
        field = detail.split("`")[1] if "`" in detail else "?"
        return f"`{field}` is required"
    if match := _AT.match(detail):
        return f"`{match[2]}` is invalid: {match[1]}"
    return detail


def query_param(request: Request, name: str) -> str | None:
    """Return a query parameter's value, None when absent or empty; reject a repeated one.

    With `?flag=duplicate&flag=` the last value would silently drop the filter.
    """
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationFailed(
            f"Query parameter `{name}` was given {len(values)} times; give it once"
        )
    return values[0] if values and values[0] != "" else None


def _parse_int_param(request: Request, name: str, default: int) -> int:
    raw = query_param(request, name)
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValidationFailed(f"Query parameter `{name}` must be an integer, got {raw[:40]!r}")
    # Clamp by sign and length first, so a thousand-digit number costs nothing.
    if text.startswith("-"):
        return -1
    digits = text.lstrip("+").lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


def page_params(
    request: Request, *, default_limit: int = 20, max_limit: int = 100, limit_name: str = "limit"
) -> tuple[int, int]:
    """Return `(limit, offset)`, clamped to `1..max_limit` and `>= 0`."""
    limit = min(max(_parse_int_param(request, limit_name, default_limit), 1), max_limit)
    offset = max(_parse_int_param(request, "offset", 0), 0)
    return limit, offset
