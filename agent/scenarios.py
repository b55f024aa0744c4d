"""Named failure scenarios and the seeded fault plan behind each.

A fault is drawn for each (logical write, attempt) pair from its own
`random.Random`, seeded with the run seed, the scenario and both numbers. The fault
of one attempt therefore never depends on how earlier attempts went, so a run with
the same seed injects the same faults into the same attempts.

Durations scale with the client's timeout and retry budget. A held response always
outlasts the timeout. A partition lasts most of the retry budget, so a client with
that policy survives it, and a `recovery_failed` points at more than the planned
outage.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

import msgspec

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "Partition",
    "RetryBudget",
    "SCENARIOS",
    "Scenario",
    "fault_for",
    "partitions_for",
]

FaultKind = Literal[
    "none", "hold_response", "reset_after_forward", "reset_before_forward", "blackhole"
]
FAULT_KINDS: tuple[str, ...] = (
    "none",
    "hold_response",
    "reset_after_forward",
    "reset_before_forward",
    "blackhole",
)
PartitionMode = Literal["refuse", "blackhole"]

# A held response is released this many client timeouts after the server responded,
# so the client has surely given up.
HOLD_TIMEOUTS = 2.0


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """Action of the proxy on one connection."""

    kind: FaultKind = "none"
    # One-way delay added to every chunk in each direction, in seconds.
    latency_s: float = 0.0
    # Extra delay of the first response chunk, in seconds (hold_response only).
    hold_s: float = 0.0


class Partition(msgspec.Struct, frozen=True, kw_only=True):
    """A window in which every new connection is refused or black-holed."""

    mode: PartitionMode
    # The partition starts when this logical write (numbered from 1) begins.
    start_write: int
    duration_s: float


@dataclasses.dataclass(frozen=True)
class RetryBudget:
    """The client's retry policy, as far as scenario durations depend on it."""

    timeout_s: float
    retries: int
    backoff_s: float
    backoff_max_s: float

    def backoff_total_s(self) -> float:
        """Return the sum of the backoff delays before jitter, which only lengthens them."""
        return sum(min(self.backoff_max_s, self.backoff_s * 2**n) for n in range(self.retries))


@dataclasses.dataclass(frozen=True)
class PartitionSpec:
    mode: PartitionMode
    # Start of the partition, as a fraction of the writes.
    start_fraction: float
    # How much of the retry budget it lasts (0.7 leaves the last tries a healed network).
    budget_fraction: float


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    # Probability of each fault kind per attempt; the remainder gets no fault.
    weights: tuple[tuple[FaultKind, float], ...]
    # Range of one-way latency, as fractions of the client timeout.
    latency: tuple[float, float]
    partitions: tuple[PartitionSpec, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "timeout_retry",
            "responses held past the client timeout after the server processed the request",
            weights=(("hold_response", 0.35),),
            latency=(0.01, 0.05),
        ),
        Scenario(
            "connection_reset",
            "connections reset after the request was forwarded, or before",
            weights=(("reset_after_forward", 0.3), ("reset_before_forward", 0.1)),
            latency=(0.01, 0.05),
        ),
        Scenario(
            "unstable_network",
            "jittery latency, held responses, resets, lost connections and a short outage",
            weights=(
                ("hold_response", 0.1),
                ("reset_after_forward", 0.1),
                ("reset_before_forward", 0.05),
                ("blackhole", 0.05),
            ),
            latency=(0.02, 0.3),
            partitions=(PartitionSpec("refuse", 0.5, 0.5),),
        ),
        Scenario(
            "network_partition",
            "connections refused for a window, later black-holed for a window, then healed",
            weights=(),
            latency=(0.01, 0.05),
            partitions=(
                PartitionSpec("refuse", 0.25, 0.7),
                PartitionSpec("blackhole", 0.6, 0.7),
            ),
        ),
        Scenario(
            "slow_network",
            "high latency with jitter; the slowest responses arrive after the client timeout",
            weights=(("hold_response", 0.05),),
            latency=(0.1, 0.6),
        ),
    )
}


def fault_for(scenario: Scenario, seed: int, write: int, attempt: int, timeout_s: float) -> Fault:
    """Draw the fault of one attempt; the same arguments always give the same fault."""
    rng = random.Random(f"{seed}:{scenario.name}:{write}:{attempt}")
    low, high = scenario.latency
    latency_s = rng.uniform(low, high) * timeout_s
    roll = rng.random()
    for kind, probability in scenario.weights:
        if roll < probability:
            hold_s = HOLD_TIMEOUTS * timeout_s if kind == "hold_response" else 0.0
            return Fault(kind=kind, latency_s=latency_s, hold_s=hold_s)
        roll -= probability
    return Fault(kind="none", latency_s=latency_s)


def partitions_for(scenario: Scenario, writes: int, budget: RetryBudget) -> list[Partition]:
    """Place the scenario's partitions on the writes and size them to the retry budget."""
    planned = []
    for spec in scenario.partitions:
        if spec.mode == "refuse":
            # A refused attempt fails at once, so only the backoff delays count.
            budget_s = budget.backoff_total_s()
        else:
            # A black-holed attempt waits out its timeout before the client backs off.
            budget_s = budget.retries * budget.timeout_s + budget.backoff_total_s()
        planned.append(
            Partition(
                mode=spec.mode,
                start_write=1 + min(writes - 1, int(writes * spec.start_fraction)),
                duration_s=round(spec.budget_fraction * budget_s, 3),
            )
        )
    return planned
