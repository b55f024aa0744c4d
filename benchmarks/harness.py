"""Start and stop what the benchmarks measure: embedded servers and service processes.

Every child process is recorded in a `ProcessRegistry` and stopped by its PID, first
with SIGTERM and then SIGKILL. The top-level `try/finally` in `__main__` calls
`ProcessRegistry.stop_all()`, so an error or Ctrl-C leaves nothing running.
Children start in their own session, so a terminal's Ctrl-C reaches only the
benchmark, which then stops them in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
import redis.exceptions

from benchmarks.snapshot import snapshot_code
from core import streams
from core.embedded import EmbeddedPostgres, EmbeddedRedis

__all__ = [
    "REPO_ROOT",
    "SHARDS",
    "Backends",
    "CpuMeter",
    "ProcessRegistry",
    "ServiceProcess",
    "free_port",
    "stop_processes",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 45.0
READY_TIMEOUT_S = 60.0
SHARDS = 4


def free_port() -> int:
    """Return a loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_status_kib(pid: int, field: str) -> int:
    """Read a `kB` field such as VmHWM or VmRSS from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Busy share of all cores between `start()` and `busy_cores()`, from /proc/stat."""

    def __init__(self) -> None:
        self._busy = self._total = 0.0

    @staticmethod
    def _snapshot() -> tuple[float, float]:
        fields = [
            float(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]
        ]
        idle = fields[3] + fields[4]  # idle, iowait
        total = sum(fields[:8])
        return total - idle, total

    def start(self) -> CpuMeter:
        self._busy, self._total = self._snapshot()
        return self

    def busy_cores(self) -> float:
        """Cores kept busy on average since `start()` (2.0 means both of 2 cores)."""
        busy, total = self._snapshot()
        if total == self._total:
            return 0.0
        return (busy - self._busy) / (total - self._total) * (os.cpu_count() or 1)


