"""Black-box HTTP tests of the API contract: envelope, resources, auth and scores.

Each test talks to the all-in-one server over HTTP only. Tests that read events or
scores also run the stream consumers, so that appended events reach PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import time
from typing import Any

import httpx
import jwt
import pytest

from core.config import Settings
from tests.helpers import Agent, create_run, new_agent, signup, wait_settled
from workers.consumer import ShardConsumer

MIB = 1024 * 1024
PASSWORD = "correct horse battery"
MISSING_RUN = "run_" + "0" * 32


def public_id(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}_[0-9a-f]{{32}}$")


AGENT_KEY = re.compile(r"^sa_agent_key_[0-9a-f]{32}$")


def event(event_type: str, severity: str | None = None, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {"event_type": event_type, **fields}
    if severity is not None:
        body["severity"] = severity
    return body


def is_utc_time(value: object) -> bool:
    """Return True when `value` is an RFC 3339 string with a zero UTC offset."""
    if not isinstance(value, str):
        return False
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.utcoffset() == dt.timedelta(0)


def forge_token(
    secret: str,
    user_id: str,
    *,
    issuer: str,
    lifetime_s: int = 3600,
    algorithm: str = "HS256",
) -> str:
    """Build a JWT with the claims the service issues. A negative `lifetime_s` makes it expired."""
    now = int(time.time())
    issued_at = now - 7200 if lifetime_s < 0 else now
    claims = {"sub": user_id, "iss": issuer, "iat": issued_at, "exp": now + lifetime_s}
    return jwt.encode(claims, None if algorithm == "none" else secret, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    client: httpx.AsyncClient, email: str | None = None, name: str = "Ada Tester"
) -> httpx.Response:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    return await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "name": name}
    )


async def make_project(
    client: httpx.AsyncClient, user: dict[str, str], name: str = "PulseGrid API", **fields: object
) -> httpx.Response:
    return await client.post("/api/projects", json={"name": name, **fields}, headers=user)


async def project_id_of(
    client: httpx.AsyncClient, user: dict[str, str], name: str = "PulseGrid API"
) -> str:
    response = await make_project(client, user, name)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def second_agent(client: httpx.AsyncClient, owner: Agent, name: str = "edge agent") -> Agent:
    """Create another agent in `owner`'s project."""
    response = await client.post(
        f"/api/projects/{owner.project_id}/agents", json={"name": name}, headers=owner.user
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return Agent(
        user=owner.user,
        project_id=owner.project_id,
        agent_id=data["agent"]["id"],
        key=data["api_key"],
    )


async def append(
    client: httpx.AsyncClient, agent: Agent, run_id: str, body: object
) -> httpx.Response:
    return await client.post(f"/api/runs/{run_id}/events", json=body, headers=agent.headers)


async def finish(
    client: httpx.AsyncClient, agent: Agent, run_id: str, status: str | None = None
) -> httpx.Response:
    body = None if status is None else {"status": status}
    return await client.post(f"/api/runs/{run_id}/finish", json=body, headers=agent.headers)


async def submit_report(
    client: httpx.AsyncClient, agent: Agent, run_id: str, **fields: object
) -> httpx.Response:
    body = {"summary": "All requests recovered", "raw_json": {"score": 87}, **fields}
    return await client.post(f"/api/runs/{run_id}/report", json=body, headers=agent.headers)


async def settled_run(
    client: httpx.AsyncClient,
    agent: Agent,
    events: list[dict[str, object]],
    status: str = "finished",
) -> tuple[str, dict[str, Any]]:
    """Create a run, append `events` as one batch and finish it.

    Return the run id and the score once it is settled.
    """
    run_id = await create_run(client, agent)
    if events:
        response = await append(client, agent, run_id, {"events": events})
        assert response.status_code == 202, response.text
    response = await finish(client, agent, run_id, status)
    assert response.status_code == 200, response.text
    return run_id, await wait_settled(client, run_id, agent.headers)


@dataclasses.dataclass
class Owned:
    """A user's agent, with a finished run that has one persisted event and a report."""

    agent: Agent
    run_id: str
    event_id: str
    report_id: str


async def owned_world(client: httpx.AsyncClient) -> Owned:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, event("request_timeout", "warning"))
    assert response.status_code == 202, response.text
    report = await submit_report(client, agent, run_id)
    assert report.status_code == 201, report.text
    await finish(client, agent, run_id)
    await wait_settled(client, run_id, agent.headers)
    events = await client.get(f"/api/runs/{run_id}/events", headers=agent.user)
    return Owned(
        agent=agent,
        run_id=run_id,
        event_id=events.json()["data"][0]["id"],
        report_id=report.json()["data"]["id"],
    )


# --- Projects ---------------------------------------------------------------------


async def test_project_create_returns_201(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await make_project(
        client,
        user,
        description="Production monitoring API",
        base_url="https://api.pulsegrid.test",
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "message", "data"}
    assert body["success"] is True
    assert body["data"]["slug"] == "pulsegrid-api"
    assert public_id("prj").match(body["data"]["id"])
    assert body["data"]["base_url"] == "https://api.pulsegrid.test"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "P"}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": "PulseGrid API", "description": "d" * 501}, "description"),
        ({"name": "PulseGrid API", "base_url": "api.example.com"}, "base_url"),
        ({"name": "PulseGrid API", "base_url": "ftp://files.example.com"}, "base_url"),
    ],
    ids=["empty_name", "short_name", "long_name", "long_description", "bare_host", "ftp_url"],
)
async def test_project_invalid_field_400(
    client: httpx.AsyncClient, fields: dict[str, str], field: str
) -> None:
    user = await signup(client)
    response = await client.post("/api/projects", json=fields, headers=user)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"
    assert field in response.json()["message"]


