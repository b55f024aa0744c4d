"""msgspec Structs of every response `data`, used to encode responses and to document them."""

from __future__ import annotations

import datetime as dt

import msgspec

__all__ = [
    "AgentOut",
    "AgentWithKey",
    "Appended",
    "Deduction",
    "Deleted",
    "EventOut",
    "Health",
    "LatestScore",
    "LoginOut",
    "ProjectOut",
    "ProjectScores",
    "ProjectTotals",
    "RegisterOut",
    "Rejection",
    "ReportOut",
    "RunOut",
    "RunScore",
    "ScoreCounts",
    "TrendPoint",
    "UserOut",
]


class UserOut(msgspec.Struct):
    id: str
    email: str
    name: str
    created_at: dt.datetime


class RegisterOut(msgspec.Struct):
    user: UserOut
    token: str


class LoginOut(msgspec.Struct):
    token: str
    user: UserOut


class ProjectOut(msgspec.Struct):
    id: str
    name: str
    slug: str
    description: str
    base_url: str
    created_at: dt.datetime
    updated_at: dt.datetime


class AgentOut(msgspec.Struct):
    id: str
    project_id: str
    name: str
    last_seen_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class AgentWithKey(msgspec.Struct):
    """An agent with its plain key, returned only on create and on rotate."""

    agent: AgentOut
    api_key: str
    api_key_warning: str


class RunOut(msgspec.Struct):
    id: str
    project_id: str
    agent_id: str | None
    status: str
    target_url: str
    method: str
    scenario: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # The stored score so far, as `GET /api/runs/{id}/score` serves it in full.
    score: int
    grade: str
    risks: dict[str, bool]


class EventOut(msgspec.Struct):
    id: str
    run_id: str
    event_id: str
    event_type: str
    severity: str
    message: str
    payload: msgspec.Raw | None
    occurred_at: dt.datetime | None
    received_at: dt.datetime
    created_at: dt.datetime


class Rejection(msgspec.Struct):
    index: int
    error: str
    message: str


class Appended(msgspec.Struct):
    accepted: int
    rejected: list[Rejection]


class ReportOut(msgspec.Struct):
    id: str
    run_id: str
    summary: str
    raw_json: msgspec.Raw
    created_at: dt.datetime
    updated_at: dt.datetime


class Deduction(msgspec.Struct):
    """One penalty: `events` events of `event_type`, or of `severity`, cost `points`."""

    reason: str
    points: int
    events: int
    event_type: str | None = None
    severity: str | None = None


class ScoreCounts(msgspec.Struct):
    total: int
    info: int
    warning: int
    error: int
    critical: int
    data_loss: int
    duplicate: int
    timeout: int
    recovery: int


class RunScore(msgspec.Struct):
    run_id: str
    score: int
    grade: str
    risks: dict[str, bool]
    counts: ScoreCounts
    deductions: list[Deduction]
    settled: bool
    status: str
    pending_events: int
    dead_lettered_events: int
    updated_at: dt.datetime


class TrendPoint(msgspec.Struct):
    run_id: str
    status: str
    scenario: str
    score: int
    grade: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


class LatestScore(msgspec.Struct):
    run_id: str
    score: int
    grade: str


class ProjectTotals(msgspec.Struct):
    """Counts over every run of a project, not only the last ones. `runs_flagged`
    counts runs of any status, as `GET /api/runs?flag=` lists them."""

    runs: int
    finished_runs: int
    runs_flagged: dict[str, int]


class ProjectScores(msgspec.Struct):
    """A project's last `runs_considered` runs. `latest`, the average and `runs_flagged`
    count only the `final_runs` among them whose status is finished."""

    project_id: str
    runs_considered: int
    final_runs: int
    latest: LatestScore | None
    average_score: float | None
    average_grade: str | None
    runs_flagged: dict[str, int]
    trend: list[TrendPoint]
    totals: ProjectTotals


class Deleted(msgspec.Struct):
    id: str
    deleted: bool


class Health(msgspec.Struct, omit_defaults=True):
    service: str
    role: str
    status: str
    request_id: str
    environment: str | None = None
    database: bool | None = None
    redis: bool | None = None
