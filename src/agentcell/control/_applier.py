"""The one applier of deploys: observe the cell, plan its steps (``plan.deploy_steps``),
execute them through the backend, and on a failed step undo what this deploy made.

It lives in ``control`` because it is the same for every backend: a backend executes
one step at a time and keeps no journal of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agentcell.errors import DeployStepError, RuntimeDriverError
from agentcell.plan import DeployMode, DesiredCell, deploy_steps
from agentcell.runtime import Backend, DeployRun

__all__ = ["DeployOutcome", "apply_deploy"]


@dataclass
class DeployOutcome:
    """What a successful deploy left running."""

    container_id: str
    replaced: str | None = None
    created: list[str] = field(default_factory=list)
    policy_digest: str = ""


def apply_deploy(
    backend: Backend,
    want: DesiredCell,
    mode: DeployMode,
    *,
    on_step: Callable[[str], None],
    ready: Callable[[str], tuple[bool, str]] | None = None,
    allocate: Callable[[], str] | None = None,
    gate_token: str = "",
) -> DeployOutcome:
    """Make the cell what ``want`` asks; all or nothing.

    ``on_step(name)`` is told each step before it runs. ``ready(ip)`` is one health probe
    the new agent must pass (without one, it must stay up a moment) before the previous
    agent is removed. ``allocate`` gives the tenant's egress network its subnet;
    ``gate_token`` guards the gate's control port. On a failure everything this deploy
    made is removed, in reverse, the agents it stopped are started again, and
    DeployStepError names the step.
    """
    have = backend.observe_cell(want.key)
    planned = deploy_steps(want, have, mode)
    run = DeployRun(want=want, gate_token=gate_token, allocate=allocate, ready=ready)
    current = planned.steps[0]
    try:
        for current in planned.steps:
            on_step(str(current))
            backend.execute(current, run)
    except (RuntimeDriverError, OSError) as e:
        for made in reversed(run.made):
            backend.undo(made)
        for cid in run.stopped:
            backend.start_again(cid)
        raise DeployStepError(str(current), str(e)) from None
    return DeployOutcome(
        container_id=planned.kept or run.agent,
        replaced=planned.replaced,
        created=[m.ident for m in run.made],
        policy_digest=run.policy_digest,
    )
