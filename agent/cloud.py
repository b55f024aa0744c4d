"""The Softadastra Cloud client: runs, gzip event batches, the report and the score.

Every request carries the agent key in `X-Agent-Key`. A 429 or 503 is retried after
its Retry-After delay, and network errors are retried with backoff. When either kind
of retry runs out, `CloudUnavailable` signals the caller to spool the events instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import time
from typing import Any

import httpx
import msgspec

__all__ = [
    "CloudClient",
    "CloudError",
    "CloudUnavailable",
    "EventOut",
    "ReportBody",
    "RunCreateBody",
]

log = logging.getLogger(__name__)

# A longer Retry-After than this is cut short, so a run does not wait for minutes.
MAX_RETRY_AFTER_S = 30.0
FINAL_STATUSES = ("finished", "failed", "cancelled")


class EventOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event as the cloud's append route takes it."""

    event_id: str
    event_type: str
    severity: str = "info"
    message: str = ""
    payload: dict[str, Any] | None = None
    occurred_at: dt.datetime


class EventBatchBody(msgspec.Struct):
    events: list[EventOut]


class RunCreateBody(msgspec.Struct, kw_only=True):
    target_url: str
    method: str
    scenario: str


class ReportBody(msgspec.Struct, kw_only=True):
    summary: str
    # The ledger, already encoded as JSON.
    raw_json: msgspec.Raw


class CloudUnavailable(Exception):
    """The cloud did not respond, or stayed busy, after every retry."""


class CloudError(Exception):
    """The cloud responded with an error that retrying cannot fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


_encoder = msgspec.json.Encoder()


def _retry_after(response: httpx.Response) -> float:
    try:
        delay = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        delay = 1.0
    return min(MAX_RETRY_AFTER_S, max(0.0, delay))


def _error_of(response: httpx.Response) -> CloudError:
    try:
        body = response.json()
        return CloudError(response.status_code, str(body.get("error")), str(body.get("message")))
    except ValueError:
        return CloudError(response.status_code, "unexpected_response", response.text[:200])


class CloudClient:
    def __init__(
        self,
        url: str,
        key: str,
        *,
        network_tries: int = 4,
        busy_tries: int = 8,
        timeout_s: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s, headers={"X-Agent-Key": key}
        )
        self._network_tries = network_tries
        self._busy_tries = busy_tries

    async def aclose(self) -> None:
        await self._http.aclose()

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/api/runs/{run_id}"

    async def create_run(self, body: RunCreateBody) -> str:
        # NOTE: run creation has no idempotency key in the API, so a retry after a
        # lost response can leave an empty extra run behind.
        data = await self._request("POST", "/api/runs", _encoder.encode(body))
        return str(data["id"])

    async def run_status(self, run_id: str) -> str | None:
        """Return the run's status, or None when the cloud has no such run."""
        try:
            data = await self._request("GET", f"/api/runs/{run_id}", None)
        except CloudError as exc:
            if exc.status == 404:
                return None
            raise
        return str(data["status"])

    async def send_events(self, run_id: str, events: list[EventOut]) -> int:
        """Append a batch, gzip-compressed; return how many events were accepted."""
        body = gzip.compress(_encoder.encode(EventBatchBody(events)), compresslevel=6)
        data = await self._request("POST", f"/api/runs/{run_id}/events", body, gzipped=True)
        for rejection in data.get("rejected", []):
            # A rejected event fails validation again if re-sent, so it is only logged.
            index = rejection.get("index", 0)
            event_id = events[index].event_id if 0 <= index < len(events) else "?"
            log.warning("cloud rejected event %s: %s", event_id, rejection.get("message"))
        return int(data.get("accepted", 0))

    async def submit_report(self, run_id: str, report: ReportBody) -> None:
        body = gzip.compress(_encoder.encode(report), compresslevel=6)
        await self._request("POST", f"/api/runs/{run_id}/report", body, gzipped=True)

    async def finish(self, run_id: str, status: str = "finished") -> None:
        await self._request(
            "POST", f"/api/runs/{run_id}/finish", _encoder.encode({"status": status})
        )

    async def wait_score(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        """Poll the run's score until it is settled or `timeout_s` passed; return the last one."""
        deadline = time.monotonic() + timeout_s
        while True:
            score = await self._request("GET", f"/api/runs/{run_id}/score", None)
            if score.get("settled") or time.monotonic() >= deadline:
                return dict(score)
            await asyncio.sleep(0.2)

    async def _request(
        self, method: str, path: str, body: bytes | None, *, gzipped: bool = False
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        network_failures = busy_answers = 0
        while True:
            response, problem = await self._send_once(method, path, body, headers)
            if response is None:
                network_failures += 1
                if network_failures >= self._network_tries:
                    raise CloudUnavailable(f"{method} {path}: {problem}")
                delay = 0.5 * 2 ** (network_failures - 1)
                log.warning("%s %s failed (%s); retrying in %.1f s", method, path, problem, delay)
            elif response.status_code in (429, 503):
                busy_answers += 1
                if busy_answers >= self._busy_tries:
                    raise CloudUnavailable(f"{method} {path}: still {response.status_code}")
                delay = _retry_after(response)
                log.warning(
                    "%s %s returned %d; retrying after %.1f s",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
            elif response.status_code >= 400:
                raise _error_of(response)
            else:
                return dict(response.json().get("data") or {})
            await asyncio.sleep(delay)

    async def _send_once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[httpx.Response | None, str]:
        """Send one request; return no response for errors worth retrying with backoff."""
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.TransportError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        # A gateway in front of the cloud may return these while the cloud restarts.
        if response.status_code in (500, 502, 504):
            return None, f"status {response.status_code}"
        return response, ""
