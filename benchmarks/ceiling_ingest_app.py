"""The ingest ceiling: the least a Starlette app must do to accept an event batch.

It reads the body, decodes it with msgspec into typed events (no further checks)
and appends the body to a Redis stream with one XADD, then responds 202. There is
no authentication, no run-state check and no backlog limit. The benchmark runs it
under uvicorn exactly as `softadastra-cloud ingest` runs (uvloop and httptools when
installed, no access log) and reads the Redis URL from `CLOUD_REDIS_URL`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import zlib
from collections.abc import AsyncIterator

import msgspec
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SHARDS = 4


class Event(msgspec.Struct):
    event_type: str
    severity: str = "info"
    message: str = ""
    payload: msgspec.Raw = msgspec.Raw(b"null")
    event_id: str | None = None
    occurred_at: dt.datetime | None = None


class Batch(msgspec.Struct):
    events: list[Event]


_decode = msgspec.json.Decoder(Batch).decode
_encode = msgspec.json.Encoder().encode


async def append_events(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    body = await request.body()
    try:
        batch = _decode(body)
    except msgspec.DecodeError as exc:
        return Response(_encode({"success": False, "message": str(exc)}), status_code=400)
    stream = f"bench:ceiling:{{s{zlib.crc32(run_id.encode()) % SHARDS}}}"
    redis: aioredis.Redis = request.app.state.redis
    await redis.xadd(stream, {"n": len(batch.events), "batch": body})
    reply = {"success": True, "data": {"accepted": len(batch.events), "rejected": []}}
    return Response(_encode(reply), status_code=202, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b'{"success":true}', media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = aioredis.Redis.from_url(os.environ["CLOUD_REDIS_URL"])
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/runs/{run_id}/events", append_events, methods=["POST"]),
    ],
    lifespan=lifespan,
)
