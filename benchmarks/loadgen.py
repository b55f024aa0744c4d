"""A load generator that plays many agents at once over raw HTTP/1.1 keep-alive sockets.

httpx costs tens of microseconds of Python per request, which on a 2-core machine
would be taken from the server under test. So the hot loops here write prebuilt
request bytes and parse only the status line, `Content-Length` and the small JSON
reply. Each agent owns one connection and keeps at most one request in flight.
Every loop stops at its time limit or its event limit, whichever comes first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec

__all__ = [
    "AgentTarget",
    "BatchBodies",
    "HttpConnection",
    "LoadResult",
    "closed_loop",
    "paced_loop",
    "read_loop",
]

HOST = "127.0.0.1"
_SEQ = b"@@SEQ@@"
# One cycle of event kinds, modelled on the demo's retry test: mostly requests sent,
# some timeouts with retries, a reset and a recovery.
_EVENT_KINDS: tuple[tuple[str, str], ...] = (
    *(("request_sent", "info"),) * 13,
    ("request_timeout", "warning"),
    ("retry_started", "info"),
    ("request_timeout", "warning"),
    ("retry_started", "info"),
    ("connection_reset", "warning"),
    ("recovery_succeeded", "info"),
    ("request_sent", "info"),
)


class _Accepted(msgspec.Struct):
    accepted: int = 0


class _Envelope(msgspec.Struct):
    data: _Accepted | None = None


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


class HttpConnection:
    """One HTTP/1.1 keep-alive connection that sends prebuilt requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)

    def head(self, method: str, path: str, headers: str = "") -> bytes:
        """Request line and headers without `Content-Length` and the final blank line."""
        return (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{headers}").encode()

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request; return the status code and the response body."""
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self._writer.write(head + b"\r\n" + body)
        response_head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(response_head[9:12])
        lowered = response_head.lower()
        start = lowered.find(b"\r\ncontent-length:")
        if start < 0:
            await self.close()
            raise ConnectionError(f"response without Content-Length: {response_head[:200]!r}")
        end = lowered.index(b"\r\n", start + 2)
        length = int(lowered[start + 17 : end])
        response_body = await self._reader.readexactly(length)
        if b"\r\nconnection: close" in lowered:
            await self.close()
        return status, response_body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
        self._reader = self._writer = None


class BatchBodies:
    """Event batch bodies for one agent, with event ids unique per run.

    The body is built once as a template; each request only joins the request
    number into it, so building a 1,000-event body costs microseconds.
    """

    def __init__(self, batch_size: int, tag: str) -> None:
        self.batch_size = batch_size
        self._sequence = 0
        events = [_event_json(tag, index) for index in range(batch_size)]
        self._parts = (b'{"events":[' + b",".join(events) + b"]}").split(_SEQ)

    def next_body(self) -> bytes:
        self._sequence += 1
        return str(self._sequence).encode().join(self._parts)


def _event_json(tag: str, index: int) -> bytes:
    event_type, severity = _EVENT_KINDS[index % len(_EVENT_KINDS)]
    marker = f"order-{index:05d}"
    event = {
        "event_id": f"{tag}-@@SEQ@@-{index}",
        "event_type": event_type,
        "severity": severity,
        "message": f"POST /orders {marker}",
        "payload": {"marker": marker, "attempt": 1},
        "occurred_at": "2025-06-01T12:00:00Z",
    }
    return msgspec.json.encode(event)


@dataclasses.dataclass
class AgentTarget:
    """The events route and headers of one simulated agent."""

    run_id: str
    path: str
    headers: str = ""  # extra header lines, each ending in \r\n


# Called with (agent, events accepted by this request, time of the 2xx reply).
AcceptedHook = Callable[[AgentTarget, int, float], None]


@dataclasses.dataclass
class LoadResult:
    elapsed_s: float = 0.0
    requests: int = 0
    events: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    client_cpu_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0


class _Agent:
    def __init__(self, port: int, target: AgentTarget, batch_size: int, tag: str) -> None:
        self.target = target
        self.connection = HttpConnection(port)
        self.head = self.connection.head("POST", target.path, target.headers)
        self.bodies = BatchBodies(batch_size, tag)

    async def send(self, result: LoadResult, hook: AcceptedHook | None) -> None:
        body = self.bodies.next_body()
        began = time.perf_counter()
        try:
            status, reply = await self.connection.request(self.head, body)
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            result.errors[type(exc).__name__] += 1
            await self.connection.close()
            await asyncio.sleep(0.01)
            return
        finished = time.perf_counter()
        if status not in (200, 201, 202):
            result.errors[str(status)] += 1
            await asyncio.sleep(0.01)
            return
        envelope = _decode_envelope(reply)
        accepted = envelope.data.accepted if envelope.data is not None else 0
        result.requests += 1
        result.events += accepted
        result.latencies_s.append(finished - began)
        if hook is not None:
            hook(self.target, accepted, finished)


def _agents(port: int, targets: Sequence[AgentTarget], batch_size: int, tag: str) -> list[_Agent]:
    return [
        _Agent(port, target, batch_size, f"{tag}-a{index}") for index, target in enumerate(targets)
    ]


async def _run_agents(
    agents: list[_Agent], loop_body: Callable[[int, _Agent], object], result: LoadResult
) -> LoadResult:
    cpu_before = time.process_time()
    began = time.perf_counter()
    try:
        await asyncio.gather(*(loop_body(index, agent) for index, agent in enumerate(agents)))  # type: ignore[misc]
    finally:
        for agent in agents:
            await agent.connection.close()
    result.elapsed_s = time.perf_counter() - began
    result.client_cpu_s = time.process_time() - cpu_before
    return result


async def closed_loop(
    port: int,
    targets: Sequence[AgentTarget],
    *,
    batch_size: int,
    duration_s: float,
    max_events: int,
    tag: str,
    hook: AcceptedHook | None = None,
) -> LoadResult:
    """Each agent sends its next batch as soon as the previous one gets its response."""
    result = LoadResult()
    agents = _agents(port, targets, batch_size, tag)
    deadline = time.perf_counter() + duration_s

    async def agent_loop(index: int, agent: _Agent) -> None:
        while time.perf_counter() < deadline and result.events < max_events:
            await agent.send(result, hook)

    return await _run_agents(agents, agent_loop, result)


async def paced_loop(
    port: int,
    targets: Sequence[AgentTarget],
    *,
    batch_size: int,
    events_per_s: float,
    duration_s: float,
    tag: str,
    hook: AcceptedHook | None = None,
) -> LoadResult:
    """Send batches on a fixed schedule that adds up to `events_per_s` over all agents.

    Agents are staggered evenly over one interval. An agent that falls behind its
    schedule (a slow reply) sends its next batch at once. Batches still due at the
    deadline are not sent, so a server slower than the target gets a lower rate.
    """
    result = LoadResult()
    agents = _agents(port, targets, batch_size, tag)
    interval_s = len(agents) * batch_size / events_per_s
    started = time.perf_counter()
    deadline = started + duration_s

    async def agent_loop(index: int, agent: _Agent) -> None:
        due = started + interval_s * index / len(agents)
        while due < deadline and time.perf_counter() < deadline:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await agent.send(result, hook)
            due += interval_s

    return await _run_agents(agents, agent_loop, result)


async def read_loop(
    port: int,
    path: str,
    *,
    headers: str,
    readers: int,
    duration_s: float,
    max_requests: int,
) -> LoadResult:
    """`readers` clients each send GET `path` closed-loop; `events` stays 0."""
    result = LoadResult()
    connections = [HttpConnection(port) for _ in range(readers)]
    head = connections[0].head("GET", path, headers)
    deadline = time.perf_counter() + duration_s

    async def reader(connection: HttpConnection) -> None:
        while time.perf_counter() < deadline and result.requests < max_requests:
            began = time.perf_counter()
            try:
                status, _ = await connection.request(head)
            except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                result.errors[type(exc).__name__] += 1
                await connection.close()
                await asyncio.sleep(0.01)
                continue
            if status != 200:
                result.errors[str(status)] += 1
                await asyncio.sleep(0.01)
                continue
            result.requests += 1
            result.latencies_s.append(time.perf_counter() - began)

    cpu_before = time.process_time()
    began = time.perf_counter()
    try:
        await asyncio.gather(*(reader(connection) for connection in connections))
    finally:
        for connection in connections:
            await connection.close()
    result.elapsed_s = time.perf_counter() - began
    result.client_cpu_s = time.process_time() - cpu_before
    return result
