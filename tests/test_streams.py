"""The append script sent through `PipelinedScript`, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from core import streams
from core.connections import HiredisPackingConnection
from core.streams import AppendOutcome, StreamKeys
from tests.agent_support import free_port

SHARDS = 4


async def _append(
    redis: aioredis.Redis, pipeline: streams.PipelinedScript, run_id: str, count: int = 1
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


async def test_pipelined_appends_get_own_outcomes(redis: aioredis.Redis, clean: None) -> None:
    await _open(redis, "run_open")
    await _open(redis, "run_final", final=True)
    pipeline = streams.append_pipeline(redis)
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


async def test_pipelined_appends_reload_flushed_script(redis: aioredis.Redis, clean: None) -> None:
    await _open(redis, "run_open")
    pipeline = streams.append_pipeline(redis)
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


async def test_pipelined_appends_time_out_without_reply() -> None:
    """A server that accepts and never replies fails the calls at the pipeline's timeout."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=None)
    pipeline = streams.append_pipeline(silent, timeout_s=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        calls = (_append(silent, pipeline, "run_open") for _ in range(3))
        # The outer bound fails the test instead of hanging it if the timeout is lost.
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    finally:
        await silent.aclose()
        for writer in connections:
            writer.close()
        server.close()
    assert 0.3 <= loop.time() - began < 5
    assert len(connections) == 1
    for result in results:
        assert isinstance(result, TimeoutError)


async def test_pipelined_appends_fail_when_redis_down() -> None:
    # A port that was free a moment ago almost surely has no listener.
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    pipeline = streams.append_pipeline(down)
    try:
        results = await asyncio.gather(
            *(_append(down, pipeline, "run_open") for _ in range(3)), return_exceptions=True
        )
    finally:
        await down.aclose()
    assert len(results) == 3
    for result in results:
        assert isinstance(result, redis.exceptions.ConnectionError)


@pytest.mark.parametrize("cancelled_index", [0, 2])
async def test_pipelined_append_cancelled_caller(
    redis: aioredis.Redis, clean: None, cancelled_index: int
) -> None:
    await _open(redis, "run_open")
    pipeline = streams.append_pipeline(redis)
    tasks = [asyncio.create_task(_append(redis, pipeline, "run_open")) for _ in range(3)]
    await asyncio.sleep(0)
    tasks[cancelled_index].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[cancelled_index], asyncio.CancelledError)
    others = [result for index, result in enumerate(results) if index != cancelled_index]
    assert [outcome for outcome, _ in others] == [AppendOutcome.APPENDED] * 2
