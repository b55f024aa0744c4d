"""The append script sent through `ScriptPipeline` and `ScriptConnection`, against a real
Redis, and the ways both fail."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.exceptions import ConnectionError as RedisConnectionError

from core import streams
from core.config import Settings
from core.connections import HiredisPackingConnection, connect_scripts
from core.script_connection import ScriptConnection
from core.streams import AppendOutcome, StreamKeys
from tests.agent_support import free_port

SHARDS = 4
KINDS = ["pipeline", "connection"]


def _caller(kind: str, url: str, *, timeout_s: float = 5.0) -> streams.ScriptCaller:
    """Return a `ScriptPipeline` on a client of `url`, or a `ScriptConnection` to it."""
    if kind == "connection":
        return ScriptConnection(url, timeout_s=timeout_s)
    client = aioredis.Redis.from_url(url, socket_timeout=None)
    return streams.ScriptPipeline(client, timeout_s=timeout_s)


@pytest.fixture(params=KINDS)
async def pipeline(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[streams.ScriptCaller]:
    assert settings.redis_url
    caller = _caller(request.param, settings.redis_url)
    yield caller
    await caller.close()  # type: ignore[attr-defined]


async def _append(
    redis: aioredis.Redis, pipeline: streams.ScriptCaller, run_id: str, count: int = 1
) -> tuple[AppendOutcome, str]:
    return await streams.append_batch(
        redis,
        StreamKeys.for_run(run_id, SHARDS),
        run_id=run_id,
        project_key=7,
        event_count=count,
        backlog_limit=1000,
        entry=b'["%s"]' % run_id.encode(),
        pipeline=pipeline,
    )


async def _open(redis: aioredis.Redis, run_id: str, *, final: bool = False) -> None:
    keys = StreamKeys.for_run(run_id, SHARDS)
    await streams.set_run_state(redis, keys, run_id=run_id, project_key=7, final=final)


async def test_pipelined_appends_get_own_outcomes(
    redis: aioredis.Redis, clean: None, pipeline: streams.ScriptCaller
) -> None:
    await _open(redis, "run_open")
    await _open(redis, "run_final", final=True)
    outcomes = await asyncio.gather(
        *(_append(redis, pipeline, "run_open", count=2) for _ in range(50)),
        _append(redis, pipeline, "run_final"),
        _append(redis, pipeline, "run_unknown"),
    )
    keys = StreamKeys.for_run("run_open", SHARDS)
    assert [outcome for outcome, _ in outcomes[:50]] == [AppendOutcome.APPENDED] * 50
    assert len({entry_id for _, entry_id in outcomes[:50]}) == 50
    assert outcomes[50][0] is AppendOutcome.FINAL_RUN
    assert outcomes[51][0] is AppendOutcome.UNKNOWN_RUN
    assert await redis.xlen(keys.events) == 50
    assert await streams.accepted_count(redis, keys, "run_open") == 100


async def test_pipelined_appends_reload_flushed_script(
    redis: aioredis.Redis, clean: None, pipeline: streams.ScriptCaller
) -> None:
    await _open(redis, "run_open")
    await _append(redis, pipeline, "run_open")
    await redis.script_flush()
    outcomes = await asyncio.gather(*(_append(redis, pipeline, "run_open") for _ in range(5)))
    assert [outcome for outcome, _ in outcomes] == [AppendOutcome.APPENDED] * 5
    assert await redis.xlen(StreamKeys.for_run("run_open", SHARDS).events) == 6


PACKED_COMMANDS = [
    (
        "EVALSHA",
        "0" * 40,
        4,
        "sa:{s1}:events",
        "k2",
        "k3",
        "k4",
        "run_x",
        7,
        1,
        10**6,
        b"[]",
        "body",
    ),
    ("SET", "text", "caf\u00e9 \u2713"),
    ("SET", "bytes", b"\x00\xff\r\n"),
    ("SET", "numbers", -7, 1.5, 200.0, 1e20, 0.1),
    ("CONFIG GET", "appendonly"),
    ("SET", "large", b"x" * 20_000),
]


@pytest.mark.parametrize("command", PACKED_COMMANDS, ids=lambda command: str(command[0]))
def test_hiredis_packing_matches_redis_py(command: tuple[object, ...]) -> None:
    python = b"".join(aioredis.Connection().pack_command(*command))
    assert b"".join(HiredisPackingConnection().pack_command(*command)) == python


async def test_connect_redis_packs_with_hiredis(redis: aioredis.Redis) -> None:
    assert redis.connection_pool.connection_class is HiredisPackingConnection
    await redis.set("sa:test:packed", "caf\u00e9")
    assert await redis.get("sa:test:packed") == "caf\u00e9".encode()
    assert "appendonly" in await redis.config_get("appendonly")


@pytest.mark.parametrize("kind", KINDS)
async def test_pipelined_appends_time_out_without_reply(kind: str) -> None:
    """A server that accepts and never replies fails the calls at the pipeline's timeout."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=None)
    pipeline = _caller(kind, f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        calls = (_append(silent, pipeline, "run_open") for _ in range(3))
        # The outer bound fails the test instead of hanging it if the timeout is lost.
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    finally:
        await silent.aclose()
        await pipeline.close()  # type: ignore[attr-defined]
        for writer in connections:
            writer.close()
        server.close()
    assert 0.3 <= loop.time() - began < 5
    assert len(connections) == 1
    for result in results:
        # redis-py's TimeoutError for the connection, the built-in one for the pipeline.
        assert isinstance(result, TimeoutError | redis.exceptions.TimeoutError)


@pytest.mark.parametrize("kind", KINDS)
async def test_pipelined_appends_fail_when_redis_down(kind: str) -> None:
    # A port that was free a moment ago almost surely has no listener.
    url = f"redis://127.0.0.1:{free_port()}/0"
    down = aioredis.Redis.from_url(url)
    pipeline = _caller(kind, url)
    try:
        results = await asyncio.gather(
            *(_append(down, pipeline, "run_open") for _ in range(3)), return_exceptions=True
        )
    finally:
        await down.aclose()
        await pipeline.close()  # type: ignore[attr-defined]
    assert len(results) == 3
    for result in results:
        assert isinstance(result, redis.exceptions.ConnectionError)


@pytest.mark.parametrize("cancelled_index", [0, 2])
async def test_pipelined_append_cancelled_caller(
    redis: aioredis.Redis, clean: None, cancelled_index: int, pipeline: streams.ScriptCaller
) -> None:
    await _open(redis, "run_open")
    tasks = [asyncio.create_task(_append(redis, pipeline, "run_open")) for _ in range(3)]
    await asyncio.sleep(0)
    tasks[cancelled_index].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[cancelled_index], asyncio.CancelledError)
    others = [result for index, result in enumerate(results) if index != cancelled_index]
    assert [outcome for outcome, _ in others] == [AppendOutcome.APPENDED] * 2


