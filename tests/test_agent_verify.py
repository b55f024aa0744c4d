"""Counting stored copies of markers and judging each logical write."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from agent.ledger import Attempt, WriteRecord, tally
from agent.verify import count_copies, judge, marker_pattern

PATTERN = marker_pattern("abcd1234")
FIRST = "sa-abcd1234-00001"
SECOND = "sa-abcd1234-00002"
TENTH = "sa-abcd1234-00010"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'[{{"id": 1, "title": "{FIRST}"}}, {{"id": 2, "title": "{FIRST}"}}]', {FIRST: 2}),
        # One item repeating its marker in two fields is one copy.
        (f'[{{"title": "{FIRST}", "note": "x {FIRST}"}}]', {FIRST: 1}),
        # The innermost object with the marker is the item.
        (f'{{"data": [{{"id": 1, "body": {{"title": "{FIRST}"}}}}]}}', {FIRST: 1}),
        (f'{{"title": "{FIRST}", "meta": {{"note": "{FIRST}"}}}}', {FIRST: 1}),
        (f'["{FIRST}", "{FIRST}", "{SECOND}"]', {FIRST: 2, SECOND: 1}),
        (f"not json {FIRST} and {FIRST}", {FIRST: 2}),
        (f'[{{"title": "{TENTH}"}}]', {TENTH: 1}),
        ('[{"title": "sa-other000-00001"}]', {}),
        ("[]", {}),
    ],
)
def test_count_copies(text: str, expected: dict[str, int]) -> None:
    assert count_copies(text, PATTERN) == Counter(expected)


def _record(index: int, outcome: str) -> WriteRecord:
    attempt = Attempt(number=1, fault="none", outcome="acknowledged", status=201)
    record = WriteRecord(index=index, marker=f"sa-abcd1234-{index:05d}", attempts=[attempt])
    record.client_outcome = outcome  # type: ignore[assignment]
    return record


def test_judge_sets_verdicts_and_events() -> None:
    records = [
        _record(1, "acknowledged"),
        _record(2, "acknowledged"),
        _record(3, "acknowledged"),
        _record(4, "unknown"),
        _record(5, "unknown"),
        _record(6, "unknown"),
    ]
    copies = Counter(
        {
            "sa-abcd1234-00001": 1,
            "sa-abcd1234-00003": 3,
            "sa-abcd1234-00004": 1,
            "sa-abcd1234-00006": 2,
        }
    )

    emitted: list[tuple[str, str, dict[str, Any]]] = []
    judge(
        records,
        copies,
        lambda kind, severity, _msg, payload: emitted.append((kind, severity, payload)),
    )
    assert [r.verdict for r in records] == [
        "ok",
        "lost",
        "duplicated",
        "stored_unacknowledged",
        "not_stored",
        "duplicated",
    ]

    kinds = [(kind, severity) for kind, severity, _ in emitted]
    assert kinds == [
        ("data_loss_risk_detected", "critical"),
        ("duplicate_detected", "error"),
        ("outcome_resolved", "info"),
        ("outcome_resolved", "info"),
        ("duplicate_detected", "error"),
    ]
    assert emitted[1][2]["copies"] == 3

    counts = tally(records)
    assert counts.acknowledged == 3
    assert counts.unknown == 3
    assert counts.lost == 1
    assert counts.duplicated == 2
    assert counts.extra_copies == 3
    assert counts.stored_unacknowledged == 1
    assert counts.not_stored == 1
