"""The ingest service: agent writes only."""

from __future__ import annotations

from starlette.applications import Starlette

from core.app import create_app
from core.config import Settings
from ingest.routes import events_route, routes

__all__ = ["build_ingest_app"]


def build_ingest_app(settings: Settings) -> Starlette:
    return create_app(settings, routes, role="ingest", direct_routes=[events_route])
