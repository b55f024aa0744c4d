"""The agent write routes: runs, their status, events and finish.

Appending events never touches PostgreSQL on the hot path: the agent key comes from
a per-process cache and the run's state from Redis, checked by the same script call
that appends the batch.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core import streams
from core.app import ctx
from core.asgi import DirectRoute
from core.auth import AgentIdentity, agent_key_from
from core.errors import Conflict, NotFound, TooManyRequests, Unauthorized
from core.http import decode_body, envelope, ok, read_body
from core.metrics import EVENTS_ACCEPTED, EVENTS_REJECTED
from core.repositories.runs import RunScope
from core.services import reports as reports_service
from core.services import runs as runs_service
from core.services.ids import require_public_id
from ingest.events import now_utc, parse_events
from schema.responses import Appended
from schema.structs import (
    FINAL_STATUSES,
    ReportIn,
    RunCreate,
    RunFinish,
    RunStatusIn,
)

__all__ = ["events_route", "routes"]

log = logging.getLogger(__name__)

_run_create = msgspec.json.Decoder(RunCreate)
_run_status = msgspec.json.Decoder(RunStatusIn)
_run_finish = msgspec.json.Decoder(RunFinish)
_report = msgspec.json.Decoder(ReportIn)
REPORT_ENVELOPE_BYTES = 64 * 1024


async def _agent(request: Request) -> AgentIdentity:
    key = agent_key_from(request)
    if key is None:
        raise Unauthorized("Missing agent key; send it in the X-Agent-Key header")
    context = ctx(request)
    agent = await context.agent_keys.resolve(context.pool, key)
    if context.agent_rate is not None:
        await context.agent_rate.take(
            context.scripts, agent.agent_id, what="requests with this agent key"
        )
    return agent


async def create_run(request: Request) -> Response:
    agent = await _agent(request)
    context = ctx(request)
    body = await decode_body(
        request, _run_create, max_bytes=context.settings.max_request_body_bytes
    )
    assert body is not None
    async with context.pool.acquire() as conn:
        row = await runs_service.create_run(
            conn, context.redis, agent=agent, body=body, shards=context.settings.stream_shards
        )
    log.info("run %s created by agent %s", row["public_id"], agent.agent_id)
    return ok(runs_service.run_json(row), "Run created", status=201)


async def update_status(request: Request) -> Response:
    agent = await _agent(request)
    context = ctx(request)
    body = await decode_body(
        request, _run_status, max_bytes=context.settings.max_request_body_bytes
    )
    assert body is not None
    async with context.pool.acquire() as conn:
        run = await runs_service.load_run(
            conn, RunScope(project_key=agent.project_key), request.path_params["run_id"]
        )
        row = await runs_service.set_run_status(
            conn, context.redis, run=run, status=body.status, shards=context.settings.stream_shards
        )
    return ok(runs_service.run_json(row), "Run status updated")


async def finish_run(request: Request) -> Response:
    agent = await _agent(request)
    context = ctx(request)
    body = await decode_body(
        request, _run_finish, max_bytes=context.settings.max_request_body_bytes, optional=True
    )
    status = body.status if body is not None else "finished"
    async with context.pool.acquire() as conn:
        run = await runs_service.load_run(
            conn, RunScope(project_key=agent.project_key), request.path_params["run_id"]
        )
        row, changed = await runs_service.finish_run(
            conn, context.redis, run=run, status=status, shards=context.settings.stream_shards
        )
    if changed:
        log.info("run %s finished as %s", row["public_id"], row["status"])
    message = "Run finished" if changed else "Run was already finished"
    return ok(runs_service.run_json(row), message)


async def _load_run_state(request: Request, agent: AgentIdentity, keys: streams.StreamKeys) -> None:
    """Copy a run's state from PostgreSQL into Redis (after a Redis restart, say)."""
    context = ctx(request)
    run_id = request.path_params["run_id"]
    async with context.pool.acquire() as conn:
        run = await runs_service.load_run(conn, RunScope(project_key=agent.project_key), run_id)
    await streams.set_run_state(
        context.redis,
        keys,
        run_id=run_id,
        project_key=run["project_key"],
        final=run["status"] in FINAL_STATUSES,
        only_new=True,
    )


