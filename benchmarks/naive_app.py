"""A naive baseline a team might write first, to compare the pipeline against.

POST /api/runs/{run_id}/events looks the agent key up in PostgreSQL, parses the
body with the standard `json` module and awaits one INSERT per event, each its own
transaction, before it responds 202. GET /api/runs/{run_id}/score counts the run's
events by type and severity on every request and scores the counts with the
service's own `core.scoring`. It does not check that the run exists or is open.

The benchmark runs it under uvicorn with `CLOUD_DATABASE_URL` and
`CLOUD_AGENT_API_KEY_SECRET`; it keeps its events in its own `naive_events` table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.scoring import Counters, score_counters
from core.security import hash_agent_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text NOT NULL,
    event_id    text NOT NULL,
    event_type  text NOT NULL,
    severity    text NOT NULL,
    message     text NOT NULL DEFAULT '',
    payload     jsonb,
    occurred_at timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, event_id)
)
"""


async def _agent_project(request: Request, conn: asyncpg.Connection) -> int | None:
    key = request.headers.get("x-agent-key")
    if not key:
        return None
    key_hash = hash_agent_key(key, secret=os.environ["CLOUD_AGENT_API_KEY_SECRET"])
    return await conn.fetchval("SELECT project_id FROM agents WHERE key_hash = $1", key_hash)  # type: ignore[no-any-return]


def _unauthorized() -> Response:
    return JSONResponse({"success": False, "error": "unauthorized"}, status_code=401)


async def append_events(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        if await _agent_project(request, conn) is None:
            return _unauthorized()
        body = await request.json()
        events = body["events"] if "events" in body else [body]
        for event in events:
            occurred_at = event.get("occurred_at")
            await conn.execute(
                """
                INSERT INTO naive_events
                    (run_id, event_id, event_type, severity, message, payload, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (run_id, event_id) DO NOTHING
                """,
                run_id,
                event.get("event_id") or uuid.uuid4().hex,
                event["event_type"],
                event.get("severity", "info"),
                event.get("message", ""),
                json.dumps(event["payload"]) if "payload" in event else None,
                dt.datetime.fromisoformat(occurred_at) if occurred_at else None,
            )
    data = {"accepted": len(events), "rejected": []}
    return JSONResponse({"success": True, "data": data}, status_code=202)


async def get_score(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        if await _agent_project(request, conn) is None:
            return _unauthorized()
        rows = await conn.fetch(
            """
            SELECT event_type, severity, count(*) AS n FROM naive_events WHERE run_id = $1
            GROUP BY event_type, severity
            """,
            run_id,
        )
    counters = Counters()
    for row in rows:
        counters.add(row["event_type"], row["severity"], row["n"])
    score = score_counters(counters)
    data = {"run_id": run_id, "score": score.score, "grade": score.grade, "total": counters.total}
    return JSONResponse({"success": True, "data": data})


async def health(request: Request) -> Response:
    return JSONResponse({"success": True})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["CLOUD_DATABASE_URL"], max_size=10)
    async with app.state.pool.acquire() as conn:
        await conn.execute(_SCHEMA)
    try:
        yield
    finally:
        await app.state.pool.close()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/runs/{run_id}/events", append_events, methods=["POST"]),
        Route("/api/runs/{run_id}/score", get_score, methods=["GET"]),
    ],
    lifespan=lifespan,
)
