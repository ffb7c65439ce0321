"""A deploy as a plan: (desired cell, observed cell, mode) -> the ordered steps that make
the engine match the spec. Pure; one applier (``control._applier``) executes the steps
through a backend, which decides nothing.

The rules, in the order the steps come:

1. RECREATE first removes every agent, gate and docker proxy the cell has: all new.
2. The image must be there (no registry is ever asked).
3. The cell network, then (unless workspace access is none) its workspace volume: made
   when the engine holds none (found by labels, so earlier releases' names are kept).
   The workspace's top directory is given to the agent's user on every deploy.
4. With an egress policy: the tenant's egress network (shared by the tenant's cells, so
   found or made under the tenant's lock when the step runs), the gate, its policy. With
   docker access ``own``: the docker proxy. Both before the agent, which needs their
   addresses.
5. An agent that already is what the spec asks (its spec hash and generation, attached to
   the cell's current network, and running, or stopped in RESUME) is kept; in RESUME a
   kept agent is started. Otherwise a new agent is created (a container of this cell
   left under the new one's name is removed first), its hardening verified as the
   engine reports it, the previous agents that run are stopped, the new one is started
   and waited for, then the previous agents are removed.
6. Last, a gate or docker proxy the spec no longer wants is removed.

A step that fails undoes, in reverse, what this plan created, and starts again the
agents step 5 stopped; the error names the step (its ``StepKind`` value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from agentcell.plan._model import DesiredCell, ObservedCell, ObservedContainer
from agentcell.policy import cell_names

__all__ = [
    "DeployMode",
    "DeployPlan",
    "DeployStep",
    "StepKind",
    "deploy_steps",
    "matching_agent",
    "ready_budget",
    "sidecar_current",
]

SETTLE_SECONDS = 0.5
"""Without a health check, a new agent must stay up this long to count as deployed."""
MAX_READY_SECONDS = 300.0
_RECREATED_ROLES = ("agent", "egress", "dockerproxy")


class DeployMode(StrEnum):
    """Which action a deploy carries out."""

    CONVERGE = "converge"
    """Create what is missing, replace an agent that is not what the spec asks."""
    RESUME = "resume"
    """As CONVERGE, and a stopped agent that matches is started rather than replaced."""
    RECREATE = "recreate"
    """Recovery's second rung: every container new; the network and workspace stay."""


class StepKind(StrEnum):
    """One kind of deploy step; its value is the step's name in status and errors."""

    REMOVE_RECREATED = "remove the containers being recreated"
    CHECK_IMAGE = "check image"
    CREATE_NETWORK = "create network"
    CREATE_WORKSPACE = "create workspace volume"
    CREATE_EGRESS_NETWORK = "create egress network"
    START_GATE = "start egress gate"
    LOAD_POLICY = "load egress policy"
    START_DOCKER_PROXY = "start docker proxy"
    WRITE_SECRETS = "write secret files"
    REMOVE_LEFTOVER = "remove a leftover container"
    CREATE_AGENT = "create container"
    VERIFY_HARDENING = "verify hardening"
    STOP_PREVIOUS = "stop previous container"
    START_AGENT = "start container"
    WAIT_READY = "wait until ready"
    REMOVE_PREVIOUS = "remove previous container"
    REMOVE_DOCKER_PROXY = "remove docker proxy"
    REMOVE_GATE = "remove egress gate"


@dataclass(frozen=True)
class DeployStep:
    """One step, with what it needs that the plan knows.

    ``name``: the object to create (network, volume, container) or, for CREATE_NETWORK and
    CREATE_WORKSPACE, the one found, when ``create`` is false. ``containers``: the ids the
    step acts on (removes, stops, starts); none for START_AGENT and WAIT_READY means the
    agent this plan created. ``seconds``: WAIT_READY's budget.
    """

    kind: StepKind
    name: str = ""
    create: bool = True
    containers: tuple[str, ...] = ()
    seconds: float = 0.0

    def __str__(self) -> str:
        return self.kind.value


@dataclass(frozen=True)
class DeployPlan:
    """A deploy's steps, and which agent runs when they are done."""

    steps: tuple[DeployStep, ...]
    kept: str | None = None
    """The id of the agent kept as it is; None: the plan creates one."""
    replaced: str | None = None
    """The id of an agent the new one replaces."""


