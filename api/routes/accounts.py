from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.deps import current_user
from core.app import ctx
from core.errors import Unauthorized
from core.http import decode_body, ok
from core.ratelimit import Limit, take_token
from core.repositories import users as users_repo
from core.services import accounts
from schema.structs import LoginIn, RegisterIn

__all__ = ["routes"]

_register = msgspec.json.Decoder(RegisterIn)
_login = msgspec.json.Decoder(LoginIn)


async def register(request: Request) -> Response:
    context = ctx(request)
    body = await decode_body(request, _register, max_bytes=context.settings.max_request_body_bytes)
    assert body is not None
    address = request.client.host if request.client else "unknown"
    limit = Limit(
        "register-address",
        per_s=accounts.REGISTER_REFILL_PER_S,
        burst=context.settings.register_burst,
    )
    await take_token(context.redis, limit, address, what="registrations from this address")
    async with context.pool.acquire() as conn:
        data = await accounts.register(
            conn, body=body, passwords=context.passwords, tokens=context.tokens
        )
    return ok(data, "Account created", status=201)


async def login(request: Request) -> Response:
    context = ctx(request)
    body = await decode_body(request, _login, max_bytes=context.settings.max_request_body_bytes)
    assert body is not None
    address = request.client.host if request.client else "unknown"
    await take_token(
        context.redis, accounts.LOGIN_PER_ADDRESS, address, what="login attempts from this address"
    )
    await take_token(
        context.redis,
        accounts.LOGIN_PER_ACCOUNT,
        body.email.lower(),
        what="login attempts for this account",
    )
    async with context.pool.acquire() as conn:
        data = await accounts.login(
            conn, body=body, passwords=context.passwords, tokens=context.tokens
        )
    return ok(data, "Logged in")


async def me(request: Request) -> Response:
    user = await current_user(request)
    async with ctx(request).pool.acquire() as conn:
        row = await users_repo.get_user_by_public_id(conn, user.user_id)
    if row is None:
        raise Unauthorized("The token's user no longer exists; register or log in again")
    return ok(accounts.user_json(row), "Current user")


routes = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
]
