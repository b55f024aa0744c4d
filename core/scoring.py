"""The reliability score of a run, as a pure function of its counters.

Because the score depends only on counts, workers keep the counters up to date in
the transaction that inserts events, and anyone can recompute the same score from
the events table.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schema.responses import Deduction

__all__ = ["RISK_FLAGS", "Counters", "Deduction", "Score", "grade_for", "score_counters"]

SEVERITIES = ("info", "warning", "error", "critical")

# Event type -> (risk flag, one-off penalty). The penalty applies once per run.
RISK_TYPES: dict[str, tuple[str, int]] = {
    "data_loss_risk_detected": ("data_loss", 35),
    "duplicate_detected": ("duplicate", 20),
    "request_timeout": ("timeout", 10),
    "recovery_failed": ("recovery", 25),
}
RISK_FLAGS = tuple(flag for flag, _ in RISK_TYPES.values())

# Severity -> (penalty per event, maximum total penalty).
SEVERITY_PENALTIES: dict[str, tuple[int, int]] = {
    "critical": (15, 30),
    "error": (8, 24),
    "warning": (3, 15),
}

GRADE_FLOORS = (("A", 90), ("B", 75), ("C", 60), ("D", 40))


class Counters(msgspec.Struct, kw_only=True):
    """Event counts of one run: per severity and per risk type."""

    info: int = 0
    warning: int = 0
    error: int = 0
    critical: int = 0
    data_loss: int = 0
    duplicate: int = 0
    timeout: int = 0
    recovery: int = 0

    @property
    def total(self) -> int:
        return self.info + self.warning + self.error + self.critical

    def add(self, event_type: str, severity: str, count: int = 1) -> None:
        setattr(self, severity, getattr(self, severity) + count)
        risk = RISK_TYPES.get(event_type)
        if risk is not None:
            setattr(self, risk[0], getattr(self, risk[0]) + count)

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, str]]) -> Counters:
        """Count `(event_type, severity)` pairs from scratch."""
        counters = cls()
        for event_type, severity in events:
            counters.add(event_type, severity)
        return counters


class Score(msgspec.Struct):
    score: int
    grade: str
    risks: dict[str, bool]
    deductions: list[Deduction]


def grade_for(score: int) -> str:
    for grade, floor in GRADE_FLOORS:
        if score >= floor:
            return grade
    return "F"


def score_counters(counters: Counters) -> Score:
    """Score a run: 100 minus risk penalties and capped severity penalties, clamped."""
    deductions: list[Deduction] = []
    for event_type, (flag, points) in RISK_TYPES.items():
        count = getattr(counters, flag)
        if count:
            deductions.append(
                Deduction(f"{event_type} occurred", points, count, event_type=event_type)
            )
    for severity, (each, cap) in SEVERITY_PENALTIES.items():
        count = getattr(counters, severity)
        if count:
            points = min(each * count, cap)
            deductions.append(
                Deduction(
                    f"{severity} events: {each} each, at most {cap}",
                    points,
                    count,
                    severity=severity,
                )
            )
    score = max(0, min(100, 100 - sum(d.points for d in deductions)))
    risks = {flag: getattr(counters, flag) > 0 for flag, _ in RISK_TYPES.values()}
    return Score(score=score, grade=grade_for(score), risks=risks, deductions=deductions)
