"""The agent's cloud side: gzip batches, 429 and 503 responses, spooling and `upload`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.cloud import CloudClient, EventOut, RunCreateBody
from agent.proxy import FaultProxy
from agent.scenarios import Partition
from tests.agent_support import free_port, run_agent_cli, sample_service
from tests.helpers import new_agent, wait_settled

pytestmark = pytest.mark.timeout(120)

RUN_ARGS = [
    "--body",
    '{"title": "{{marker}}"}',
    "--scenario",
    "timeout_retry",
    "--timeout",
    "0.3",
    "--seed",
    "1",
    "--settle",
    "0.3",
    "--idempotency-header",
    "Idempotency-Key",
]


def _spool_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _cloud_event_ids(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str]
) -> list[str]:
    response = await client.get(f"/api/runs/{run_id}/events?limit=500", headers=headers)
    assert response.status_code == 200, response.text
    return [event["event_id"] for event in response.json()["data"]]


class BusyGate:
    """A front for the cloud that returns 429, then 503, to the first event batches."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.busy = [429, 503]
        self.event_posts: list[tuple[str | None, float]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        if request.method == "POST" and request.url.path.endswith("/events"):
            self.event_posts.append((request.headers.get("content-encoding"), time.monotonic()))
            if self.busy:
                status = self.busy.pop(0)
                return Response(b"{}", status_code=status, headers={"Retry-After": "1"})
        names = ("content-type", "content-encoding", "x-agent-key")
        headers = {k: v for k, v in request.headers.items() if k in names}
        async with httpx.AsyncClient() as http:
            answer = await http.request(
                request.method,
                self.upstream + request.url.path,
                params=request.query_params,
                content=body,
                headers=headers,
            )
        return Response(
            answer.content, status_code=answer.status_code, media_type="application/json"
        )


@pytest.fixture
async def busy_gate(server: str) -> AsyncIterator[tuple[BusyGate, str]]:
    gate = BusyGate(server)
    port = free_port()
    config = uvicorn.Config(gate.app, host="127.0.0.1", port=port, log_config=None)
    front = uvicorn.Server(config)
    task = asyncio.create_task(front.serve())
    while not front.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield gate, f"http://127.0.0.1:{port}"
    front.should_exit = True
    await task


async def test_busy_cloud_retried_after_retry_after(
    busy_gate: tuple[BusyGate, str], client: httpx.AsyncClient, consumers: list[Any]
) -> None:
    gate, url = busy_gate
    agent = await new_agent(client)
    cloud = CloudClient(url, agent.headers["X-Agent-Key"])
    try:
        run_id = await cloud.create_run(
            RunCreateBody(target_url="http://127.0.0.1:1/items", method="POST", scenario="gate")
        )
        events = [
            EventOut(
                event_id=f"gate-{n}",
                event_type="request_timeout",
                severity="warning",
                payload={"n": n},
                occurred_at=dt.datetime.now(dt.UTC),
            )
            for n in range(3)
        ]
        accepted = await cloud.send_events(run_id, events)
        await cloud.finish(run_id)
    finally:
        await cloud.aclose()
    assert accepted == 3
    assert [encoding for encoding, _ in gate.event_posts] == ["gzip", "gzip", "gzip"]
    times = [at for _, at in gate.event_posts]
    assert times[1] - times[0] >= 0.9
    assert times[2] - times[1] >= 0.9
    score = await wait_settled(client, run_id, agent.headers)
    assert score["counts"]["total"] == 3
    assert score["score"] == 81


async def test_unreachable_cloud_spools_then_upload(
    client: httpx.AsyncClient, server: str, consumers: list[Any], tmp_path: Path
) -> None:
    agent = await new_agent(client)
    key = agent.headers["X-Agent-Key"]
    spool = tmp_path / "spool.jsonl"
    closed = f"http://127.0.0.1:{free_port()}"
    async with sample_service("idempotent", tmp_path) as target:
        result = await run_agent_cli(
            ["run", "--target", target, "--writes", "6", *RUN_ARGS]
            + ["--cloud-url", closed, "--agent-key", key, "--spool", str(spool)],
            ledger=tmp_path / "ledger.json",
        )
    assert result.ledger is not None, result.stderr
    assert "events spooled to" in result.stdout
    assert f"softadastra-agent upload {spool}" in result.stdout
    assert key not in result.stdout + result.stderr + spool.read_text()
    lines = _spool_lines(spool)
    assert lines[0]["kind"] == "run"
    assert lines[0]["run_id"] is None
    events = [line["event"] for line in lines if line["kind"] == "event"]
    assert [line["kind"] for line in lines[-2:]] == ["report", "finish"]

    upload = await run_agent_cli(["upload", str(spool), "--cloud-url", server, "--agent-key", key])
    assert upload.returncode == 0, upload.stderr
    run_id = upload.stdout.split("/api/runs/")[1].split()[0]
    assert _spool_lines(spool)[0]["run_id"] == run_id
    score = await wait_settled(client, run_id, agent.headers)
    assert score["counts"]["total"] == len(events)
    assert score["score"] == result.ledger["score"]["score"]
    ids = await _cloud_event_ids(client, run_id, agent.headers)
    assert sorted(ids) == sorted(event["event_id"] for event in events)
    report = await client.get(f"/api/runs/{run_id}/report", headers=agent.headers)
    assert report.json()["data"]["raw_json"]["tally"]["writes"] == 6

    again = await run_agent_cli(["upload", str(spool), "--cloud-url", server, "--agent-key", key])
    assert again.returncode == 0, again.stderr
    assert "already final" in again.stdout


async def _wait_for_run(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = (await client.get("/api/runs", headers=headers)).json()["data"]
        if runs:
            return str(runs[0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the agent created no run within 30 s")


async def test_cloud_outage_mid_run_resumes_same_run(
    client: httpx.AsyncClient, server: str, consumers: list[Any], tmp_path: Path
) -> None:
    agent = await new_agent(client)
    key = agent.headers["X-Agent-Key"]
    spool = tmp_path / "spool.jsonl"
    cloud_port = int(server.rsplit(":", 1)[1])
    cloud_proxy = FaultProxy("127.0.0.1", cloud_port)
    await cloud_proxy.start()
    try:
        async with sample_service("idempotent", tmp_path) as target:
            agent_run = asyncio.create_task(
                run_agent_cli(
                    ["run", "--target", target, "--writes", "20", *RUN_ARGS]
                    + ["--cloud-url", f"http://127.0.0.1:{cloud_proxy.port}"]
                    + ["--agent-key", key, "--spool", str(spool)],
                    ledger=tmp_path / "ledger.json",
                )
            )
            run_id = await _wait_for_run(client, agent.user)
            await asyncio.sleep(1.0)
            await cloud_proxy.partition(Partition(mode="refuse", start_write=1, duration_s=300))
            result = await agent_run
    finally:
        await cloud_proxy.close()
    assert result.ledger is not None, result.stderr
    assert "events spooled to" in result.stdout
    lines = _spool_lines(spool)
    assert lines[0]["run_id"] == run_id
    events = [line["event"] for line in lines if line["kind"] == "event"]
    before = await _cloud_event_ids(client, run_id, agent.headers)
    assert 0 < len(before) < len(events)

    upload = await run_agent_cli(["upload", str(spool), "--cloud-url", server, "--agent-key", key])
    assert upload.returncode == 0, upload.stderr
    assert f"/api/runs/{run_id}" in upload.stdout
    score = await wait_settled(client, run_id, agent.headers)
    # Events sent before the outage and again from the spool are stored once.
    assert score["counts"]["total"] == len(events)
    assert score["score"] == result.ledger["score"]["score"]
    run = (await client.get(f"/api/runs/{run_id}", headers=agent.headers)).json()["data"]
    assert run["status"] == "finished"
