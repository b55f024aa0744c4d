"""The Starlette application shell shared by ingest, api and the all-in-one server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import redis.exceptions
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.asgi import DirectRoute, RequestIdMiddleware, RequestTracking, ServiceApp
from core.config import Settings
from core.connections import (
    check_redis_durability,
    connect_postgres,
    connect_redis,
    connect_scripts,
)
from core.context import AppContext
from core.errors import ServiceUnavailable, error_response, exception_handlers
from core.http import ok
from core.metrics import metrics_endpoint
from schema.responses import Health

__all__ = ["create_app", "ctx", "health_routes", "merge_routes"]

log = logging.getLogger(__name__)
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
    direct_routes: Sequence[DirectRoute] = (),
) -> ServiceApp:
    """Build an app serving `routes` and `direct_routes` with the shared middleware,
    errors and lifespan.

    `role` (ingest, api or all-in-one) is reported by /health, so an operator can
    tell which service responded. `direct_routes` skip the middleware stack when
    they can, as `ServiceApp` describes.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url and settings.redis_url, "URLs are resolved before serving"
        pool = await connect_postgres(settings.database_url)
        redis_client = connect_redis(settings.redis_url, settings)
        scripts = connect_scripts(settings.redis_url, settings)
        await check_redis_durability(redis_client)
        app.state.ctx = AppContext.build(
            settings=settings, pool=pool, redis=redis_client, scripts=scripts
        )
        app.state.role = role
        try:
            yield
        finally:
            await scripts.close()
            await redis_client.aclose()
            await pool.close()

    handlers = dict(exception_handlers)
    for unavailable in (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        # Redis at its maxmemory (with noeviction, as it should run) or a read-only replica.
        redis.exceptions.OutOfMemoryError,
        redis.exceptions.ReadOnlyError,
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
    tracking = RequestTracking(role)
    middleware = [
        Middleware(RequestIdMiddleware, tracking=tracking),
        Middleware(
            CORSMiddleware,
            allow_origins=[settings.cors_allowed_origin],
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=CORS_HEADERS,
            expose_headers=["X-Request-Id", "Retry-After"],
        ),
    ]
    app = ServiceApp(
        tracking=tracking,
        direct_routes=direct_routes,
        # CORSMiddleware adds this to the responses of requests without an Origin.
        direct_headers=[(b"vary", b"Origin")],
        routes=merge_routes(
            [*health_routes(), *routes, *(direct.route() for direct in direct_routes)]
        ),
        middleware=middleware,
        exception_handlers=handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    # `/api/runs/` is not `/api/runs`: answer 404 in the envelope, not a bare redirect.
    app.router.redirect_slashes = False
    return app
