from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import current_user, reader_scope
from core.app import ctx
from core.errors import NotFound, ValidationFailed
from core.http import listing, ok, page_params, query_param
from core.repositories import events as events_repo
from core.repositories import reports as reports_repo
from core.repositories import runs as runs_repo
from core.repositories.runs import RunScope
from core.scoring import RISK_FLAGS
from core.services import reports as reports_service
from core.services import runs as runs_service
from core.services import scores as scores_service
from core.services.events import event_filter, event_json
from core.services.ids import require_public_id
from schema.responses import Deleted
from schema.structs import RUN_STATUSES

__all__ = ["routes"]


async def _filter_keys(conn, scope: RunScope, request: Request) -> tuple[int | None, int | None]:  # type: ignore[no-untyped-def]
    """Resolve the `project_id` and `agent_id` filters; unknown or foreign ids are 404."""
    project_key = agent_key = None
    if project_id := query_param(request, "project_id"):
        require_public_id("project", project_id)
        project_key = await runs_repo.find_project_key(conn, scope, project_id)
        if project_key is None:
            raise NotFound("project", project_id)
    if agent_id := query_param(request, "agent_id"):
        require_public_id("agent", agent_id)
        agent_key = await runs_repo.find_agent_key(conn, scope, agent_id)
        if agent_key is None:
            raise NotFound("agent", agent_id)
    return project_key, agent_key


async def list_runs(request: Request) -> Response:
    scope = await reader_scope(request)
    limit, offset = page_params(request)
    status = query_param(request, "status")
    if status is not None and status not in RUN_STATUSES:
        raise ValidationFailed(f"Query parameter `status` must be one of {', '.join(RUN_STATUSES)}")
    flag = query_param(request, "flag")
    if flag is not None and flag not in RISK_FLAGS:
        raise ValidationFailed(f"Query parameter `flag` must be one of {', '.join(RISK_FLAGS)}")
    async with ctx(request).pool.acquire() as conn:
        project_key, agent_key = await _filter_keys(conn, scope, request)
        filters = {
            "project_key": project_key,
            "agent_key": agent_key,
            "status": status,
            "flag": flag,
        }
        rows = await runs_repo.list_runs(conn, scope, **filters, limit=limit, offset=offset)
        total = await runs_repo.count_runs(conn, scope, **filters)
    items = [runs_service.run_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Runs loaded")


async def get_run(request: Request) -> Response:
    scope = await reader_scope(request)
    async with ctx(request).pool.acquire() as conn:
        row = await runs_service.load_run(conn, scope, request.path_params["run_id"])
    return ok(runs_service.run_json(row), "Run loaded")


async def delete_run(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    run_id = request.path_params["run_id"]
    async with context.pool.acquire() as conn:
        row = await runs_service.load_run(conn, RunScope(user_key=user.user_key), run_id)
        await runs_service.delete_run(
            conn, context.redis, run=row, shards=context.settings.stream_shards
        )
    return ok(Deleted(id=run_id, deleted=True), "Run deleted")


async def list_run_events(request: Request) -> Response:
    scope = await reader_scope(request)
    limit, offset = page_params(request, default_limit=50, max_limit=500)
    only = event_filter(request)
    async with ctx(request).pool.acquire() as conn:
        run = await runs_service.load_run(conn, scope, request.path_params["run_id"])
        rows = await events_repo.list_events(
            conn, run_key=run["id"], limit=limit, offset=offset, only=only
        )
        total = await events_repo.count_events(conn, run_key=run["id"], only=only)
    items = [event_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Events loaded")


async def get_score(request: Request) -> Response:
    scope = await reader_scope(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        run = await runs_service.load_run(conn, scope, request.path_params["run_id"])
        data = await scores_service.load_score(
            conn, context.redis, run=run, shards=context.settings.stream_shards
        )
    return ok(data, "Score loaded")


async def get_run_report(request: Request) -> Response:
    scope = await reader_scope(request)
    async with ctx(request).pool.acquire() as conn:
        run = await runs_service.load_run(conn, scope, request.path_params["run_id"])
        row = await reports_service.load_report_for_run(conn, run=run)
    return ok(reports_service.report_json(row), "Report loaded")


async def delete_run_report(request: Request) -> Response:
    user = await current_user(request)
    async with ctx(request).pool.acquire() as conn:
        run = await runs_service.load_run(
            conn, RunScope(user_key=user.user_key), request.path_params["run_id"]
        )
        row = await reports_service.load_report_for_run(conn, run=run)
        await reports_repo.delete_report(conn, report_key=row["id"])
    return ok(Deleted(id=row["public_id"], deleted=True), "Report deleted")


routes = [
    Route("/api/runs", list_runs, methods=["GET"]),
    Route("/api/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/runs/{run_id}", delete_run, methods=["DELETE"]),
    Route("/api/runs/{run_id}/events", list_run_events, methods=["GET"]),
    Route("/api/runs/{run_id}/score", get_score, methods=["GET"]),
    Route("/api/runs/{run_id}/report", get_run_report, methods=["GET"]),
    Route("/api/runs/{run_id}/report", delete_run_report, methods=["DELETE"]),
]
