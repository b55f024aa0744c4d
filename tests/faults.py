"""Helpers for the fault tests: real worker processes, servers to stop, agent traffic."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn

from api.app import build_all_in_one_app
from core.config import Settings

__all__ = ["WorkerProcess", "send_events", "serve"]

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """`softadastra-cloud worker` as a child process, logging to a file."""

    def __init__(self, settings: Settings, workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ)
        env.update(
            CLOUD_ENVIRONMENT="test",
            CLOUD_DATA_DIR=str(workdir / "data"),
            CLOUD_DATABASE_URL=settings.database_url or "",
            CLOUD_REDIS_URL=settings.redis_url or "",
            CLOUD_STREAM_SHARDS=str(settings.stream_shards),
            CLOUD_STREAM_BLOCK_MS=str(settings.stream_block_ms),
            CLOUD_STREAM_BATCH_SIZE=str(settings.stream_batch_size),
            CLOUD_RECLAIM_IDLE_MS=str(settings.reclaim_idle_ms),
            CLOUD_WORKER_METRICS_PORT="0",
            CLOUD_LOG_LEVEL=os.environ.get("CLOUD_TEST_WORKER_LOG_LEVEL", "INFO"),
        )
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "core.cli", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 40) -> int:
        """Send SIGTERM and wait; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """Serve the all-in-one app with `settings` on a free port; yield its URL."""
    port = _free_port()
    app = build_all_in_one_app(dataclasses.replace(settings, port=port))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def send_events(
    client: httpx.AsyncClient,
    run_id: str,
    headers: dict[str, str],
    *,
    first: int,
    count: int,
    batch_size: int = 100,
    max_retries: int = 50,
) -> int:
    """Send events `e<first>`..`e<first + count - 1>` in batches; return how many were accepted.

    A batch rejected with 429 or 503 is retried after its Retry-After, as a well-behaved
    agent does, up to `max_retries` times.
    """
    accepted = 0
    for start in range(first, first + count, batch_size):
        stop = min(start + batch_size, first + count)
        events = [
            {"event_id": f"e{n}", "event_type": "request_sent" if n % 10 else "request_timeout",
             "severity": "info" if n % 10 else "warning"}
            for n in range(start, stop)
        ]  # fmt: skip
        for _ in range(max_retries):
            try:
                response = await client.post(
                    f"/api/runs/{run_id}/events", json={"events": events}, headers=headers
                )
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if response.status_code not in (429, 503):
                break
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
        assert response.status_code == 202, response.text
        accepted += response.json()["data"]["accepted"]
    return accepted