class ServiceProcess:
    """One child process with its log file, stopped by PID."""

    def __init__(
        self,
        registry: ProcessRegistry,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = registry.log_dir / f"{name}-{len(registry.started)}.log"
        self._registry = registry
        with open(self.log_path, "wb") as log_file:
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=registry.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        registry.started.append(self)
        log.debug("started %s, pid %d, log %s", name, self.popen.pid, self.log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} serves no HTTP port"
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        return _read_status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return _read_status_kib(self.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with code {self.popen.returncode}; "
                f"see {self.log_path}"
            )

    async def wait_http_ready(self, path: str = "/health") -> None:
        """Poll `path` until it returns 200, or raise when the process exits or times out."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if (await client.get(path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(
            f"{self.name} did not return 200 on {path} within {READY_TIMEOUT_S:.0f} s; "
            f"see {self.log_path}"
        )

    def terminate(self) -> None:
        """Send SIGTERM without waiting; `stop()` then waits."""
        if self.popen.poll() is None:
            # A paused process would not act on SIGTERM until it is continued.
            os.kill(self.pid, signal.SIGCONT)
            self.popen.terminate()

    def stop(self) -> None:
        """Stop with SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`."""
        if self in self._registry.started:
            self._registry.started.remove(self)
        self.terminate()
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.pid)
            self.popen.kill()
            self.popen.wait()


def stop_processes(processes: Sequence[ServiceProcess]) -> None:
    """Stop several processes at once: SIGTERM to all, then wait for each."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


class ProcessRegistry:
    """The child processes started so far, stopped in reverse order by `stop_all`."""

    def __init__(self, log_dir: Path, code_dir: Path) -> None:
        self.log_dir = log_dir
        self.code_dir = code_dir  # where the processes import the service code from
        self.started: list[ServiceProcess] = []

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            try:
                process.terminate()
            except OSError as exc:
                log.error("signalling %s (pid %d) failed: %r", process.name, process.pid, exc)
        for process in reversed(list(self.started)):
            try:
                process.stop()
            except OSError as exc:
                log.error("stopping %s (pid %d) failed: %r", process.name, process.pid, exc)


class Backends:
    """Embedded PostgreSQL and Redis under a temporary directory, plus service settings.

    The secrets are generated here and passed to every service process, so tokens
    and agent keys made by one process are valid in the others. The processes run
    the copy of the code that `snapshot_code` takes here, from `code_dir`.
    """

    def __init__(self, *, keep_dir: bool = False) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="softadastra-bench-"))
        self.keep_dir = keep_dir
        self.code_dir = self.directory / "code"
        self.code_version = snapshot_code(REPO_ROOT, self.code_dir)
        self.registry = ProcessRegistry(self.directory / "logs", self.code_dir)
        self.registry.log_dir.mkdir()
        self._postgres = EmbeddedPostgres(self.directory / "postgres")
        self._redis = EmbeddedRedis(self.directory / "redis")
        self.database_url = ""
        self.redis_url = ""
        self.jwt_secret = secrets.token_hex(32)
        self.agent_key_secret = secrets.token_hex(32)

    def start(self) -> None:
        self.database_url = self._postgres.start()
        self.redis_url = self._redis.start()

    def stop(self) -> None:
        """Stop every child process, then Redis and PostgreSQL, then remove the directory."""
        self.registry.stop_all()
        self._redis.stop()
        self._postgres.stop()
        if self.keep_dir:
            print(f"kept logs and data in {self.directory}", flush=True)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)

    def service_env(self, **overrides: str) -> dict[str, str]:
        """Environment of a `softadastra-cloud` process bound to these servers."""
        env = dict(os.environ)
        python_path = [str(self.code_dir), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            # Ahead of the editable install's path entry, so the snapshot is imported.
            PYTHONPATH=os.pathsep.join(python_path),
            CLOUD_DATABASE_URL=self.database_url,
            CLOUD_REDIS_URL=self.redis_url,
            CLOUD_JWT_SECRET=self.jwt_secret,
            CLOUD_AGENT_API_KEY_SECRET=self.agent_key_secret,
            CLOUD_DATA_DIR=str(self.directory / "data"),
            CLOUD_STREAM_SHARDS=str(SHARDS),
            CLOUD_LOG_LEVEL="INFO",
        )
        env.update(overrides)
        return env

    def _cli(self) -> str:
        return str(Path(sys.executable).parent / "softadastra-cloud")

    def migrate(self) -> None:
        subprocess.run(
            [self._cli(), "migrate"],
            env=self.service_env(),
            cwd=self.code_dir,
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )

    async def start_http_service(self, command: str, **env: str) -> ServiceProcess:
        """Start `softadastra-cloud ingest` or `api` on a free port and wait for /health."""
        port = free_port()
        process = ServiceProcess(
            self.registry,
            command,
            [self._cli(), command],
            self.service_env(SERVER_PORT=str(port), **env),
            port=port,
        )
        await process.wait_http_ready()
        return process

    async def start_uvicorn_app(self, name: str, app: str, **env: str) -> ServiceProcess:
        """Start a Starlette app of this package under uvicorn, as the services run."""
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        process = ServiceProcess(self.registry, name, argv, self.service_env(**env), port=port)
        await process.wait_http_ready()
        return process

    async def start_workers(self, count: int, client: aioredis.Redis) -> list[ServiceProcess]:
        """Start `count` worker processes; return once each has a consumer on every shard."""
        # Each worker serves its metrics on a port of its own, as one per host would;
        # the default fixed port could be taken by another process on this machine.
        workers = [
            ServiceProcess(
                self.registry,
                "worker",
                [self._cli(), "worker"],
                self.service_env(CLOUD_WORKER_METRICS_PORT=str(free_port())),
            )
            for _ in range(count)
        ]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in workers:
            while not await _has_consumers(client, worker.pid):
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"worker pid {worker.pid} registered no stream consumers within "
                        f"{READY_TIMEOUT_S:.0f} s; see {worker.log_path}"
                    )
                await asyncio.sleep(0.05)
        return workers

    async def connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.database_url)
        # jsonb as JSON text both ways, as the services' own pools do.
        for type_name in ("json", "jsonb"):
            await conn.set_type_codec(
                type_name, encoder=str, decoder=str, schema="pg_catalog", format="text"
            )
        return conn

    def redis_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.redis_url, socket_timeout=30)


async def _has_consumers(client: aioredis.Redis, pid: int) -> bool:
    """Return whether worker `pid` has read from every shard (consumer names hold the PID)."""
    marker = f"-{pid}-s"
    for shard in range(SHARDS):
        key = streams.StreamKeys(shard).events
        try:
            consumers = await client.xinfo_consumers(key, streams.CONSUMER_GROUP)
        except redis.exceptions.ResponseError:
            return False
        names = [_text(consumer["name"]) for consumer in consumers]
        if not any(marker in name for name in names):
            return False
    return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
