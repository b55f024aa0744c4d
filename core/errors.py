"""The service error tree and the one place that turns errors into response bodies.

ServiceError              500 internal_error
 ├── ValidationFailed     400 validation_failed
 ├── Unauthorized         401 unauthorized
 ├── InvalidCredentials   401 invalid_credentials
 ├── Forbidden            403 forbidden
 ├── NotFound             404 <noun>_not_found
 ├── Conflict             409 conflict (or a more specific code)
 ├── RequestTimeout       408 request_timeout
 ├── PayloadTooLarge      413 payload_too_large
 ├── UnsupportedMediaType 415 unsupported_media_type
 ├── TooManyRequests      429 rate_limited or backlog_full, with Retry-After
 └── ServiceUnavailable   503 service_unavailable
"""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidCredentials",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_response",
    "exception_handlers",
]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class ValidationFailed(ServiceError):
    status_code = 400
    code = "validation_failed"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class InvalidCredentials(ServiceError):
    status_code = 401
    code = "invalid_credentials"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404

    def __init__(self, noun: str, public_id: str | None = None, *, hint: str | None = None):
        what = f"{noun.capitalize()} {public_id[:80]!r}" if public_id else noun.capitalize()
        fix = hint or "check the id; resources of other users and projects are not visible"
        super().__init__(f"{what} was not found; {fix}", code=f"{noun}_not_found")


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class RequestTimeout(ServiceError):
    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after_s))})


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class _ErrorBody(msgspec.Struct):
    success: bool
    error: str
    message: str


_encode = msgspec.json.Encoder().encode

_HTTP_CODES = {
    400: "validation_failed",
    401: "unauthorized",
    403: "forbidden",
    404: "route_not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = _encode(_ErrorBody(success=False, error=code, message=message))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        log.error("request %s failed: %s", request.state.request_id, exc.message)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"No route matches {request.method} {request.url.path}; see /docs for the routes"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = exc.detail
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


exception_handlers = {
    ServiceError: _service_error,
    HTTPException: _http_exception,
}
