"""The dashboard: one HTML page and its scripts and styles, read once at import.

The page is a client of the JSON API on the same origin; it fetches nothing else,
so the Content-Security-Policy allows only this origin.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import NotFound

__all__ = ["routes"]

_DIRECTORY = Path(__file__).parent.parent / "static" / "dashboard"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Revalidate on every load: an upgraded server never runs an old script.
    "Cache-Control": "no-cache",
}


class _Asset:
    __slots__ = ("body", "etag", "media_type")

    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        self.media_type = _MEDIA_TYPES[path.suffix]

    def matches(self, if_none_match: str) -> bool:
        """Return whether `If-None-Match` names this file, comparing weakly as HTTP does
        for this header: a list of tags, `W/` tags or `*`."""
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or self.etag in tags

    def response(self, request: Request) -> Response:
        headers = {**_SECURITY_HEADERS, "ETag": self.etag}
        if self.matches(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


_ASSETS = {
    path.relative_to(_DIRECTORY).as_posix(): _Asset(path)
    for path in sorted(_DIRECTORY.rglob("*"))
    if path.suffix in _MEDIA_TYPES
}
_INDEX = _ASSETS.pop("index.html")


async def index(request: Request) -> Response:
    return _INDEX.response(request)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    found = _ASSETS.get(name)
    if found is None:
        raise NotFound("file", name, hint="the dashboard serves only its own files")
    return found.response(request)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/dashboard/{name:path}", asset, methods=["GET"]),
]
