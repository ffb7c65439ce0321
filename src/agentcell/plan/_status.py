"""What a pass of the reconciler writes of what it observed, when it takes no action:
(desired cell, observed cell, last status) -> the status changes, and whether to record
them. Pure; the reconciler writes the result.

Precedence, per cell:

1. its generation failed: a failed replacement leaves the previous generation running,
   so the status says "running" at that generation; otherwise it stays "failed";
2. paused: "paused" ("paused: recovery suspended");
3. its agent does not run: nothing (the planner's actions say what happens);
4. its agent runs: its container, address and generation; the state its health check
   gives (running, healthy, unhealthy), recorded as "observed <state>" when it differs
   from the status (found so without an action: adopted after a restart, or back by
   itself); and the ladder's rung back to 0 once the cell is well again (``settled``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from agentcell.plan._model import DesiredCell, ObservedCell
from agentcell.plan._recovery import Attempt, settled
from agentcell.plan._states import CellState

__all__ = ["Observed", "StatusChanges", "observed_status"]


class StatusChanges(TypedDict, total=False):
    """The fields of a ``CellStatus`` that ``Store.set_status`` changes."""

    state: str
    health: str
    reason: str
    since: float
    observed_generation: int
    failed_generation: int
    container_id: str
    ip: str
    attempts: tuple[Attempt, ...]
    policy_digest: str
    rung: int
    breach: str
    health_reason: str
    restart_honoured: int


@dataclass(frozen=True)
class Observed:
    """The status changes a pass writes for one cell, and the record it writes, if any:
    (reason, details) of a lifecycle record."""

    changes: StatusChanges = field(default_factory=StatusChanges)
    record: tuple[str, dict[str, str]] | None = None


def observed_status(
    want: DesiredCell,
    have: ObservedCell | None,
    *,
    state: str,
    health: str,
    reason: str,
    failed_generation: int,
    rung: int,
    attempts: tuple[Attempt, ...],
    now: float,
) -> Observed:
    """The changes to a status (``state`` ... ``attempts``) that ``have`` calls for."""
    agent = have.agent if have else None
    running = agent is not None and agent.state == "running"
    if failed_generation == want.generation:
        old_runs = agent is not None and running and agent.generation < want.generation
        if agent is not None and old_runs and state != CellState.RUNNING:
            return Observed(StatusChanges(state="running", observed_generation=agent.generation))
        if not old_runs and state != CellState.FAILED:
            return Observed(StatusChanges(state="failed"))
        return Observed()
    if want.paused:
        if state != CellState.PAUSED:
            return Observed(StatusChanges(state="paused", reason="paused: recovery suspended"))
        return Observed()
    if not running or agent is None:
        return Observed()
    has_health = want.agent.spec.health is not None
    changes = StatusChanges(
        container_id=agent.id, ip=agent.ip, observed_generation=agent.generation
    )
    record = None
    now_state = health if has_health and health in ("healthy", "unhealthy") else "running"
    if state != now_state:
        changes["state"] = now_state
        if now_state != "unhealthy":
            changes["reason"] = "agent healthy" if now_state == "healthy" else "agent running"
        record = (
            f"observed {now_state}: {changes.get('reason', reason)}",
            {"from": state, "to": now_state, "container": agent.id[:12]},
        )
    if settled(rung, attempts, has_health=has_health, health=health, running=running, now=now):
        changes["rung"] = 0
    return Observed(changes, record)
