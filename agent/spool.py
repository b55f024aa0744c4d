"""The spool: a JSON Lines file that keeps a run for the cloud while it is unreachable.

The first line describes the run, with its cloud id if it was created. The events
follow with their ids, then the report and the finish status. Every event of the
run is spooled, also those the cloud already accepted. Re-sending them with the
same ids stores nothing twice, and a run recreated from the spool is complete.
`softadastra-agent upload SPOOL` sends a spool later.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agent.cloud import (
    FINAL_STATUSES,
    CloudClient,
    EventOut,
    ReportBody,
    RunCreateBody,
)

__all__ = ["SpoolContents", "SpoolWriter", "read_spool", "upload_spool"]

log = logging.getLogger(__name__)

UPLOAD_BATCH = 200


class RunLine(msgspec.Struct, tag="run", tag_field="kind", kw_only=True):
    run: RunCreateBody
    run_id: str | None = None
    cloud_url: str | None = None


class EventLine(msgspec.Struct, tag="event", tag_field="kind"):
    event: EventOut


class ReportLine(msgspec.Struct, tag="report", tag_field="kind"):
    report: ReportBody


class FinishLine(msgspec.Struct, tag="finish", tag_field="kind"):
    status: str = "finished"


SpoolLine = RunLine | EventLine | ReportLine | FinishLine
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpoolLine)


@dataclass
class SpoolContents:
    header: RunLine
    events: list[EventOut] = field(default_factory=list)
    report: ReportBody | None = None
    finish: str | None = None


class SpoolWriter:
    """Append a run's lines to a spool file, creating it with its header first."""

    def __init__(self, path: Path, header: RunLine) -> None:
        self.path = path
        self._header = header
        self._created = False

    def _append(self, lines: list[SpoolLine]) -> None:
        if not self._created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(_encoder.encode(self._header) + b"\n")
            self._created = True
        with self.path.open("ab") as spool:
            for line in lines:
                spool.write(_encoder.encode(line) + b"\n")
            spool.flush()
            os.fsync(spool.fileno())

    def add_events(self, events: list[EventOut]) -> None:
        self._append([EventLine(event) for event in events])

    def add_end(self, report: ReportBody, status: str) -> None:
        self._append([ReportLine(report), FinishLine(status)])


def read_spool(path: Path) -> SpoolContents:
    """Parse a spool file; raise ValueError naming the line that is invalid."""
    contents: SpoolContents | None = None
    with path.open("rb") as spool:
        for number, raw in enumerate(spool, start=1):
            if not raw.strip():
                continue
            try:
                line = _decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise ValueError(f"{path}:{number}: invalid spool line ({exc})") from None
            if contents is None:
                if not isinstance(line, RunLine):
                    raise ValueError(f"{path}:{number}: the first line must describe the run")
                contents = SpoolContents(header=line)
            elif isinstance(line, EventLine):
                contents.events.append(line.event)
            elif isinstance(line, ReportLine):
                contents.report = line.report
            elif isinstance(line, FinishLine):
                contents.finish = line.status
    if contents is None:
        raise ValueError(f"{path}: the spool is empty")
    return contents


def _rewrite_header(path: Path, contents: SpoolContents, run_id: str) -> None:
    """Record the run id in the spool, so a second upload finds the finished run."""
    lines: list[SpoolLine] = [
        RunLine(run=contents.header.run, run_id=run_id, cloud_url=contents.header.cloud_url)
    ]
    lines.extend(EventLine(event) for event in contents.events)
    if contents.report is not None:
        lines.append(ReportLine(contents.report))
    if contents.finish is not None:
        lines.append(FinishLine(contents.finish))
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(b"".join(_encoder.encode(line) + b"\n" for line in lines))
    os.replace(temporary, path)


async def upload_spool(cloud: CloudClient, path: Path) -> tuple[str, bool]:
    """Send a spool to the cloud, creating the run if needed.

    Return the run id and whether anything was sent: a run that is already final
    accepts no events, so its spool counts as uploaded before.
    """
    contents = read_spool(path)
    run_id = contents.header.run_id
    status = await cloud.run_status(run_id) if run_id else None
    if run_id is not None and status in FINAL_STATUSES:
        log.info("run %s is already %s; nothing to upload", run_id, status)
        return run_id, False
    if run_id is None or status is None:
        run_id = await cloud.create_run(contents.header.run)
        log.info("created run %s for spool %s", run_id, path)
        _rewrite_header(path, contents, run_id)
    for start in range(0, len(contents.events), UPLOAD_BATCH):
        await cloud.send_events(run_id, contents.events[start : start + UPLOAD_BATCH])
    if contents.report is not None:
        await cloud.submit_report(run_id, contents.report)
    if contents.finish is not None:
        await cloud.finish(run_id, contents.finish)
    return run_id, True
