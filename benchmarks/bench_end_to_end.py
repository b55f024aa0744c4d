"""3. End to end: ingest and one worker together.

Sustained rate: the agents send batches of 100 closed-loop for `plan.e2e_s`
seconds, then finish their runs. The clock stops when every accepted event is
counted in `run_scores` and the backlog is empty. Every run's score is then
checked to be `settled` through the api. Rate = accepted events / that time.

Latency: paced load at 25 %, 50 % and 100 % of the sustained rate. For each 202,
the run's accepted total so far is recorded; a poller reads `processed_events` of
every run about every 5 ms, and an event counts as scored at the first poll that
sees its run's `processed_events` reach that total (the score and the counter are
updated in one transaction). The poll interval bounds the resolution.
"""

from __future__ import annotations

import asyncio
import collections
import time

import asyncpg

from benchmarks import fixtures
from benchmarks.harness import ServiceProcess, stop_processes
from benchmarks.loadgen import AgentTarget, closed_loop, paced_loop
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat, percentile

__all__ = ["NOTES", "SECTION", "run", "sustained_rate"]

SECTION = "3. End to end (ingest + 1 worker)"
NOTES = (
    "Batches of 100 events. The sustained rate includes the drain after the load stops, so "
    "it tends to the worker's persist rate as the run gets longer. Latency is from the 202 "
    "to the first poll (every ~5 ms) that sees the event counted in its run's score. At "
    "100 % the backlog grows during the paced load, so latency grows with the run's length."
)
POLL_S = 0.005


