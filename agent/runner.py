"""One agent run: start the proxy, write, heal, read back, judge, report, score."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx
import msgspec

from agent import __version__
from agent.client import RetryPolicy, Writer, WriteTarget
from agent.cloud import CloudClient, CloudError, CloudUnavailable, RunCreateBody
from agent.events import EventLog
from agent.ledger import RunReport, ScoreView, TargetInfo, WriteRecord, tally
from agent.proxy import FaultProxy
from agent.report import progress_line, report_body, summary_line, summary_table, write_junit
from agent.scenarios import Partition, Scenario, partitions_for
from agent.verify import VerificationError, count_copies, judge, marker_pattern, read_back

__all__ = ["RunConfig", "run_agent", "write_outputs"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    target: WriteTarget
    verify_url: str
    scenario: Scenario
    writes: int
    seed: int
    policy: RetryPolicy
    fail_under: int
    settle_s: float = 1.0
    score_timeout_s: float = 30.0
    cloud_url: str | None = None
    agent_key: str | None = None
    spool_path: Path | None = None
    junit_path: Path | None = None
    ledger_path: Path | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _target_info(config: RunConfig) -> TargetInfo:
    return TargetInfo(
        url=config.target.url,
        method=config.target.method,
        verify_url=config.verify_url,
        header_names=sorted(config.target.headers),
        idempotency_header=config.target.idempotency_header,
        body_template=config.target.body_template,
    )


class _Run:
    """The state of one run, shared by its steps."""

    def __init__(self, config: RunConfig, out: TextIO, http: httpx.AsyncClient) -> None:
        self.config = config
        self.out = out
        self.http = http
        self.tag = secrets.token_hex(4)
        self.started_at = _now()
        self.cloud = (
            CloudClient(config.cloud_url, config.agent_key or "") if config.cloud_url else None
        )
        spool = config.spool_path or Path(f"softadastra-spool-{self.tag}.jsonl")
        run = RunCreateBody(
            target_url=config.target.url,
            method=config.target.method,
            scenario=config.scenario.name,
        )
        self.events = EventLog(self.cloud, spool, run, self.tag)
        self.partitions = partitions_for(config.scenario, config.writes, config.policy.budget())
        self.verification_error: str | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def announce(self, proxy: FaultProxy) -> None:
        config = self.config
        self.say(
            f"softadastra-agent {__version__}: {config.scenario.name} "
            f"({config.scenario.description}), {config.writes} writes, seed {config.seed}"
        )
        self.say(
            f"  target  {config.target.method} {config.target.url} via proxy 127.0.0.1:{proxy.port}"
        )
        self.say(f"  verify  GET {config.verify_url}")
        if self.events.run_id and self.cloud:
            self.say(f"  cloud   {self.cloud.run_url(self.events.run_id)}")
        else:
            problem = self.events.cloud_problem
            self.say(f"  cloud   none ({problem}); spooling to {self.events.spool_path}")
        self.events.emit(
            "agent_started",
            "info",
            f"{config.scenario.name}: {config.writes} writes to {config.target.method} "
            f"{config.target.url}",
            {
                "agent_version": __version__,
                "scenario": config.scenario.name,
                "seed": config.seed,
                "writes": config.writes,
                "target": msgspec.to_builtins(_target_info(config)),
                "policy": msgspec.to_builtins(config.policy),
                "partitions": msgspec.to_builtins(self.partitions),
            },
        )

    async def write_all(self, writer: Writer, proxy: FaultProxy) -> list[WriteRecord]:
        starts = {partition.start_write: partition for partition in self.partitions}
        records = []
        for index in range(1, self.config.writes + 1):
            if (partition := starts.get(index)) is not None:
                await self.start_partition(proxy, partition)
            record = await writer.write(index, f"sa-{self.tag}-{index:05d}")
            records.append(record)
            self.say(progress_line(record, self.config.writes))
        return records

    async def start_partition(self, proxy: FaultProxy, partition: Partition) -> None:
        what = "refused" if partition.mode == "refuse" else "black-holed"
        self.say(f"  -- partition: new connections {what} for {partition.duration_s:g} s")
        self.events.emit(
            "network_partition_started",
            "info",
            f"new connections {what} for {partition.duration_s:g} s",
            msgspec.to_builtins(partition),
        )
        await proxy.partition(partition)

    async def verify(self, records: list[WriteRecord]) -> None:
        self.say(f"  reading back {self.config.verify_url}")
        try:
            text = await read_back(self.http, self.config.verify_url, self.config.target.headers)
        except VerificationError as exc:
            self.verification_error = str(exc)
            self.events.emit(
                "verification_failed", "error", str(exc), {"url": self.config.verify_url}
            )
            return
        judge(records, count_copies(text, marker_pattern(self.tag)), self.events.emit)

    def build_report(self, records: list[WriteRecord], score: ScoreView) -> RunReport:
        config = self.config
        return RunReport(
            agent_version=__version__,
            run_tag=self.tag,
            scenario=config.scenario.name,
            scenario_description=config.scenario.description,
            seed=config.seed,
            target=_target_info(config),
            policy=msgspec.to_builtins(config.policy),
            partitions=msgspec.to_builtins(self.partitions),
            started_at=self.started_at,
            finished_at=_now(),
            tally=tally(records),
            score=score,
            verification_error=self.verification_error,
            writes=records,
        )

    def local_score(self) -> ScoreView:
        score = self.events.local_score()
        flags = [name for name, on in score.risks.items() if on]
        return ScoreView(score=score.score, grade=score.grade, flags=flags, source="local")

    async def cloud_score(self, local: ScoreView) -> ScoreView:
        if self.cloud is None or self.events.run_id is None or self.events.spooled:
            return local
        try:
            data = await self.cloud.wait_score(self.events.run_id, self.config.score_timeout_s)
        except (CloudUnavailable, CloudError) as exc:
            log.warning("cannot read the run's score: %s", exc)
            return local
        flags = [name for name, on in data.get("risks", {}).items() if on]
        view = ScoreView(
            score=int(data["score"]),
            grade=str(data["grade"]),
            flags=flags,
            source="cloud",
            settled=bool(data.get("settled")),
        )
        if view.settled and (view.score, view.grade) != (local.score, local.grade):
            log.warning("cloud score %d differs from the local %d", view.score, local.score)
        return view


async def _execute(run: _Run, proxy: FaultProxy) -> list[WriteRecord]:
    config = run.config
    writer = Writer(
        http=run.http,
        proxy=proxy,
        target=config.target,
        policy=config.policy,
        scenario=config.scenario,
        seed=config.seed,
        emit=run.events.emit,
    )
    records = await run.write_all(writer, proxy)
    await proxy.heal()
    # Let held and delayed connections end and the target finish its work, so the
    # read-back gets the final state.
    await proxy.wait_idle(config.settle_s + 2 * config.policy.timeout_s)
    await asyncio.sleep(config.settle_s)
    writer.collect_server_statuses()
    await run.verify(records)
    return records


async def _finish(run: _Run, records: list[WriteRecord]) -> RunReport:
    counts = tally(records)
    run.events.emit(
        "run_finished",
        "info",
        f"{counts.writes} writes checked: {counts.lost} lost, {counts.duplicated} duplicated",
        msgspec.to_builtins(counts),
    )
    report = run.build_report(records, run.local_score())
    status = "failed" if run.verification_error else "finished"
    await run.events.close(report_body(report), status)
    report.score = await run.cloud_score(report.score)
    return report


def _print_end(run: _Run, report: RunReport) -> None:
    run.say("")
    summary_table(report, run.out)
    if report.verification_error:
        run.say(f"verification failed: {report.verification_error}")
    events = run.events
    if events.spooled:
        run.say(f"cloud   not sent ({events.cloud_problem}); events spooled to {events.spool_path}")
        run.say(f"        send them later with: softadastra-agent upload {events.spool_path}")
    elif run.cloud is not None and events.run_id is not None:
        url = run.cloud.run_url(events.run_id)
        run.say(f"run     {url}")
        run.say(f"        score at {url}/score, ledger at {url}/report")
        run.say(f"        dashboard {run.cloud.url}/#/runs/{events.run_id}")


async def run_agent(config: RunConfig, out: TextIO) -> RunReport | None:
    """Run the scenario and print its outcome; return None when the target is unreadable."""
    async with httpx.AsyncClient(
        # One connection per attempt, so each armed fault hits exactly that attempt.
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=httpx.Timeout(config.policy.timeout_s + 1.0),
    ) as http:
        run = _Run(config, out, http)
        try:
            await read_back(http, config.verify_url, config.target.headers, tries=2)
        except VerificationError as exc:
            out.write(f"softadastra-agent: the target is not readable before the run: {exc}\n")
            return None
        upstream = urlsplit(config.target.url)
        proxy = FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 80)
        await proxy.start()
        try:
            await run.events.open()
            run.announce(proxy)
            records = await _execute(run, proxy)
            report = await _finish(run, records)
        finally:
            await proxy.close()
            if run.cloud is not None:
                await run.cloud.aclose()
    _print_end(run, report)
    log.info("%s", summary_line(report))
    return report


def write_outputs(config: RunConfig, report: RunReport) -> int:
    """Write the ledger and JUnit files that were asked for; return the exit code."""
    if config.ledger_path is not None:
        config.ledger_path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    if config.junit_path is not None:
        write_junit(config.junit_path, report, config.fail_under)
    passed = report.score.score >= config.fail_under and report.verification_error is None
    return 0 if passed else 1
