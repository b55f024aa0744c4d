from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import current_user
from core.app import ctx
from core.errors import ValidationFailed
from core.http import decode_body, listing, ok, page_params, query_param
from core.repositories import agents as agents_repo
from core.services import agents as agents_service
from core.services import projects as projects_service
from schema.responses import Deleted
from schema.structs import AgentCreate

__all__ = ["routes"]

_agent = msgspec.json.Decoder(AgentCreate)


async def create_agent(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    body = await decode_body(request, _agent, max_bytes=context.settings.max_request_body_bytes)
    assert body is not None
    project_id = request.path_params.get("project_id") or body.project_id
    if not project_id:
        raise ValidationFailed(
            "`project_id` is required; send it in the body or use /api/projects/{id}/agents"
        )
    async with context.pool.acquire() as conn:
        project = await projects_service.load_project(
            conn, user_key=user.user_key, public_id=project_id
        )
        data = await agents_service.create_agent(
            conn,
            project_key=project["id"],
            name=body.name,
            key_secret=context.settings.agent_api_key_secret,
        )
    return ok(data, "Agent created", status=201)


async def list_agents(request: Request) -> Response:
    user = await current_user(request)
    limit, offset = page_params(request)
    project_id = query_param(request, "project_id")
    async with ctx(request).pool.acquire() as conn:
        project_key = None
        if project_id is not None:
            project = await projects_service.load_project(
                conn, user_key=user.user_key, public_id=project_id
            )
            project_key = project["id"]
        rows = await agents_repo.list_agents(
            conn, user_key=user.user_key, project_key=project_key, limit=limit, offset=offset
        )
        total = await agents_repo.count_agents(
            conn, user_key=user.user_key, project_key=project_key
        )
    items = [agents_service.agent_json(row) for row in rows]
    return listing(items, total=total, limit=limit, offset=offset, message="Agents loaded")


async def get_agent(request: Request) -> Response:
    user = await current_user(request)
    async with ctx(request).pool.acquire() as conn:
        row = await agents_service.load_agent(
            conn, user_key=user.user_key, public_id=request.path_params["agent_id"]
        )
    return ok(agents_service.agent_json(row), "Agent loaded")


async def rotate_key(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        row = await agents_service.load_agent(
            conn, user_key=user.user_key, public_id=request.path_params["agent_id"]
        )
        data = await agents_service.rotate_agent_key(
            conn, agent_key=row["id"], key_secret=context.settings.agent_api_key_secret
        )
    context.agent_keys.forget()
    return ok(data, "Agent key rotated; the previous key no longer works")


async def delete_agent(request: Request) -> Response:
    user = await current_user(request)
    context = ctx(request)
    agent_id = request.path_params["agent_id"]
    async with context.pool.acquire() as conn:
        row = await agents_service.load_agent(conn, user_key=user.user_key, public_id=agent_id)
        await agents_repo.delete_agent(conn, agent_key=row["id"])
    context.agent_keys.forget()
    return ok(Deleted(id=agent_id, deleted=True), "Agent deleted")


routes = [
    Route("/api/projects/{project_id}/agents", create_agent, methods=["POST"]),
    Route("/api/agents", create_agent, methods=["POST"]),
    Route("/api/agents", list_agents, methods=["GET"]),
    Route("/api/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/api/agents/{agent_id}", delete_agent, methods=["DELETE"]),
    Route("/api/agents/{agent_id}/rotate-key", rotate_key, methods=["POST"]),
]