class ScoreLatencyTracker:
    """Match each 202 with the moment its events show up in the run's score counters."""

    def __init__(self, keys: dict[str, int]) -> None:
        self._keys = keys
        self._accepted: dict[str, int] = collections.defaultdict(int)
        self._waiting: dict[int, collections.deque[tuple[int, float]]] = {
            key: collections.deque() for key in keys.values()
        }
        self.latencies_s: list[float] = []
        self.load_done = False
        self.all_scored = asyncio.Event()  # set once the load is done and nothing waits

    def on_accepted(self, target: AgentTarget, accepted: int, replied_at: float) -> None:
        self._accepted[target.run_id] += accepted
        total = self._accepted[target.run_id]
        self._waiting[self._keys[target.run_id]].append((total, replied_at))

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def poll(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT run_id, processed_events FROM run_scores WHERE run_id = ANY($1)",
            list(self._waiting),
        )
        seen_at = time.perf_counter()
        for row in rows:
            queue = self._waiting[row["run_id"]]
            while queue and queue[0][0] <= row["processed_events"]:
                _, replied_at = queue.popleft()
                self.latencies_s.append(seen_at - replied_at)
        if self.load_done and not self.waiting:
            self.all_scored.set()

    async def poll_until(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll(conn)
            await asyncio.sleep(POLL_S)


async def sustained_rate(
    session: Session, ingest: ServiceProcess, tag: str, duration_s: float
) -> tuple[float, float]:
    """Load closed-loop, finish the runs, wait until settled; return (rate, accept rate)."""
    plan = session.plan
    assert ingest.port is not None
    runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
    keys = await fixtures.run_keys(session.conn, runs)
    began = time.perf_counter()
    result = await closed_loop(
        ingest.port,
        fixtures.targets(runs),
        batch_size=plan.e2e_batch,
        duration_s=duration_s,
        max_events=plan.max_events,
        tag=tag,
    )
    if result.errors:
        progress("  WARNING: ingest answered errors: %s", dict(result.errors))
    await fixtures.finish_runs(ingest.url, runs)
    finished = await fixtures.wait_drained(
        session.redis,
        session.conn,
        keys.values(),
        expected=result.events,
        timeout_s=plan.drain_timeout_s,
    )
    await check_settled(session, runs)
    return result.events / (finished - began), result.events_per_s


async def check_settled(session: Session, runs: list[fixtures.Run]) -> None:
    """Raise unless every run's score, read through the api, is settled."""
    for run in runs:
        score = await fixtures.score_of(session.api.url, run)
        if not score["settled"]:
            raise RuntimeError(f"run {run.public_id} is not settled after the drain: {score}")


async def paced_latencies(
    session: Session, ingest: ServiceProcess, events_per_s: float, tag: str
) -> tuple[list[float], float]:
    """Paced load at `events_per_s`; return 202-to-scored latencies and the accept rate."""
    plan = session.plan
    assert ingest.port is not None
    runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
    keys = await fixtures.run_keys(session.conn, runs)
    tracker = ScoreLatencyTracker(keys)

    poll_conn = await session.backends.connect()
    stop = asyncio.Event()
    poller = asyncio.create_task(tracker.poll_until(poll_conn, stop))
    try:
        result = await paced_loop(
            ingest.port,
            fixtures.targets(runs),
            batch_size=plan.e2e_batch,
            events_per_s=events_per_s,
            duration_s=plan.paced_s,
            tag=tag,
            hook=tracker.on_accepted,
        )
        tracker.load_done = True
        try:
            await asyncio.wait_for(tracker.all_scored.wait(), plan.drain_timeout_s)
        except TimeoutError:
            pass  # reported below with the count of batches still waiting
    finally:
        stop.set()
        await poller
        await poll_conn.close()
    if tracker.waiting:
        raise TimeoutError(f"{tracker.waiting} batches not scored within {plan.drain_timeout_s} s")

    if result.errors:
        progress("  WARNING: ingest answered errors: %s", dict(result.errors))
    await fixtures.finish_runs(ingest.url, runs)
    return tracker.latencies_s, result.events_per_s


async def _sustained_figures(session: Session, ingest: ServiceProcess) -> list[Figure]:
    plan = session.plan
    rates: list[float] = []
    accept_rates: list[float] = []
    for index in range(plan.repetitions):
        rate, accept_rate = await sustained_rate(session, ingest, f"e2e-r{index}", plan.e2e_s)
        rates.append(rate)
        accept_rates.append(accept_rate)
        progress(
            "end to end rep %d: %.0f events/s until settled (accepted at %.0f events/s)",
            index + 1,
            rate,
            accept_rate,
        )
    session.e2e_events_per_s = Stat.of(rates).median
    return [
        Figure(
            SECTION, "sustained events/s, accepted until all settled", "events/s", Stat.of(rates)
        ),
        Figure(
            SECTION, "accept rate while loading (backlog grows)", "events/s", Stat.of(accept_rates)
        ),
    ]


async def _latency_figures(session: Session, ingest: ServiceProcess) -> list[Figure]:
    plan = session.plan
    assert session.e2e_events_per_s is not None
    figures: list[Figure] = []
    for fraction in plan.paced_fractions:
        target = fraction * session.e2e_events_per_s
        p50s: list[float] = []
        p99s: list[float] = []
        achieved: list[float] = []
        for index in range(plan.repetitions):
            latencies, rate = await paced_latencies(
                session, ingest, target, f"lat{int(fraction * 100)}-r{index}"
            )
            p50s.append(percentile(latencies, 0.50) * 1000)
            p99s.append(percentile(latencies, 0.99) * 1000)
            achieved.append(rate)
            progress(
                "202-to-scored at %.0f%% (%.0f events/s offered, %.0f accepted) rep %d: "
                "p50 %.1f ms, p99 %.1f ms",
                fraction * 100,
                target,
                rate,
                index + 1,
                p50s[-1],
                p99s[-1],
            )
        note = f"offered {target:,.0f} events/s, accepted {Stat.of(achieved).median:,.0f}"
        label = f"at {fraction:.0%} of sustained rate"
        figures.append(
            Figure(SECTION, f"202 to scored p50 {label}", "ms", Stat.of(p50s), note=note)
        )
        figures.append(Figure(SECTION, f"202 to scored p99 {label}", "ms", Stat.of(p99s)))
    return figures


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    ingest, workers = await asyncio.gather(
        session.backends.start_http_service("ingest"),
        session.backends.start_workers(1, session.redis),
    )
    try:
        progress("end to end warm-up")
        await sustained_rate(session, ingest, "e2e-warm", plan.warmup_s)
        figures = await _sustained_figures(session, ingest)
        figures.extend(await _latency_figures(session, ingest))
    finally:
        stop_processes([ingest, *workers])
    return figures
