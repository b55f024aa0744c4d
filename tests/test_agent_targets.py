"""softadastra-agent against the sample service's three modes, reporting to the cloud."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_support import AgentResult, run_agent_cli, sample_service
from tests.helpers import new_agent

pytestmark = pytest.mark.timeout(120)

COMMON = [
    "--body",
    '{"title": "{{marker}}"}',
    "--timeout",
    "0.3",
    "--writes",
    "20",
    "--seed",
    "1",
    "--settle",
    "0.5",
    "--idempotency-header",
    "Idempotency-Key",
]


async def _run_mode(mode: str, scenario: str, workdir: Path, *cloud: str) -> AgentResult:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    # A slower drain than the default keeps the lossy buffer overflowing even when a
    # loaded machine slows the agent's writes down.
    options = ["--flush-interval", "0.5"] if mode == "lossy" else []
    async with sample_service(mode, workdir, *options) as url:
        return await run_agent_cli(
            [
                "run",
                "--target",
                url,
                "--scenario",
                scenario,
                *COMMON,
                *cloud,
                "--spool",
                str(workdir / f"spool-{mode}-{scenario}.jsonl"),
                "--junit",
                str(workdir / f"junit-{mode}.xml"),
            ],
            ledger=workdir / f"ledger-{mode}-{scenario}.json",
        )


async def _cloud_events(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/runs/{run_id}/events?limit=500", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def _check_in_cloud(
    client: httpx.AsyncClient, result: AgentResult, headers: dict[str, str]
) -> None:
    """Check that the cloud stores the finished run with the findings, report and score."""
    assert result.ledger is not None
    run_id = result.run_id()
    run = (await client.get(f"/api/runs/{run_id}", headers=headers)).json()["data"]
    assert run["status"] == "finished"
    assert run["scenario"] == "timeout_retry"
    events = await _cloud_events(client, run_id, headers)
    kinds = Counter(event["event_type"] for event in events)
    tally = result.ledger["tally"]
    assert kinds["duplicate_detected"] == tally["duplicated"]
    assert kinds["data_loss_risk_detected"] == tally["lost"]
    assert kinds["agent_started"] == 1
    assert kinds["run_finished"] == 1
    assert kinds["request_sent"] == tally["attempts"]
    score = (await client.get(f"/api/runs/{run_id}/score", headers=headers)).json()["data"]
    assert score["settled"]
    assert score["score"] == result.ledger["score"]["score"]
    assert result.ledger["score"]["source"] == "cloud"
    report = (await client.get(f"/api/runs/{run_id}/report", headers=headers)).json()["data"]
    assert f"{tally['duplicated']} duplicated" in report["summary"]
    assert len(report["raw_json"]["writes"]) == 20


async def test_sample_modes_classified_and_ordered(
    client: httpx.AsyncClient, server: str, consumers: list[Any], tmp_path: Path
) -> None:
    agent = await new_agent(client)
    key = agent.headers["X-Agent-Key"]
    results = {
        mode: await _run_mode(
            mode, "timeout_retry", tmp_path, "--cloud-url", server, "--agent-key", key
        )
        for mode in ("idempotent", "naive", "lossy")
    }
    for mode, result in results.items():
        print(f"--- {mode}\n{result.stdout}\n{result.stderr}")
        assert result.ledger is not None, result.stderr
        await _check_in_cloud(client, result, agent.headers)
    idempotent, naive, lossy = (results[m].ledger for m in ("idempotent", "naive", "lossy"))
    assert idempotent is not None
    assert naive is not None
    assert lossy is not None
    assert (idempotent["tally"]["lost"], idempotent["tally"]["duplicated"]) == (0, 0)
    assert naive["tally"]["lost"] == 0
    assert naive["tally"]["duplicated"] > 0
    assert lossy["tally"]["lost"] > 0
    assert lossy["tally"]["duplicated"] == 0
    assert "duplicate" in naive["score"]["flags"]
    assert "data_loss" in lossy["score"]["flags"]
    assert idempotent["score"]["score"] > naive["score"]["score"] > lossy["score"]["score"]
    assert results["idempotent"].returncode == 0
    assert results["naive"].returncode == 1
    assert results["lossy"].returncode == 1


async def test_junit_lists_failed_writes(tmp_path: Path) -> None:
    result = await _run_mode("naive", "timeout_retry", tmp_path)
    assert result.ledger is not None
    suite = ET.parse(tmp_path / "junit-naive.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == 21
    failed = [case for case in cases if case.find("failure") is not None]
    # Every duplicated write fails, and so does the score threshold.
    assert len(failed) == result.ledger["tally"]["duplicated"] + 1
    assert suite.get("failures") == str(len(failed))


@pytest.mark.parametrize(
    "scenario",
    ["timeout_retry", "connection_reset", "unstable_network", "network_partition", "slow_network"],
)
async def test_idempotent_service_clean_in_every_scenario(scenario: str, tmp_path: Path) -> None:
    result = await _run_mode("idempotent", scenario, tmp_path)
    assert result.ledger is not None, result.stderr
    tally = result.ledger["tally"]
    assert tally["lost"] == 0
    assert tally["duplicated"] == 0
    assert tally["acknowledged"] == 20
    assert result.ledger["score"]["score"] >= 75
    assert result.returncode == 0, result.stdout
    # Every scenario really injected something.
    faults = {a["fault"] for w in result.ledger["writes"] for a in w["attempts"]}
    assert faults != {"none"}


async def test_naive_service_duplicates_after_resets(tmp_path: Path) -> None:
    result = await _run_mode("naive", "connection_reset", tmp_path)
    assert result.ledger is not None, result.stderr
    assert result.ledger["tally"]["duplicated"] > 0
    for write in result.ledger["writes"]:
        # Each attempt that the server acknowledged with a 2xx left one copy behind.
        reached = sum(1 for a in write["attempts"] if (a["server_status"] or 0) // 100 == 2)
        assert write["copies"] == reached, write


async def test_same_seed_same_faults(tmp_path: Path) -> None:
    # connection_reset has no time windows, so the same faults give the same outcomes.
    first = await _run_mode("naive", "connection_reset", tmp_path / "a")
    second = await _run_mode("naive", "connection_reset", tmp_path / "b")
    assert first.ledger is not None and second.ledger is not None

    def plan(ledger: dict[str, Any]) -> list[list[tuple[str, str]]]:
        return [[(a["fault"], a["outcome"]) for a in w["attempts"]] for w in ledger["writes"]]

    assert plan(first.ledger) == plan(second.ledger)
    assert first.ledger["tally"] == second.ledger["tally"]
    assert first.ledger["run_tag"] != second.ledger["run_tag"]
