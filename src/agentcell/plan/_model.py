"""What the planner reads and writes: desired cells, observed cells, and actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from agentcell.plan._recovery import Attempt
from agentcell.spec import Agent

__all__ = [
    "Action",
    "ActionKind",
    "CellKey",
    "DesiredCell",
    "ObservedCell",
    "ObservedContainer",
    "Progress",
]

CellKey = tuple[str, str]
"""(tenant, cell)."""


@dataclass(frozen=True)
class DesiredCell:
    """One cell as the store wants it."""

    agent: Agent
    spec_hash: str
    generation: int
    subnet: str
    deleted: bool = False
    keep_workspace: bool = False
    created: float = 0.0
    policy: str = ""
    """The compiled egress policy (wire-form JSON); empty: no egress, no gate."""
    policy_digest: str = ""
    paused: bool = False
    """Stopped by the kill switch (its own or its tenant's): nothing runs or recovers."""
    restart_request: int = 0
    """Bumped by ``agentcell restart``: a restart is due while it exceeds the honoured one."""

    @property
    def key(self) -> CellKey:
        return (self.agent.tenant, self.agent.name)


@dataclass(frozen=True)
class ObservedContainer:
    """One container carrying agentcell labels, as the engine reports it."""

    id: str
    name: str
    role: str
    state: str
    spec_hash: str
    generation: int
    exit_code: int = 0
    oom_killed: bool = False
    ip: str = ""
    started_at: str = ""
    addresses: tuple[tuple[str, str], ...] = ()
    """(network name, address) for each network it is attached to."""
    network_ids: tuple[str, ...] = ()
    """The ids of the networks it is attached to (a network made again has a new id)."""


@dataclass(frozen=True)
class ObservedCell:
    """Everything the engine holds for one cell, found by labels."""

    tenant: str
    cell: str
    containers: tuple[ObservedContainer, ...] = ()
    network: str | None = None
    network_id: str | None = None
    network_subnet: str | None = None
    volume: str | None = None

    @property
    def agent(self) -> ObservedContainer | None:
        return self.role("agent")

    @property
    def gate(self) -> ObservedContainer | None:
        return self.role("egress")

    def role(self, role: str) -> ObservedContainer | None:
        """The container of this role (the running one if several)."""
        agents = [c for c in self.containers if c.role == role]
        running = [c for c in agents if c.state == "running"]
        found = running or agents
        return found[0] if found else None


@dataclass(frozen=True)
class Progress:
    """What the planner needs to know of past attempts on one cell."""

    failed_generation: int = 0
    attempts: tuple[Attempt, ...] = ()
    """Recent recoveries, oldest first."""
    rung: int = 0
    """How many of them came since the cell was last well."""
    policy_digest: str = ""
    """The digest of the policy the running gate has loaded ("" if none or unknown)."""
    health: str = "none"
    """The health check's verdict: none, starting, healthy or unhealthy."""
    health_reason: str = ""
    breach: str = ""
    """What the isolation canary last found wrong ("" while it finds nothing)."""
    paused: bool = False
    """The cell's last reported state is paused (so, no longer desired paused: resume it)."""
    stuck: tuple[str, ...] = ()
    """Roles of running sidecars that failed their liveness probe ``retries`` times in a row."""
    restart_honoured: int = 0
    """The last restart request carried out (see ``DesiredCell.restart_request``)."""


class ActionKind(StrEnum):
    DEPLOY = "deploy"
    """Create what is missing and replace the agent container if its spec changed."""
    RESTART = "restart"
    """Recovery, first rung: restart the agent container (stopped or unhealthy)."""
    RECREATE = "recreate"
    """Recovery, second rung: a new agent container from the spec; the workspace stays."""
    WAIT = "wait"
    """Recovery is backing off; ``extra["at"]`` is when it may act again."""
    RESUME = "resume"
    """Undo PAUSE: start the stopped sidecars and agent (new ones where they are gone)."""
    REPLACE_SIDECAR = "replace-sidecar"
    """Remove a sidecar that runs but does not answer (``extra["role"]``); DEPLOY restores it."""
    PAUSE = "pause"
    """Kill switch: kill the agent, stop its sidecars and children; keep everything."""
    RESTART_REQUESTED = "restart-requested"
    """An operator asked for a restart (e.g. to deliver rotated secrets): stop the agent,
    rewrite its secret files, start it. Not a recovery: the ladder does not count it.
    ``extra["request"]`` is the request carried out."""
    RELOAD = "reload"
    """Load the desired egress policy into the running gate."""
    REMOVE = "remove"
    """Remove the cell's containers, network and (unless kept) workspace."""
    GIVE_UP = "give-up"
    """Mark the cell failed and notify: the ladder is exhausted or the crash-loop limit hit."""
    REPORT_ORPHAN = "report-orphan"
    """Engine objects with agentcell labels that the store does not know."""


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    key: CellKey
    reason: str
    extra: dict[str, str] = field(default_factory=dict)
    new_spec: bool = False
    """A DEPLOY of a spec the running agent was not made from: its ladder starts over."""
