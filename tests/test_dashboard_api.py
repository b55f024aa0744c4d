"""The API reads the dashboard is built on: run scores in listings, the `flag` filter,
event filters behind each deduction, project totals, and the page and its files."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import Agent, create_run, new_agent, wait_settled

EVENTS = [
    {"event_id": "a1", "event_type": "data_loss_risk_detected", "severity": "critical"},
    {"event_id": "a2", "event_type": "request_timeout", "severity": "warning"},
    {"event_id": "a3", "event_type": "request_timeout", "severity": "warning"},
    {"event_id": "a4", "event_type": "request_sent", "severity": "info"},
]


async def _scored_run(
    client: httpx.AsyncClient, agent: Agent, events: list[dict[str, Any]], **fields: Any
) -> str:
    run_id = await create_run(client, agent, **fields)
    if events:
        sent = await client.post(
            f"/api/runs/{run_id}/events", json={"events": events}, headers=agent.headers
        )
        assert sent.status_code == 202, sent.text
    finished = await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    assert finished.status_code == 200, finished.text
    await wait_settled(client, run_id, agent.user)
    return run_id


async def test_run_list_scores_and_flag_filter(client: httpx.AsyncClient, consumers: list) -> None:
    agent = await new_agent(client)
    flagged = await _scored_run(client, agent, EVENTS, scenario="lossy")
    clean = await _scored_run(client, agent, [], scenario="clean")

    listed = await client.get(
        "/api/runs", params={"project_id": agent.project_id}, headers=agent.user
    )
    assert listed.status_code == 200, listed.text
    by_id = {run["id"]: run for run in listed.json()["data"]}
    assert (by_id[flagged]["score"], by_id[flagged]["grade"]) == (34, "F")
    assert by_id[flagged]["risks"] == {
        "data_loss": True,
        "duplicate": False,
        "timeout": True,
        "recovery": False,
    }
    assert (by_id[clean]["score"], by_id[clean]["grade"]) == (100, "A")
    assert not any(by_id[clean]["risks"].values())

    only_loss = await client.get(
        "/api/runs",
        params={"project_id": agent.project_id, "flag": "data_loss"},
        headers=agent.user,
    )
    body = only_loss.json()
    assert [run["id"] for run in body["data"]] == [flagged]
    assert body["meta"]["total"] == 1

    single = await client.get(f"/api/runs/{flagged}", headers=agent.user)
    assert single.json()["data"]["score"] == 34


@pytest.mark.parametrize("flag", ["dataloss", "DATA_LOSS", "score"])
async def test_unknown_flag_rejected(client: httpx.AsyncClient, flag: str) -> None:
    agent = await new_agent(client)
    response = await client.get("/api/runs", params={"flag": flag}, headers=agent.user)
    assert response.status_code == 400
    assert "`flag`" in response.json()["message"]
    assert "data_loss" in response.json()["message"]


async def test_deductions_link_their_events(client: httpx.AsyncClient, consumers: list) -> None:
    agent = await new_agent(client)
    run_id = await _scored_run(client, agent, EVENTS)
    score = (await client.get(f"/api/runs/{run_id}/score", headers=agent.user)).json()["data"]
    behind = {
        (d["event_type"], d["severity"]): (d["points"], d["events"]) for d in score["deductions"]
    }
    assert behind == {
        ("data_loss_risk_detected", None): (35, 1),
        ("request_timeout", None): (10, 2),
        (None, "critical"): (15, 1),
        (None, "warning"): (6, 2),
    }

    for deduction in score["deductions"]:
        query = {
            key: deduction[key] for key in ("event_type", "severity") if deduction[key] is not None
        }
        listed = await client.get(f"/api/runs/{run_id}/events", params=query, headers=agent.user)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["meta"]["total"] == deduction["events"]
        assert all(event[key] == value for event in body["data"] for key, value in query.items())

    both = await client.get(
        "/api/events",
        params={"run_id": run_id, "event_type": "request_timeout", "severity": "warning"},
        headers=agent.user,
    )
    assert [event["event_id"] for event in both.json()["data"]] == ["a2", "a3"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"severity": "fatal"}, "`severity`"),
        ({"severity": "WARNING"}, "`severity`"),
        ({"event_type": "x" * 121}, "`event_type`"),
        ({"event_type": "bad\x00type"}, "`event_type`"),
    ],
)
async def test_event_filters_are_validated(
    client: httpx.AsyncClient, params: dict[str, str], named: str
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.get(f"/api/runs/{run_id}/events", params=params, headers=agent.user)
    assert response.status_code == 400, response.text
    assert named in response.json()["message"]


async def test_event_filters_need_run_id(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await client.get("/api/events", params={"severity": "info"}, headers=agent.user)
    assert response.status_code == 400
    assert "run_id" in response.json()["message"]


async def test_project_totals_count_every_run(client: httpx.AsyncClient, consumers: list) -> None:
    agent = await new_agent(client)
    await _scored_run(client, agent, EVENTS)
    await _scored_run(client, agent, [EVENTS[0]])
    await _scored_run(client, agent, [])
    await create_run(client, agent)  # still open

    summary = await client.get(
        f"/api/projects/{agent.project_id}/scores", params={"last": 2}, headers=agent.user
    )
    assert summary.status_code == 200, summary.text
    data = summary.json()["data"]
    assert data["runs_considered"] == 2
    assert data["totals"] == {
        "runs": 4,
        "finished_runs": 3,
        "runs_flagged": {"data_loss": 2, "duplicate": 0, "timeout": 1, "recovery": 0},
    }


async def test_dashboard_files_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert '<script type="module" src="/dashboard/app.js">' in page.text

    script = await client.get("/dashboard/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    again = await client.get("/dashboard/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304

    for missing in ("/dashboard/nope.js", "/dashboard/../core/config.py", "/dashboard/index.html"):
        response = await client.get(missing)
        assert response.status_code == 404, missing
        assert response.json()["error"] in ("file_not_found", "route_not_found")


@pytest.mark.parametrize(
    "query",
    ["flag=duplicate&flag=", "status=finished&status=running", "limit=5&limit=6"],
)
async def test_repeated_query_parameter_rejected(client: httpx.AsyncClient, query: str) -> None:
    agent = await new_agent(client)
    response = await client.get(f"/api/runs?{query}", headers=agent.user)
    assert response.status_code == 400, response.text
    name = query.split("=")[0]
    assert f"`{name}` was given 2 times" in response.json()["message"]


async def test_every_stored_event_type_filterable(
    client: httpx.AsyncClient, consumers: list
) -> None:
    odd_types = ["zero\u200bwidth", " padded ", "tab\there", "rtl\u202etype"]
    events = [
        {"event_id": f"o{index}", "event_type": event_type}
        for index, event_type in enumerate(odd_types)
    ]
    agent = await new_agent(client)
    run_id = await _scored_run(client, agent, events)
    for event_type in odd_types:
        listed = await client.get(
            f"/api/runs/{run_id}/events", params={"event_type": event_type}, headers=agent.user
        )
        assert listed.status_code == 200, listed.text
        assert [event["event_type"] for event in listed.json()["data"]] == [event_type]


@pytest.mark.parametrize("form", ['W/"{tag}"', '"other", {etag}', "*"])
async def test_dashboard_etag_compared_weakly(client: httpx.AsyncClient, form: str) -> None:
    etag = (await client.get("/dashboard/app.js")).headers["etag"]
    header = form.replace("{etag}", etag).replace('"{tag}"', etag)
    response = await client.get("/dashboard/app.js", headers={"If-None-Match": header})
    assert response.status_code == 304, header


async def test_failed_run_is_not_latest_score(client: httpx.AsyncClient, consumers: list) -> None:
    agent = await new_agent(client)
    scored = await _scored_run(client, agent, EVENTS)
    failed = await create_run(client, agent)
    finished = await client.post(
        f"/api/runs/{failed}/finish", json={"status": "failed"}, headers=agent.headers
    )
    assert finished.status_code == 200, finished.text

    summary = await client.get(f"/api/projects/{agent.project_id}/scores", headers=agent.user)
    data = summary.json()["data"]
    assert data["latest"] == {"run_id": scored, "score": 34, "grade": "F"}
    assert data["average_score"] == 34
    assert data["final_runs"] == 1
    assert data["totals"]["finished_runs"] == 1
    assert [point["run_id"] for point in data["trend"]] == [scored, failed]