async def test_project_empty_base_url_allowed(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await make_project(client, user, base_url="")
    assert response.status_code == 201
    assert response.json()["data"]["base_url"] == ""


async def test_project_slug_suffix_on_clash(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    first = await make_project(client, user, "Duplicate Project")
    second = await make_project(client, user, "Duplicate Project")
    third = await make_project(client, user, "Duplicate Project")
    assert first.json()["data"]["slug"] == "duplicate-project"
    assert second.json()["data"]["slug"] == "duplicate-project-2"
    assert third.json()["data"]["slug"] == "duplicate-project-3"


async def test_project_list_total_and_meta(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    await make_project(client, user, "Orders API")
    await make_project(client, user, "Billing API")
    response = await client.get("/api/projects", headers=user)
    assert response.status_code == 200
    body = response.json()
    assert body["meta"] == {"total": 2, "limit": 20, "offset": 0}
    assert sorted(p["name"] for p in body["data"]) == ["Billing API", "Orders API"]


async def test_project_list_pages(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    await make_project(client, user, "Orders API")
    await make_project(client, user, "Billing API")
    first = await client.get("/api/projects?limit=1&offset=0", headers=user)
    second = await client.get("/api/projects?limit=1&offset=1", headers=user)
    assert len(first.json()["data"]) == 1
    assert second.json()["meta"]["total"] == 2
    assert first.json()["data"][0]["id"] != second.json()["data"][0]["id"]


async def test_project_get(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    response = await client.get(f"/api/projects/{project_id}", headers=user)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == project_id
    assert response.json()["data"]["name"] == "PulseGrid API"


async def test_project_missing_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get("/api/projects/prj_missing", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_project_update(client: httpx.AsyncClient, method: str) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    changes = {
        "name": "PulseGrid Core",
        "description": "Renamed service",
        "base_url": "https://core.pulsegrid.test",
    }
    response = await client.request(
        method, f"/api/projects/{project_id}", json=changes, headers=user
    )
    assert response.status_code == 200
    stored = (await client.get(f"/api/projects/{project_id}", headers=user)).json()["data"]
    assert {key: stored[key] for key in changes} == changes


async def test_project_update_invalid_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    response = await client.put(
        f"/api/projects/{project_id}",
        json={"name": "PulseGrid API", "base_url": "api.example.com"},
        headers=user,
    )
    assert response.status_code == 400
    assert "base_url" in response.json()["message"]


async def test_project_delete_then_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    deleted = await client.delete(f"/api/projects/{project_id}", headers=user)
    assert deleted.status_code == 200
    response = await client.get(f"/api/projects/{project_id}", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"


async def test_project_delete_revokes_agent_key(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    await client.delete(f"/api/projects/{agent.project_id}", headers=agent.user)
    response = await client.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com", "scenario": "timeout_retry"},
        headers=agent.headers,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("query", "meta"),
    [
        ("limit=0", {"limit": 1, "offset": 0}),
        ("limit=100000", {"limit": 100, "offset": 0}),
        ("limit=999999999999999999999999", {"limit": 100, "offset": 0}),
        ("offset=-5", {"limit": 20, "offset": 0}),
        ("limit=-3", {"limit": 1, "offset": 0}),
    ],
    ids=["limit_zero", "limit_large", "limit_huge", "offset_negative", "limit_negative"],
)
async def test_project_list_clamps_paging(
    client: httpx.AsyncClient, query: str, meta: dict[str, int]
) -> None:
    user = await signup(client)
    response = await client.get(f"/api/projects?{query}", headers=user)
    assert response.status_code == 200
    got = response.json()["meta"]
    assert {"limit": got["limit"], "offset": got["offset"]} == meta


@pytest.mark.parametrize("name", ["limit", "offset"])
async def test_project_list_non_integer_400(client: httpx.AsyncClient, name: str) -> None:
    user = await signup(client)
    response = await client.get(f"/api/projects?{name}=abc", headers=user)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"
    assert name in response.json()["message"]


# --- Agents -----------------------------------------------------------------------


async def test_agent_create_under_project(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    response = await client.post(
        f"/api/projects/{project_id}/agents", json={"name": "ci agent"}, headers=user
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert AGENT_KEY.match(data["api_key"])
    assert data["api_key_warning"]
    assert public_id("agt").match(data["agent"]["id"])
    assert data["agent"]["project_id"] == project_id
    assert data["agent"]["name"] == "ci agent"
    assert data["agent"]["last_seen_at"] is None


async def test_agent_create_with_body_project(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    response = await client.post(
        "/api/agents", json={"name": "ci agent", "project_id": project_id}, headers=user
    )
    assert response.status_code == 201
    assert AGENT_KEY.match(response.json()["data"]["api_key"])
    assert response.json()["data"]["agent"]["project_id"] == project_id


async def test_agent_create_without_project_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post("/api/agents", json={"name": "ci agent"}, headers=user)
    assert response.status_code == 400
    assert "project_id" in response.json()["message"]


async def test_agent_short_name_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project_id = await project_id_of(client, user)
    response = await client.post(
        f"/api/projects/{project_id}/agents", json={"name": "x"}, headers=user
    )
    assert response.status_code == 400
    assert "name" in response.json()["message"]


async def test_agent_missing_project_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    by_path = await client.post(
        "/api/projects/prj_missing/agents", json={"name": "ci agent"}, headers=user
    )
    by_body = await client.post(
        "/api/agents", json={"name": "ci agent", "project_id": "prj_missing"}, headers=user
    )
    assert by_path.status_code == 404
    assert by_path.json()["error"] == "project_not_found"
    assert by_body.status_code == 404
    assert by_body.json()["error"] == "project_not_found"


async def test_agent_list_totals(client: httpx.AsyncClient) -> None:
    owner = await new_agent(client)
    await second_agent(client, owner)
    await new_agent(client, owner.user)
    everything = await client.get("/api/agents", headers=owner.user)
    one_project = await client.get(f"/api/agents?project_id={owner.project_id}", headers=owner.user)
    assert everything.json()["meta"]["total"] == 3
    assert one_project.json()["meta"]["total"] == 2
    assert {a["project_id"] for a in one_project.json()["data"]} == {owner.project_id}


async def test_agent_list_missing_project_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get("/api/agents?project_id=prj_missing", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"


async def test_agent_get(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await client.get(f"/api/agents/{agent.agent_id}", headers=agent.user)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == agent.agent_id
    assert "api_key" not in response.json()["data"]


@pytest.mark.parametrize("header", ["X-Agent-Key", "X-Agent-Api-Key"])
async def test_agent_key_header_accepted(client: httpx.AsyncClient, header: str) -> None:
    agent = await new_agent(client)
    key = agent.headers["X-Agent-Key"]
    response = await client.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com", "scenario": "timeout_retry"},
        headers={header: key},
    )
    assert response.status_code == 201
    assert response.json()["data"]["agent_id"] == agent.agent_id


async def test_agent_bad_key_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com", "scenario": "timeout_retry"},
        headers={"X-Agent-Key": "sa_agent_key_" + "0" * 32},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_agent_rotate_returns_new_key(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await client.post(f"/api/agents/{agent.agent_id}/rotate-key", headers=agent.user)
    assert response.status_code == 200
    data = response.json()["data"]
    assert AGENT_KEY.match(data["api_key"])
    assert data["api_key"] != agent.headers["X-Agent-Key"]
    assert data["api_key_warning"]
    assert data["agent"]["id"] == agent.agent_id


async def test_agent_rotate_revokes_old_key(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    await create_run(client, agent)  # the old key is now in the key cache
    rotated = await client.post(f"/api/agents/{agent.agent_id}/rotate-key", headers=agent.user)
    new_key = rotated.json()["data"]["api_key"]
    body = {"target_url": "https://orders.example.com", "scenario": "timeout_retry"}
    old = await client.post("/api/runs", json=body, headers=agent.headers)
    new = await client.post("/api/runs", json=body, headers={"X-Agent-Key": new_key})
    assert old.status_code == 401
    assert new.status_code == 201


async def test_agent_delete_revokes_key(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    await create_run(client, agent)  # the key is now in the key cache
    deleted = await client.delete(f"/api/agents/{agent.agent_id}", headers=agent.user)
    assert deleted.status_code == 200
    response = await client.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com", "scenario": "timeout_retry"},
        headers=agent.headers,
    )
    assert response.status_code == 401


async def test_agent_delete_then_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    await client.delete(f"/api/agents/{agent.agent_id}", headers=agent.user)
    response = await client.get(f"/api/agents/{agent.agent_id}", headers=agent.user)
    assert response.status_code == 404
    assert response.json()["error"] == "agent_not_found"


# --- Runs -------------------------------------------------------------------------


async def test_run_create_defaults(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await client.post(
        "/api/runs",
        json={"target_url": "https://orders.example.com/orders", "scenario": "timeout_retry"},
        headers=agent.headers,
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert public_id("run").match(data["id"])
    assert data["method"] == "GET"
    assert data["status"] == "running"
    assert data["project_id"] == agent.project_id
    assert data["agent_id"] == agent.agent_id
    assert data["finished_at"] is None


async def test_run_times_are_utc_strings(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    data = (await client.get(f"/api/runs/{run_id}", headers=agent.user)).json()["data"]
    assert is_utc_time(data["created_at"])
    assert is_utc_time(data["started_at"])


async def test_run_method_normalised(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent, method="patch")
    data = (await client.get(f"/api/runs/{run_id}", headers=agent.user)).json()["data"]
    assert data["method"] == "PATCH"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"method": "CONNECT"}, "method"),
        ({"scenario": "x"}, "scenario"),
        ({"target_url": "api.example.com"}, "target_url"),
        ({"target_url": "https://x.test/" + "a" * 2048}, "target_url"),
    ],
    ids=["connect_method", "short_scenario", "bare_host", "long_url"],
)
async def test_run_invalid_field_400(
    client: httpx.AsyncClient, fields: dict[str, str], field: str
) -> None:
    agent = await new_agent(client)
    body = {"target_url": "https://orders.example.com", "scenario": "timeout_retry", **fields}
    response = await client.post("/api/runs", json=body, headers=agent.headers)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"
    assert field in response.json()["message"]


async def test_run_other_project_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    other = await project_id_of(client, agent.user, "Billing API")
    response = await client.post(
        "/api/runs",
        json={
            "target_url": "https://orders.example.com",
            "scenario": "timeout_retry",
            "project_id": other,
        },
        headers=agent.headers,
    )
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"


async def test_run_missing_agent_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await client.post(
        "/api/runs",
        json={
            "target_url": "https://orders.example.com",
            "scenario": "timeout_retry",
            "agent_id": "agt_missing",
        },
        headers=agent.headers,
    )
    assert response.status_code == 404
    assert response.json()["error"] == "agent_not_found"


async def test_run_finish_sets_finished_at(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    before = (await client.get(f"/api/runs/{run_id}", headers=agent.user)).json()["data"]
    response = await finish(client, agent, run_id)
    assert before["finished_at"] is None
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "finished"
    assert is_utc_time(response.json()["data"]["finished_at"])


async def test_run_finish_with_status(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await finish(client, agent, run_id, "failed")
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "failed"


async def test_run_finish_non_final_status_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await finish(client, agent, run_id, "running")
    assert response.status_code == 400
    assert "status" in response.json()["message"]


async def test_run_finish_twice_200(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    first = await finish(client, agent, run_id)
    second = await finish(client, agent, run_id)
    assert second.status_code == 200
    assert second.json()["data"]["status"] == "finished"
    assert second.json()["data"]["finished_at"] == first.json()["data"]["finished_at"]


async def test_run_final_status_locked_409(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await finish(client, agent, run_id)
    response = await client.post(
        f"/api/runs/{run_id}/status", json={"status": "running"}, headers=agent.headers
    )
    assert response.status_code == 409


async def test_invalid_events_checked_against_run(client: httpx.AsyncClient) -> None:
    """A batch whose every event is invalid still gets the run's 409 or 404."""
    agent = await new_agent(client)
    stranger = await new_agent(client)
    run_id = await create_run(client, agent)
    invalid = {"events": [{"event_type": "x"}]}
    open_response = await append(client, agent, run_id, invalid)
    assert open_response.status_code == 202
    assert open_response.json()["data"]["accepted"] == 0
    foreign = await append(client, stranger, run_id, invalid)
    assert foreign.status_code == 404
    unknown = await append(client, agent, "run_" + "0" * 32, invalid)
    assert unknown.status_code == 404
    await finish(client, agent, run_id)
    final = await append(client, agent, run_id, invalid)
    assert final.status_code == 409
    assert final.json()["error"] == "run_finished"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_run_status_update(client: httpx.AsyncClient, method: str) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.request(
        method, f"/api/runs/{run_id}/status", json={"status": "created"}, headers=agent.headers
    )
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "created"


async def test_run_final_status_sets_finished_at(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/status", json={"status": "cancelled"}, headers=agent.headers
    )
    assert response.json()["data"]["status"] == "cancelled"
    assert is_utc_time(response.json()["data"]["finished_at"])


async def test_run_status_invalid_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/status", json={"status": "done"}, headers=agent.headers
    )
    assert response.status_code == 400
    assert "status" in response.json()["message"]


async def test_run_list_filters(client: httpx.AsyncClient) -> None:
    first = await new_agent(client)
    second = await second_agent(client, first)
    elsewhere = await new_agent(client, first.user)
    finished_id = await create_run(client, first)
    await create_run(client, first)
    await create_run(client, second)
    await create_run(client, elsewhere)
    await finish(client, first, finished_id)

    async def total(query: str) -> int:
        response = await client.get(f"/api/runs{query}", headers=first.user)
        assert response.status_code == 200, response.text
        return int(response.json()["meta"]["total"])

    assert await total("") == 4
    assert await total(f"?project_id={first.project_id}") == 3
    assert await total(f"?agent_id={second.agent_id}") == 1
    assert await total("?status=finished") == 1
    assert await total("?status=running") == 3
    assert await total(f"?project_id={first.project_id}&status=running") == 2


async def test_run_list_agent_key_scope(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    other = await new_agent(client, agent.user)
    await create_run(client, agent)
    await create_run(client, other)
    response = await client.get("/api/runs", headers=agent.headers)
    assert response.json()["meta"]["total"] == 1


async def test_run_list_bad_status_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get("/api/runs?status=done", headers=user)
    assert response.status_code == 400
    assert "status" in response.json()["message"]


async def test_run_list_missing_filter_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    project = await client.get("/api/runs?project_id=prj_missing", headers=user)
    agent = await client.get("/api/runs?agent_id=agt_missing", headers=user)
    assert project.json()["error"] == "project_not_found"
    assert agent.json()["error"] == "agent_not_found"


async def test_run_get_with_agent_key(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.get(f"/api/runs/{run_id}", headers=agent.headers)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == run_id


async def test_run_delete_then_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    deleted = await client.delete(f"/api/runs/{run_id}", headers=agent.user)
    assert deleted.status_code == 200
    response = await client.get(f"/api/runs/{run_id}", headers=agent.user)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


async def test_run_delete_needs_bearer(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.delete(f"/api/runs/{run_id}", headers=agent.headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_run_missing_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get(f"/api/runs/{MISSING_RUN}", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


# --- Events -----------------------------------------------------------------------


async def test_event_single_accepted(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, event("request_timeout", "warning"))
    assert response.status_code == 202
    assert response.json()["data"] == {"accepted": 1, "rejected": []}


async def test_event_batch_accepted(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    batch = [event("request_sent"), event("request_timeout", "warning"), event("retry_started")]
    response = await append(client, agent, run_id, {"events": batch})
    assert response.status_code == 202
    assert response.json()["data"] == {"accepted": 3, "rejected": []}


async def test_event_severity_normalised(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    batch = [
        event("request_timeout", "warn"),
        event("request_sent"),
        event("duplicate_detected", "ERROR"),
    ]
    await append(client, agent, run_id, {"events": batch})
    await finish(client, agent, run_id)
    await wait_settled(client, run_id, agent.headers)
    events = (await client.get(f"/api/runs/{run_id}/events", headers=agent.user)).json()
    assert [e["severity"] for e in events["data"]] == ["warning", "info", "error"]


async def test_event_exact_mib_payload_accepted(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    payload = "a" * (MIB - 2)  # with its quotes, exactly 1 MiB of JSON
    response = await append(client, agent, run_id, event("request_sent", payload=payload))
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"event_type": "x"}, "event_type"),
        ({"severity": "fatal"}, "severity"),
        ({"message": "m" * 1001}, "message"),
        ({"payload": {"blob": "a" * MIB}}, "payload"),
        ({"message": "bad\u0000text"}, "message"),
    ],
    ids=["short_type", "fatal_severity", "long_message", "large_payload", "nul_message"],
)
async def test_event_single_invalid_400(
    client: httpx.AsyncClient, fields: dict[str, object], field: str
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, {"event_type": "request_sent", **fields})
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"
    assert field in response.json()["message"]


async def test_event_bare_array_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, [event("request_sent")])
    assert response.status_code == 400
    message = response.json()["message"]
    assert "object" in message
    assert '"events"' in message


async def test_event_batch_over_1000_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, {"events": [event("request_sent")] * 1001})
    assert response.status_code == 400
    assert "1000" in response.json()["message"]


async def test_event_batch_of_1000_accepted(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await append(client, agent, run_id, {"events": [event("request_sent")] * 1000})
    assert response.status_code == 202
    assert response.json()["data"]["accepted"] == 1000


async def test_event_unknown_run_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await append(client, agent, MISSING_RUN, event("request_sent"))
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


async def test_event_list_oldest_first(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    for event_type in ("agent_started", "request_sent", "request_timeout"):
        await append(client, agent, run_id, event(event_type, message=f"{event_type} seen"))
    await finish(client, agent, run_id)
    await wait_settled(client, run_id, agent.headers)
    response = await client.get(f"/api/runs/{run_id}/events", headers=agent.user)
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["total"] == 3
    assert [e["event_type"] for e in body["data"]] == [
        "agent_started",
        "request_sent",
        "request_timeout",
    ]
    assert body["data"][0]["message"] == "agent_started seen"
    assert body["data"][0]["run_id"] == run_id


async def test_event_list_by_run_query(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    other_run = await create_run(client, agent)
    await append(client, agent, run_id, {"events": [event("request_sent")] * 2})
    await append(client, agent, other_run, event("request_sent"))
    for finished in (run_id, other_run):
        await finish(client, agent, finished)
        await wait_settled(client, finished, agent.headers)
    response = await client.get(f"/api/events?run_id={run_id}", headers=agent.user)
    assert response.status_code == 200
    assert response.json()["meta"]["total"] == 2
    assert {e["run_id"] for e in response.json()["data"]} == {run_id}


async def test_event_get_by_id(client: httpx.AsyncClient, consumers: list[ShardConsumer]) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await append(client, agent, run_id, event("request_timeout", "warning", payload={"ms": 2000}))
    await finish(client, agent, run_id)
    await wait_settled(client, run_id, agent.headers)
    listed = (await client.get(f"/api/runs/{run_id}/events", headers=agent.user)).json()
    event_id = listed["data"][0]["id"]
    response = await client.get(f"/api/events/{event_id}", headers=agent.user)
    assert response.status_code == 200
    data = response.json()["data"]
    assert public_id("evt").match(data["id"])
    assert data["event_type"] == "request_timeout"
    assert data["payload"] == {"ms": 2000}
    assert is_utc_time(data["received_at"])


async def test_event_unknown_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get("/api/events/evt_" + "0" * 32, headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "event_not_found"


# --- Reports ----------------------------------------------------------------------


async def test_report_first_submit_201(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await submit_report(client, agent, run_id)
    assert response.status_code == 201
    data = response.json()["data"]
    assert public_id("rpt").match(data["id"])
    assert data["run_id"] == run_id
    assert data["summary"] == "All requests recovered"
    assert data["raw_json"] == {"score": 87}


async def test_report_resubmit_updates(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    first = await submit_report(client, agent, run_id)
    second = await submit_report(
        client, agent, run_id, summary="Two requests were lost", raw_json={"score": 90}
    )
    assert second.status_code == 200
    assert second.json()["data"]["id"] == first.json()["data"]["id"]
    assert second.json()["data"]["summary"] == "Two requests were lost"
    assert second.json()["data"]["raw_json"] == {"score": 90}


async def test_report_short_summary_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await submit_report(client, agent, run_id, summary="x")
    assert response.status_code == 400
    assert "summary" in response.json()["message"]


async def test_report_missing_raw_json_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/report", json={"summary": "No raw report"}, headers=agent.headers
    )
    assert response.status_code == 400
    assert "raw_json" in response.json()["message"]


async def test_report_over_5mib_rejected(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await submit_report(client, agent, run_id, raw_json="a" * (5 * MIB + 1))
    assert response.status_code in (400, 413)


async def test_report_4mib_accepted(client: httpx.AsyncClient) -> None:
    # NOTE: a raw_json of exactly 5 MiB cannot fit in the 5 MiB body limit with its
    # envelope, so the exact upper bound is left untested.
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await submit_report(client, agent, run_id, raw_json={"blob": "a" * (4 * MIB)})
    assert response.status_code == 201


async def test_report_unknown_run_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    response = await submit_report(client, agent, MISSING_RUN)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


async def test_report_get_by_run(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    report_id = (await submit_report(client, agent, run_id)).json()["data"]["id"]
    by_user = await client.get(f"/api/runs/{run_id}/report", headers=agent.user)
    by_agent = await client.get(f"/api/runs/{run_id}/report", headers=agent.headers)
    assert by_user.status_code == 200
    assert by_user.json()["data"]["id"] == report_id
    assert by_agent.json()["data"]["id"] == report_id


async def test_report_get_by_id(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    report_id = (await submit_report(client, agent, run_id)).json()["data"]["id"]
    response = await client.get(f"/api/reports/{report_id}", headers=agent.user)
    assert response.status_code == 200
    assert response.json()["data"]["run_id"] == run_id
    assert response.json()["data"]["raw_json"] == {"score": 87}


async def test_report_list_total(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    for _ in range(2):
        await submit_report(client, agent, await create_run(client, agent))
    response = await client.get("/api/reports", headers=agent.user)
    assert response.status_code == 200
    assert response.json()["meta"]["total"] == 2
    assert len(response.json()["data"]) == 2


async def test_report_missing_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get("/api/reports/rpt_missing", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "report_not_found"


async def test_report_delete_by_id_then_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    report_id = (await submit_report(client, agent, run_id)).json()["data"]["id"]
    deleted = await client.delete(f"/api/reports/{report_id}", headers=agent.user)
    assert deleted.status_code == 200
    response = await client.get(f"/api/reports/{report_id}", headers=agent.user)
    assert response.status_code == 404
    assert response.json()["error"] == "report_not_found"


async def test_report_delete_by_run_then_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await submit_report(client, agent, run_id)
    deleted = await client.delete(f"/api/runs/{run_id}/report", headers=agent.user)
    assert deleted.status_code == 200
    response = await client.get(f"/api/runs/{run_id}/report", headers=agent.user)
    assert response.status_code == 404
    assert response.json()["error"] == "report_not_found"


# --- Scores -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "score", "grade", "points"),
    [
        ([], 100, "A", []),
        ([("request_timeout", "warning")], 87, "B", [3, 10]),
        ([("data_loss_risk_detected", "critical")], 50, "D", [15, 35]),
        ([("duplicate_detected", "error")], 72, "C", [8, 20]),
        ([("recovery_failed", "error")], 67, "C", [8, 25]),
        ([("request_timeout", "warning")] * 3, 81, "B", [9, 10]),
        (
            [
                ("data_loss_risk_detected", "critical"),
                ("duplicate_detected", "error"),
                ("recovery_failed", "error"),
            ],
            0,
            "F",
            [15, 16, 20, 25, 35],
        ),
    ],
    ids=[
        "no_events",
        "timeout_warning",
        "data_loss_critical",
        "duplicate_error",
        "recovery_failed_error",
        "three_timeouts",
        "danger",
    ],
)
async def test_score_pinned_example(
    client: httpx.AsyncClient,
    consumers: list[ShardConsumer],
    events: list[tuple[str, str]],
    score: int,
    grade: str,
    points: list[int],
) -> None:
    agent = await new_agent(client)
    run_id, data = await settled_run(
        client, agent, [event(event_type, severity) for event_type, severity in events]
    )
    assert data["run_id"] == run_id
    assert data["score"] == score
    assert data["grade"] == grade
    assert data["settled"] is True
    assert data["pending_events"] == 0
    assert sorted(d["points"] for d in data["deductions"]) == points
    assert all(d["reason"] for d in data["deductions"])


async def test_score_failed_danger_flags(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    events = [
        event("data_loss_risk_detected", "critical"),
        event("duplicate_detected", "error"),
        event("recovery_failed", "error"),
    ]
    run_id, data = await settled_run(client, agent, events, status="failed")
    run = (await client.get(f"/api/runs/{run_id}", headers=agent.user)).json()["data"]
    assert run["status"] == "failed"
    assert data["score"] == 0
    assert data["grade"] == "F"
    assert data["risks"] == {
        "data_loss": True,
        "duplicate": True,
        "timeout": False,
        "recovery": True,
    }


async def test_score_counts(client: httpx.AsyncClient, consumers: list[ShardConsumer]) -> None:
    agent = await new_agent(client)
    events = [
        event("agent_started"),
        event("request_timeout", "warning"),
        event("recovery_succeeded"),
    ]
    _, data = await settled_run(client, agent, events)
    assert data["score"] == 87
    assert data["grade"] == "B"
    assert data["counts"]["total"] == 3
    assert data["counts"]["info"] == 2
    assert data["counts"]["warning"] == 1
    assert data["risks"]["timeout"] is True
    assert is_utc_time(data["updated_at"])


async def test_score_unsettled_while_running(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.get(f"/api/runs/{run_id}/score", headers=agent.user)
    assert response.status_code == 200
    assert response.json()["data"]["settled"] is False


async def test_score_pending_without_worker(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await append(client, agent, run_id, {"events": [event("request_sent")] * 2})
    await finish(client, agent, run_id)
    response = await client.get(f"/api/runs/{run_id}/score", headers=agent.user)
    data = response.json()["data"]
    assert data["settled"] is False
    assert data["pending_events"] == 2


async def test_score_missing_run_404(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.get(f"/api/runs/{MISSING_RUN}/score", headers=user)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


async def test_project_scores(client: httpx.AsyncClient, consumers: list[ShardConsumer]) -> None:
    agent = await new_agent(client)
    await settled_run(client, agent, [])
    latest_id, _ = await settled_run(client, agent, [event("request_timeout", "warning")])
    response = await client.get(f"/api/projects/{agent.project_id}/scores", headers=agent.user)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["project_id"] == agent.project_id
    assert data["latest"]["run_id"] == latest_id


async def test_project_scores_other_user_404(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    stranger = await signup(client)
    response = await client.get(f"/api/projects/{agent.project_id}/scores", headers=stranger)
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"


# --- Accounts and tokens ----------------------------------------------------------


async def test_register_returns_user_and_token(client: httpx.AsyncClient) -> None:
    response = await register(client, "ada@example.com")
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == {"user", "token"}
    assert set(data["user"]) == {"id", "email", "name", "created_at"}
    assert public_id("usr").match(data["user"]["id"])
    assert data["user"]["email"] == "ada@example.com"
    assert is_utc_time(data["user"]["created_at"])


async def test_register_token_works(client: httpx.AsyncClient) -> None:
    token = (await register(client)).json()["data"]["token"]
    response = await client.get("/api/auth/me", headers=bearer(token))
    assert response.status_code == 200


async def test_register_duplicate_email_409(client: httpx.AsyncClient) -> None:
    await register(client, "Grace@Example.com")
    response = await register(client, "grace@example.com")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


async def test_register_invalid_email_400(client: httpx.AsyncClient) -> None:
    response = await register(client, "not-an-email")
    assert response.status_code == 400
    assert "email" in response.json()["message"]


async def test_login_returns_token_and_user(client: httpx.AsyncClient) -> None:
    user_id = (await register(client, "lin@example.com")).json()["data"]["user"]["id"]
    response = await client.post(
        "/api/auth/login", json={"email": "lin@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"token", "user"}
    assert data["user"]["id"] == user_id
    assert "password_hash" not in data["user"]


async def test_login_wrong_password_401(client: httpx.AsyncClient) -> None:
    await register(client, "lin@example.com")
    response = await client.post(
        "/api/auth/login", json={"email": "lin@example.com", "password": "wrong password"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"


async def test_login_unknown_email_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"


async def test_me_returns_user(client: httpx.AsyncClient) -> None:
    registered = (await register(client, "me@example.com", name="Me Myself")).json()["data"]
    login = await client.post(
        "/api/auth/login", json={"email": "me@example.com", "password": PASSWORD}
    )
    response = await client.get("/api/auth/me", headers=bearer(login.json()["data"]["token"]))
    assert response.status_code == 200
    assert response.json()["data"] == registered["user"]


async def test_token_missing_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/auth/me")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_token_forged_valid_accepted(client: httpx.AsyncClient, settings: Settings) -> None:
    """Accept a forged token with the service's secret and claims.

    Each case of `test_token_invalid_401` changes one thing in such a token.
    """
    user_id = (await register(client)).json()["data"]["user"]["id"]
    token = forge_token(settings.jwt_secret, user_id, issuer=settings.service_name)
    response = await client.get("/api/auth/me", headers=bearer(token))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "case", ["alg_none", "other_secret", "expired", "other_issuer", "malformed"]
)
async def test_token_invalid_401(client: httpx.AsyncClient, settings: Settings, case: str) -> None:
    user_id = (await register(client)).json()["data"]["user"]["id"]
    secret, issuer = settings.jwt_secret, settings.service_name
    tokens = {
        "alg_none": forge_token(secret, user_id, issuer=issuer, algorithm="none"),
        "other_secret": forge_token("another-secret-" + "z" * 32, user_id, issuer=issuer),
        "expired": forge_token(secret, user_id, issuer=issuer, lifetime_s=-3600),
        "other_issuer": forge_token(secret, user_id, issuer="someone-else"),
        "malformed": "abc.def.ghi",
    }
    response = await client.get("/api/auth/me", headers=bearer(tokens[case]))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_management_needs_bearer(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    projects = await client.get("/api/projects", headers=agent.headers)
    create = await client.post("/api/projects", json={"name": "Sneaky"}, headers=agent.headers)
    agents = await client.get("/api/agents", headers=agent.headers)
    assert projects.status_code == 401
    assert create.status_code == 401
    assert agents.status_code == 401


async def test_login_rate_limited_per_account(client: httpx.AsyncClient) -> None:
    await register(client, "target@example.com")
    wrong = {"email": "target@example.com", "password": "not the password"}
    for attempt in range(10):
        failed = await client.post("/api/auth/login", json=wrong)
        assert failed.status_code == 401, f"attempt {attempt + 1}: {failed.text}"
    response = await client.post("/api/auth/login", json=wrong)
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


async def test_login_limit_spares_other_accounts(client: httpx.AsyncClient) -> None:
    await register(client, "target@example.com")
    await register(client, "bystander@example.com")
    wrong = {"email": "target@example.com", "password": "not the password"}
    for _ in range(11):
        await client.post("/api/auth/login", json=wrong)
    response = await client.post(
        "/api/auth/login", json={"email": "bystander@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200


# --- Ownership --------------------------------------------------------------------


async def test_owner_other_user_project_404(client: httpx.AsyncClient) -> None:
    owner = await new_agent(client)
    stranger = await signup(client)
    path = f"/api/projects/{owner.project_id}"
    read = await client.get(path, headers=stranger)
    update = await client.put(path, json={"name": "Taken Over"}, headers=stranger)
    delete = await client.delete(path, headers=stranger)
    listed = await client.get("/api/projects", headers=stranger)
    assert read.json()["error"] == "project_not_found"
    assert update.status_code == 404
    assert delete.status_code == 404
    assert listed.json()["meta"]["total"] == 0
    unchanged = await client.get(path, headers=owner.user)
    assert unchanged.json()["data"]["name"] == "Orders API"


async def test_owner_other_user_agent_404(client: httpx.AsyncClient) -> None:
    owner = await new_agent(client)
    stranger = await signup(client)
    path = f"/api/agents/{owner.agent_id}"
    read = await client.get(path, headers=stranger)
    rotate = await client.post(f"{path}/rotate-key", headers=stranger)
    delete = await client.delete(path, headers=stranger)
    create = await client.post(
        f"/api/projects/{owner.project_id}/agents", json={"name": "intruder"}, headers=stranger
    )
    assert read.json()["error"] == "agent_not_found"
    assert rotate.status_code == 404
    assert delete.status_code == 404
    assert create.json()["error"] == "project_not_found"
    # create_run asserts 201, so this checks that the owner's key was not rotated away.
    await create_run(client, owner)


async def test_owner_other_user_run_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    world = await owned_world(client)
    stranger = await signup(client)
    read = await client.get(f"/api/runs/{world.run_id}", headers=stranger)
    delete = await client.delete(f"/api/runs/{world.run_id}", headers=stranger)
    listed = await client.get("/api/runs", headers=stranger)
    assert read.json()["error"] == "run_not_found"
    assert delete.status_code == 404
    assert listed.json()["meta"]["total"] == 0


async def test_owner_other_user_events_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    world = await owned_world(client)
    stranger = await signup(client)
    by_run = await client.get(f"/api/runs/{world.run_id}/events", headers=stranger)
    by_query = await client.get(f"/api/events?run_id={world.run_id}", headers=stranger)
    by_id = await client.get(f"/api/events/{world.event_id}", headers=stranger)
    listed = await client.get("/api/events", headers=stranger)
    assert by_run.json()["error"] == "run_not_found"
    assert by_query.status_code == 404
    assert by_id.json()["error"] == "event_not_found"
    assert listed.json()["meta"]["total"] == 0


async def test_owner_other_user_report_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    world = await owned_world(client)
    stranger = await signup(client)
    by_id = await client.get(f"/api/reports/{world.report_id}", headers=stranger)
    by_run = await client.get(f"/api/runs/{world.run_id}/report", headers=stranger)
    delete = await client.delete(f"/api/reports/{world.report_id}", headers=stranger)
    delete_by_run = await client.delete(f"/api/runs/{world.run_id}/report", headers=stranger)
    listed = await client.get("/api/reports", headers=stranger)
    assert by_id.json()["error"] == "report_not_found"
    assert by_run.status_code == 404
    assert delete.status_code == 404
    assert delete_by_run.status_code == 404
    assert listed.json()["meta"]["total"] == 0


async def test_owner_other_user_score_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    world = await owned_world(client)
    stranger = await signup(client)
    response = await client.get(f"/api/runs/{world.run_id}/score", headers=stranger)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


async def test_owner_other_agent_key_read_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    world = await owned_world(client)
    stranger = await new_agent(client)
    run = await client.get(f"/api/runs/{world.run_id}", headers=stranger.headers)
    events = await client.get(f"/api/runs/{world.run_id}/events", headers=stranger.headers)
    event_by_id = await client.get(f"/api/events/{world.event_id}", headers=stranger.headers)
    report = await client.get(f"/api/runs/{world.run_id}/report", headers=stranger.headers)
    score = await client.get(f"/api/runs/{world.run_id}/score", headers=stranger.headers)
    assert run.json()["error"] == "run_not_found"
    assert events.status_code == 404
    assert event_by_id.status_code == 404
    assert report.status_code == 404
    assert score.status_code == 404


async def test_owner_other_agent_key_write_404(client: httpx.AsyncClient) -> None:
    owner = await new_agent(client)
    stranger = await new_agent(client)
    run_id = await create_run(client, owner)
    status = await client.post(
        f"/api/runs/{run_id}/status", json={"status": "created"}, headers=stranger.headers
    )
    events = await append(client, stranger, run_id, event("request_sent"))
    report = await submit_report(client, stranger, run_id)
    finished = await finish(client, stranger, run_id)
    assert status.json()["error"] == "run_not_found"
    assert events.json()["error"] == "run_not_found"
    assert report.json()["error"] == "run_not_found"
    assert finished.json()["error"] == "run_not_found"
    run = (await client.get(f"/api/runs/{run_id}", headers=owner.user)).json()["data"]
    assert run["status"] == "running"


async def test_owner_foreign_final_run_404(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    """Return 404, not 409, for a foreign final run, so its existence does not leak."""
    world = await owned_world(client)
    stranger = await new_agent(client)
    response = await append(client, stranger, world.run_id, event("request_sent"))
    assert response.status_code == 404


# --- Envelope and HTTP handling ---------------------------------------------------


async def test_envelope_unknown_route_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/no-such-thing")
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert set(body) == {"success", "error", "message"}


async def test_envelope_wrong_method_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/auth/login")
    assert response.status_code == 405
    assert response.json()["success"] is False


async def test_envelope_text_plain_415(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post(
        "/api/projects",
        content=b'{"name": "PulseGrid API"}',
        headers={**user, "Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


async def test_envelope_missing_content_type_is_json(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post(
        "/api/projects", content=b'{"name": "PulseGrid API"}', headers=user
    )
    assert "content-type" not in response.request.headers
    assert response.status_code == 201


async def test_envelope_empty_body_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post(
        "/api/projects", content=b"", headers={**user, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"


async def test_envelope_non_object_body_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post("/api/projects", json=["PulseGrid API"], headers=user)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"


async def test_envelope_nul_in_name_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await make_project(client, user, "Pulse\u0000Grid")
    assert response.status_code == 400
    assert "name" in response.json()["message"]


async def test_envelope_invalid_utf8_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post(
        "/api/projects",
        content=b'{"name": "Pulse\xff\xfeGrid"}',
        headers={**user, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "validation_failed"


async def test_envelope_lone_surrogate_400(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await client.post(
        "/api/projects",
        content=b'{"name": "Pulse\\ud800Grid"}',
        headers={**user, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


async def test_envelope_body_over_1mib_413(client: httpx.AsyncClient) -> None:
    user = await signup(client)
    response = await make_project(client, user, description="d" * (MIB + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_envelope_request_id_on_every_response(client: httpx.AsyncClient) -> None:
    ok = await client.get("/health")
    missing = await client.get("/api/no-such-thing")
    unauthorized = await client.get("/api/projects")
    assert ok.headers.get("X-Request-Id")
    assert missing.headers.get("X-Request-Id")
    assert unauthorized.headers.get("X-Request-Id")
    assert ok.headers["X-Request-Id"] != missing.headers["X-Request-Id"]


async def test_envelope_request_id_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-Id": "req-contract-42"})
    assert response.headers["X-Request-Id"] == "req-contract-42"


async def test_cors_preflight_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/projects",
        headers={
            "Origin": "http://dashboard.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://dashboard.test"


async def test_cors_preflight_other_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/api/projects",
        headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_simple_request_exposes_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "http://dashboard.test"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://dashboard.test"
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"].lower()


async def test_cors_event_append_with_origin(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/events",
        json=event("request_sent"),
        headers={**agent.headers, "Origin": "http://dashboard.test"},
    )
    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == "http://dashboard.test"
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"].lower()


async def test_event_append_echoes_request_id(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    headers = {**agent.headers, "X-Request-Id": "req-events-7"}
    accepted = await client.post(
        f"/api/runs/{run_id}/events", json=event("request_sent"), headers=headers
    )
    missing = await client.post(
        f"/api/runs/{MISSING_RUN}/events", json=event("request_sent"), headers=headers
    )
    assert accepted.status_code == 202
    assert accepted.headers["X-Request-Id"] == "req-events-7"
    assert missing.status_code == 404
    assert missing.json()["error"] == "run_not_found"
    assert missing.headers["X-Request-Id"] == "req-events-7"
    assert "Access-Control-Allow-Origin" not in accepted.headers
