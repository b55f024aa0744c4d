"""The worker process: arq for maintenance jobs, plus one stream consumer per shard.

arq polls its own job queue and does not read streams, so the consumers are plain
asyncio tasks started in `on_startup` and stopped in `on_shutdown`. arq handles
SIGINT and SIGTERM: it stops taking jobs and runs `on_shutdown`, where each consumer
finishes its batch, commits and acknowledges before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import arq
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions
from arq import cron
from arq.connections import RedisSettings
from prometheus_client import start_http_server

from core import streams
from core.config import Settings
from core.connections import check_redis_durability, connect_postgres, connect_redis
from core.metrics import update_stream_gauges
from workers import persist
from workers.consumer import ShardConsumer

__all__ = ["Worker", "prune_done_entries", "reclaim_stale_entries", "worker_settings"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 30.0
_GAUGE_INTERVAL_S = 5.0
_MAX_CLAIMS_PER_RUN = 1000
# A record in `stream_entries_done` guards against persisting its entry twice, which
# can only happen while the entry is in the stream. A record is also kept an hour, for
# a consumer still processing an entry that another consumer has since finished.
DONE_RECORD_MIN_AGE_S = 3600.0
_PRUNE_CHUNK = 10_000


async def reclaim_stale_entries(ctx: dict[str, Any]) -> int:
    """Claim entries left pending by consumers idle past `reclaim_idle_ms` (dead ones).

    The claimed entries join this process's consumer of the same shard, which then
    persists them. Persisting is idempotent, so a slow consumer that was not dead
    and finishes too changes nothing.
    """
    settings: Settings = ctx["settings"]
    claimed_total = 0
    for consumer in ctx["consumers"]:
        start = "0-0"
        while claimed_total < _MAX_CLAIMS_PER_RUN:
            reply = await ctx["stream_redis"].xautoclaim(
                consumer.keys.events,
                streams.CONSUMER_GROUP,
                consumer.name,
                min_idle_time=settings.reclaim_idle_ms,
                start_id=start,
                count=100,
            )
            start, claimed = reply[0], reply[1]
            if claimed:
                claimed_total += len(claimed)
                consumer.wake_for_pending()
            if start in (b"0-0", "0-0"):
                break
    if claimed_total:
        log.warning("reclaimed %d entries from idle consumers", claimed_total)
    return claimed_total


async def prune_done_entries(ctx: dict[str, Any]) -> int:
    """Delete the `stream_entries_done` records of entries no longer in their stream.

    Entry ids only grow, so an entry older than the first entry left in the stream
    was acknowledged and deleted, and cannot be delivered again.
    """
    deleted = 0
    for consumer in ctx["consumers"]:
        stream = consumer.keys.events
        first = await ctx["stream_redis"].xrange(stream, count=1)
        before_id = _entry_id_pair(first[0][0]) if first else (2**63 - 1, 0)
        while True:
            async with ctx["pool"].acquire() as conn:
                count = await persist.prune_done_entries(
                    conn,
                    stream,
                    before_id=before_id,
                    min_age_s=DONE_RECORD_MIN_AGE_S,
                    limit=_PRUNE_CHUNK,
                )
            deleted += count
            if count < _PRUNE_CHUNK:
                break
    if deleted:
        log.info("pruned %d records of persisted stream entries", deleted)
    return deleted


def _entry_id_pair(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    assert settings.database_url and settings.redis_url
    ctx["pool"] = await connect_postgres(settings.database_url, max_size=settings.stream_shards + 2)
    ctx["stream_redis"] = connect_redis(settings.redis_url, settings)
    await check_redis_durability(ctx["stream_redis"])
    consumers = [
        ShardConsumer(shard=shard, settings=settings, pool=ctx["pool"], redis=ctx["stream_redis"])
        for shard in range(settings.stream_shards)
    ]
    ctx["consumers"] = consumers
    ctx["consumer_tasks"] = [
        asyncio.create_task(consumer.run(), name=f"consumer-{consumer.name}")
        for consumer in consumers
    ]
    ctx["gauge_task"] = asyncio.create_task(_refresh_gauges(ctx["stream_redis"], settings))
    _serve_metrics(settings.host, settings.worker_metrics_port)
    log.info("worker started %d stream consumers", len(consumers))


async def _refresh_gauges(redis: aioredis.Redis, settings: Settings) -> None:
    """Sample backlog, pending and dead-letter sizes for /metrics every few seconds."""
    while True:
        try:
            await update_stream_gauges(redis, settings.stream_shards)
        except (redis_exceptions.RedisError, OSError) as exc:
            log.debug("stream gauges not refreshed: %r", exc)
        await asyncio.sleep(_GAUGE_INTERVAL_S)


def _serve_metrics(host: str, port: int) -> None:
    if port == 0:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        # With several workers on one host, the first one serves and the others log this.
        log.warning("metrics not served on port %d (%s); set CLOUD_WORKER_METRICS_PORT", port, exc)
        return
    log.info("worker metrics on http://%s:%d/metrics", host, port)


async def _shutdown(ctx: dict[str, Any]) -> None:
    if "gauge_task" in ctx:
        ctx["gauge_task"].cancel()
    for consumer in ctx.get("consumers", []):
        consumer.stop()
    tasks = ctx.get("consumer_tasks", [])
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
        for task in pending:
            log.error(
                "consumer %s did not stop within %.0f s; cancelling",
                task.get_name(),
                _STOP_TIMEOUT_S,
            )
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("consumer %s failed: %r", task.get_name(), task.exception())
    if "stream_redis" in ctx:
        await ctx["stream_redis"].aclose()
    if "pool" in ctx:
        await ctx["pool"].close()
    log.info("worker stopped")


def worker_settings(settings: Settings) -> dict[str, Any]:
    """arq settings for a worker bound to `settings`."""
    assert settings.redis_url
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_timeout = 5
    return {
        "functions": [],
        "cron_jobs": [
            cron(
                reclaim_stale_entries, second=set(range(0, 60, 15)), run_at_startup=True, timeout=60
            ),
            cron(prune_done_entries, minute=set(range(0, 60, 10)), second=30, timeout=600),
        ],
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "redis_settings": redis_settings,
        "ctx": {"settings": settings},
        "queue_name": "softadastra:jobs",
        "handle_signals": True,
        "max_jobs": 4,
    }


class Worker(arq.Worker):
    """arq's worker, with a shutdown that always stops the stream consumers cleanly.

    arq 0.28 cancels running jobs on SIGTERM, then awaits them in `close()` without
    catching their CancelledError, which skips `on_shutdown`: the consumers would then
    die mid-batch instead of committing and acknowledging. It also skips
    `on_shutdown` when Redis is unreachable at that moment.

    arq also ends its poll loop, and with it the process, on the first Redis error
    of a poll, so a Redis restart would stop the worker for good. Here a poll that
    fails on Redis logs a warning (at most every 30 s) and the next poll retries.
    """

    _last_poll_warning = 0.0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as exc:
            now = time.monotonic()
            if now - self._last_poll_warning > 30:
                self._last_poll_warning = now
                log.warning(
                    "polling the arq job queue failed (%r); retrying until Redis is back", exc
                )

    async def close(self) -> None:
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        results = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        cancelled = sum(isinstance(result, asyncio.CancelledError) for result in results)
        if cancelled:
            log.info("cancelled %d running maintenance jobs for the shutdown", cancelled)
        try:
            await self.pool.delete(self.health_check_key)
        except (redis_exceptions.RedisError, OSError) as exc:
            log.warning("could not remove the worker's health key: %r", exc)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None
