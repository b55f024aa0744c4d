"""The Starlette application shell shared by ingest, api and the all-in-one server."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import redis.exceptions
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from core.connections import check_redis_durability, connect_postgres, connect_redis
from core.context import AppContext
from core.errors import ServiceUnavailable, error_response, exception_handlers
from core.http import ok
from core.logs import AccessLog
from core.metrics import HTTP_REQUESTS, metrics_endpoint
from schema.responses import Health

__all__ = ["DirectRouteMiddleware", "create_app", "ctx", "health_routes", "merge_routes"]

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[Response]]
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CORS_HEADERS = [
    "Content-Type",
    "Content-Encoding",
    "Authorization",
    "Accept",
    "Origin",
    "X-Requested-With",
    "X-Agent-Key",
    "X-Agent-Api-Key",
    "X-Request-Id",
]


def ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


class RequestIdMiddleware:
    """Give every request an id (the caller's `X-Request-Id` when it is sane), echo it
    on the response, and count and log the request. Unhandled errors get a 500
    envelope that quotes the id."""

    def __init__(self, app: ASGIApp, *, role: str) -> None:
        self.app = app
        self.role = role
        # Labelled children of HTTP_REQUESTS by (method, status), because `labels()`
        # costs more than the increment itself.
        self._request_counters: dict[tuple[str, int], Any] = {}
        # One line per request; raise the logger's level to silence it on a busy ingest.
        self._access_log = AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s %s failed", request_id, scope["method"], scope["path"])
            if status:
                raise
            response = error_response(
                500,
                "internal_error",
                f"The server failed to handle the request; quote request id {request_id} "
                "when reporting it",
            )
            await response(scope, receive, send_with_id)
        finally:
            self._count_request(scope["method"], status)
            if self._access_log.enabled():
                self._log_access(scope, request_id, status, time.perf_counter() - began)

    def _log_access(self, scope: Scope, request_id: str, status: int, elapsed_s: float) -> None:
        path = scope["path"]
        if not path.isprintable():
            # A decoded %0A would otherwise start a forged log line.
            path = path.encode("unicode_escape").decode("ascii")
        self._access_log.write(
            f"{request_id} {scope['method']} {path} {status} {elapsed_s * 1000:.1f}ms"
        )

    def _count_request(self, method: str, status: int) -> None:
        counter = self._request_counters.get((method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(self.role, method, str(status))
            # Methods come from clients, so only known ones are kept.
            if method in _KNOWN_METHODS:
                self._request_counters[(method, status)] = counter
        counter.inc()


class DirectRouteMiddleware:
    """Serve a few hot routes without Starlette's router, CORS and exception layers.

    A request goes direct when its method and path match one of `routes` and it has
    no `Origin` header, because CORS adds headers to cross-origin responses. Every
    other request goes on to `app`. An exception raised by the endpoint becomes a
    response through the app's exception handlers, looked up along the exception's
    MRO as Starlette does, so a response is the same either way. Exceptions without
    a handler propagate to `RequestIdMiddleware`, as they do from the router.
    """

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[Route], handlers: Mapping[Any, Handler]
    ) -> None:
        self.app = app
        self._routes = [(route.path_regex, route.methods or set(), route) for route in routes]
        # Starlette serves `Exception` and 500 from its outermost middleware and
        # status-code keys only for HTTPException, so neither belongs here.
        self._handlers = {
            key: handler
            for key, handler in handlers.items()
            if isinstance(key, type) and key is not Exception
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._match(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _match(self, scope: Scope) -> Route | None:
        # Starlette matches routes against `path` minus `root_path`, so a request under
        # a root path goes to the router.
        if scope.get("root_path"):
            return None
        method = scope["method"]
        path = scope["path"]
        for path_regex, methods, route in self._routes:
            match = path_regex.match(path)
            if match is None or method not in methods:
                continue
            if any(name == b"origin" for name, _ in scope["headers"]):
                return None
            scope["path_params"] = match.groupdict()
            return route
        return None

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("request %s: backing service unavailable: %r", request.state.request_id, exc)
    error = ServiceUnavailable(
        "A backing service (PostgreSQL or Redis) is unavailable; retry after the Retry-After delay"
    )
    return error_response(error.status_code, error.code, error.message, error.headers)


async def _bad_text(request: Request, exc: Exception) -> Response:
    log.warning("request %s: PostgreSQL rejected text: %r", request.state.request_id, exc)
    return error_response(
        400,
        "validation_failed",
        "The request contains text PostgreSQL cannot store (U+0000 or invalid UTF-8); remove it",
    )


async def health(request: Request) -> Response:
    settings = ctx(request).settings
    data = Health(
        service=settings.service_name,
        role=request.app.state.role,
        status="healthy",
        environment=settings.environment,
        request_id=request.state.request_id,
    )
    return ok(data, "healthy")


async def ready(request: Request) -> Response:
    context = ctx(request)
    checks = {"database": False, "redis": False}
    try:
        async with context.pool.acquire(timeout=2) as conn:
            checks["database"] = await conn.fetchval("SELECT 1") == 1
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("readiness: PostgreSQL check failed: %r", exc)
    try:
        checks["redis"] = bool(await context.redis.ping())
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("readiness: Redis check failed: %r", exc)
    if not all(checks.values()):
        down = " and ".join(name for name, up in checks.items() if not up)
        return error_response(
            503,
            "service_unavailable",
            f"Not ready: the {down} check failed; see the service log",
            {"Retry-After": "5"},
        )
    data = Health(
        service=context.settings.service_name,
        role=request.app.state.role,
        status="ready",
        request_id=request.state.request_id,
        database=checks["database"],
        redis=checks["redis"],
    )
    return ok(data, "ready")


def health_routes() -> list[BaseRoute]:
    return [
        Route("/health", health),
        Route("/api/health", health),
        Route("/ready", ready),
        Route("/api/ready", ready),
        Route("/metrics", metrics_endpoint),
    ]


def merge_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """Join routes of the same path into one, so a 405 lists every allowed method.

    Starlette stops at the first route whose path matches, so with one route per
    method, `PUT /api/agents/{id}` would return `Allow: GET, HEAD` although DELETE
    exists on the same path.
    """
    by_path: dict[str, list[Route]] = {}
    merged: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route):
            if route.path not in by_path:
                by_path[route.path] = []
                merged.append(route)
            by_path[route.path].append(route)
        else:
            merged.append(route)
    for index, route in enumerate(merged):
        if not isinstance(route, Route) or len(by_path[route.path]) == 1:
            continue
        handlers = {
            method: other.endpoint
            for other in by_path[route.path]
            for method in other.methods or ()
        }

        async def dispatch(request: Request, handlers: dict = handlers) -> Response:  # type: ignore[type-arg]
            return await handlers[request.method](request)  # type: ignore[no-any-return]

        merged[index] = Route(route.path, dispatch, methods=sorted(handlers))
    return merged


def create_app(
    settings: Settings,
    routes: Sequence[BaseRoute],
    *,
    role: str,
    direct_routes: Sequence[Route] = (),
) -> Starlette:
    """Build an app serving `routes` with the shared middleware, errors and lifespan.

    `role` (ingest, api or all-in-one) is reported by /health, so an operator can
    tell which service responded. `direct_routes`, which must also be in `routes`,
    skip the router as `DirectRouteMiddleware` describes.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url and settings.redis_url, "URLs are resolved before serving"
        pool = await connect_postgres(settings.database_url)
        redis_client = connect_redis(settings.redis_url, settings)
        appends_client = connect_redis(settings.redis_url, settings, socket_timeout=False)
        await check_redis_durability(redis_client)
        app.state.ctx = AppContext.build(
            settings=settings, pool=pool, redis=redis_client, appends_redis=appends_client
        )
        app.state.role = role
        try:
            yield
        finally:
            await appends_client.aclose()
            await redis_client.aclose()
            await pool.close()

    handlers = dict(exception_handlers)
    for unavailable in (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        asyncpg.CannotConnectNowError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        # asyncpg reports a refused or timed-out connection attempt with these.
        OSError,
        TimeoutError,
    ):
        handlers[unavailable] = _unavailable
    handlers[asyncpg.CharacterNotInRepertoireError] = _bad_text
    handlers[asyncpg.UntranslatableCharacterError] = _bad_text
    middleware = [
        Middleware(RequestIdMiddleware, role=role),
        Middleware(DirectRouteMiddleware, routes=direct_routes, handlers=handlers),
        Middleware(
            CORSMiddleware,
            allow_origins=[settings.cors_allowed_origin],
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            expose_headers=["X-Request-Id", "Retry-After"],
        ),
    ]
    app = Starlette(
        routes=merge_routes([*health_routes(), *routes]),
        middleware=middleware,
        exception_handlers=handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    # `/api/runs/` is not `/api/runs`: answer 404 in the envelope, not a bare redirect.
    app.router.redirect_slashes = False
    return app
