"""msgspec Structs of the ledger: every logical write, its attempts and its verdict.

The ledger is the evidence behind a run. It is printed as a summary, sent to the
cloud as the raw report and written to `--ledger FILE` when asked.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Attempt",
    "ClientOutcome",
    "RunReport",
    "ScoreView",
    "Tally",
    "TargetInfo",
    "Verdict",
    "WriteRecord",
    "tally",
]

# Result of one attempt, as the client saw it.
AttemptOutcome = Literal[
    "acknowledged", "http_error", "rejected", "timeout", "reset", "refused", "error"
]
# Outcome of a logical write for the client:
# - acknowledged: a 2xx response.
# - rejected: a status not worth retrying (most 4xx).
# - failed: the retries ran out after error statuses.
# - unknown: no response ever reached the client.
ClientOutcome = Literal["pending", "acknowledged", "rejected", "failed", "unknown"]
# Verdict on a logical write after reading the target back:
# - ok: stored once and acknowledged.
# - lost: acknowledged but not stored.
# - duplicated: stored more than once.
# - stored_unacknowledged, not_stored: the client never learned the outcome, and the
#   read-back found one copy or none.
Verdict = Literal["pending", "ok", "lost", "duplicated", "stored_unacknowledged", "not_stored"]


class Attempt(msgspec.Struct, kw_only=True):
    number: int
    # The injected fault, or `partition:refuse` / `partition:blackhole`.
    fault: str
    outcome: AttemptOutcome
    # Status the client received, if any.
    status: int | None = None
    # Status the target sent, as the proxy saw it; set even when the client missed it.
    server_status: int | None = None
    elapsed_ms: int = 0
    error: str = ""
    # Delay before the next attempt, in milliseconds (0 for the last attempt).
    backoff_ms: int = 0


class WriteRecord(msgspec.Struct, kw_only=True):
    # Number of the logical write, from 1.
    index: int
    marker: str
    idempotency_key: str | None = None
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    client_outcome: ClientOutcome = "pending"
    # Copies of the marker found when reading the target back.
    copies: int = 0
    verdict: Verdict = "pending"

    def reached_server(self) -> int:
        """Count the attempts that the target responded to with a 2xx, seen by the client or not."""
        return sum(
            1
            for attempt in self.attempts
            if attempt.server_status is not None and 200 <= attempt.server_status < 300
        )


class Tally(msgspec.Struct, kw_only=True):
    writes: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    # Writes whose outcome the client never learned, before reading back.
    unknown: int = 0
    rejected: int = 0
    # Copies stored beyond the first, over all duplicated writes.
    extra_copies: int = 0
    stored_unacknowledged: int = 0
    not_stored: int = 0
    attempts: int = 0


class ScoreView(msgspec.Struct, kw_only=True):
    score: int
    grade: str
    flags: list[str]
    # "cloud" when the settled score came from the cloud, "local" when computed here.
    source: str
    settled: bool = False


class TargetInfo(msgspec.Struct, kw_only=True):
    url: str
    method: str
    verify_url: str
    # Header names only: values may be credentials.
    header_names: list[str]
    idempotency_header: str | None = None
    body_template: str


class RunReport(msgspec.Struct, kw_only=True):
    agent_version: str
    run_tag: str
    scenario: str
    scenario_description: str
    seed: int
    target: TargetInfo
    policy: dict[str, float]
    partitions: list[dict[str, object]]
    started_at: str
    finished_at: str
    tally: Tally
    score: ScoreView
    verification_error: str | None = None
    writes: list[WriteRecord] = msgspec.field(default_factory=list)


def tally(records: list[WriteRecord]) -> Tally:
    """Count the writes of the ledger by client outcome and verdict."""
    counts = Tally(writes=len(records))
    for record in records:
        counts.attempts += len(record.attempts)
        if record.client_outcome == "acknowledged":
            counts.acknowledged += 1
        elif record.client_outcome == "rejected":
            counts.rejected += 1
        elif record.client_outcome == "unknown":
            counts.unknown += 1
        if record.verdict == "lost":
            counts.lost += 1
        elif record.verdict == "duplicated":
            counts.duplicated += 1
            counts.extra_copies += record.copies - 1
        elif record.verdict == "stored_unacknowledged":
            counts.stored_unacknowledged += 1
        elif record.verdict == "not_stored":
            counts.not_stored += 1
    return counts
