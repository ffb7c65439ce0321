"""The planner: (desired, observed, progress) -> actions. Pure; the applier executes them.

Precedence, per cell:

1. desired and marked deleted, engine objects present -> REMOVE
2. desired, this generation already failed            -> nothing (waits for a new spec)
3. desired and paused, any of its containers running  -> PAUSE ("cell paused")
   paused, nothing running                            -> nothing (recovery suspended)
   no longer paused, but its status still says paused -> RESUME ("cell resumed")
4. desired, engine holds nothing or misses a piece     -> DEPLOY ("cell missing" / "... missing")
   (the egress gate is a piece when the policy is not empty, the docker proxy when
   docker access is "own"; each must be running, and one not wanted any more is
   "... not wanted"). A missing piece is restored at once: it is not a recovery.
   desired, a running sidecar does not answer         -> REPLACE_SIDECAR ("egress gate
   not answering" / "docker proxy not answering"); the next pass deploys a new one
5. desired, agent container's spec hash differs        -> DEPLOY ("spec changed")
   desired, a restart was requested after the last one carried out -> RESTART_REQUESTED
   ("restart requested"; also starts a stopped agent; not a rung of the ladder)
6. desired, and in trouble -- the agent not running, the isolation canary reporting a
   breach, or the health check failing, in that order  -> the recovery ladder
   (``plan._recovery.recover``): RESTART, RECREATE, WAIT or GIVE_UP
7. desired, the gate's loaded policy is not the desired -> RELOAD ("policy changed")
8. observed but unknown to the store                    -> REPORT_ORPHAN (never removed here)
"""

from __future__ import annotations

from collections.abc import Mapping

from agentcell.plan._model import (
    Action,
    ActionKind,
    CellKey,
    DesiredCell,
    ObservedCell,
    Progress,
)
from agentcell.plan._recovery import Step, Trouble, recover

_SIDECAR_NAMES = {"egress": "egress gate", "dockerproxy": "docker proxy"}

_STEP_ACTION = {
    Step.RESTART: ActionKind.RESTART,
    Step.RECREATE: ActionKind.RECREATE,
    Step.GIVE_UP: ActionKind.GIVE_UP,
    Step.WAIT: ActionKind.WAIT,
}

__all__ = ["plan"]


def plan(
    desired: Mapping[CellKey, DesiredCell],
    observed: Mapping[CellKey, ObservedCell],
    progress: Mapping[CellKey, Progress],
    *,
    now: float,
) -> list[Action]:
    """Actions that converge ``observed`` to ``desired``, in a stable order."""
    actions: list[Action] = []
    for key in sorted(set(desired) | set(observed)):
        want = desired.get(key)
        have = observed.get(key)
        action = _plan_cell(want, have, progress.get(key, Progress()), now=now, key=key)
        if action is not None:
            actions.append(action)
    return actions


def _plan_cell(
    want: DesiredCell | None,
    have: ObservedCell | None,
    prog: Progress,
    *,
    now: float,
    key: CellKey,
) -> Action | None:
    if want is None:
        return Action(ActionKind.REPORT_ORPHAN, key, "engine objects unknown to the store")
    if want.deleted:
        if have is None:
            return None
        return Action(ActionKind.REMOVE, key, "cell removed from the desired state")
    if prog.failed_generation == want.generation:
        return None
    if want.paused:
        running = have is not None and any(c.state == "running" for c in have.containers)
        return Action(ActionKind.PAUSE, key, "cell paused") if running else None
    if prog.paused:
        return Action(ActionKind.RESUME, key, "cell resumed")
    if have is None:
        return Action(ActionKind.DEPLOY, key, "cell missing")
    missing = _missing(want, have)
    if missing:
        return Action(ActionKind.DEPLOY, key, missing)
    for role in prog.stuck:
        if have.role(role) is not None:
            name = _SIDECAR_NAMES.get(role, role)
            return Action(ActionKind.REPLACE_SIDECAR, key, f"{name} not answering", {"role": role})
    agent = have.agent
    assert agent is not None
    if agent.spec_hash != want.spec_hash:
        return Action(ActionKind.DEPLOY, key, "spec changed", new_spec=True)
    if want.restart_request > prog.restart_honoured:
        return Action(
            ActionKind.RESTART_REQUESTED,
            key,
            "restart requested",
            {"request": str(want.restart_request)},
        )
    trouble = _trouble(want, agent.state, agent.oom_killed, agent.exit_code, prog)
    if trouble is not None:
        step = recover(*trouble, prog.attempts, prog.rung, want.agent.spec.restart, now=now)
        extra = {"at": f"{step.at:.3f}"} if step.step is Step.WAIT else {}
        return Action(_STEP_ACTION[step.step], key, step.reason, extra)
    if want.policy and prog.policy_digest != want.policy_digest:
        return Action(ActionKind.RELOAD, key, "policy changed")
    return None


def _trouble(
    want: DesiredCell, state: str, oom_killed: bool, exit_code: int, prog: Progress
) -> tuple[Trouble, str] | None:
    """What is wrong with a cell whose pieces are all there, and how to say it."""
    if state != "running":
        if oom_killed:
            return Trouble.STOPPED, "agent was OOM-killed"
        return Trouble.STOPPED, f"agent exited ({exit_code})"
    if prog.breach:
        return Trouble.BREACH, f"isolation breach: {prog.breach}"
    if want.agent.spec.health is not None and prog.health == "unhealthy":
        detail = f" ({prog.health_reason})" if prog.health_reason else ""
        return Trouble.UNHEALTHY, f"agent unhealthy{detail}"
    return None


def _missing(want: DesiredCell, have: ObservedCell) -> str:
    """Why the cell is incomplete ("" if it is not): the reason of a DEPLOY."""
    if have.network is None:
        return "network missing"
    if want.agent.spec.workspace.access != "none" and have.volume is None:
        return "workspace volume missing"
    if have.agent is None:
        return "agent container missing"
    gate = have.gate
    if want.policy and gate is None:
        return "egress gate missing"
    if want.policy and gate is not None and gate.state != "running":
        return "egress gate stopped"
    if not want.policy and gate is not None:
        return "egress gate not wanted"
    proxy = have.role("dockerproxy")
    wants_proxy = want.agent.spec.docker.access == "own"
    if wants_proxy and proxy is None:
        return "docker proxy missing"
    if wants_proxy and proxy is not None and proxy.state != "running":
        return "docker proxy stopped"
    if not wants_proxy and proxy is not None:
        return "docker proxy not wanted"
    return ""
