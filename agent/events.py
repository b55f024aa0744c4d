"""The run's event log: ids and times, batches sent in the background, the spool.

Events are sent every `FLUSH_INTERVAL_S` while the run goes on. When the cloud is
not configured, or stays unreachable after the cloud client's retries, the log
switches to the spool file for the rest of the run. It never switches back, so the
spool alone contains a complete copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from agent.cloud import (
    CloudClient,
    CloudError,
    CloudUnavailable,
    EventOut,
    ReportBody,
    RunCreateBody,
)
from agent.spool import RunLine, SpoolWriter
from core.scoring import Counters, Score, score_counters

__all__ = ["EventLog"]

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
BATCH_SIZE = 200


class EventLog:
    def __init__(
        self, cloud: CloudClient | None, spool_path: Path, run: RunCreateBody, run_tag: str
    ) -> None:
        self._cloud = cloud
        self._run = run
        self._run_tag = run_tag
        self.spool_path = spool_path
        self.run_id: str | None = None
        self.events: list[EventOut] = []
        self._sent = 0
        self._spool: SpoolWriter | None = None
        self._spooled = 0
        self._sender: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.cloud_problem: str | None = None

    @property
    def spooled(self) -> bool:
        return self._spool is not None

    async def open(self) -> None:
        """Create the run in the cloud and start sending, or start spooling."""
        if self._cloud is None:
            self._start_spool("no cloud URL was given")
            return
        try:
            self.run_id = await self._cloud.create_run(self._run)
        except CloudUnavailable as exc:
            self._start_spool(str(exc))
            return
        log.info("run %s created", self.run_id)
        self._sender = asyncio.create_task(self._send_periodically())

    def emit(self, event_type: str, severity: str, message: str, payload: dict[str, Any]) -> None:
        self.events.append(
            EventOut(
                event_id=f"{self._run_tag}-{len(self.events):06d}",
                event_type=event_type,
                severity=severity,
                message=message[:1000],
                payload=payload,
                occurred_at=dt.datetime.now(dt.UTC),
            )
        )

    def local_score(self) -> Score:
        """Score the events with the cloud's rules, for display when the cloud cannot."""
        counters = Counters.from_events((e.event_type, e.severity) for e in self.events)
        return score_counters(counters)

    async def close(self, report: ReportBody, status: str = "finished") -> None:
        """Send the remaining events, then the report, then finish the run.

        The run is finished only after its last batch was acknowledged, because a
        final run accepts no more events.
        """
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self.flush()
        if self._spool is None:
            assert self._cloud is not None and self.run_id is not None
            try:
                await self._cloud.submit_report(self.run_id, report)
                await self._cloud.finish(self.run_id, status)
                return
            except (CloudUnavailable, CloudError) as exc:
                self._start_spool(str(exc))
        assert self._spool is not None
        self._spool.add_end(report, status)

    async def flush(self) -> None:
        """Send or spool every event emitted so far."""
        async with self._lock:
            if self._spool is not None:
                self._spool.add_events(self.events[self._spooled :])
                self._spooled = len(self.events)
                return
            while self._sent < len(self.events):
                if not await self._send_batch():
                    return

    async def _send_batch(self) -> bool:
        assert self._cloud is not None and self.run_id is not None
        batch = self.events[self._sent : self._sent + BATCH_SIZE]
        try:
            await self._cloud.send_events(self.run_id, batch)
        except (CloudUnavailable, CloudError) as exc:
            # A CloudError here (the run deleted, or final) cannot be fixed by this
            # process, so the events go to the spool for a later upload.
            self._start_spool(str(exc))
            self._spool_pending()
            return False
        self._sent += len(batch)
        return True

    def _spool_pending(self) -> None:
        assert self._spool is not None
        self._spool.add_events(self.events[self._spooled :])
        self._spooled = len(self.events)

    def _start_spool(self, reason: str) -> None:
        if self._spool is not None:
            return
        self.cloud_problem = reason
        level = logging.WARNING if self._cloud is not None else logging.INFO
        log.log(level, "spooling events to %s: %s", self.spool_path, reason)
        header = RunLine(
            run=self._run, run_id=self.run_id, cloud_url=self._cloud.url if self._cloud else None
        )
        self._spool = SpoolWriter(self.spool_path, header)
        # The spool starts with every event, acknowledged or not, so it is complete.
        self._spooled = 0
        self._spool_pending()

    async def _send_periodically(self) -> None:
        while self._spool is None:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()
