"""Latency of the API reads behind the dashboard, on a large project and a small one.

    uv run python -m benchmarks.dashboard_reads [--runs 10000] [--projects 12] [--requests 30]

Starts embedded PostgreSQL and Redis under a temporary directory and serves the api
in this process on a free loopback port. One user owns `--projects` projects of
`--runs` runs each, plus one project of 10 runs. The runs go straight into the
tables, with score rows of which some are flagged, and the tables are then
vacuumed and analysed.

Each read the dashboard makes is timed `--requests` times, one request at a time,
on the oldest large project (the one whose runs lie furthest from the newest ids)
and on the small project. Their ratio shows whether a read depends on project size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import uvicorn

from api.app import build_api_app
from benchmarks.harness import free_port
from core.config import Settings
from core.embedded import EmbeddedPostgres, EmbeddedRedis
from schema.migrate import apply_migrations

_FILL = """
WITH new_runs AS (
    INSERT INTO runs (public_id, project_id, status, target_url, method, scenario,
                      started_at, finished_at)
    SELECT 'run_' || md5(random()::text || n), $1,
           (ARRAY['finished', 'failed', 'running', 'cancelled'])[1 + n % 4],
           'https://orders.example.com/orders', 'POST', 'scenario_' || n, now(), now()
    FROM generate_series(1, $2) AS n
    RETURNING id
)
INSERT INTO run_scores (run_id, project_id, data_loss, duplicate, score, grade)
SELECT id, $1, (id % 7 = 0)::int, (id % 11 = 0)::int, 50, 'D' FROM new_runs
"""


def _reads(project_id: str, runs: int) -> dict[str, tuple[str, dict[str, object]]]:
    last_page = max(0, (runs - 1) // 25 * 25)
    return {
        "project scores (trend of 20, totals)": (
            f"/api/projects/{project_id}/scores",
            {"last": 20},
        ),
        "runs, first page": ("/api/runs", {"project_id": project_id, "limit": 25}),
        "runs, last page": (
            "/api/runs",
            {"project_id": project_id, "limit": 25, "offset": last_page},
        ),
        "runs flagged data_loss": (
            "/api/runs",
            {"project_id": project_id, "limit": 25, "flag": "data_loss"},
        ),
        "runs failed and flagged duplicate": (
            "/api/runs",
            {"project_id": project_id, "limit": 25, "status": "failed", "flag": "duplicate"},
        ),
    }


async def _time(http: httpx.AsyncClient, path: str, params: dict, requests: int) -> list[float]:  # type: ignore[type-arg]
    timings = []
    for _ in range(requests):
        began = time.perf_counter()
        response = await http.get(path, params=params)
        timings.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return sorted(timings)


async def _fill(database_url: str, user: dict[str, str], url: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=url, headers=user, timeout=60) as http:
        sizes = [args.runs] * args.projects + [10]
        ids = []
        for index, _ in enumerate(sizes):
            created = await http.post("/api/projects", json={"name": f"Project {index}"})
            created.raise_for_status()
            ids.append(created.json()["data"]["id"])
    conn = await asyncpg.connect(database_url)
    try:
        for project_id, size in zip(ids, sizes, strict=True):
            key = await conn.fetchval("SELECT id FROM projects WHERE public_id = $1", project_id)
            await conn.execute(_FILL, key, size)
            print(f"  filled {project_id} with {size:,} runs", flush=True)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return ids[0], ids[-1]


async def measure(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="softadastra-dashboard-"))
    postgres = EmbeddedPostgres(directory / "postgres")
    redis = EmbeddedRedis(directory / "redis")
    database_url = postgres.start()
    redis_url = redis.start()
    try:
        conn = await asyncpg.connect(database_url)
        await apply_migrations(conn)
        await conn.close()
        port = free_port()
        settings = Settings(
            environment="test",
            database_url=database_url,
            redis_url=redis_url,
            jwt_secret="dashboard-benchmark-" + "j" * 32,
            agent_api_key_secret="dashboard-benchmark-" + "k" * 32,
            port=port,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                build_api_app(settings), host="127.0.0.1", port=port, log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            registered = await http.post(
                "/api/auth/register",
                json={
                    "email": "bench@example.com",
                    "password": "benchmark-password",
                    "name": "Bench",
                },
            )
            registered.raise_for_status()
            user = {"Authorization": f"Bearer {registered.json()['data']['token']}"}
        print(f"filling {args.projects} projects of {args.runs:,} runs and one of 10", flush=True)
        large, small = await _fill(database_url, user, url, args)

        print(f"\n{'read':40} {'large p50':>10} {'p90':>8} {'small p50':>10} {'ratio':>6}")
        async with httpx.AsyncClient(base_url=url, headers=user, timeout=60) as http:
            small_reads = _reads(small, 10)
            for name, (path, params) in _reads(large, args.runs).items():
                big = await _time(http, path, params, args.requests)
                little = await _time(http, *small_reads[name], args.requests)
                ratio = statistics.median(big) / statistics.median(little)
                print(
                    f"{name:40} {statistics.median(big):8.1f}ms {big[int(len(big) * 0.9)]:6.1f}ms"
                    f" {statistics.median(little):8.1f}ms {ratio:6.2f}",
                    flush=True,
                )
        server.should_exit = True
        await serving
    finally:
        redis.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs per large project")
    parser.add_argument("--projects", type=int, default=12, help="large projects")
    parser.add_argument("--requests", type=int, default=30, help="requests per read")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