async def test_script_connection_selects_url_database(settings: Settings, clean: None) -> None:
    assert settings.redis_url
    base = settings.redis_url.rsplit("/", 1)[0]
    other = aioredis.Redis.from_url(f"{base}/3")
    connection = ScriptConnection(f"{base}/3", timeout_s=5)
    try:
        await other.flushdb()
        await _open(other, "run_db3")
        outcome, _ = await _append(other, connection, "run_db3")
        assert outcome is AppendOutcome.APPENDED
        assert await other.xlen(StreamKeys.for_run("run_db3", SHARDS).events) == 1
    finally:
        await other.flushdb()
        await other.aclose()
        await connection.close()


async def test_script_connection_reconnects_after_kill(
    redis: aioredis.Redis, settings: Settings, clean: None
) -> None:
    assert settings.redis_url
    await _open(redis, "run_open")
    connection = ScriptConnection(settings.redis_url, timeout_s=5)
    try:
        assert (await _append(redis, connection, "run_open"))[0] is AppendOutcome.APPENDED
        killed = connection._protocol
        assert killed is not None and killed.transport is not None
        host, port = killed.transport.get_extra_info("sockname")[:2]
        assert await redis.client_kill(f"{host}:{port}")
        outcomes: list[object] = []
        for _ in range(3):
            try:
                outcomes.append((await _append(redis, connection, "run_open"))[0])
            except RedisConnectionError:
                outcomes.append("lost")
        # Only a call sent before the kill is noticed fails; the next ones reconnect.
        assert outcomes.count("lost") <= 1
        assert outcomes[-1] is AppendOutcome.APPENDED
        assert connection._protocol is not killed
    finally:
        await connection.close()


