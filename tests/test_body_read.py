"""`read_body`: its deadline for a stalled body, and cancellations that are not its own."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from core import http
from core.errors import RequestTimeout


def _request(chunks: list[bytes], *, stall: bool) -> Request:
    """A request whose body arrives as `chunks`, then never ends when `stall` is set."""
    queue = list(chunks)

    async def receive() -> Message:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return Request(scope, receive)


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(http, "BODY_READ_TIMEOUT_S", 0.2)
    monkeypatch.setattr(http, "DEADLINE_CHECK_S", 0.05)
    return 0.2


async def test_complete_body_is_read(short_deadline: float) -> None:
    body = await http.read_body(_request([b'{"a":', b"1}"], stall=False), max_bytes=100)
    assert body == b'{"a":1}'
    # The finished read must not be cancelled when its deadline passes later.
    await asyncio.sleep(short_deadline + 0.15)


async def test_stalled_body_times_out(short_deadline: float) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(RequestTimeout, match="did not arrive within 0.2 s"):
        await http.read_body(_request([b'{"a":'], stall=True), max_bytes=100)
    assert short_deadline <= loop.time() - began < short_deadline + 0.5
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_stalled_reads_time_out_together(short_deadline: float) -> None:
    reads = [http.read_body(_request([b"{"], stall=True), max_bytes=100) for _ in range(50)]
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(result, RequestTimeout) for result in results)


async def test_outside_cancellation_stays_a_cancellation(short_deadline: float) -> None:
    read = asyncio.create_task(http.read_body(_request([b"{"], stall=True), max_bytes=100))
    await asyncio.sleep(0.01)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
