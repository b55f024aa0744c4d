"""HTTP handlers of the api service, one module per resource."""

from __future__ import annotations

from starlette.routing import BaseRoute

from api.routes import accounts, agents, dashboard, docs, events, projects, reports, runs

__all__ = ["routes"]

routes: list[BaseRoute] = [
    *accounts.routes,
    *projects.routes,
    *agents.routes,
    *runs.routes,
    *events.routes,
    *reports.routes,
    *docs.routes,
    *dashboard.routes,
]
