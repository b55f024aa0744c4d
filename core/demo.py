"""`softadastra-cloud demo`: play one agent run against a running server.

It signs up a fresh user, creates a project and an agent, streams a few hundred
events of a simulated retry test in batches, finishes the run, waits until the score
is settled, and checks the server's score against the one computed locally from the
same events.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
from typing import Any

import httpx

from core.scoring import Counters, score_counters

__all__ = ["run_demo", "simulated_events"]

_BATCH_SIZE = 50
_SETTLE_TIMEOUT_S = 60.0


class DemoError(Exception):
    """A request of the demo failed; the message quotes the server's error."""


def simulated_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Events of a retry test: writes, some timing out and retried, one duplicate, one reset."""
    events: list[dict[str, Any]] = [
        {"event_type": "agent_started", "severity": "info", "message": "retry test against /orders"}
    ]
    write = 0
    while len(events) < count - 1:
        write += 1
        marker = f"order-{write:05d}"
        events.append(
            {
                "event_type": "request_sent",
                "message": f"POST /orders {marker}",
                "payload": {"marker": marker, "attempt": 1},
            }
        )
        roll = rng.random()
        if roll < 0.06:
            events.append(
                {
                    "event_type": "request_timeout",
                    "severity": "warning",
                    "message": f"no response for {marker} within 2 s",
                    "payload": {"marker": marker, "timeout_ms": 2000},
                }
            )
            events.append(
                {
                    "event_type": "retry_started",
                    "message": f"retrying {marker}",
                    "payload": {"marker": marker, "attempt": 2},
                }
            )
            events.append(
                {"event_type": "recovery_succeeded", "message": f"{marker} acknowledged on retry"}
            )
        elif roll < 0.08:
            events.append(
                {
                    "event_type": "connection_reset",
                    "severity": "warn",
                    "message": f"connection reset while sending {marker}",
                }
            )
            events.append(
                {"event_type": "recovery_succeeded", "message": f"{marker} resent after reset"}
            )
    duplicate_at = rng.randrange(1, len(events))
    events.insert(
        duplicate_at,
        {
            "event_type": "duplicate_detected",
            "severity": "error",
            "message": "order-00007 stored twice after a retry",
            "payload": {"marker": "order-00007", "copies": 2},
        },
    )
    events = events[: count - 1]
    events.append({"event_type": "run_finished", "message": f"{write} writes checked"})
    for index, event in enumerate(events):
        event["event_id"] = f"demo-{index:06d}"
    return events


def _expected(events: list[dict[str, Any]]) -> tuple[int, str]:
    severity = {"warn": "warning"}
    counters = Counters.from_events(
        (e["event_type"], severity.get(e.get("severity", "info"), e.get("severity", "info")))
        for e in events
    )
    score = score_counters(counters)
    return score.score, score.grade


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = f"{body.get('error')}: {body.get('message')}"
        except ValueError:
            detail = response.text[:200]
        raise DemoError(f"{method} {path} returned {response.status_code} ({detail})")
    return response.json()["data"]


def _stream(client: httpx.Client, run_id: str, key: str, events: list[dict[str, Any]]) -> None:
    sent = 0
    for start in range(0, len(events), _BATCH_SIZE):
        batch = events[start : start + _BATCH_SIZE]
        while True:
            response = client.post(
                f"/api/runs/{run_id}/events", json={"events": batch}, headers={"X-Agent-Key": key}
            )
            if response.status_code not in (429, 503):
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code != 202:
            raise DemoError(
                f"appending events returned {response.status_code}: {response.text[:200]}"
            )
        data = response.json()["data"]
        if data["rejected"]:
            raise DemoError(f"the server rejected events: {data['rejected'][:3]}")
        sent += data["accepted"]
        print(f"  streamed {sent}/{len(events)} events", flush=True)


def _wait_settled(client: httpx.Client, run_id: str, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while True:
        score = _call(client, "GET", f"/api/runs/{run_id}/score", headers={"X-Agent-Key": key})
        if score["settled"]:
            return score
        if time.monotonic() > deadline:
            raise DemoError(
                f"score not settled after {_SETTLE_TIMEOUT_S:.0f} s "
                f"({score['pending_events']} events "
                "pending); is a worker running?"
            )
        time.sleep(0.2)


def _play(client: httpx.Client, event_count: int, rng: random.Random) -> int:
    email = f"demo-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(12)
    account = _call(
        client,
        "POST",
        "/api/auth/register",
        json={"email": email, "password": password, "name": "Demo User"},
    )
    client.headers["Authorization"] = f"Bearer {account['token']}"
    # A throwaway account: its password is printed so the run can be opened in the dashboard.
    print(f"registered {email} with password {password}")
    project = _call(
        client,
        "POST",
        "/api/projects",
        json={"name": "Orders API demo", "base_url": "https://orders.example.com"},
    )
    print(f"created project {project['id']} ({project['slug']})")
    created = _call(
        client, "POST", f"/api/projects/{project['id']}/agents", json={"name": "demo agent"}
    )
    key = created["api_key"]
    print(f"created agent {created['agent']['id']}")
    run = _call(
        client,
        "POST",
        "/api/runs",
        headers={"X-Agent-Key": key},
        json={
            "target_url": "https://orders.example.com/orders",
            "method": "POST",
            "scenario": "timeout_retry",
        },
    )
    print(f"created run {run['id']}")
    events = simulated_events(event_count, rng)
    _stream(client, run["id"], key, events)
    _call(client, "POST", f"/api/runs/{run['id']}/finish", headers={"X-Agent-Key": key}, json={})
    print("finished run; waiting for the score to settle")
    score = _wait_settled(client, run["id"], key)
    expected_score, expected_grade = _expected(events)
    flags = ", ".join(name for name, on in score["risks"].items() if on) or "none"
    print()
    print(f"run       {run['id']}")
    print(f"events    {score['counts']['total']} persisted of {len(events)} sent")
    print(f"score     {score['score']} (grade {score['grade']}), settled: {score['settled']}")
    print(f"risks     {flags}")
    for deduction in score["deductions"]:
        print(f"  -{deduction['points']:>3}  {deduction['reason']} ({deduction['events']} events)")
    print(f"expected  {expected_score} (grade {expected_grade}) from the events sent")
    print(f"dashboard {str(client.base_url).rstrip('/')}/#/runs/{run['id']}")
    if (score["score"], score["grade"]) != (expected_score, expected_grade):
        print("MISMATCH: the server's score differs from the local computation", file=sys.stderr)
        return 1
    return 0


def run_demo(url: str, *, events: int, seed: int | None) -> int:
    if not 10 <= events <= 100_000:
        print("softadastra-cloud demo: --events must be between 10 and 100000", file=sys.stderr)
        return 2
    rng = random.Random(seed)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            return _play(client, events, rng)
    except httpx.HTTPError as exc:
        print(
            f"softadastra-cloud demo: cannot reach {url}: {exc}; is the server running?",
            file=sys.stderr,
        )
        return 1
    except DemoError as exc:
        print(f"softadastra-cloud demo: {exc}", file=sys.stderr)
        return 1
