"""The Redis side of the event pipeline: stream keys and the scripts that use them.

Runs are spread over `stream_shards` shards by a hash of the run id. Every key of a
shard carries the shard's hash tag, so a shard can live on one Redis Cluster node and
its scripts touch one slot:

    sa:{s3}:events    stream of accepted batches, read by the `persist` group; fields
                      `n`: event count, and either `batch`: a JSON `StreamBatch`, or
                      `body`: a JSON `SentBatch` (the agent's body as it was sent)
    sa:{s3}:runs      hash run id -> "<project key>:open" or "<project key>:final"
    sa:{s3}:accepted  hash run id -> events accepted for the run since it was created
    sa:{s3}:backlog   events appended and not yet acknowledged by a worker
    sa:{s3}:dead      dead-letter stream of entries that could not be persisted

Ingest appends with one script call per request, which checks the run's state and
the backlog, appends, and counts, atomically. Workers acknowledge with another
script that deletes acknowledged entries, so the stream holds only unpersisted ones
and nothing is ever trimmed by length.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

__all__ = [
    "APPEND_SCRIPT",
    "CONSUMER_GROUP",
    "AppendOutcome",
    "RedisScript",
    "ScriptCaller",
    "ScriptPipeline",
    "StreamKeys",
    "accepted_count",
    "ack_entries",
    "append_batch",
    "check_run",
    "forget_run",
    "set_run_state",
    "shard_for",
]

CONSUMER_GROUP = "persist"


def shard_for(run_id: str, shards: int) -> int:
    return zlib.crc32(run_id.encode()) % shards


class StreamKeys(msgspec.Struct, frozen=True):
    shard: int

    @property
    def events(self) -> str:
        return f"sa:{{s{self.shard}}}:events"

    @property
    def runs(self) -> str:
        return f"sa:{{s{self.shard}}}:runs"

    @property
    def accepted(self) -> str:
        return f"sa:{{s{self.shard}}}:accepted"

    @property
    def backlog(self) -> str:
        return f"sa:{{s{self.shard}}}:backlog"

    @property
    def dead(self) -> str:
        return f"sa:{{s{self.shard}}}:dead"

    @classmethod
    def for_run(cls, run_id: str, shards: int) -> StreamKeys:
        return cls(shard_for(run_id, shards))


class AppendOutcome(enum.Enum):
    APPENDED = "ok"
    UNKNOWN_RUN = "unknown"  # not in the state hash: load it from PostgreSQL
    FOREIGN_RUN = "foreign"  # belongs to another project
    FINAL_RUN = "final"  # finished, failed or cancelled
    BACKLOG_FULL = "backlog_full"


_APPEND = """
local state = redis.call('HGET', KEYS[2], ARGV[1])
if not state then return {'unknown'} end
local sep = string.find(state, ':', 1, true)
if string.sub(state, 1, sep - 1) ~= ARGV[2] then return {'foreign'} end
if string.sub(state, sep + 1) ~= 'open' then return {'final'} end
local count = tonumber(ARGV[3])
local backlog = tonumber(redis.call('GET', KEYS[4]) or '0')
if backlog + count > tonumber(ARGV[4]) then return {'backlog_full', tostring(backlog)} end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[3], ARGV[6], ARGV[5])
redis.call('INCRBY', KEYS[4], count)
redis.call('HINCRBY', KEYS[3], ARGV[1], count)
return {'ok', id}
"""

# ARGV: group, then (entry id, event count) pairs. Counting only entries that XACK
# really removed from the pending list keeps the backlog exact when an entry is
# acknowledged twice (a reclaimed entry finished by both consumers).
_ACK = """
local acked = 0
for i = 2, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    redis.call('DECRBY', KEYS[2], ARGV[i + 1])
    acked = acked + 1
  end
end
return acked
"""


class RedisScript:
    """A Lua script called by SHA, loaded on the first miss (after a Redis restart too)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: aioredis.Redis, keys: Sequence[str], args: Sequence[object]):
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)


_Call = tuple[RedisScript, Sequence[str], Sequence[object], "asyncio.Future[Any]"]


