"""Property-based checks of every documented route with schemathesis.

schemathesis reads /openapi.json, generates requests from it (valid and invalid),
and checks that no response is a 500 and that each response matches its documented
status codes, content type and schema.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from tests.helpers import create_run, new_agent

CHECKS = ",".join(
    (
        "not_a_server_error",
        "response_schema_conformance",
        "content_type_conformance",
        "status_code_conformance",
    )
)
TIME_BUDGET_S = 90


async def test_openapi_routes_pass_schemathesis(
    client: httpx.AsyncClient, server: str, tmp_path: Path
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await client.post(
        f"/api/runs/{run_id}/events",
        json={"event_type": "request_timeout", "severity": "warning"},
        headers=agent.headers,
    )
    st = Path(sys.executable).parent / "st"
    process = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        f"{server}/openapi.json",
        "--header",
        f"Authorization: {agent.user['Authorization']}",
        "--header",
        f"X-Agent-Key: {agent.headers['X-Agent-Key']}",
        "--checks",
        CHECKS,
        "--max-examples",
        "10",
        "--seed",
        "1",
        "--max-time",
        str(TIME_BUDGET_S),
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=TIME_BUDGET_S + 120)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
