from __future__ import annotations

import asyncpg
import msgspec
import redis.asyncio as aioredis

from core import streams
from core.repositories import scores as scores_repo
from core.scoring import Counters, score_counters
from schema.responses import RunScore, ScoreCounts
from schema.structs import FINAL_STATUSES

__all__ = ["counters_from_row", "load_score"]

_COUNTER_FIELDS = tuple(Counters.__struct_fields__)


def counters_from_row(row: asyncpg.Record) -> Counters:
    return Counters(**{name: row[name] for name in _COUNTER_FIELDS})


async def load_score(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, run: asyncpg.Record, shards: int
) -> RunScore:
    """Return the stored score of a run, with how many accepted events are still in flight."""
    row = await scores_repo.get_score_row(conn, run_key=run["id"])
    assert row is not None, "every run has a run_scores row"
    keys = streams.StreamKeys.for_run(run["public_id"], shards)
    accepted = await streams.accepted_count(redis, keys, run["public_id"])
    pending = max(0, accepted - row["processed_events"])
    dead = row["dead_lettered_events"]
    counters = counters_from_row(row)
    # The stored score and grade are what the worker computed from these counters;
    # deductions are derived from the same counters, so both always agree.
    detail = score_counters(counters)
    counts = ScoreCounts(total=counters.total, **msgspec.structs.asdict(counters))
    return RunScore(
        run_id=run["public_id"],
        score=row["score"],
        grade=row["grade"],
        risks=detail.risks,
        counts=counts,
        deductions=detail.deductions,
        # Dead-lettered events were accepted but not stored, so the score lacks them.
        settled=row["status"] in FINAL_STATUSES and pending == 0 and dead == 0,
        status=row["status"],
        pending_events=pending,
        dead_lettered_events=dead,
        updated_at=row["updated_at"],
    )
