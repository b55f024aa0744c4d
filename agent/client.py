"""The agent's HTTP client: logical writes with a timeout, retries and backoff.

It behaves like a typical API client: each attempt has a total timeout, error
statuses worth retrying and network errors are retried with exponential backoff,
and an optional idempotency-key header stays the same across the attempts of one
logical write. Every attempt goes through the fault proxy on its own connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from agent.ledger import Attempt, AttemptOutcome, WriteRecord
from agent.proxy import FaultProxy, Ticket
from agent.scenarios import RetryBudget, Scenario, fault_for

__all__ = ["Emit", "RetryPolicy", "WriteTarget", "Writer", "MARKER_PLACEHOLDER"]

log = logging.getLogger(__name__)

MARKER_PLACEHOLDER = "{{marker}}"
# Statuses that mean "try again later". Every other 4xx is final.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Backoff jitter only lengthens a delay, by up to this fraction, so the retry budget
# that partitions are sized against is a lower bound.
BACKOFF_JITTER = 0.25

Emit = Callable[[str, str, str, dict[str, Any]], None]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    timeout_s: float = 1.0
    retries: int = 4
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0

    def budget(self) -> RetryBudget:
        return RetryBudget(self.timeout_s, self.retries, self.backoff_s, self.backoff_max_s)


@dataclasses.dataclass(frozen=True)
class WriteTarget:
    url: str
    method: str
    # Extra request headers such as the target's own credentials; never logged.
    headers: dict[str, str]
    body_template: str
    idempotency_header: str | None = None


def _proxied(url: str, proxy_port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(("http", f"127.0.0.1:{proxy_port}", parts.path or "/", parts.query, ""))


def _classify_status(status: int) -> AttemptOutcome:
    if 200 <= status < 300:
        return "acknowledged"
    if status in RETRYABLE_STATUSES or status >= 500:
        return "http_error"
    return "rejected"


def _is_refused(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class Writer:
    """Perform logical writes against the target through the fault proxy."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        proxy: FaultProxy,
        target: WriteTarget,
        policy: RetryPolicy,
        scenario: Scenario,
        seed: int,
        emit: Emit,
    ) -> None:
        self._http = http
        self._proxy = proxy
        self._target = target
        self._policy = policy
        self._scenario = scenario
        self._seed = seed
        self._emit = emit
        self._url = _proxied(target.url, proxy.port)
        # The target receives its own host name, so virtual hosts keep working.
        self._host = urlsplit(target.url).netloc
        self._tickets: list[tuple[Attempt, Ticket]] = []

    def idempotency_key(self, marker: str) -> str | None:
        if self._target.idempotency_header is None:
            return None
        return str(uuid.uuid5(uuid.NAMESPACE_URL, marker))

    async def write(self, index: int, marker: str) -> WriteRecord:
        """Send one logical write, retrying until acknowledged, rejected or out of tries."""
        record = WriteRecord(
            index=index, marker=marker, idempotency_key=self.idempotency_key(marker)
        )
        for number in range(1, self._policy.retries + 2):
            attempt = await self._attempt(record, number)
            record.attempts.append(attempt)
            if attempt.outcome == "acknowledged":
                record.client_outcome = "acknowledged"
                if number > 1:
                    self._emit_for(
                        record, "recovery_succeeded", "info", f"acknowledged on attempt {number}"
                    )
                return record
            if attempt.outcome == "rejected":
                record.client_outcome = "rejected"
                self._emit_rejected(record, attempt)
                return record
            if number <= self._policy.retries:
                await self._back_off(record, attempt)
        last = record.attempts[-1]
        record.client_outcome = "failed" if last.outcome == "http_error" else "unknown"
        self._emit_for(
            record,
            "recovery_failed",
            "error",
            f"no acknowledgement after {len(record.attempts)} attempts (last: {last.outcome})",
        )
        return record

    def collect_server_statuses(self) -> None:
        """Copy what the proxy saw into the attempts; call after the network settled.

        A delayed response can reach the proxy after the client gave up, so the
        target's status of an attempt is only final once its connection closed.
        """
        for attempt, ticket in self._tickets:
            attempt.server_status = ticket.server_status

    async def _attempt(self, record: WriteRecord, number: int) -> Attempt:
        fault = fault_for(self._scenario, self._seed, record.index, number, self._policy.timeout_s)
        ticket = self._proxy.arm(fault)
        partition = self._proxy.partition_mode
        fault_name = f"partition:{partition}" if partition else fault.kind
        self._emit_for(
            record,
            "request_sent",
            "info",
            f"{self._target.method} attempt {number}",
            attempt=number,
            fault=fault_name,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome, status, error = await self._send(record)
        attempt = Attempt(
            number=number,
            fault=fault_name,
            outcome=outcome,
            status=status,
            elapsed_ms=round((loop.time() - started) * 1000),
            error=error,
        )
        self._tickets.append((attempt, ticket))
        self._report_failure(record, attempt)
        return attempt

    async def _send(self, record: WriteRecord) -> tuple[AttemptOutcome, int | None, str]:
        headers = httpx.Headers({"Content-Type": "application/json"})
        # update() replaces case-insensitively, so --header may override the content type.
        headers.update(self._target.headers)
        headers["Host"] = self._host
        if record.idempotency_key is not None and self._target.idempotency_header:
            headers[self._target.idempotency_header] = record.idempotency_key
        body = self._target.body_template.replace(MARKER_PLACEHOLDER, record.marker)
        try:
            async with asyncio.timeout(self._policy.timeout_s):
                response = await self._http.request(
                    self._target.method, self._url, content=body.encode(), headers=headers
                )
        except (TimeoutError, httpx.TimeoutException):
            return "timeout", None, f"no response within {self._policy.timeout_s:g} s"
        except httpx.ConnectError as exc:
            outcome: AttemptOutcome = "refused" if _is_refused(exc) else "error"
            return outcome, None, str(exc) or type(exc).__name__
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            return "reset", None, str(exc) or type(exc).__name__
        except httpx.HTTPError as exc:
            return "error", None, str(exc) or type(exc).__name__
        return _classify_status(response.status_code), response.status_code, ""

    def _report_failure(self, record: WriteRecord, attempt: Attempt) -> None:
        extra = {"attempt": attempt.number, "fault": attempt.fault, "error": attempt.error}
        if attempt.outcome == "timeout":
            self._emit_for(record, "request_timeout", "warning", attempt.error, **extra)
        elif attempt.outcome == "reset":
            message = f"connection closed before the response: {attempt.error}"
            self._emit_for(record, "connection_reset", "warning", message, **extra)
        elif attempt.outcome == "refused":
            self._emit_for(record, "connection_refused", "warning", "connection refused", **extra)
        elif attempt.outcome == "http_error":
            message = f"the target returned {attempt.status}"
            self._emit_for(
                record, "request_failed", "warning", message, status=attempt.status, **extra
            )
        elif attempt.outcome == "error":
            self._emit_for(record, "request_error", "warning", attempt.error, **extra)

    def _emit_rejected(self, record: WriteRecord, attempt: Attempt) -> None:
        # A fresh write refused with a 4xx usually means a wrong body, URL or
        # credentials. A refused replay may be the target's own duplicate guard (a
        # 409 for a key it already saw), and the read-back decides what it stored.
        severity = "error" if attempt.number == 1 else "warning"
        message = f"the target rejected attempt {attempt.number} with {attempt.status}"
        self._emit_for(record, "request_rejected", severity, message, status=attempt.status)
        log.warning("%s: %s", record.marker, message)

    async def _back_off(self, record: WriteRecord, attempt: Attempt) -> None:
        policy = self._policy
        base = min(policy.backoff_max_s, policy.backoff_s * 2 ** (attempt.number - 1))
        rng = random.Random(f"{self._seed}:backoff:{record.index}:{attempt.number}")
        delay = base * (1 + BACKOFF_JITTER * rng.random())
        attempt.backoff_ms = round(delay * 1000)
        self._emit_for(
            record,
            "retry_started",
            "info",
            f"retrying after {attempt.outcome}, in {attempt.backoff_ms} ms",
            attempt=attempt.number + 1,
            backoff_ms=attempt.backoff_ms,
        )
        await asyncio.sleep(delay)

    def _emit_for(
        self, record: WriteRecord, event_type: str, severity: str, message: str, **payload: Any
    ) -> None:
        self._emit(
            event_type,
            severity,
            f"{record.marker}: {message}",
            {"marker": record.marker, "write": record.index, **payload},
        )