async def append_events(request: Request) -> bytes:
    agent = await _agent(request)
    context = ctx(request)
    settings = context.settings
    run_id = request.path_params["run_id"]
    require_public_id("run", run_id)
    body = await read_body(request, max_bytes=settings.max_bulk_body_bytes)
    accepted, rejected, field, count, entry = parse_events(
        body, run_id=run_id, received_at=now_utc()
    )
    keys = streams.StreamKeys.for_run(run_id, settings.stream_shards)
    for attempt in range(2):
        if count:
            outcome, detail = await streams.append_batch(
                context.redis,
                keys,
                run_id=run_id,
                project_key=agent.project_key,
                event_count=count,
                backlog_limit=settings.backlog_limit_events,
                field=field,
                entry=entry,
                pipeline=context.scripts,
            )
        else:
            # Nothing to append, but a final, foreign or unknown run still gets its 409 or 404.
            outcome = await streams.check_run(
                context.redis, keys, run_id=run_id, project_key=agent.project_key
            )
            detail = ""
        if outcome is not streams.AppendOutcome.UNKNOWN_RUN or attempt == 1:
            break
        await _load_run_state(request, agent, keys)
    _raise_for_outcome(outcome, run_id, detail)
    EVENTS_ACCEPTED.inc(accepted)
    if rejected:
        EVENTS_REJECTED.inc(len(rejected))
    message = f"{accepted} events accepted, {len(rejected)} rejected"
    return envelope(Appended(accepted=accepted, rejected=rejected), message)


def _raise_for_outcome(outcome: streams.AppendOutcome, run_id: str, detail: str) -> None:
    if outcome is streams.AppendOutcome.APPENDED:
        return
    if outcome in (streams.AppendOutcome.UNKNOWN_RUN, streams.AppendOutcome.FOREIGN_RUN):
        raise NotFound("run", run_id)
    if outcome is streams.AppendOutcome.FINAL_RUN:
        raise Conflict(
            f"Run {run_id!r} is final and accepts no more events; create a new run",
            code="run_finished",
        )
    log.warning("backlog full for run %s: %s events waiting", run_id, detail)
    raise TooManyRequests(
        f"The event backlog is full ({detail} events waiting); retry after the Retry-After delay",
        retry_after_s=5,
        code="backlog_full",
    )


async def submit_report(request: Request) -> Response:
    agent = await _agent(request)
    context = ctx(request)
    # The raw report may be as large as the bulk limit; the envelope around it must fit too.
    max_bytes = context.settings.max_bulk_body_bytes + REPORT_ENVELOPE_BYTES
    body = await decode_body(request, _report, max_bytes=max_bytes)
    assert body is not None
    async with context.pool.acquire() as conn:
        run = await runs_service.load_run(
            conn, RunScope(project_key=agent.project_key), request.path_params["run_id"]
        )
        row, created = await reports_service.submit_report(conn, run=run, body=body)
    if created:
        return ok(reports_service.report_json(row), "Report created", status=201)
    return ok(reports_service.report_json(row), "Report updated")


# The route agents call most, served without the middleware stack when it can be.
events_route = DirectRoute(
    "/api/runs/{run_id}/events", append_events, status=202, methods=("POST",)
)
routes = [
    Route("/api/runs", create_run, methods=["POST"]),
    Route("/api/runs/{run_id}/status", update_status, methods=["POST", "PATCH"]),
    Route("/api/runs/{run_id}/finish", finish_run, methods=["POST"]),
    Route("/api/runs/{run_id}/report", submit_report, methods=["POST", "PUT"]),
]
