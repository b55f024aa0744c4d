"""Prometheus metrics of every service, and the stream gauges they share.

Ingest and api serve them at `/metrics`; a worker serves them on
`CLOUD_WORKER_METRICS_PORT`. Each process counts only its own work, so a
Prometheus server sums the counters over processes.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from core import streams

__all__ = [
    "BATCH_SECONDS",
    "EVENTS_ACCEPTED",
    "EVENTS_DEAD_LETTERED",
    "EVENTS_DISCARDED",
    "EVENTS_DUPLICATE",
    "EVENTS_PERSISTED",
    "EVENTS_REJECTED",
    "HTTP_REQUESTS",
    "SCORE_LAG_SECONDS",
    "StreamStats",
    "metrics_endpoint",
    "read_stream_stats",
    "update_stream_gauges",
]

HTTP_REQUESTS = Counter(
    "softadastra_http_requests", "HTTP requests answered", ["role", "method", "status"]
)
EVENTS_ACCEPTED = Counter("softadastra_events_accepted", "Events accepted by ingest")
EVENTS_REJECTED = Counter("softadastra_events_rejected", "Events of a batch rejected by ingest")
EVENTS_PERSISTED = Counter("softadastra_events_persisted", "Events inserted into PostgreSQL")
EVENTS_DUPLICATE = Counter(
    "softadastra_events_duplicate", "Events already stored under the same (run, event_id)"
)
EVENTS_DISCARDED = Counter("softadastra_events_discarded", "Events of runs deleted meanwhile")
EVENTS_DEAD_LETTERED = Counter(
    "softadastra_events_dead_lettered", "Events moved to a dead-letter stream or table"
)
BATCH_SECONDS = Histogram(
    "softadastra_worker_batch_seconds",
    "Time to persist one batch of stream entries and acknowledge it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORE_LAG_SECONDS = Histogram(
    "softadastra_score_lag_seconds",
    "Time from ingest accepting an entry to its events counting in the run's score",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BACKLOG_EVENTS = Gauge("softadastra_stream_backlog_events", "Events not yet persisted", ["shard"])
PENDING_ENTRIES = Gauge(
    "softadastra_stream_pending_entries", "Entries read by a consumer and not yet acknowledged",
    ["shard"],
)  # fmt: skip
DEAD_ENTRIES = Gauge(
    "softadastra_stream_dead_entries", "Entries in the dead-letter stream", ["shard"]
)


class StreamStats:
    """Backlog, pending and dead-letter sizes of one shard."""

    __slots__ = ("backlog_events", "dead_entries", "pending_entries", "shard", "stream_entries")

    def __init__(self, shard: int, backlog: int, stream: int, pending: int, dead: int) -> None:
        self.shard = shard
        self.backlog_events = backlog
        self.stream_entries = stream
        self.pending_entries = pending
        self.dead_entries = dead


async def read_stream_stats(redis: aioredis.Redis, shards: int) -> list[StreamStats]:
    stats = []
    for shard in range(shards):
        keys = streams.StreamKeys(shard)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.backlog)
            pipe.xlen(keys.events)
            pipe.xlen(keys.dead)
            backlog, length, dead = await pipe.execute()
        pending = 0
        if length:
            try:
                summary = await redis.xpending(keys.events, streams.CONSUMER_GROUP)
                pending = int(summary["pending"])
            except aioredis.ResponseError:  # no consumer group yet
                pending = 0
        stats.append(StreamStats(shard, int(backlog or 0), int(length), pending, int(dead)))
    return stats


async def update_stream_gauges(redis: aioredis.Redis, shards: int) -> list[StreamStats]:
    stats = await read_stream_stats(redis, shards)
    for item in stats:
        label = str(item.shard)
        BACKLOG_EVENTS.labels(label).set(item.backlog_events)
        PENDING_ENTRIES.labels(label).set(item.pending_entries)
        DEAD_ENTRIES.labels(label).set(item.dead_entries)
    return stats


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
