"""Helpers shared by the softadastra-agent tests; this module has no tests of its own.

Targets and the agent run as child processes on 127.0.0.1, as a user would run them,
while the cloud fixtures keep serving in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

__all__ = [
    "AgentResult",
    "ROOT",
    "free_port",
    "run_agent_cli",
    "sample_service",
    "serve_process",
    "wait_http",
]

ROOT = Path(__file__).resolve().parent.parent
AGENT_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, *, timeout_s: float = 30.0) -> None:
    """Wait until `url` returns any HTTP response."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def _open_log(path: Path) -> BinaryIO:
    return path.open("wb")


def _read_ledger(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    return dict(json.loads(path.read_text()))


@contextlib.asynccontextmanager
async def serve_process(
    command: Sequence[str], ready_url: str, log_path: Path, cwd: Path = ROOT
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a server as a child process until the block ends; stop it by its PID."""
    with _open_log(log_path) as log_file:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_http(ready_url)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def sample_service(mode: str, workdir: Path, *options: str) -> AsyncIterator[str]:
    """Start examples/sample_service.py in `mode` with `options`; yield its items URL."""
    port = free_port()
    command = [
        sys.executable,
        str(ROOT / "examples" / "sample_service.py"),
        "--mode",
        mode,
        "--port",
        str(port),
        *options,
    ]
    base = f"http://127.0.0.1:{port}"
    async with serve_process(command, f"{base}/health", workdir / f"sample-{mode}.log"):
        yield f"{base}/items"


@dataclass
class AgentResult:
    returncode: int
    stdout: str
    stderr: str
    ledger: dict[str, Any] | None

    def run_id(self) -> str:
        for line in self.stdout.splitlines():
            if line.startswith("run ") and "/api/runs/" in line:
                return line.split("/api/runs/")[1].split()[0]
        raise AssertionError(f"no run link in the output:\n{self.stdout}")


async def run_agent_cli(args: Sequence[str], ledger: Path | None = None) -> AgentResult:
    """Run `python -m agent.cli` with `args`; read the ledger file when one is named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTADASTRA_")}
    command = [sys.executable, "-m", "agent.cli", *args]
    if ledger is not None:
        command += ["--ledger", str(ledger)]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=AGENT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return AgentResult(process.returncode, stdout.decode(), stderr.decode(), _read_ledger(ledger))