async def test_script_connection_rejected_password() -> None:
    """A server that rejects AUTH fails the calls with a connection error naming AUTH."""

    async def reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"-WRONGPASS invalid username-password pair\r\n")
        await writer.drain()

    server = await asyncio.start_server(reject, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://:secret@127.0.0.1:{port}/0"
    connection = ScriptConnection(url, timeout_s=5)
    try:
        with pytest.raises(RedisConnectionError, match="Redis rejected AUTH.*WRONGPASS"):
            await asyncio.wait_for(connection(streams.APPEND_SCRIPT, ("k",), ("a",)), 10)
    finally:
        await connection.close()
        server.close()


def test_connect_scripts_by_url_scheme(settings: Settings) -> None:
    assert isinstance(connect_scripts("redis://127.0.0.1:1/0", settings), ScriptConnection)
    for url in ("rediss://127.0.0.1:1/0", "unix:///tmp/redis.sock"):
        assert isinstance(connect_scripts(url, settings), streams.ScriptPipeline)
    with pytest.raises(ValueError, match="accepts redis:// URLs only"):
        ScriptConnection("unix:///tmp/redis.sock", timeout_s=1)


async def test_script_connection_mixes_scripts(
    redis: aioredis.Redis, pipeline: streams.ScriptCaller, clean: None
) -> None:
    """Calls of different scripts in one write each get their own script's reply."""
    await _open(redis, "run_open")
    echo = streams.RedisScript("return ARGV[1]")
    await redis.script_flush()
    results = await asyncio.gather(
        *(pipeline(echo, (), (f"echo-{index}",)) for index in range(5)),
        *(_append(redis, pipeline, "run_open") for _ in range(5)),
    )
    assert [bytes(result) for result in results[:5]] == [b"echo-%d" % i for i in range(5)]
    assert [outcome for outcome, _ in results[5:]] == [AppendOutcome.APPENDED] * 5


class _ThreadServer:
    """A fake Redis on its own event loop in a thread, so that its replies and closes
    race the client's loop as a separate Redis process would."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(handler, "127.0.0.1", 0)
            )
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait()

    def close(self) -> None:
        async def shut_down() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut_down(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _max_clients(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"-ERR max number of clients reached\r\n")
    await writer.drain()
    writer.close()


async def _loading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(b"-LOADING Redis is loading the dataset in memory\r\n" * data.count(b"*"))
        await writer.drain()
    writer.close()


async def _out_of_memory(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(
            b"-OOM command not allowed when used memory > 'maxmemory'.\r\n" * data.count(b"*")
        )
        await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_close_at_once, RedisConnectionError),
        (_max_clients, RedisConnectionError),
        (_loading, redis.exceptions.BusyLoadingError),
        (_out_of_memory, redis.exceptions.OutOfMemoryError),
    ],
    ids=["closed", "max clients", "loading", "out of memory"],
)
async def test_script_connection_server_faults_fail_calls(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    error: type[Exception],
) -> None:
    """Every call ends with redis-py's exception for the fault, repeatedly, and none hangs."""
    server = _ThreadServer(handler)
    connection = ScriptConnection(f"redis://127.0.0.1:{server.port}/0", timeout_s=2)
    try:
        for _ in range(5):
            calls = (connection(streams.APPEND_SCRIPT, ("k",), ("a",)) for _ in range(5))
            # The outer bound fails the test instead of hanging it.
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
            for result in results:
                assert isinstance(result, error | RedisConnectionError), repr(result)
            assert any(isinstance(result, error) for result in results)
    finally:
        await connection.close()
        server.close()
