from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import current_user
from core import streams
from core.app import ctx
from core.http import decode_body, listing, ok, page_params
from core.repositories import projects as projects_repo
from core.services import projects as projects_service
from core.services import summaries as summaries_service
from schema.responses import Deleted
from schema.structs import ProjectIn, ProjectPatch

__all__ = ["routes"]

_project = msgspec.json.Decoder(ProjectIn)
_project_patch = msgspec.json.Decoder(ProjectPatch)


async def list_projects(request: Request) -> Response:
    user = await current_user(request)
    limit, offset = page_params(request)
    async with ctx(request).pool.acquire() as conn:
        rows = await projects_repo.list_projects(
            conn, user_key=user.user_key, limit=limit, offset=offset
        )
        total = await projects_repo.count_projects(conn, user_key=user.user_key)
    items = [projects_service.project_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Projects loaded")


async def create_project(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    body = await decode_body(request, _project, max_bytes=context.settings.max_request_body_bytes)
    assert body is not None
    async with context.pool.acquire() as conn:
        row = await projects_service.create_project(conn, user_key=user.user_key, body=body)
    return ok(projects_service.project_json(row), "Project created", status=201)


async def get_project(request: Request) -> Response:
    user = await current_user(request)
    async with ctx(request).pool.acquire() as conn:
        row = await projects_service.load_project(
            conn, user_key=user.user_key, public_id=request.path_params["project_id"]
        )
    return ok(projects_service.project_json(row), "Project loaded")


async def update_project(request: Request) -> Response:
    """PUT replaces every field; PATCH changes only the fields sent."""
    user = await current_user(request)
    context = ctx(request)
    decoder = _project_patch if request.method == "PATCH" else _project
    body = await decode_body(request, decoder, max_bytes=context.settings.max_request_body_bytes)
    assert body is not None
    async with context.pool.acquire() as conn:
        row = await projects_service.load_project(
            conn, user_key=user.user_key, public_id=request.path_params["project_id"]
        )
        row = await projects_repo.update_project(
            conn,
            project_key=row["id"],
            name=_sent_or(body.name, row["name"]),
            description=_sent_or(body.description, row["description"]),
            base_url=_sent_or(body.base_url, row["base_url"]),
        )
    return ok(projects_service.project_json(row), "Project updated")


def _sent_or(value: str | msgspec.UnsetType, current: str) -> str:
    return current if value is msgspec.UNSET else value


async def delete_project(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    project_id = request.path_params["project_id"]
    async with context.pool.acquire() as conn:
        row = await projects_service.load_project(
            conn, user_key=user.user_key, public_id=project_id
        )
        run_ids = await projects_repo.delete_project(conn, project_key=row["id"])
    for run_id in run_ids:
        keys = streams.StreamKeys.for_run(run_id, context.settings.stream_shards)
        await streams.forget_run(context.redis, keys, run_id)
    context.agent_keys.forget()
    return ok(Deleted(id=project_id, deleted=True), "Project deleted")


async def project_scores(request: Request) -> Response:
    """Latest score, averages and trend over the project's last `last` runs (default 20)."""
    user = await current_user(request)
    last, _ = page_params(request, default_limit=20, max_limit=100, limit_name="last")
    async with ctx(request).pool.acquire() as conn:
        project = await projects_service.load_project(
            conn, user_key=user.user_key, public_id=request.path_params["project_id"]
        )
        data = await summaries_service.project_summary(conn, project=project, last=last)
    return ok(data, "Project scores loaded")


routes = [
    Route("/api/projects", list_projects, methods=["GET"]),
    Route("/api/projects", create_project, methods=["POST"]),
    Route("/api/projects/{project_id}", get_project, methods=["GET"]),
    Route("/api/projects/{project_id}", update_project, methods=["PUT", "PATCH"]),
    Route("/api/projects/{project_id}", delete_project, methods=["DELETE"]),
    Route("/api/projects/{project_id}/scores", project_scores, methods=["GET"]),
]
