"""The planner: (desired, observed, progress) -> actions. Pure; the applier executes them.

Precedence, per cell:

1. desired and marked deleted, engine objects present -> REMOVE
2. desired, this generation already failed to deploy  -> nothing (waits for a new spec)
3. desired, engine holds nothing or misses a piece     -> DEPLOY ("cell missing" / "... missing")
   (the egress gate is a piece when the policy is not empty, the docker proxy when
   docker access is "own"; each must be running, and one not wanted any more is
   "... not wanted")
4. desired, agent container's spec hash differs        -> DEPLOY ("spec changed")
5. desired, agent container not running:
   a. restarts inside the window reached the limit      -> GIVE_UP ("crash loop")
   b. otherwise                                         -> START ("agent stopped")
6. desired, the gate's loaded policy is not the desired -> RELOAD ("policy changed")
7. observed but unknown to the store                    -> REPORT_ORPHAN (never removed here)
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
    if have is None:
        return Action(ActionKind.DEPLOY, key, "cell missing")
    missing = _missing(want, have)
    if missing:
        return Action(ActionKind.DEPLOY, key, missing)
    agent = have.agent
    assert agent is not None
    if agent.spec_hash != want.spec_hash:
        return Action(ActionKind.DEPLOY, key, "spec changed")
    if agent.state != "running":
        limit = want.agent.spec.restart
        recent = [t for t in prog.restarts if now - t < limit.window]
        if len(recent) >= limit.max_restarts:
            return Action(
                ActionKind.GIVE_UP,
                key,
                f"crash loop: {len(recent)} restarts within {limit.window:g}s",
            )
        why = "agent was OOM-killed" if agent.oom_killed else f"agent exited ({agent.exit_code})"
        return Action(ActionKind.START, key, why)
    if want.policy and prog.policy_digest != want.policy_digest:
        return Action(ActionKind.RELOAD, key, "policy changed")
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
