"""The ingest service: agent writes only."""

from __future__ import annotations

from core.app import create_app
from core.asgi import ServiceApp
from core.config import Settings
from ingest.routes import events_route, routes

__all__ = ["build_ingest_app"]


def build_ingest_app(settings: Settings) -> ServiceApp:
    return create_app(settings, routes, role="ingest", direct_routes=[events_route])
