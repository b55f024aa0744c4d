"""The layers every request passes: its id, its count and access log line, and the
direct routes that skip Starlette's middleware stack.

Each ASGI layer adds a coroutine and a send wrapper to every request. That is
nothing for the dashboard's reads, but agents send events one request at a time
at thousands per second, so `ServiceApp` serves the events route without them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import error_response
from core.logs import AccessLog
from core.metrics import HTTP_REQUESTS

__all__ = ["DirectRequest", "DirectRoute", "RequestIdMiddleware", "RequestTracking", "ServiceApp"]

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[Response]]
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON_HEADER = (b"content-type", b"application/json")


class RequestTracking:
    """Give every request an id (the caller's `X-Request-Id` when it is sane), count
    it by method and status, and write its access log line."""

    def __init__(self, role: str) -> None:
        self.role = role
        # Labelled children of HTTP_REQUESTS by (method, status), because `labels()`
        # costs more than the increment itself.
        self._request_counters: dict[tuple[str, int], Any] = {}
        # One line per request; raise the logger's level to silence it on a busy ingest.
        self._access_log = AccessLog()

    def assign_id(self, scope: Scope) -> str:
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = request_id
        return request_id

    def finished(self, scope: Scope, request_id: str, status: int, began: float) -> None:
        """Count and log a request; `status` is 0 when no response started."""
        method = scope["method"]
        counter = self._request_counters.get((method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(self.role, method, str(status))
            # Methods come from clients, so only known ones are kept.
            if method in _KNOWN_METHODS:
                self._request_counters[(method, status)] = counter
        counter.inc()
        if self._access_log.enabled():
            path = scope["path"]
            if not path.isprintable():
                # A decoded %0A would otherwise start a forged log line.
                path = path.encode("unicode_escape").decode("ascii")
            elapsed_ms = (time.perf_counter() - began) * 1000
            self._access_log.write(f"{request_id} {method} {path} {status} {elapsed_ms:.1f}ms")

    @staticmethod
    def internal_error(scope: Scope, request_id: str) -> Response:
        """Log the exception being handled and return the 500 envelope quoting the id."""
        log.exception("request %s %s %s failed", request_id, scope["method"], scope["path"])
        return error_response(
            500,
            "internal_error",
            f"The server failed to handle the request; quote request id {request_id} "
            "when reporting it",
        )


class RequestIdMiddleware:
    """Track every request of the Starlette stack (see `RequestTracking`) and echo its
    id on the response. Unhandled errors get a 500 envelope that quotes the id."""

    def __init__(self, app: ASGIApp, *, tracking: RequestTracking) -> None:
        self.app = app
        self.tracking = tracking

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.tracking.assign_id(scope)
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
            if status:
                self.tracking.internal_error(scope, request_id)
                raise
            response = self.tracking.internal_error(scope, request_id)
            await response(scope, receive, send_with_id)
        finally:
            self.tracking.finished(scope, request_id, status, began)


class DirectRequest(Request):
    """A Starlette Request whose `headers` is a dict built once from the scope.

    `Headers.get` scans the whole header list on each lookup, and the events route
    looks up five headers. Names are lower-case, as ASGI delivers them, and the
    first of repeated headers wins, as with `Headers.get`.
    """

    @property
    def headers(self) -> Mapping[str, str]:  # type: ignore[override]
        headers: dict[str, str] | None = self.__dict__.get("_direct_headers")
        if headers is None:
            headers = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in reversed(self.scope["headers"])
            }
            self.__dict__["_direct_headers"] = headers
        return headers


@dataclasses.dataclass(frozen=True)
class DirectRoute:
    """A JSON route that `ServiceApp` can serve without Starlette's middleware stack.

    `endpoint` returns the response body, sent as `application/json` with `status`.
    It must only call `request.headers.get` with lower-case names (see
    `DirectRequest`). `route()` gives the same endpoint as a Starlette `Route`, for
    the requests that `ServiceApp` passes on.
    """

    path: str
    endpoint: Callable[[Request], Awaitable[bytes]]
    status: int
    methods: tuple[str, ...]

    def route(self) -> Route:
        endpoint, status = self.endpoint, self.status

        async def respond(request: Request) -> Response:
            body = await endpoint(request)
            return Response(body, status_code=status, media_type="application/json")

        respond.__name__ = endpoint.__name__
        return Route(self.path, respond, methods=list(self.methods))


class ServiceApp(Starlette):
    """A Starlette app that serves its `DirectRoute`s straight from the ASGI scope.

    A request goes direct when its method and path match a direct route, its scope
    has no `root_path`, and it has no `Origin` header (CORS adds headers to
    cross-origin responses). It then skips the middleware stack, the router and the
    Response object: about 8 of the 90 µs of CPU that a one-event request took
    in-process, without HTTP, on a 2-core machine.
    Everything a client sees stays the same: the request is tracked as
    `RequestIdMiddleware` does, and an exception becomes a response through the
    app's exception handlers, looked up along the exception's MRO as Starlette
    does. `direct_headers` are added to every direct response, for what the skipped
    middleware would have added. Every other request, and every lifespan event, goes
    to Starlette.
    """

    def __init__(
        self,
        *,
        tracking: RequestTracking,
        direct_routes: Sequence[DirectRoute] = (),
        direct_headers: Sequence[tuple[bytes, bytes]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tracking = tracking
        self._direct_headers = list(direct_headers)
        self._direct = [
            (compile_path(route.path)[0], frozenset(route.methods), route)
            for route in direct_routes
        ]
        # Starlette serves `Exception` and 500 from its outermost middleware and
        # status-code keys only for HTTPException, so neither belongs here.
        self._handlers: dict[type, Handler] = {
            key: handler
            for key, handler in self.exception_handlers.items()
            if isinstance(key, type) and key is not Exception
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._match(scope) if self._direct and scope["type"] == "http" else None
        if route is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        tracking = self.tracking
        request_id = tracking.assign_id(scope)
        began = time.perf_counter()
        status = 0
        try:
            request = DirectRequest(scope, receive, send)
            try:
                body = await route.endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
                status = response.status_code
                await self._respond(send, status, response.raw_headers, response.body, request_id)
            else:
                status = route.status
                headers = [(b"content-length", str(len(body)).encode()), _JSON_HEADER]
                await self._respond(send, status, headers, body, request_id)
        except Exception:
            if status:
                tracking.internal_error(scope, request_id)
                raise
            response = tracking.internal_error(scope, request_id)
            status = response.status_code
            await self._respond(send, status, response.raw_headers, response.body, request_id)
        finally:
            tracking.finished(scope, request_id, status, began)

    async def _respond(
        self,
        send: Send,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        request_id: str,
    ) -> None:
        headers = [*headers, *self._direct_headers, (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _match(self, scope: Scope) -> DirectRoute | None:
        # Starlette matches routes against `path` minus `root_path`, so a request under
        # a root path goes to the router.
        if scope.get("root_path"):
            return None
        method = scope["method"]
        path = scope["path"]
        for path_regex, methods, route in self._direct:
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
