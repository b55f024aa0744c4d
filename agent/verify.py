"""Read the target back and judge every logical write by what it really stored.

The verify URL is read directly, not through the proxy, once the faults healed.
Markers are searched anywhere in the response. In JSON, one stored item is the
innermost object that contains a marker, so an item that repeats its marker in two
fields still counts once. In text that is not JSON, every occurrence counts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from typing import Any

import httpx
import msgspec

from agent.client import Emit
from agent.ledger import WriteRecord

__all__ = ["VerificationError", "count_copies", "judge", "marker_pattern", "read_back"]

log = logging.getLogger(__name__)


class VerificationError(Exception):
    """The target could not be read back, so no write can be judged."""


def marker_pattern(run_tag: str) -> re.Pattern[str]:
    # Markers have a fixed width, so no marker is a prefix of another.
    return re.compile(rf"sa-{re.escape(run_tag)}-\d{{5}}")


async def read_back(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    tries: int = 5,
    timeout_s: float = 15.0,
) -> str:
    """GET the verify URL, retrying network errors and 5xx; return the response text."""
    problem = ""
    for attempt in range(1, tries + 1):
        try:
            response = await http.get(url, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 300:
                return response.text
            problem = f"status {response.status_code}: {response.text[:200]}"
            if response.status_code < 500:
                break
        log.warning("reading %s failed (attempt %d of %d): %s", url, attempt, tries, problem)
        await asyncio.sleep(0.2 * 2**attempt)
    raise VerificationError(f"GET {url} failed: {problem}")


def _walk(node: Any, pattern: re.Pattern[str]) -> Counter[str]:
    if isinstance(node, str):
        return Counter(pattern.findall(node))
    if isinstance(node, list):
        found: Counter[str] = Counter()
        for item in node:
            found.update(_walk(item, pattern))
        return found
    if isinstance(node, dict):
        nested: Counter[str] = Counter()
        direct: set[str] = set()
        for key, value in node.items():
            direct.update(pattern.findall(str(key)))
            if isinstance(value, str):
                direct.update(pattern.findall(value))
            else:
                nested.update(_walk(value, pattern))
        for marker in direct:
            # This object is the stored item unless a nested object already is.
            if marker not in nested:
                nested[marker] = 1
        return nested
    return Counter()


def count_copies(text: str, pattern: re.Pattern[str]) -> Counter[str]:
    """Count the stored copies of each marker in a read-back response."""
    try:
        document = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return Counter(pattern.findall(text))
    return _walk(document, pattern)


def judge(records: list[WriteRecord], copies: Counter[str], emit: Emit) -> None:
    """Set each write's copies and verdict, and emit an event for each finding."""
    for record in records:
        record.copies = copies.get(record.marker, 0)
        acknowledged = record.client_outcome == "acknowledged"
        if record.copies > 1:
            record.verdict = "duplicated"
        elif acknowledged:
            record.verdict = "ok" if record.copies == 1 else "lost"
        else:
            record.verdict = "stored_unacknowledged" if record.copies == 1 else "not_stored"
        _emit_finding(record, emit)


def _emit_finding(record: WriteRecord, emit: Emit) -> None:
    payload = {
        "marker": record.marker,
        "write": record.index,
        "copies": record.copies,
        "attempts": len(record.attempts),
        "client_outcome": record.client_outcome,
        "idempotency_key": record.idempotency_key,
    }
    if record.verdict == "duplicated":
        message = (
            f"{record.marker} stored {record.copies} times after {len(record.attempts)} attempts"
        )
        emit("duplicate_detected", "error", message, payload)
    elif record.verdict == "lost":
        message = f"{record.marker} was acknowledged but is not stored"
        emit("data_loss_risk_detected", "critical", message, payload)
    elif record.client_outcome in ("unknown", "failed", "rejected"):
        stored = "stored" if record.verdict == "stored_unacknowledged" else "not stored"
        message = (
            f"{record.marker}: the client never got an acknowledgement; the target has it {stored}"
        )
        emit("outcome_resolved", "info", message, payload)
