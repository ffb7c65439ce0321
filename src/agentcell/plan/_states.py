"""Cell states and roles, typed; and the one table of the transitions a cell's state may
make (h11-style: a transition outside it is a bug, and raises).

The rules the table writes down:

- PENDING: stored, not deployed yet (or being deployed again: a new spec, a resume).
- RUNNING: the agent runs and has no health check, or it has not answered one yet;
  HEALTHY and UNHEALTHY: it runs, and so its probe says. The three are ``UP``.
- RECOVERING: the recovery ladder, or a repair backing off, is at work.
- FAILED: given up (a spec that does not deploy, or the ladder exhausted); a new spec,
  a resume, a repair or an agent found running again leaves it.
- PAUSED: the kill switch; only a resume (PENDING, or RUNNING when the agent is found
  up) leaves it, or a removal.
- REMOVING: on its way out (the status row goes with the cell); only a cell applied
  again before it is gone leaves it, to PENDING.

Every state but REMOVING may go to PENDING, PAUSED, FAILED and REMOVING. The values are
the strings the API and the store have always shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "TRANSITIONS",
    "UP",
    "CellState",
    "InvalidTransition",
    "Readiness",
    "Role",
    "check_transition",
    "readiness",
]


class CellState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RECOVERING = "recovering"
    FAILED = "failed"
    PAUSED = "paused"
    REMOVING = "removing"


UP = frozenset({CellState.RUNNING, CellState.HEALTHY, CellState.UNHEALTHY})
"""The states in which the agent runs (and is probed)."""

_ANYWHERE = frozenset({CellState.PENDING, CellState.PAUSED, CellState.FAILED, CellState.REMOVING})

TRANSITIONS: dict[CellState, frozenset[CellState]] = {
    CellState.PENDING: _ANYWHERE | {CellState.RUNNING, CellState.RECOVERING},
    CellState.RUNNING: _ANYWHERE | UP | {CellState.RECOVERING},
    CellState.HEALTHY: _ANYWHERE | UP | {CellState.RECOVERING},
    CellState.UNHEALTHY: _ANYWHERE | UP | {CellState.RECOVERING},
    CellState.RECOVERING: _ANYWHERE | {CellState.RUNNING, CellState.RECOVERING},
    CellState.FAILED: _ANYWHERE | {CellState.RUNNING, CellState.RECOVERING},
    CellState.PAUSED: _ANYWHERE | {CellState.RUNNING},
    CellState.REMOVING: frozenset({CellState.REMOVING, CellState.PENDING}),
}
"""state -> the states it may go to (staying where it is is listed where it is allowed)."""


class InvalidTransition(AssertionError):
    """A cell's state was asked to make a transition the table does not have: a bug."""


def check_transition(old: str, new: str) -> CellState:
    """``new`` as a CellState, if ``old`` may go there; else InvalidTransition."""
    try:
        before, after = CellState(old), CellState(new)
    except ValueError as e:
        raise InvalidTransition(f"not a cell state: {e}") from None
    if before != after and after not in TRANSITIONS[before]:
        raise InvalidTransition(f"a cell may not go from {before} to {after}")
    return after


class Role(StrEnum):
    """What an engine object is to its cell (its ``agentcell.role`` label)."""

    AGENT = "agent"
    GATE = "egress"
    """The egress gate (its label value predates the name "gate")."""
    DOCKER_PROXY = "dockerproxy"
    CHILD = "child"
    """A container the agent made through its docker proxy."""
    NETWORK = "network"
    WORKSPACE = "workspace"
    EGRESS_NETWORK = "egress-network"


@dataclass(frozen=True)
class Readiness:
    """Whether a deploy of generation ``generation`` is done, and why (or why not yet).

    ``settled``: nothing more will come of waiting (ready, failed, or paused)."""

    ready: bool
    settled: bool
    reason: str


def readiness(
    *,
    generation: int,
    policy_digest: str,
    state: str,
    health: str,
    reason: str,
    observed_generation: int,
    failed_generation: int,
    loaded_digest: str,
) -> Readiness:
    """The verdict on a cell whose store wants ``generation`` with ``policy_digest``.

    Precedence: that generation failed, or the cell failed at it -> settled, not ready
    ("deploy failed"); paused -> settled, ready ("paused"); up at that generation with
    the desired policy loaded: unhealthy -> settled, not ready ("running but unhealthy"),
    healthy or without a health check -> ready ("ready"); anything else -> waiting.
    """
    if failed_generation >= generation or (
        state == CellState.FAILED and observed_generation >= generation
    ):
        return Readiness(False, True, f"deploy failed: {reason}")
    if state == CellState.PAUSED:
        return Readiness(True, True, f"paused: {reason}")
    current = observed_generation >= generation and loaded_digest == policy_digest
    if state in UP and current:
        if health == "unhealthy":
            return Readiness(False, True, f"running but unhealthy: {reason}")
        if health in ("healthy", "none"):
            return Readiness(True, True, "ready")
    return Readiness(False, False, f"{state}: {reason}")
