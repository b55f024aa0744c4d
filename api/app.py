"""The api service: accounts, projects, agents and reads for the dashboard."""

from __future__ import annotations

from api.routes import routes
from core.app import create_app
from core.asgi import ServiceApp
from core.config import Settings

__all__ = ["build_api_app", "build_all_in_one_app"]


def build_api_app(settings: Settings) -> ServiceApp:
    return create_app(settings, routes, role="api")


def build_all_in_one_app(settings: Settings) -> ServiceApp:
    """Serve the agent write routes and the api routes on one port."""
    from ingest.routes import events_route
    from ingest.routes import routes as ingest_routes

    return create_app(
        settings,
        [*ingest_routes, *routes],
        role="all-in-one",
        direct_routes=[events_route],
    )
