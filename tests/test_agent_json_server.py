"""softadastra-agent against json-server 0.17.4, a third-party REST server run by node.

json-server stores every POST as a new item, so each held response that the agent
retries leaves one more copy behind. The test installs json-server from
examples/json-server/package-lock.json into a temporary directory with `npm ci`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.scenarios import SCENARIOS, fault_for
from tests.agent_support import ROOT, free_port, run_agent_cli, serve_process
from tests.helpers import new_agent

pytestmark = pytest.mark.timeout(120)

PACKAGE_DIR = ROOT / "examples" / "json-server"
WRITES = 15
TIMEOUT_S = 0.5
RETRIES = 4
SEED = 3


@pytest.fixture(scope="session")
async def json_server_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("json-server needs node and npm, and they are not on PATH")
    workdir = tmp_path_factory.mktemp("json-server")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PACKAGE_DIR / name, workdir / name)
    process = await asyncio.create_subprocess_exec(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--prefer-offline",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=100)
    assert process.returncode == 0, f"npm ci failed:\n{output.decode()}"
    return workdir / "node_modules" / ".bin" / "json-server"


@pytest.fixture
async def json_server(json_server_bin: Path, tmp_path: Path) -> AsyncIterator[str]:
    """A json-server with an empty `posts` collection; yields the collection URL."""
    (tmp_path / "db.json").write_text('{"posts": []}\n')
    port = free_port()
    command = [str(json_server_bin), "--host", "127.0.0.1", "--port", str(port), "db.json"]
    url = f"http://127.0.0.1:{port}/posts"
    async with serve_process(command, url, tmp_path / "json-server.log", cwd=tmp_path):
        yield url


def _planned_copies(write: int) -> int:
    """Predict the copies of a write from the seeded plan: every attempt reaches json-server."""
    scenario = SCENARIOS["timeout_retry"]
    for attempt in range(1, RETRIES + 2):
        if fault_for(scenario, SEED, write, attempt, TIMEOUT_S).kind != "hold_response":
            return attempt
    return RETRIES + 1


async def test_json_server_duplicates_under_timeout_retry(
    json_server: str,
    client: httpx.AsyncClient,
    server: str,
    consumers: list[Any],
    tmp_path: Path,
) -> None:
    agent = await new_agent(client)
    result = await run_agent_cli(
        [
            "run",
            "--target",
            json_server,
            "--body",
            '{"title": "{{marker}}", "source": "softadastra-agent"}',
            "--scenario",
            "timeout_retry",
            "--writes",
            str(WRITES),
            "--seed",
            str(SEED),
            "--timeout",
            str(TIMEOUT_S),
            "--retries",
            str(RETRIES),
            "--settle",
            "0.5",
            "--cloud-url",
            server,
            "--agent-key",
            agent.headers["X-Agent-Key"],
        ],
        ledger=tmp_path / "ledger.json",
    )
    print(result.stdout, result.stderr)
    ledger = result.ledger
    assert ledger is not None, result.stderr
    writes = ledger["writes"]

    # What json-server really stored, read by the test itself.
    async with httpx.AsyncClient() as http:
        posts = (await http.get(json_server)).json()
    stored = Counter(post["title"] for post in posts)
    assert sum(stored.values()) == len(posts)

    planned = {write["index"]: _planned_copies(write["index"]) for write in writes}
    expected_duplicated = sum(1 for copies in planned.values() if copies > 1)
    assert expected_duplicated > 0
    for write in writes:
        assert write["client_outcome"] == "acknowledged", write
        assert write["copies"] == stored[write["marker"]], write
        assert write["copies"] == planned[write["index"]], write
        assert write["verdict"] == ("duplicated" if write["copies"] > 1 else "ok"), write

    tally = ledger["tally"]
    assert tally["writes"] == WRITES
    assert tally["acknowledged"] == WRITES
    assert tally["lost"] == 0
    assert tally["duplicated"] == expected_duplicated
    assert tally["extra_copies"] == len(posts) - WRITES
    assert "duplicate" in ledger["score"]["flags"]
    assert result.returncode == 1

    events = await client.get(
        f"/api/runs/{result.run_id()}/events?limit=500", headers=agent.headers
    )
    kinds = Counter(event["event_type"] for event in events.json()["data"])
    assert kinds["duplicate_detected"] == expected_duplicated
    assert kinds["data_loss_risk_detected"] == 0
