"""The runtime seam: what the control plane asks of every backend (DESIGN rule 7).

A backend observes the cells it owns, executes one deploy step at a time, carries out
single actions (restart, pause, remove, ...), streams its events and reads logs, runs
exec and the isolation checks. It decides nothing: what to do comes from ``plan``.
``DockerDriver`` is the host engine's; the tests' in-memory backend implements the same
Protocol, and mypy checks both against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentcell.plan import CellKey, DeployStep, DesiredCell, EngineObject, ObservedCell
from agentcell.policy import Decision
from agentcell.runtime._gc import GcOutcome
from agentcell.runtime.battery import CheckResult

__all__ = ["Backend", "CellContainers", "DeployRun", "Made", "SecretMounts"]


@dataclass(frozen=True)
class Made:
    """One object a deploy created: what its rollback removes."""

    kind: Literal["container", "network", "volume"]
    ident: str


@dataclass
class DeployRun:
    """One deploy while it runs: what its steps learned, and its journal.

    Each step reads what earlier steps wrote here (the network's name, the gate's URL,
    the new agent's id) and appends what it creates to ``made`` and what it stops to
    ``stopped``; on a failure the applier undoes exactly those, in reverse.
    """

    want: DesiredCell
    gate_token: str = ""
    allocate: Callable[[], str] | None = None
    """Gives the tenant's egress network its subnet, when it has to be made."""
    ready: Callable[[str], tuple[bool, str]] | None = None
    """One health probe of the new agent at an address; None: it only has to stay up."""
    network: str = ""
    volume: str | None = None
    egress: tuple[str, str] | None = None
    """The tenant's egress network: (name, subnet)."""
    gate: tuple[str, int] | None = None
    """The running gate's control address."""
    proxy: str | None = None
    """The gate's proxy URL, for the agent."""
    policy_digest: str = ""
    docker_host: str | None = None
    """The docker proxy's URL, for the agent."""
    secrets_dir: str | None = None
    agent: str = ""
    """The id of the agent this deploy created."""
    made: list[Made] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CellContainers:
    """What the backend holds of one cell, as ``agentcell get`` shows it."""

    agent: dict[str, Any] | None
    """The engine's inspect output of the agent (the running one if several)."""
    gate: str | None
    """``<name> (<state>)`` of the egress gate, or None."""
    dockerproxy: str | None


class SecretMounts(Protocol):
    """The host side of secret delivery (the control plane's): one directory per cell."""

    def directory(self, key: CellKey) -> str:
        """The cell's secrets directory on the host (whether or not it exists)."""
        ...

    def write(self, key: CellKey) -> str | None:
        """(Re)write the cell's secret files now; the directory, or None if it has none.

        Raises RuntimeDriverError when they cannot be written."""
        ...

    def remove(self, key: CellKey) -> None: ...


class Backend(Protocol):
    """One runtime that cells run on. Errors are ``RuntimeDriverError`` (or ``NotFoundError``
    for a cell or container it does not hold)."""

    # -- observing -----------------------------------------------------------------------

    def observe(self) -> dict[CellKey, ObservedCell]:
        """Every cell it holds pieces of, found by labels."""
        ...

    def observe_cell(self, key: CellKey) -> ObservedCell:
        """One cell, as ``observe`` would show it (empty if it holds nothing of it)."""
        ...

    def used_subnets(self) -> list[str]:
        """Every subnet its networks use, the platform's and everyone else's."""
        ...

    def events(self, until: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Its events about containers, networks and volumes, until ``until()``."""
        ...

    # -- deploying: one step at a time ---------------------------------------------------

    def execute(self, step: DeployStep, run: DeployRun) -> None:
        """Carry out one step of a deploy plan, recording in ``run`` what it made."""
        ...

    def undo(self, made: Made) -> None:
        """Remove an object a failed deploy made; gone already is fine."""
        ...

    def start_again(self, container_id: str) -> None:
        """Start a container a failed deploy stopped; gone already is fine."""
        ...

    # -- single actions ------------------------------------------------------------------

    def restart(self, key: CellKey) -> None: ...

    def pause(self, key: CellKey) -> list[str]: ...

    def remove(self, key: CellKey, *, keep_workspace: bool = False) -> list[str]: ...

    def remove_role(self, key: CellKey, role: str) -> list[str]: ...

    def load_policy(self, key: CellKey, token: str, policy: str) -> str: ...

    # -- reading and running inside ------------------------------------------------------

    def inspect_agent(self, key: CellKey) -> dict[str, Any] | None: ...

    def cell_containers(self, key: CellKey) -> CellContainers: ...

    def secrets_dir(self, key: CellKey) -> str | None: ...

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]: ...

    def sidecar_logs(self, key: CellKey, role: str, *, since: int) -> Iterator[bytes]: ...

    def exec(
        self, key: CellKey, command: list[str], *, user: str
    ) -> tuple[str, Iterator[tuple[int, bytes]]]: ...

    def exec_exit_code(self, exec_id: str) -> int: ...

    def canary(self, key: CellKey, *, pool: str | None = None) -> list[Decision]: ...

    def verify(
        self,
        key: CellKey,
        *,
        user: str,
        workspace: str | None,
        pids_limit: int,
        memory_bytes: int,
        extra_targets: Sequence[tuple[str, int]],
        secrets: str | None,
    ) -> list[CheckResult]:
        """The attack battery (part A) inside the running agent, one result per check."""
        ...

    # -- orphans -------------------------------------------------------------------------

    def labelled_objects(self) -> list[EngineObject]: ...

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome: ...
