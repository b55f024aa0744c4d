"""Credential checks for api handlers."""

from __future__ import annotations

from starlette.requests import Request

from core.app import ctx
from core.auth import UserIdentity, agent_key_from, resolve_user
from core.repositories.runs import RunScope

__all__ = ["current_user", "reader_scope"]


async def current_user(request: Request) -> UserIdentity:
    context = ctx(request)
    return await resolve_user(request, context.pool, context.tokens)


async def reader_scope(request: Request) -> RunScope:
    """Scope of a run read: the agent key's project, or every project of the user."""
    key = agent_key_from(request)
    context = ctx(request)
    if key is not None and "authorization" not in request.headers:
        agent = await context.agent_keys.resolve(context.pool, key)
        return RunScope(project_key=agent.project_key)
    user = await current_user(request)
    return RunScope(user_key=user.user_key)
