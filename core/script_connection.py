"""Lua scripts called by concurrent tasks over a Redis connection of their own.

Ingest calls the append script once per request. Through redis-py each call
passed a pipeline object, a connection checkout, a stream reader and a parser
wrapper: about 28 of the 85 µs of CPU that a one-event request took in-process,
without HTTP, on a 2-core machine. Here the calls go straight to an asyncio
protocol. The calls made in one pass of the event loop are packed with hiredis
into one write, and hiredis parses the replies, which Redis sends in call order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.exceptions
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url

from core.streams import RedisScript

__all__ = ["ScriptConnection"]


class _Call:
    """A script call on its way: what to send, and the future its caller awaits."""

    __slots__ = ("args", "future", "keys", "script", "timer", "with_source")

    def __init__(
        self,
        script: RedisScript,
        keys: Sequence[str],
        args: Sequence[object],
        future: asyncio.Future[Any],
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future
        self.with_source = False  # send EVAL with the source instead of EVALSHA
        self.timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.Protocol):
    """The protocol of the connection, which writes packed commands and resolves their
    calls in reply order."""

    def __init__(self, owner: ScriptConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[_Call | asyncio.Future[Any]] = collections.deque()
        self._failure: Exception | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, waiting: Sequence[_Call | asyncio.Future[Any]]) -> None:
        """Write `data` and queue its calls for replies; fail them at once if the
        connection is already lost, since no reply would come."""
        self._waiting.extend(waiting)
        if self.lost or self.transport is None:
            self._fail_waiting()
            return
        self.transport.write(data)

    def fail(self, failure: Exception) -> None:
        """Close the connection and fail every call still waiting with `failure`."""
        if self._failure is None:
            self._failure = failure
        # Calls from now on go to a new connection.
        self.lost = True
        self._fail_waiting()
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiting(self) -> None:
        failure = self._failure or redis.exceptions.ConnectionError("Connection to Redis lost")
        for waiting in self._waiting:
            future = waiting if isinstance(waiting, asyncio.Future) else waiting.future
            if isinstance(waiting, _Call) and waiting.timer is not None:
                waiting.timer.cancel()
            if not future.done():
                future.set_exception(failure)
        self._waiting.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(redis.exceptions.ConnectionError(f"Invalid reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.fail(redis.exceptions.ConnectionError("Unexpected reply from Redis"))
                return
            waiting = self._waiting.popleft()
            if isinstance(waiting, asyncio.Future):  # a command of the handshake
                if not waiting.done():
                    waiting.set_result(reply)
                continue
            if waiting.timer is not None:
                waiting.timer.cancel()
            self._owner._resolve(waiting, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._failure is None:
            self._failure = redis.exceptions.ConnectionError(
                f"Connection to Redis lost: {exc or 'closed by the server'}"
            )
        self._fail_waiting()


class ScriptConnection:
    """Lua script calls from concurrent tasks, pipelined on one connection.

    Each call runs as a script of its own, so it stays atomic and gets its own
    result or exception. The calls of one event-loop pass share one write, and a
    write whose replies are not all back within `timeout_s` closes the connection
    and fails its calls with `redis.exceptions.TimeoutError`. A lost connection
    fails the calls in flight with `redis.exceptions.ConnectionError`, and the next
    call connects again. After Redis loses its script cache (a restart), a call
    that gets NOSCRIPT is sent again with the script's source.

    Only `redis://` URLs are served here (`supports`); TLS and Unix socket URLs use
    `streams.ScriptPipeline` on a redis-py client instead.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not self.supports(url):
            raise ValueError(f"ScriptConnection accepts redis:// URLs only, got {url!r}")
        options = parse_url(url)
        self._host: str = options.get("host") or "localhost"
        self._port: int = options.get("port") or 6379
        self._handshake: list[tuple[object, ...]] = []
        if options.get("password") is not None:
            username = options.get("username")
            credentials = (username, options["password"]) if username else (options["password"],)
            self._handshake.append(("AUTH", *credentials))
        if options.get("db"):
            self._handshake.append(("SELECT", options["db"]))
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._queued: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def supports(url: str) -> bool:
        return urlsplit(url).scheme == "redis"

    async def __call__(
        self, script: RedisScript, keys: Sequence[str], args: Sequence[object]
    ) -> Any:
        call = _Call(script, keys, args, asyncio.get_running_loop().create_future())
        self._enqueue(call)
        return await call.future

    def _enqueue(self, call: _Call) -> None:
        """Queue a call for the write made at the end of this event-loop pass."""
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._send_queued)
        self._queued.append(call)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.fail(redis.exceptions.ConnectionError("Connection to Redis closed"))
            self._protocol = None

    def _send_queued(self) -> None:
        calls, self._queued = self._queued, []
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            self._send(protocol, calls)
            return
        # No connection yet, or it was lost: connect, then send.
        task = asyncio.create_task(self._send_when_connected(calls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, protocol: _Protocol, calls: Sequence[_Call]) -> None:
        commands = [
            (
                "EVAL" if call.with_source else "EVALSHA",
                call.script.source if call.with_source else call.script.sha,
                len(call.keys),
                *call.keys,
                *call.args,
            )
            for call in calls
        ]
        data = b"".join([hiredis.pack_command(command) for command in commands])
        # One timer per write, on its last call: replies come in order, so the last
        # reply back means every reply of the write is back.
        calls[-1].timer = asyncio.get_running_loop().call_later(
            self._timeout_s, self._expire, protocol
        )
        protocol.send(data, calls)

    def _expire(self, protocol: _Protocol) -> None:
        protocol.fail(
            redis.exceptions.TimeoutError(f"Redis did not reply within {self._timeout_s:g} s")
        )

    async def _send_when_connected(self, calls: list[_Call]) -> None:
        try:
            protocol = await self._connected()
        except Exception as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        self._send(protocol, calls)

    async def _connected(self) -> _Protocol:
        """Return the open connection, connecting once for all callers that need one."""
        if self._protocol is not None and not self._protocol.lost:
            return self._protocol
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self._host, self._port
                )
                await self._handshake_on(protocol)
        except TimeoutError:
            failure: Exception = redis.exceptions.TimeoutError(
                f"Connecting to Redis at {self._host}:{self._port} timed out "
                f"after {self._connect_timeout_s:g} s"
            )
        except OSError as exc:
            failure = redis.exceptions.ConnectionError(
                f"Connecting to Redis at {self._host}:{self._port} failed: {exc}"
            )
        except BaseException as exc:
            if protocol is not None:
                protocol.fail(redis.exceptions.ConnectionError(f"Connecting failed: {exc!r}"))
            raise
        else:
            self._protocol = protocol
            return protocol
        if protocol is not None:
            protocol.fail(failure)
        raise failure

    async def _handshake_on(self, protocol: _Protocol) -> None:
        """Send the AUTH and SELECT that the URL requires; raise ConnectionError if Redis
        rejects one."""
        if not self._handshake:
            return
        replies = [asyncio.get_running_loop().create_future() for _ in self._handshake]
        data = b"".join(hiredis.pack_command(command) for command in self._handshake)
        protocol.send(data, replies)
        for command, reply in zip(self._handshake, replies, strict=True):
            result = await reply
            if isinstance(result, hiredis.ReplyError):
                raise redis.exceptions.ConnectionError(
                    f"Redis rejected {command[0]} while connecting: {result}"
                )

    def _resolve(self, call: _Call, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith("NOSCRIPT") and not call.with_source:
                # Nothing ran: send the call again with the source, which also loads it.
                call.with_source = True
                self._enqueue(call)
                return
            # The exception redis-py raises for the same reply. LOADING and "max number
            # of clients" are connection errors there, so ingest responds with 503.
            reply = BaseParser.parse_error(str(reply))
        if call.future.done():  # its caller was cancelled
            return
        if isinstance(reply, Exception):
            call.future.set_exception(reply)
        else:
            call.future.set_result(reply)
