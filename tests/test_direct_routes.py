"""The events route served direct by `ServiceApp` responds exactly as through the router.

Each request goes to two apps on the same servers: the all-in-one app, which serves
the events route without the middleware stack, and one built from the same routes
with no direct route. Status, headers (but the request id) and body must match.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.requests import Request

from api.app import build_all_in_one_app
from api.routes import routes as api_routes
from core.app import create_app
from core.asgi import DirectRoute, RequestIdMiddleware, RequestTracking, ServiceApp
from core.config import Settings
from core.errors import Conflict, exception_handlers
from ingest.routes import events_route
from ingest.routes import routes as ingest_routes
from tests.helpers import Agent, create_run, new_agent

MISSING_RUN = "run_" + "0" * 32
ONE_EVENT = json.dumps({"events": [{"event_type": "request_sent"}]}).encode()


@contextlib.asynccontextmanager
async def _client(app: ServiceApp) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def clients(
    settings: Settings, clean: None
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(direct, routed): the all-in-one app, and the same routes with no direct route."""
    direct = build_all_in_one_app(settings)
    routed = create_app(
        settings, [*ingest_routes, *api_routes, events_route.route()], role="all-in-one"
    )
    assert not routed._direct
    async with _client(direct) as direct_client, _client(routed) as routed_client:
        yield direct_client, routed_client


def _seen(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]
    return response.status_code, headers, response.content


async def _both(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> httpx.Response:
    """POST to both apps, check that the responses match, and return the direct one."""
    responses = [await client.post(path, content=body, headers=headers) for client in clients]
    assert _seen(responses[0]) == _seen(responses[1])
    for response in responses:
        assert response.headers["x-request-id"]
    return responses[0]


@pytest.fixture
async def agent_run(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> tuple[Agent, str]:
    agent = await new_agent(clients[0])
    return agent, await create_run(clients[0], agent)


CASES = {
    "accepted": (ONE_EVENT, {}, 202),
    "some events rejected": (
        json.dumps({"events": [{"event_type": "request_sent"}, {"severity": "bad"}]}).encode(),
        {},
        202,
    ),
    "gzip": (gzip.compress(ONE_EVENT), {"Content-Encoding": "gzip"}, 202),
    "not JSON": (b"{oops", {}, 400),
    "empty body": (b"", {}, 400),
    "broken gzip": (b"\x1f\x8b\x08junk", {"Content-Encoding": "gzip"}, 400),
    "unknown encoding": (ONE_EVENT, {"Content-Encoding": "br"}, 415),
    "form body": (ONE_EVENT, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    "no agent key": (ONE_EVENT, {"X-Agent-Key": ""}, 401),
    "wrong agent key": (ONE_EVENT, {"X-Agent-Key": "sa_agent_key_" + "0" * 32}, 401),
    "too large": (b"{" + b" " * (6 * 1024 * 1024) + b"}", {}, 413),
    "request id echoed": (ONE_EVENT, {"X-Request-Id": "req-direct-1"}, 202),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_direct_response_matches_router(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], agent_run: tuple[Agent, str], case: str
) -> None:
    agent, run_id = agent_run
    body, extra, status = CASES[case]
    headers = {"Content-Type": "application/json", **agent.headers, **extra}
    response = await _both(clients, f"/api/runs/{run_id}/events", body, headers)
    assert response.status_code == status, response.text
    if "X-Request-Id" in extra:
        assert response.headers["x-request-id"] == extra["X-Request-Id"]


@pytest.mark.parametrize("run_id", [MISSING_RUN, "not-a-run", "run_" + "z" * 32])
async def test_direct_unknown_runs_match_router(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    agent_run: tuple[Agent, str],
    run_id: str,
) -> None:
    agent, _ = agent_run
    headers = {"Content-Type": "application/json", **agent.headers}
    response = await _both(clients, f"/api/runs/{run_id}/events", ONE_EVENT, headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "run_not_found"


async def test_direct_finished_run_matches_router(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], agent_run: tuple[Agent, str]
) -> None:
    agent, run_id = agent_run
    finished = await clients[0].post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    assert finished.status_code == 200, finished.text
    headers = {"Content-Type": "application/json", **agent.headers}
    response = await _both(clients, f"/api/runs/{run_id}/events", ONE_EVENT, headers)
    assert response.status_code == 409
    assert response.json()["error"] == "run_finished"


async def test_cross_origin_append_gets_cors_headers(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], agent_run: tuple[Agent, str]
) -> None:
    agent, run_id = agent_run
    direct, _ = clients
    headers = {"Content-Type": "application/json", **agent.headers}
    cross_origin = await direct.post(
        f"/api/runs/{run_id}/events",
        content=ONE_EVENT,
        headers={**headers, "Origin": "http://dashboard.test"},
    )
    assert cross_origin.status_code == 202
    assert cross_origin.headers["Access-Control-Allow-Origin"] == "http://dashboard.test"
    plain = await direct.post(f"/api/runs/{run_id}/events", content=ONE_EVENT, headers=headers)
    assert "Access-Control-Allow-Origin" not in plain.headers


@pytest.mark.parametrize(
    ("root_path", "path", "status"),
    [("/cloud", "/cloud/api/runs/{}/events", 202), ("/api", "/api/runs/{}/events", 404)],
)
async def test_root_path_matches_router(
    settings: Settings, agent_run: tuple[Agent, str], root_path: str, path: str, status: int
) -> None:
    """Under a root path, routes match the path after it, so a direct route must not
    serve `/api/runs/{id}/events` when the root path is `/api`."""
    agent, run_id = agent_run
    direct = build_all_in_one_app(settings)
    routed = create_app(
        settings, [*ingest_routes, *api_routes, events_route.route()], role="all-in-one"
    )
    headers = {"Content-Type": "application/json", **agent.headers}
    responses = []
    for app in (direct, routed):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app, root_path=root_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                url = path.format(run_id)
                responses.append(await client.post(url, content=ONE_EVENT, headers=headers))
    assert _seen(responses[0]) == _seen(responses[1])
    assert responses[0].status_code == status, responses[0].text


def _app_raising(exc: Exception) -> ServiceApp:
    """A bare ServiceApp whose one direct route raises `exc`."""

    async def explode(request: Request) -> bytes:
        raise exc

    tracking = RequestTracking("test")
    route = DirectRoute("/boom/{name}", explode, status=200, methods=("POST",))
    return ServiceApp(
        tracking=tracking,
        direct_routes=[route],
        routes=[route.route()],
        middleware=[Middleware(RequestIdMiddleware, tracking=tracking)],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [(Conflict("taken", code="taken"), 409, "taken"), (RuntimeError("bug"), 500, "internal_error")],
)
async def test_direct_exceptions_match_router(
    exc: Exception, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app_raising(exc)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with caplog.at_level(logging.ERROR, logger="core.asgi"):
            direct = await client.post("/boom/a", headers={"X-Request-Id": "req-1"})
            # An Origin header sends the same request through the middleware stack.
            routed = await client.post(
                "/boom/a", headers={"X-Request-Id": "req-1", "Origin": "http://x.test"}
            )
    assert _seen(direct) == _seen(routed)
    assert direct.status_code == status
    assert direct.json()["error"] == code
    assert direct.headers["x-request-id"] == "req-1"
    if status == 500:
        assert "req-1" in direct.json()["message"]
        assert [r.message for r in caplog.records].count("request req-1 POST /boom/a failed") == 2