def deploy_steps(want: DesiredCell, have: ObservedCell, mode: DeployMode) -> DeployPlan:
    """The steps that make ``have`` what ``want`` asks (see the module's rules)."""
    spec = want.agent.spec
    key = want.key
    workspace = spec.workspace.access != "none"
    names = cell_names(key[0], key[1], want.generation, workspace=workspace)
    steps: list[DeployStep] = []
    agents = [c for c in have.containers if c.role == "agent"]

    if mode is DeployMode.RECREATE:
        gone = tuple(c.id for c in have.containers if c.role in _RECREATED_ROLES)
        steps.append(DeployStep(StepKind.REMOVE_RECREATED, containers=gone))
        agents = []
    steps.append(DeployStep(StepKind.CHECK_IMAGE, name=spec.image))
    steps.append(
        DeployStep(
            StepKind.CREATE_NETWORK,
            name=have.network or names.network,
            create=have.network is None,
        )
    )
    if workspace:
        steps.append(
            DeployStep(
                StepKind.CREATE_WORKSPACE,
                name=have.volume or names.volume or "",
                create=have.volume is None,
            )
        )
    if want.policy:
        steps.append(DeployStep(StepKind.CREATE_EGRESS_NETWORK))
        steps.append(DeployStep(StepKind.START_GATE))
        steps.append(DeployStep(StepKind.LOAD_POLICY))
    if spec.docker.access == "own":
        steps.append(DeployStep(StepKind.START_DOCKER_PROXY))

    keep = matching_agent(want, agents, have.network_id, stopped=mode is DeployMode.RESUME)
    ready = DeployStep(StepKind.WAIT_READY, seconds=ready_budget(want))
    previous: list[ObservedContainer] = []
    if keep is not None:
        if mode is DeployMode.RESUME:
            steps.append(DeployStep(StepKind.WRITE_SECRETS))
            steps.append(DeployStep(StepKind.START_AGENT, containers=(keep.id,)))
            steps.append(
                DeployStep(StepKind.WAIT_READY, containers=(keep.id,), seconds=ready.seconds)
            )
    else:
        leftover = tuple(c.id for c in agents if c.name == names.container)
        previous = [c for c in agents if c.id not in leftover]
        if leftover:
            steps.append(DeployStep(StepKind.REMOVE_LEFTOVER, containers=leftover))
        if spec.secrets:
            steps.append(DeployStep(StepKind.WRITE_SECRETS))
        steps.append(DeployStep(StepKind.CREATE_AGENT, name=names.container))
        steps.append(DeployStep(StepKind.VERIFY_HARDENING))
        running = tuple(c.id for c in previous if c.state == "running")
        if running:
            steps.append(DeployStep(StepKind.STOP_PREVIOUS, containers=running))
        steps.append(DeployStep(StepKind.WRITE_SECRETS))
        steps.append(DeployStep(StepKind.START_AGENT))
        steps.append(ready)
        if previous:
            steps.append(
                DeployStep(StepKind.REMOVE_PREVIOUS, containers=tuple(c.id for c in previous))
            )

    if mode is not DeployMode.RECREATE:
        proxies = _ids(have, "dockerproxy")
        if spec.docker.access != "own" and proxies:
            steps.append(DeployStep(StepKind.REMOVE_DOCKER_PROXY, containers=proxies))
        gates = _ids(have, "egress")
        if not want.policy and gates:
            steps.append(DeployStep(StepKind.REMOVE_GATE, containers=gates))
    return DeployPlan(
        tuple(steps),
        kept=keep.id if keep is not None else None,
        replaced=previous[0].id if previous else None,
    )


def matching_agent(
    want: DesiredCell,
    agents: list[ObservedContainer],
    network_id: str | None,
    *,
    stopped: bool,
) -> ObservedContainer | None:
    """An agent that already is what ``want`` asks, on the network ``network_id``: running
    (or, if ``stopped``, in any state), the running ones first."""
    if network_id is None:
        return None
    for c in sorted(agents, key=lambda c: c.state != "running"):
        if (
            (c.state == "running" or stopped)
            and c.spec_hash == want.spec_hash
            and c.generation == want.generation
            and network_id in c.network_ids
        ):
            return c
    return None


def sidecar_current(
    *, label_hash: str, wanted_hash: str, state: str, attached: Callable[[], bool]
) -> bool:
    """Whether a cell's gate or docker proxy is kept as it is when its step runs: made
    from the body wanted now (its hash label), not frozen (``paused`` out of band: a new
    one is the safe restore), and attached to its networks as they are now (a network
    made again has a new id; ``attached`` asks the engine, so it is asked last). Otherwise
    the step replaces it.

    The step decides this when it runs, not the plan: the wanted body depends on what
    the steps before it made (the tenant's egress network, shared with other cells)."""
    return label_hash == wanted_hash and state != "paused" and attached()


def ready_budget(want: DesiredCell) -> float:
    """How long a new agent has to pass its health check (or, without one, to stay up)."""
    health = want.agent.spec.health
    if health is None:
        return SETTLE_SECONDS
    return min(health.start_period + health.interval * health.retries, MAX_READY_SECONDS)


def _ids(have: ObservedCell, role: str) -> tuple[str, ...]:
    return tuple(c.id for c in have.containers if c.role == role)
