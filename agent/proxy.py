"""A fault-injecting TCP proxy on 127.0.0.1, built on asyncio streams.

The agent arms the proxy with a fault before each attempt and opens one connection
per attempt, so each fault hits exactly that attempt. Faults act on real sockets:
delayed chunks, a response held back, a TCP reset (SO_LINGER 0, then close), a
closed listening socket that refuses connections, or an accepted connection that
never gets a response.

The proxy reads the status line of the target's response as it passes, so the
ledger records the server's response even when the client never saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

from agent.scenarios import Fault, Partition

__all__ = ["FaultProxy", "Ticket"]

log = logging.getLogger(__name__)

_CHUNK_BYTES = 65536
# How long to wait for the target's response after the client closed its side.
_DRAIN_AFTER_CLIENT_EOF_S = 10.0


class Ticket:
    """Record of the connection of one armed attempt, filled in by the proxy."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.accepted = False
        self.forwarded_bytes = 0
        # Status code of the target's response, read from its status line.
        self.server_status: int | None = None
        self.partition: str | None = None


def _status_code(chunk: bytes) -> int | None:
    """Parse the status code of an HTTP/1.x status line at the start of `chunk`."""
    line = chunk.split(b"\r\n", 1)[0].split(b" ")
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


async def _pipe(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    delay_for: Callable[[bytes], float],
) -> None:
    """Copy src to dst, delivering each chunk `delay_for(chunk)` seconds after it arrived.

    A queue between reader and writer makes this a delay line: later chunks do not
    wait for earlier delays to elapse, and the order is kept.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(chunk)
            await dst.drain()

    delivery = asyncio.create_task(deliver())
    last_due = 0.0
    try:
        while not delivery.done():
            chunk = await src.read(_CHUNK_BYTES)
            last_due = max(last_due, loop.time() + delay_for(chunk))
            queue.put_nowait((last_due, chunk))
            if not chunk:
                break
        await delivery
    except (ConnectionError, OSError):
        pass
    finally:
        delivery.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await delivery


class FaultProxy:
    """Listen on 127.0.0.1 and forward each connection to one upstream host and port."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self._server: asyncio.Server | None = None
        self._armed: Ticket | None = None
        self._mode: str | None = None
        self._heal_task: asyncio.Task[None] | None = None
        # Client side of each open connection, by the task that serves it.
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def partition_mode(self) -> str | None:
        """`refuse` or `blackhole` while a partition is on, else None."""
        return self._mode

    async def start(self) -> int:
        await self._listen()
        log.info("proxy listening on 127.0.0.1:%d", self.port)
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def arm(self, fault: Fault) -> Ticket:
        """Apply `fault` to the next accepted connection; return its ticket."""
        self._armed = Ticket(fault)
        return self._armed

    async def partition(self, partition: Partition) -> None:
        """Start a partition now; it heals by itself after its duration.

        Open connections are reset, as a real partition breaks them too; otherwise a
        client with keep-alive connections would not notice the partition.
        """
        await self.heal()
        self._mode = partition.mode
        for writer in self._connections.values():
            _reset(writer)
        if partition.mode == "refuse":
            # Closing the listening socket makes the kernel reset new connections
            # with RST, which the client sees as "connection refused".
            assert self._server is not None
            self._server.close()
        log.info("partition %s for %.2f s", partition.mode, partition.duration_s)
        self._heal_task = asyncio.create_task(self._heal_later(partition.duration_s))

    async def _heal_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._restore()

    async def heal(self) -> None:
        """End any partition at once."""
        if self._heal_task is not None:
            self._heal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heal_task
            self._heal_task = None
        await self._restore()

    async def _restore(self) -> None:
        if self._mode == "refuse":
            await self._listen()
        if self._mode is not None:
            log.info("partition %s healed", self._mode)
        self._mode = None

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait until every proxied connection has closed, for at most `timeout_s`."""
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=timeout_s)

    async def close(self) -> None:
        await self.heal()
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        ticket, self._armed = self._armed or Ticket(Fault()), None
        ticket.accepted = True
        ticket.partition = self._mode
        try:
            await self._serve(ticket, reader, writer)
        except (ConnectionError, OSError) as exc:
            log.debug("proxied connection ended: %s", exc)
        finally:
            self._connections.pop(task, None)
            if not writer.transport.is_closing():
                await _close(writer)

    async def _serve(
        self, ticket: Ticket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        kind = ticket.fault.kind
        if self._mode == "blackhole" or kind == "blackhole":
            # Read and drop everything until the client gives up, like a lost route.
            while await reader.read(_CHUNK_BYTES):
                pass
            return
        if kind == "reset_before_forward":
            await reader.read(_CHUNK_BYTES)
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError as exc:
            log.warning("cannot connect to %s:%d: %s", self.upstream_host, self.upstream_port, exc)
            _reset(writer)
            return
        try:
            await self._forward(ticket, reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    async def _forward(
        self,
        ticket: Ticket,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        fault = ticket.fault

        def request_delay(chunk: bytes) -> float:
            ticket.forwarded_bytes += len(chunk)
            return fault.latency_s

        first = True

        def response_delay(chunk: bytes) -> float:
            nonlocal first
            if first and chunk:
                first = False
                ticket.server_status = _status_code(chunk)
                if fault.kind == "reset_after_forward":
                    # The target has responded, so it processed the request; the
                    # client never learns that.
                    _reset(writer)
                    raise ConnectionAbortedError("reset injected")
                return fault.latency_s + fault.hold_s
            return fault.latency_s

        upstream = asyncio.create_task(_pipe(reader, up_writer, request_delay))
        downstream = asyncio.create_task(_pipe(up_reader, writer, response_delay))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            if not downstream.done():
                # The client closed its side, so let the target's response come back.
                await asyncio.wait({downstream}, timeout=_DRAIN_AFTER_CLIENT_EOF_S + fault.hold_s)
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
