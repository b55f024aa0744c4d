"""Events travel ingest -> Redis stream -> worker -> PostgreSQL, and the score follows."""

from __future__ import annotations

import gzip

import httpx
import msgspec

from tests.helpers import create_run, new_agent, wait_settled
from workers.consumer import ShardConsumer


def event(event_type: str, severity: str = "info", **fields: object) -> dict[str, object]:
    return {"event_type": event_type, "severity": severity, **fields}


async def test_batch_through_pipeline_settles_score(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    batch = [event("request_sent", event_id=f"e{i}") for i in range(97)]
    batch += [
        event("request_timeout", "warning", event_id="t1"),
        event("duplicate_detected", "error", event_id="d1"),
        event("recovery_succeeded", event_id="r1"),
    ]
    response = await client.post(
        f"/api/runs/{run_id}/events", json={"events": batch}, headers=agent.headers
    )
    assert response.status_code == 202
    assert response.json()["data"] == {"accepted": 100, "rejected": []}

    finish = await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    assert finish.status_code == 200
    score = await wait_settled(client, run_id, agent.headers)

    # 100 - 20 (duplicate) - 10 (timeout) - 8 (one error) - 3 (one warning)
    assert score["score"] == 59
    assert score["grade"] == "D"
    assert score["risks"] == {
        "data_loss": False,
        "duplicate": True,
        "timeout": True,
        "recovery": False,
    }
    assert score["counts"]["total"] == 100
    assert score["pending_events"] == 0


async def test_score_readable_by_owner_token(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await client.post(
        f"/api/runs/{run_id}/events",
        json=event("request_timeout", "warning"),
        headers=agent.headers,
    )
    await client.post(
        f"/api/runs/{run_id}/finish", json={"status": "failed"}, headers=agent.headers
    )
    score = await wait_settled(client, run_id, agent.user)
    assert (score["score"], score["grade"]) == (87, "B")


async def test_single_event_is_accepted(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/events",
        json=event("request_timeout", "WARN", message="no answer in 2 s", payload={"ms": 2000}),
        headers=agent.headers,
    )
    assert response.status_code == 202
    assert response.json()["data"]["accepted"] == 1
    await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    await wait_settled(client, run_id, agent.headers)
    events = (await client.get(f"/api/runs/{run_id}/events", headers=agent.headers)).json()
    assert events["meta"]["total"] == 1
    stored = events["data"][0]
    assert stored["severity"] == "warning"
    assert stored["payload"] == {"ms": 2000}
    assert stored["occurred_at"] is None
    assert stored["id"].startswith("evt_")


async def test_resent_ids_count_once(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    batch = {"events": [event("request_timeout", "warning", event_id=f"t{i}") for i in range(3)]}
    for _ in range(3):
        response = await client.post(
            f"/api/runs/{run_id}/events", json=batch, headers=agent.headers
        )
        assert response.status_code == 202
    await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    score = await wait_settled(client, run_id, agent.headers)
    assert score["counts"]["total"] == 3
    assert score["score"] == 81


async def test_batch_rejects_bad_events_by_index(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    batch = [
        event("request_sent"),
        event("x"),
        event("request_sent", "fatal"),
        event("request_sent", message="a\u0000b"),
        event("request_sent"),
    ]
    response = await client.post(
        f"/api/runs/{run_id}/events", json={"events": batch}, headers=agent.headers
    )
    assert response.status_code == 202
    data = response.json()["data"]
    assert data["accepted"] == 2
    assert [r["index"] for r in data["rejected"]] == [1, 2, 3]
    assert "severity" in data["rejected"][1]["message"]


async def test_gzip_batch_is_accepted(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    body = gzip.compress(msgspec.json.encode({"events": [event("request_sent")] * 10}))
    response = await client.post(
        f"/api/runs/{run_id}/events",
        content=body,
        headers={**agent.headers, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    assert response.json()["data"]["accepted"] == 10


async def test_gzip_bomb_is_rejected(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    bomb = gzip.compress(b'{"events": [' + b" " * (20 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100_000
    response = await client.post(
        f"/api/runs/{run_id}/events",
        content=bomb,
        headers={**agent.headers, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_finished_run_rejects_events(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    again = await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    assert again.status_code == 200
    response = await client.post(
        f"/api/runs/{run_id}/events", json=event("request_sent"), headers=agent.headers
    )
    assert response.status_code == 409
    assert response.json()["error"] == "run_finished"


async def test_other_projects_run_is_not_found(client: httpx.AsyncClient) -> None:
    owner = await new_agent(client)
    stranger = await new_agent(client)
    run_id = await create_run(client, owner)
    response = await client.post(
        f"/api/runs/{run_id}/events", json=event("request_sent"), headers=stranger.headers
    )
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"
    score = await client.get(f"/api/runs/{run_id}/score", headers=stranger.user)
    assert score.status_code == 404


async def test_run_state_reloads_after_redis_flush(
    client: httpx.AsyncClient, consumers: list[ShardConsumer], redis
) -> None:  # type: ignore[no-untyped-def]
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    await redis.flushdb()
    response = await client.post(
        f"/api/runs/{run_id}/events", json=event("request_sent"), headers=agent.headers
    )
    assert response.status_code == 202


async def test_missing_agent_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/runs", json={"target_url": "https://x.test", "scenario": "ab"}
    )
    assert response.status_code == 401
    body = response.json()
    assert body == {"success": False, "error": "unauthorized", "message": body["message"]}
    assert "X-Agent-Key" in body["message"]


async def test_project_scores_leave_out_cancelled_runs(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    scored = await create_run(client, agent)
    await client.post(
        f"/api/runs/{scored}/events",
        json=event("request_timeout", "warning"),
        headers=agent.headers,
    )
    await client.post(f"/api/runs/{scored}/finish", headers=agent.headers)
    await wait_settled(client, scored, agent.headers)
    cancelled = await create_run(client, agent)
    await client.post(
        f"/api/runs/{cancelled}/finish", json={"status": "cancelled"}, headers=agent.headers
    )
    response = await client.get(f"/api/projects/{agent.project_id}/scores", headers=agent.user)
    summary = response.json()["data"]
    assert summary["latest"]["run_id"] == scored
    assert summary["average_score"] == 87
    assert summary["final_runs"] == 1
    assert len(summary["trend"]) == 2


async def test_invalid_utf8_payload_rejects_only_its_event(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    body = (
        b'{"events":[{"event_id":"good","event_type":"request_timeout","severity":"warning"},'
        b'{"event_id":"bad","event_type":"ab","payload":{"note":"caf\xe9"}}]}'
    )
    response = await client.post(
        f"/api/runs/{run_id}/events",
        content=body,
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    data = response.json()["data"]
    assert data["accepted"] == 1
    assert [r["index"] for r in data["rejected"]] == [1]
    assert "UTF-8" in data["rejected"][0]["message"]
    await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    score = await wait_settled(client, run_id, agent.headers)
    assert score["counts"]["total"] == 1


async def test_report_with_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    response = await client.post(
        f"/api/runs/{run_id}/report",
        content=b'{"summary":"ok ok","raw_json":{"a":"\xff\xfe"}}',
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "raw_json" in response.json()["message"]


async def test_payload_is_stored_as_sent(
    client: httpx.AsyncClient, consumers: list[ShardConsumer]
) -> None:
    agent = await new_agent(client)
    run_id = await create_run(client, agent)
    payload = b'{"b":2,"a":1,"a":3,"n":1e300,"z":-0}'
    response = await client.post(
        f"/api/runs/{run_id}/events",
        content=b'{"event_type":"request_sent","payload":' + payload + b"}",
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    await client.post(f"/api/runs/{run_id}/finish", headers=agent.headers)
    await wait_settled(client, run_id, agent.headers)
    events = await client.get(f"/api/runs/{run_id}/events", headers=agent.headers)
    assert payload.decode() in events.text


async def test_charset_other_than_utf8_is_415(client: httpx.AsyncClient) -> None:
    user_headers = {"Content-Type": "application/json; charset=latin1"}
    response = await client.post("/api/auth/login", content=b"{}", headers=user_headers)
    assert response.status_code == 415
    assert "charset" in response.json()["message"]
