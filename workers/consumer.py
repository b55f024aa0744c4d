"""A long-lived consumer of one stream shard: read, persist, commit, then acknowledge.

Each consumer first works through its own pending entries (read with id `0`): those
it read before a failure, and those the reclaim job claimed for it from a consumer
that died. Then it blocks on new entries (id `>`). Entries are acknowledged only
after their transaction committed, so a crash anywhere leaves them pending for a
retry, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Iterator

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from core import streams
from core.config import Settings
from core.metrics import (
    BATCH_SECONDS,
    EVENTS_DEAD_LETTERED,
    EVENTS_DISCARDED,
    EVENTS_DUPLICATE,
    EVENTS_PERSISTED,
    SCORE_LAG_SECONDS,
)
from schema.structs import SentBatch, StreamEntry, decode_entry
from workers.persist import PersistResult, persist_entries

__all__ = ["ShardConsumer", "consumer_name"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 10.0
# Errors that mean "try again later" rather than "this entry is bad".
TRANSIENT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


# Events persisted in one transaction at most, unless one entry contains more. The
# decoded events of one such chunk are all a consumer keeps in memory besides the
# raw entries it read, and each chunk is acknowledged once it is committed.
MAX_TRANSACTION_EVENTS = 10_000
RawEntry = tuple[bytes, dict[bytes, bytes]]

FLOOD_WINDOW_S = 60.0
FLOOD_PAUSE_S = 60.0


class DeadLetterFlood(Exception):
    """More entries failed within a minute than the flood limit allows.

    So many failures at once usually mean a bug or a broken dependency rather than
    bad entries, so the consumer stops and waits instead of dead-lettering them all.
    """


def consumer_name(shard: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-s{shard}"


def _chunks_by_events(entries: list[RawEntry], max_events: int) -> Iterator[list[RawEntry]]:
    """Split entries into runs of at most `max_events` events by their `n` field.

    An entry that alone exceeds `max_events` forms a chunk of its own. An entry
    whose `n` is missing or invalid counts as 0 here and is dead-lettered later.
    """
    chunk: list[RawEntry] = []
    events = 0
    for entry in entries:
        fields = entry[1]
        try:
            count = int(fields.get(b"n", b"0")) if fields else 0
        except ValueError:
            count = 0
        if chunk and count and events + count > max_events:
            yield chunk
            chunk, events = [], 0
        chunk.append(entry)
        events += count
    if chunk:
        yield chunk


class ShardConsumer:
    def __init__(
        self, *, shard: int, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis
    ) -> None:
        self.keys = streams.StreamKeys(shard)
        self.name = consumer_name(shard)
        self._settings = settings
        self._pool = pool
        self._redis = redis
        self._stopping = asyncio.Event()
        self._read_pending = True
        self.totals = PersistResult()
        self.dead_lettered = 0
        self._dead_letter_times: collections.deque[float] = collections.deque()

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping.set()

    def wake_for_pending(self) -> None:
        """Make the next read go through this consumer's pending entries (after a claim)."""
        self._read_pending = True

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(
                self.keys.events, streams.CONSUMER_GROUP, id="0", mkstream=True
            )
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Consume until `stop()`; back off and retry while Redis or PostgreSQL is down."""
        backoff_s = 0.5
        log.info("consumer %s started on %s", self.name, self.keys.events)
        while not self._stopping.is_set():
            try:
                await self.ensure_group()
                while not self._stopping.is_set():
                    await self.step()
                    backoff_s = 0.5
            except DeadLetterFlood as exc:
                log.critical(
                    "consumer %s stopped consuming %s for %.0f s: %s; entries stay pending. "
                    "Inspect them with `softadastra-cloud dead-letters list`",
                    self.name,
                    self.keys.events,
                    FLOOD_PAUSE_S,
                    exc,
                )
                self._read_pending = True
                await self._pause(FLOOD_PAUSE_S)
            except redis.exceptions.ResponseError as exc:
                # NOGROUP or UNBLOCKED: the stream or its group vanished (a Redis restart
                # without its append-only file, or a flush); recreate it and go on.
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    log.exception("consumer %s: Redis rejected a command", self.name)
                    await self._pause(backoff_s)
                    backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                else:
                    log.warning("consumer %s: stream or group missing; recreating it", self.name)
                self._read_pending = True
            except Exception as exc:
                # A consumer must outlive any single failure: dying would stall its shard
                # silently. Transient errors are expected; anything else is a bug to report.
                if isinstance(exc, TRANSIENT_ERRORS):
                    log.warning("consumer %s: %r; retrying in %.1f s", self.name, exc, backoff_s)
                else:
                    log.exception("consumer %s failed; retrying in %.1f s", self.name, backoff_s)
                self._read_pending = True
                await self._pause(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
        log.info(
            "consumer %s stopped: %d entries, %d events inserted, %d duplicates, %d discarded",
            self.name,
            self.totals.entries,
            self.totals.inserted,
            self.totals.duplicates,
            self.totals.discarded,
        )

    async def _pause(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)
        except TimeoutError:
            pass

    async def _read(self) -> list[RawEntry]:
        # Remember which list this read is for: `wake_for_pending` may set the flag
        # while a blocking read of new entries is in flight, and that request must
        # survive the empty result of this read.
        reading_pending = self._read_pending
        reply = await self._redis.xreadgroup(
            streams.CONSUMER_GROUP,
            self.name,
            {self.keys.events: "0" if reading_pending else ">"},
            count=self._settings.stream_batch_size,
            block=None if reading_pending else self._settings.stream_block_ms,
        )
        entries = reply[0][1] if reply else []
        if reading_pending and not entries:
            self._read_pending = False
        return entries

    async def step(self) -> int:
        """Read and persist one batch of entries; return how many were read."""
        raw_entries = await self._read()
        for chunk in _chunks_by_events(raw_entries, MAX_TRANSACTION_EVENTS):
            await self._persist_chunk(chunk)
        return len(raw_entries)

    async def _persist_chunk(self, raw_entries: list[RawEntry]) -> None:
        """Decode, persist and acknowledge entries, in one transaction unless one fails."""
        decoded: list[tuple[str, StreamEntry]] = []
        counts: dict[str, int] = {}
        fields_by_id: dict[str, dict[bytes, bytes]] = {}
        for raw_id, fields in raw_entries:
            entry_id = raw_id.decode()
            if not fields:
                # Deleted after it was read (already persisted and acknowledged).
                counts[entry_id] = 0
                continue
            fields_by_id[entry_id] = fields
            try:
                count = int(fields[b"n"])
                batch = decode_entry(fields)
            except (KeyError, ValueError, RecursionError, msgspec.DecodeError) as exc:
                await self._dead_letter(entry_id, fields, f"undecodable entry: {exc!r}")
                continue
            decoded.append((entry_id, batch))
            counts[entry_id] = count
        started = time.monotonic()
        if decoded:
            failed = await self._persist(decoded)
            for entry_id in failed:
                counts.pop(entry_id)
        await streams.ack_entries(self._redis, self.keys, list(counts.items()))
        BATCH_SECONDS.observe(time.monotonic() - started)
        committed_at = dt.datetime.now(dt.UTC)
        for _, batch in decoded:
            SCORE_LAG_SECONDS.observe((committed_at - batch.received_at).total_seconds())
        log.debug(
            "consumer %s persisted %d entries in %.1f ms",
            self.name,
            len(decoded),
            (time.monotonic() - started) * 1000,
        )

    async def _persist(self, decoded: list[tuple[str, StreamEntry]]) -> set[str]:
        """Persist entries; return the ids of entries left pending after a data error.

        A data error (PostgreSQL rejecting a value) fails the whole transaction, so the
        batch is retried entry by entry to find the bad ones. A bad entry stays pending
        and is dead-lettered once it was delivered `max_deliveries` times.
        """
        try:
            self._add_totals(await self._persist_once(decoded))
            return set()
        except Exception as exc:
            # Anything but an outage is a problem with some entry of the batch (a value
            # PostgreSQL refuses, bytes that are not UTF-8); find which.
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            first_error = exc
        failed: set[str] = set()
        for entry in decoded:
            try:
                self._add_totals(await self._persist_once([entry]))
            except Exception as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                failed.add(entry[0])
                await self._retry_or_dead_letter(entry, exc)
        if len(decoded) > 1:
            log.warning(
                "consumer %s: batch failed (%r); isolated %d bad entries",
                self.name,
                first_error,
                len(failed),
            )
        return failed

    async def _persist_once(self, entries: list[tuple[str, StreamEntry]]) -> PersistResult:
        async with self._pool.acquire() as conn:
            return await persist_entries(conn, self.keys.events, entries)

    def _add_totals(self, result: PersistResult) -> None:
        for field in PersistResult.__struct_fields__:
            setattr(self.totals, field, getattr(self.totals, field) + getattr(result, field))
        EVENTS_PERSISTED.inc(result.inserted)
        EVENTS_DUPLICATE.inc(result.duplicates)
        EVENTS_DISCARDED.inc(result.discarded)
        EVENTS_DEAD_LETTERED.inc(result.dead_lettered)

    async def _retry_or_dead_letter(self, entry: tuple[str, StreamEntry], exc: Exception) -> None:
        entry_id, batch = entry
        info = await self._redis.xpending_range(
            self.keys.events, streams.CONSUMER_GROUP, min=entry_id, max=entry_id, count=1
        )
        deliveries = int(info[0]["times_delivered"]) if info else 0
        if deliveries >= self._settings.max_deliveries:
            field = b"body" if isinstance(batch, SentBatch) else b"batch"
            fields = {b"n": str(len(batch.events)).encode(), field: msgspec.json.encode(batch)}
            await self._dead_letter(
                entry_id,
                fields,
                f"failed {deliveries} times, last error: {exc!r}",
                count=len(batch.events),
            )
            return
        log.warning(
            "consumer %s: entry %s failed (delivery %d of %d): %r",
            self.name,
            entry_id,
            deliveries,
            self._settings.max_deliveries,
            exc,
        )
        self._read_pending = True

    def _check_flood(self) -> None:
        now = time.monotonic()
        while self._dead_letter_times and now - self._dead_letter_times[0] > FLOOD_WINDOW_S:
            self._dead_letter_times.popleft()
        limit = self._settings.dead_letter_flood_limit
        if len(self._dead_letter_times) >= limit:
            raise DeadLetterFlood(f"{limit} entries dead-lettered within {FLOOD_WINDOW_S:.0f} s")
        self._dead_letter_times.append(now)

    async def _dead_letter(
        self, entry_id: str, fields: dict[bytes, bytes], reason: str, *, count: int | None = None
    ) -> None:
        """Move an entry to the dead-letter stream with the reason, then acknowledge it."""
        dead_fields: dict[bytes | str, bytes | str] = {
            "source_stream": self.keys.events,
            "source_id": entry_id,
            "reason": reason,
        }
        for name, value in fields.items():
            dead_fields[b"entry." + name] = value
        self._check_flood()
        if count is None:
            try:
                count = int(fields.get(b"n", b"0"))
            except ValueError:
                count = 0
        await self._redis.xadd(self.keys.dead, dead_fields)
        await streams.ack_entries(self._redis, self.keys, [(entry_id, count)])
        self.dead_lettered += 1
        EVENTS_DEAD_LETTERED.inc(count)
        log.error(
            "consumer %s dead-lettered entry %s of %s: %s",
            self.name,
            entry_id,
            self.keys.events,
            reason,
        )
