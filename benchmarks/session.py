"""The plan (sizes and durations) and the running servers that every measurement shares."""

from __future__ import annotations

import dataclasses
import time

import asyncpg
import redis.asyncio as aioredis

from benchmarks.fixtures import Account
from benchmarks.harness import Backends, ServiceProcess

__all__ = ["Plan", "Session", "progress"]

_STARTED = time.monotonic()


def progress(message: str, *args: object) -> None:
    """Print one progress line with the seconds since the benchmark started."""
    text = message % args if args else message
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {text}", flush=True)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and durations of one benchmark run; `--quick` shrinks every one of them."""

    quick: bool
    repetitions: int = 3
    # Fresh ingest and ceiling processes for every ingest repetition, so each peak
    # RSS is one process lifetime. Quick mode starts one pair for all batch sizes.
    fresh_ingest_per_repetition: bool = True
    # 96 agents, so the default per-agent-key rate limit (CLOUD_AGENT_RATE_PER_S, 200
    # requests/s) stays above what each agent sends with batches of 1: ingest took up
    # to 14,000 one-event requests/s on 2 cores, about 145 per agent. With 32 agents
    # the limit rejected part of the load with 429.
    agents: int = 96
    ingest_batches: tuple[int, ...] = (1, 100, 1000)
    warmup_s: float = 1.0
    ingest_s: float = 6.0
    persist_events: int = 200_000
    persist_entry_events: int = 100
    persist_workers: tuple[int, ...] = (1, 2, 4)
    e2e_batch: int = 100
    e2e_s: float = 15.0
    paced_s: float = 10.0
    paced_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    score_s: float = 6.0
    score_readers: int = 8
    big_run_events: int = 100_000
    memory_s: float = 10.0
    memory_factor: int = 10
    drain_timeout_s: float = 600.0
    max_events: int = 20_000_000  # upper bound of any one load loop

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            fresh_ingest_per_repetition=False,
            # Quick loads last under a second, within the rate limit's burst of 400.
            agents=8,
            warmup_s=0.1,
            ingest_s=0.25,
            persist_events=3_000,
            e2e_s=0.4,
            paced_s=0.3,
            score_s=0.3,
            score_readers=4,
            big_run_events=2_000,
            memory_s=0.1,
            drain_timeout_s=60.0,
        )

    def describe(self) -> str:
        mode = "quick (CI smoke: figures exist, sizes mean nothing)" if self.quick else "full"
        return (
            f"{mode}; {self.repetitions} repetitions per figure; {self.agents} simulated agents; "
            f"ingest {self.ingest_s:g} s per repetition after {self.warmup_s:g} s warm-up; "
            f"persist {self.persist_events} events; end to end {self.e2e_s:g} s; "
            f"paced {self.paced_s:g} s; score reads {self.score_s:g} s; "
            f"memory {self.memory_s:g} s and {self.memory_s * self.memory_factor:g} s"
        )


@dataclasses.dataclass
class Session:
    """The servers and fixtures that outlive a single measurement."""

    plan: Plan
    backends: Backends
    api: ServiceProcess
    control_ingest: ServiceProcess  # creates and finishes runs; never measured
    account: Account
    redis: aioredis.Redis
    conn: asyncpg.Connection
    # Median sustained end-to-end rate; later measurements pace their load from it.
    e2e_events_per_s: float | None = None
