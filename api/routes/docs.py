from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api.openapi import openapi_document

__all__ = ["routes"]

_DOCS_PAGE = (Path(__file__).parent.parent / "static" / "docs.html").read_text(encoding="utf-8")


@functools.cache
def _openapi_body() -> bytes:
    try:
        package_version = version("softadastra-cloud")
    except PackageNotFoundError:
        package_version = "0.0.0"
    document = openapi_document(title="Softadastra Cloud API", version=package_version)
    return msgspec.json.encode(document)


async def openapi_json(request: Request) -> Response:
    return Response(_openapi_body(), media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(_DOCS_PAGE)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
