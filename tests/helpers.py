"""Small HTTP steps shared by the tests: sign up, create a project, agent and run."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

__all__ = ["Agent", "create_run", "new_agent", "signup", "wait_settled"]


async def signup(client: httpx.AsyncClient, *, name: str = "Test User") -> dict[str, str]:
    """Register a fresh user; return its Authorization header."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    response = await client.post(
        "/api/auth/register",
        json={"email": email, "password": "correct horse battery", "name": name},
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['data']['token']}"}


class Agent:
    def __init__(self, *, user: dict[str, str], project_id: str, agent_id: str, key: str) -> None:
        self.user = user
        self.project_id = project_id
        self.agent_id = agent_id
        self.headers = {"X-Agent-Key": key}


async def new_agent(client: httpx.AsyncClient, user: dict[str, str] | None = None) -> Agent:
    """Sign up (unless `user` is given), create a project and an agent in it."""
    user = user or await signup(client)
    project = await client.post("/api/projects", json={"name": "Orders API"}, headers=user)
    assert project.status_code == 201, project.text
    project_id = project.json()["data"]["id"]
    agent = await client.post(
        f"/api/projects/{project_id}/agents", json={"name": "ci agent"}, headers=user
    )
    assert agent.status_code == 201, agent.text
    data = agent.json()["data"]
    return Agent(
        user=user, project_id=project_id, agent_id=data["agent"]["id"], key=data["api_key"]
    )


async def create_run(client: httpx.AsyncClient, agent: Agent, **fields: Any) -> str:
    body = {
        "target_url": "https://orders.example.com/orders",
        "scenario": "timeout_retry",
        **fields,
    }
    response = await client.post("/api/runs", json=body, headers=agent.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def wait_settled(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str], *, timeout_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/api/runs/{run_id}/score", headers=headers)
        assert response.status_code == 200, response.text
        score = response.json()["data"]
        if score["settled"]:
            return score
        assert time.monotonic() < deadline, f"score not settled within {timeout_s} s: {score}"
        await asyncio.sleep(0.05)
