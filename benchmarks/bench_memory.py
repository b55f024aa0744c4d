"""6. Memory: ingest and worker RSS after a normal run and after a run 10 times longer.

Each repetition starts a fresh ingest process and a fresh worker and sends paced
batches of 100 at half the sustained end-to-end rate for the run's length. It then
finishes the runs and waits until every event is persisted. Last, it reads VmRSS
(resident now) and VmHWM (peak) of both processes from /proc.
"""

from __future__ import annotations

import asyncio

from benchmarks import fixtures
from benchmarks.harness import ServiceProcess, stop_processes
from benchmarks.loadgen import paced_loop
from benchmarks.session import Session, progress
from benchmarks.stats import Figure, Stat

__all__ = ["NOTES", "SECTION", "run"]

SECTION = "6. Memory after a normal and a 10 times longer run"
NOTES = (
    "Paced at half the sustained end-to-end rate, so the backlog stays short. RSS is read "
    "after the drain, with both processes idle. Growth between the two lengths that does "
    "not level off would point at a leak."
)
LOAD_SHARE = 0.5


async def _one_run(session: Session, length_s: float, tag: str) -> dict[str, float]:
    """Run paced load for `length_s` on fresh processes; return their RSS figures in MiB."""
    plan = session.plan
    assert session.e2e_events_per_s is not None
    ingest, workers = await asyncio.gather(
        session.backends.start_http_service("ingest"),
        session.backends.start_workers(1, session.redis),
    )
    processes: list[ServiceProcess] = [ingest, *workers]
    try:
        assert ingest.port is not None
        runs = await fixtures.create_runs(session.control_ingest.url, session.account.agent_keys)
        keys = await fixtures.run_keys(session.conn, runs)
        result = await paced_loop(
            ingest.port,
            fixtures.targets(runs),
            batch_size=plan.e2e_batch,
            events_per_s=LOAD_SHARE * session.e2e_events_per_s,
            duration_s=length_s,
            tag=tag,
        )
        await fixtures.finish_runs(ingest.url, runs)
        await fixtures.wait_drained(
            session.redis,
            session.conn,
            keys.values(),
            expected=result.events,
            timeout_s=plan.drain_timeout_s,
        )
        worker = workers[0]
        return {
            "events": float(result.events),
            "ingest_rss": ingest.rss_kib() / 1024,
            "ingest_peak": ingest.peak_rss_kib() / 1024,
            "worker_rss": worker.rss_kib() / 1024,
            "worker_peak": worker.peak_rss_kib() / 1024,
        }
    finally:
        stop_processes(processes)


async def run(session: Session) -> list[Figure]:
    plan = session.plan
    figures: list[Figure] = []
    for factor in (1, plan.memory_factor):
        length_s = plan.memory_s * factor
        label = "normal run" if factor == 1 else f"{factor}× longer run"
        samples: list[dict[str, float]] = []
        for index in range(plan.repetitions):
            sample = await _one_run(session, length_s, f"mem{factor}-r{index}")
            samples.append(sample)
            progress(
                "memory, %s (%g s, %d events) rep %d: ingest RSS %.0f MiB (peak %.0f), "
                "worker RSS %.0f MiB (peak %.0f)",
                label,
                length_s,
                sample["events"],
                index + 1,
                sample["ingest_rss"],
                sample["ingest_peak"],
                sample["worker_rss"],
                sample["worker_peak"],
            )
        events = Stat.of([s["events"] for s in samples]).median
        note = f"{length_s:g} s, {events:,.0f} events"
        for field, name in (
            ("ingest_rss", "ingest RSS at the end"),
            ("ingest_peak", "ingest peak RSS (VmHWM)"),
            ("worker_rss", "worker RSS at the end"),
            ("worker_peak", "worker peak RSS (VmHWM)"),
        ):
            figures.append(
                Figure(
                    SECTION,
                    f"{label}: {name}",
                    "MiB",
                    Stat.of([s[field] for s in samples]),
                    note=note if field == "ingest_rss" else "",
                )
            )
    return figures
