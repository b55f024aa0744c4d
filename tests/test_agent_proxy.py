"""The agent's fault proxy on real sockets, and the seeded fault plan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from agent.proxy import FaultProxy
from agent.scenarios import (
    SCENARIOS,
    Fault,
    Partition,
    RetryBudget,
    fault_for,
    partitions_for,
)


class CountingServer:
    """A minimal HTTP/1.1 server that stores every request body it reads in full."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.bodies.append(await reader.readexactly(length))
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[CountingServer]:
    server = CountingServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(upstream: CountingServer) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", upstream.port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def _post(proxy: FaultProxy, timeout_s: float = 2.0) -> httpx.Response:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as http:
        return await http.post(f"http://127.0.0.1:{proxy.port}/items", content=b"payload")


async def test_proxy_forwards_clean_request(proxy: FaultProxy, upstream: CountingServer) -> None:
    ticket = proxy.arm(Fault())
    response = await _post(proxy)
    assert response.status_code == 201
    assert upstream.bodies == [b"payload"]
    assert ticket.accepted
    assert ticket.server_status == 201
    assert ticket.forwarded_bytes > len(b"payload")


async def test_proxy_adds_latency(proxy: FaultProxy, upstream: CountingServer) -> None:
    proxy.arm(Fault(latency_s=0.15))
    started = time.monotonic()
    response = await _post(proxy)
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    # One delay on the way in and one on the way out.
    assert elapsed >= 0.3


async def test_proxy_hold_outlasts_timeout_after_processing(
    proxy: FaultProxy, upstream: CountingServer
) -> None:
    ticket = proxy.arm(Fault(kind="hold_response", hold_s=1.0))
    with pytest.raises(httpx.TimeoutException):
        await _post(proxy, timeout_s=0.3)
    await proxy.wait_idle(3.0)
    assert upstream.bodies == [b"payload"]
    assert ticket.server_status == 201


async def test_proxy_reset_after_forward(proxy: FaultProxy, upstream: CountingServer) -> None:
    ticket = proxy.arm(Fault(kind="reset_after_forward"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await _post(proxy)
    assert upstream.bodies == [b"payload"]
    assert ticket.server_status == 201


async def test_proxy_reset_before_forward(proxy: FaultProxy, upstream: CountingServer) -> None:
    ticket = proxy.arm(Fault(kind="reset_before_forward"))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
        await _post(proxy)
    assert upstream.bodies == []
    assert ticket.accepted
    assert ticket.server_status is None


async def test_proxy_refuses_then_heals(proxy: FaultProxy, upstream: CountingServer) -> None:
    await proxy.partition(Partition(mode="refuse", start_write=1, duration_s=0.5))
    assert proxy.partition_mode == "refuse"
    ticket = proxy.arm(Fault())
    with pytest.raises(httpx.ConnectError):
        await _post(proxy)
    assert not ticket.accepted
    await asyncio.sleep(0.7)
    assert proxy.partition_mode is None
    response = await _post(proxy)
    assert response.status_code == 201
    assert len(upstream.bodies) == 1


async def test_proxy_blackhole_then_heal(proxy: FaultProxy, upstream: CountingServer) -> None:
    await proxy.partition(Partition(mode="blackhole", start_write=1, duration_s=30))
    with pytest.raises(httpx.TimeoutException):
        await _post(proxy, timeout_s=0.3)
    await proxy.heal()
    response = await _post(proxy)
    assert response.status_code == 201
    assert upstream.bodies == [b"payload"]


async def test_proxy_heal_reopens_refused_port(proxy: FaultProxy) -> None:
    port = proxy.port
    await proxy.partition(Partition(mode="refuse", start_write=1, duration_s=30))
    await proxy.heal()
    assert proxy.port == port
    assert (await _post(proxy)).status_code == 201


def test_fault_plan_is_reproducible() -> None:
    scenario = SCENARIOS["unstable_network"]
    first = [
        fault_for(scenario, 7, write, attempt, 1.0) for write in range(50) for attempt in (1, 2)
    ]
    again = [
        fault_for(scenario, 7, write, attempt, 1.0) for write in range(50) for attempt in (1, 2)
    ]
    other = [
        fault_for(scenario, 8, write, attempt, 1.0) for write in range(50) for attempt in (1, 2)
    ]
    assert first == again
    assert first != other


def test_fault_plan_follows_weights() -> None:
    scenario = SCENARIOS["timeout_retry"]
    faults = [fault_for(scenario, 1, write, 1, 0.5) for write in range(2000)]
    held = [fault for fault in faults if fault.kind == "hold_response"]
    assert 0.3 < len(held) / len(faults) < 0.4
    # A held response comes back well after the client's timeout.
    assert all(fault.hold_s >= 1.0 for fault in held)
    assert all(0.005 <= fault.latency_s <= 0.025 for fault in faults)


def test_partitions_fit_retry_budget() -> None:
    budget = RetryBudget(timeout_s=1.0, retries=4, backoff_s=0.1, backoff_max_s=2.0)
    refuse, blackhole = partitions_for(SCENARIOS["network_partition"], 20, budget)
    assert refuse.mode == "refuse"
    assert refuse.start_write == 6
    assert refuse.duration_s < budget.backoff_total_s()
    assert blackhole.mode == "blackhole"
    assert blackhole.start_write == 13
    assert blackhole.duration_s < 4 * 1.0 + budget.backoff_total_s()
