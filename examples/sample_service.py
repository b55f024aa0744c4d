"""A small items service with three write behaviours, as a target for softadastra-agent.

    uv run python examples/sample_service.py --mode naive --port 8001

Modes of `POST /items` (the JSON body is stored with an id added):

- `naive`: stores every request, so a retried write is stored twice.
- `idempotent`: a request whose `Idempotency-Key` was seen before returns the item
  stored the first time (200) instead of storing it again.
- `lossy`: honours the key like `idempotent`, but acknowledges each write before it
  is stored. A write-behind buffer feeds the store one item per `--flush-interval`,
  and when the buffer is full under load, new writes are acknowledged and dropped.

`GET /items` lists the stored items; `GET /health` returns the mode and counters.
Everything lives in memory, so a restart starts empty.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("sample_service")

MODES = ("naive", "idempotent", "lossy")


class ItemStore:
    def __init__(self, mode: str, *, key_header: str, capacity: int, flush_interval_s: float):
        self.mode = mode
        self.key_header = key_header
        self.capacity = capacity
        self.flush_interval_s = flush_interval_s
        self.items: list[dict[str, Any]] = []
        self.by_key: dict[str, dict[str, Any]] = {}
        self.buffer: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.next_id = 1

    def new_item(self, body: Any) -> dict[str, Any]:
        item = dict(body) if isinstance(body, dict) else {"value": body}
        item["id"] = self.next_id
        self.next_id += 1
        return item

    def accept(self, item: dict[str, Any]) -> None:
        if self.mode != "lossy":
            self.items.append(item)
        elif len(self.buffer) < self.capacity:
            self.buffer.append(item)
        else:
            # The bug this mode demonstrates: the client already got its 201.
            self.dropped += 1
            log.info("buffer full, dropped item %s", item["id"])

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            if self.buffer:
                self.items.append(self.buffer.popleft())


async def create_item(request: Request) -> JSONResponse:
    store: ItemStore = request.app.state.store
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, status_code=400)
    key = request.headers.get(store.key_header) if store.mode != "naive" else None
    if key is not None and key in store.by_key:
        return JSONResponse(store.by_key[key], status_code=200)
    item = store.new_item(body)
    if key is not None:
        store.by_key[key] = item
    store.accept(item)
    return JSONResponse(item, status_code=201)


async def list_items(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.store.items)


async def health(request: Request) -> JSONResponse:
    store: ItemStore = request.app.state.store
    return JSONResponse(
        {
            "mode": store.mode,
            "stored": len(store.items),
            "buffered": len(store.buffer),
            "dropped": store.dropped,
        }
    )


def build_app(
    mode: str,
    *,
    key_header: str = "Idempotency-Key",
    capacity: int = 2,
    flush_interval_s: float = 0.25,
) -> Starlette:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is invalid; use one of {', '.join(MODES)}")
    store = ItemStore(
        mode, key_header=key_header, capacity=capacity, flush_interval_s=flush_interval_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        flusher = asyncio.create_task(store.flush_forever())
        yield
        flusher.cancel()

    app = Starlette(
        routes=[
            Route("/items", create_item, methods=["POST"]),
            Route("/items", list_items, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--key-header", default="Idempotency-Key")
    parser.add_argument(
        "--capacity", type=int, default=2, help="lossy mode: write-behind buffer size"
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=0.25,
        help="lossy mode: seconds between two items moved from the buffer to the store",
    )
    args = parser.parse_args()
    app = build_app(
        args.mode,
        key_header=args.key_header,
        capacity=args.capacity,
        flush_interval_s=args.flush_interval,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
