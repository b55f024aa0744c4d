from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import current_user, reader_scope
from core.app import ctx
from core.errors import NotFound
from core.http import listing, ok, page_params, query_param
from core.repositories import reports as reports_repo
from core.repositories import runs as runs_repo
from core.repositories.runs import RunScope
from core.services import reports as reports_service
from core.services.ids import require_public_id
from schema.responses import Deleted

__all__ = ["routes"]


async def list_reports(request: Request) -> Response:
    scope = await reader_scope(request)
    limit, offset = page_params(request)
    async with ctx(request).pool.acquire() as conn:
        project_key = None
        if project_id := query_param(request, "project_id"):
            require_public_id("project", project_id)
            project_key = await runs_repo.find_project_key(conn, scope, project_id)
            if project_key is None:
                raise NotFound("project", project_id)
        rows = await reports_repo.list_reports(
            conn, scope, project_key=project_key, limit=limit, offset=offset
        )
        total = await reports_repo.count_reports(conn, scope, project_key=project_key)
    items = [reports_service.report_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Reports loaded")


async def get_report(request: Request) -> Response:
    scope = await reader_scope(request)
    async with ctx(request).pool.acquire() as conn:
        row = await reports_service.load_report(conn, scope, request.path_params["report_id"])
    return ok(reports_service.report_json(row), "Report loaded")


async def delete_report(request: Request) -> Response:
    user = await current_user(request)
    report_id = request.path_params["report_id"]
    async with ctx(request).pool.acquire() as conn:
        row = await reports_service.load_report(conn, RunScope(user_key=user.user_key), report_id)
        await reports_repo.delete_report(conn, report_key=row["id"])
    return ok(Deleted(id=report_id, deleted=True), "Report deleted")


routes = [
    Route("/api/reports", list_reports, methods=["GET"]),
    Route("/api/reports/{report_id}", get_report, methods=["GET"]),
    Route("/api/reports/{report_id}", delete_report, methods=["DELETE"]),
]
