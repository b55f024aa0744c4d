from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import reader_scope
from core.app import ctx
from core.errors import NotFound, ValidationFailed
from core.http import listing, ok, page_params, query_param
from core.repositories import events as events_repo
from core.repositories.events import EVERY_EVENT
from core.services import runs as runs_service
from core.services.events import event_filter, event_json
from core.services.ids import require_public_id

__all__ = ["routes"]


async def list_events(request: Request) -> Response:
    """Events of one run (`run_id`, oldest first) or of every run in scope (newest first)."""
    scope = await reader_scope(request)
    limit, offset = page_params(request, default_limit=50, max_limit=500)
    run_id = query_param(request, "run_id")
    only = event_filter(request)
    if not run_id and only != EVERY_EVENT:
        raise ValidationFailed(
            "Query parameters `event_type` and `severity` filter one run's events: add `run_id`"
        )
    async with ctx(request).pool.acquire() as conn:
        if run_id:
            run = await runs_service.load_run(conn, scope, run_id)
            rows = await events_repo.list_events(
                conn, run_key=run["id"], limit=limit, offset=offset, only=only
            )
            total = await events_repo.count_events(conn, run_key=run["id"], only=only)
        else:
            rows = await events_repo.list_scope_events(conn, scope, limit=limit, offset=offset)
            total = await events_repo.count_scope_events(conn, scope)
    items = [event_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Events loaded")


async def get_event(request: Request) -> Response:
    scope = await reader_scope(request)
    event_id = request.path_params["event_id"]
    require_public_id("event", event_id)
    async with ctx(request).pool.acquire() as conn:
        row = await events_repo.get_event(conn, scope, event_id)
    if row is None:
        raise NotFound("event", event_id)
    return ok(event_json(row), "Event loaded")


routes = [
    Route("/api/events", list_events, methods=["GET"]),
    Route("/api/events/{event_id}", get_event, methods=["GET"]),
]
