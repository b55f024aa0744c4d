from __future__ import annotations

import pytest

from core.scoring import Counters, grade_for, score_counters


def score_of(*events: tuple[str, str]) -> tuple[int, str]:
    result = score_counters(Counters.from_events(events))
    return result.score, result.grade


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((), (100, "A")),
        ((("request_timeout", "warning"),), (87, "B")),
        ((("data_loss_risk_detected", "critical"),), (50, "D")),
        ((("duplicate_detected", "error"),), (72, "C")),
        ((("recovery_failed", "error"),), (67, "C")),
        ((("request_timeout", "warning"),) * 3, (81, "B")),
        (
            (
                ("data_loss_risk_detected", "critical"),
                ("duplicate_detected", "error"),
                ("recovery_failed", "error"),
            ),
            (0, "F"),
        ),
    ],
)
def test_score_pinned_examples(
    events: tuple[tuple[str, str], ...], expected: tuple[int, str]
) -> None:
    assert score_of(*events) == expected


def test_score_severity_caps() -> None:
    assert score_of(*[("request_sent", "warning")] * 100) == (85, "B")
    assert score_of(*[("request_sent", "error")] * 100) == (76, "B")
    assert score_of(*[("request_sent", "critical")] * 100) == (70, "C")


def test_score_info_costs_nothing() -> None:
    assert score_of(*[("request_sent", "info")] * 1000) == (100, "A")


def test_score_risk_penalty_applies_once() -> None:
    assert score_of(*[("duplicate_detected", "info")] * 5) == (80, "B")


def test_score_clamps_at_zero() -> None:
    events = [
        ("data_loss_risk_detected", "critical"),
        ("duplicate_detected", "critical"),
        ("recovery_failed", "error"),
        ("request_timeout", "error"),
        ("x_other", "error"),
        ("x_other", "warning"),
    ] * 10
    assert score_of(*events) == (0, "F")


def test_score_risk_flags() -> None:
    result = score_counters(Counters.from_events([("request_timeout", "warning")]))
    assert result.risks == {
        "data_loss": False,
        "duplicate": False,
        "timeout": True,
        "recovery": False,
    }


def test_score_deductions_sum_to_penalty() -> None:
    result = score_counters(
        Counters.from_events([("duplicate_detected", "error"), ("request_timeout", "warning")])
    )
    assert sum(d.points for d in result.deductions) == 100 - result.score
    assert {d.reason.split(" ")[0] for d in result.deductions} == {
        "duplicate_detected",
        "request_timeout",
        "error",
        "warning",
    }


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        (100, "A"),
        (90, "A"),
        (89, "B"),
        (75, "B"),
        (74, "C"),
        (60, "C"),
        (59, "D"),
        (40, "D"),
        (39, "F"),
        (0, "F"),
    ],
)
def test_grade_boundaries(score: int, grade: str) -> None:
    assert grade_for(score) == grade