class ScriptPipeline:
    """Lua script calls from concurrent tasks, sent to Redis in shared pipelines.

    The calls made during one pass of the event loop go out as one pipeline, with one
    connection checkout, one write and one read for all of them. Each call still
    runs as a script of its own, so each stays atomic and gets its own result or
    exception. A connection error fails every call of that pipeline, as it would
    have failed each call sent alone.

    With `timeout_s`, a pipeline that gets no reply in time fails its calls with
    TimeoutError. The client can then do without a socket timeout, for which
    redis-py wraps every command's write in `asyncio.wait_for` (a task per command)
    and its read in a timeout of its own.
    """

    def __init__(self, redis: aioredis.Redis, *, timeout_s: float | None = None) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(
        self, script: RedisScript, keys: Sequence[str], args: Sequence[object]
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._send_queued)
        self._queued.append((script, keys, args, future))
        return await future

    async def close(self) -> None:
        """Close the client given at creation."""
        await self._redis.aclose()

    def _send_queued(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.create_task(self._send(calls))
        # The loop keeps only weak references to tasks.
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in calls:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for *_, future in calls:
                future.cancel()
            raise
        except Exception as exc:
            results = [exc] * len(calls)
        for (script, keys, args, future), result in zip(calls, results, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, NoScriptError):
                # Redis lost its script cache (a restart), so this call ran nothing yet.
                await self._call_alone(script, keys, args, future)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _call_alone(
        self,
        script: RedisScript,
        keys: Sequence[str],
        args: Sequence[object],
        future: asyncio.Future[Any],
    ) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await script(self._redis, keys, args)
        except Exception as exc:
            result = exc
        if future.done():  # its caller was cancelled meanwhile
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


APPEND_SCRIPT = RedisScript(_APPEND)
_ack_script = RedisScript(_ACK)
# The sender of ingest's script calls: a ScriptPipeline or a ScriptConnection.
ScriptCaller = Callable[[RedisScript, Sequence[str], Sequence[object]], Awaitable[Any]]


async def append_batch(
    redis: aioredis.Redis,
    keys: StreamKeys,
    *,
    run_id: str,
    project_key: int,
    event_count: int,
    backlog_limit: int,
    entry: bytes,
    field: str = "batch",
    pipeline: ScriptCaller | None = None,
) -> tuple[AppendOutcome, str]:
    """Append one encoded batch, as stream field `field`, if the run is open and the
    backlog has room.

    Returns the outcome and, when appended, the entry id; when the backlog is full,
    the backlog's current size. With `pipeline` (see `connections.connect_scripts`),
    the script call shares a round trip with the script calls of other requests.
    """
    script_keys = (keys.events, keys.runs, keys.accepted, keys.backlog)
    script_args = (run_id, project_key, event_count, backlog_limit, entry, field)
    if pipeline is None:
        result = await APPEND_SCRIPT(redis, script_keys, script_args)
    else:
        result = await pipeline(APPEND_SCRIPT, script_keys, script_args)
    outcome = AppendOutcome(_text(result[0]))
    detail = _text(result[1]) if len(result) > 1 else ""
    return outcome, detail


async def check_run(
    redis: aioredis.Redis, keys: StreamKeys, *, run_id: str, project_key: int
) -> AppendOutcome:
    """Check, as an append does, that a run is known, of this project and open.

    Returns `APPENDED` when an append would go ahead, else the outcome it would have.
    """
    state = await redis.hget(keys.runs, run_id)
    if state is None:
        return AppendOutcome.UNKNOWN_RUN
    owner, _, status = _text(state).partition(":")
    if owner != str(project_key):
        return AppendOutcome.FOREIGN_RUN
    if status != "open":
        return AppendOutcome.FINAL_RUN
    return AppendOutcome.APPENDED


async def ack_entries(
    redis: aioredis.Redis, keys: StreamKeys, entries: Sequence[tuple[str, int]]
) -> int:
    """Acknowledge and delete `(entry id, event count)` pairs; return how many were pending."""
    if not entries:
        return 0
    args: list[str | int] = [CONSUMER_GROUP]
    for entry_id, count in entries:
        args.extend((entry_id, count))
    return int(await _ack_script(redis, (keys.events, keys.backlog), args))


async def set_run_state(
    redis: aioredis.Redis,
    keys: StreamKeys,
    *,
    run_id: str,
    project_key: int,
    final: bool,
    only_new: bool = False,
) -> None:
    state = f"{project_key}:{'final' if final else 'open'}"
    if only_new:
        await redis.hsetnx(keys.runs, run_id, state)
    else:
        await redis.hset(keys.runs, run_id, state)


async def forget_run(redis: aioredis.Redis, keys: StreamKeys, run_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.runs, run_id)
        pipe.hdel(keys.accepted, run_id)
        await pipe.execute()


async def accepted_count(redis: aioredis.Redis, keys: StreamKeys, run_id: str) -> int:
    value = await redis.hget(keys.accepted, run_id)
    return int(value) if value is not None else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
