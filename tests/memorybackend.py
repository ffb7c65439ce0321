"""An in-memory backend: the ``Backend`` Protocol over dicts, for fast tests of the
control plane. mypy checks it against the Protocol (the assignment at the bottom), and
``tests/runtime/test_backend_contract.py`` runs the same tests on it and on the engine."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentcell.errors import NotFoundError, RuntimeDriverError
from agentcell.plan import (
    CellKey,
    DeployStep,
    EngineObject,
    ObservedCell,
    ObservedContainer,
    StepKind,
)
from agentcell.policy import Decision
from agentcell.runtime import Backend, CellContainers, DeployRun, GcOutcome, Made
from agentcell.runtime.battery import CheckResult

DEMO_IMAGE = "agentcell/demo-agent:latest"


@dataclass
class Box:
    """A container."""

    id: str
    name: str
    key: CellKey
    role: str
    image: str = ""
    state: str = "created"
    spec_hash: str = ""
    generation: int = 0
    networks: tuple[str, ...] = ()


@dataclass
class Net:
    id: str
    name: str
    key: CellKey | None
    """None: a tenant's network (the egress network)."""
    tenant: str
    subnet: str = ""


@dataclass
class MemoryBackend:
    """Cells in dicts. ``images`` are the images it holds; ``fail`` makes one step fail."""

    images: set[str] = field(default_factory=lambda: {DEMO_IMAGE})
    fail: StepKind | None = None
    boxes: dict[str, Box] = field(default_factory=dict)
    nets: dict[str, Net] = field(default_factory=dict)
    volumes: dict[str, CellKey] = field(default_factory=dict)
    policies: dict[CellKey, str] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def _new_id(self, what: str) -> str:
        return f"{what}-{next(self._ids)}"

    # -- observing -----------------------------------------------------------------------

    def observe(self) -> dict[CellKey, ObservedCell]:
        keys = {b.key for b in self.boxes.values()}
        keys |= {n.key for n in self.nets.values() if n.key is not None}
        keys |= set(self.volumes.values())
        return {key: self.observe_cell(key) for key in keys}

    def observe_cell(self, key: CellKey) -> ObservedCell:
        net = next((n for n in self.nets.values() if n.key == key), None)
        volume = next((name for name, k in self.volumes.items() if k == key), None)
        containers = tuple(
            ObservedContainer(
                id=b.id,
                name=b.name,
                role=b.role,
                state=b.state,
                spec_hash=b.spec_hash,
                generation=b.generation,
                ip="10.0.0.2" if b.state == "running" else "",
                network_ids=b.networks,
            )
            for b in self.boxes.values()
            if b.key == key
        )
        return ObservedCell(
            *key,
            containers=containers,
            network=net.name if net else None,
            network_id=net.id if net else None,
            network_subnet=net.subnet if net else None,
            volume=volume,
        )

    def used_subnets(self) -> list[str]:
        return [n.subnet for n in self.nets.values() if n.subnet]

    def events(self, until: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        return iter(())

    # -- deploying -----------------------------------------------------------------------

    def execute(self, step: DeployStep, run: DeployRun) -> None:
        if step.kind is self.fail:
            raise RuntimeDriverError(f"{step} failed on purpose")
        key, want = run.want.key, run.want
        kind = step.kind
        if kind in (
            StepKind.REMOVE_RECREATED,
            StepKind.REMOVE_LEFTOVER,
            StepKind.REMOVE_PREVIOUS,
            StepKind.REMOVE_DOCKER_PROXY,
            StepKind.REMOVE_GATE,
        ):
            for cid in step.containers:
                self.boxes.pop(cid, None)
        elif kind is StepKind.CHECK_IMAGE:
            if step.name not in self.images:
                raise RuntimeDriverError(f"image {step.name!r} is not present on this engine")
        elif kind is StepKind.CREATE_NETWORK:
            run.network = step.name
            if step.create:
                net = Net(self._new_id("net"), step.name, key, key[0], want.subnet)
                self.nets[net.id] = net
                run.made.append(Made("network", step.name))
        elif kind is StepKind.CREATE_WORKSPACE:
            run.volume = step.name
            if step.create:
                self.volumes[step.name] = key
                run.made.append(Made("volume", step.name))
        elif kind is StepKind.CREATE_EGRESS_NETWORK:
            self._egress_network(run)
        elif kind is StepKind.START_GATE:
            run.gate, run.proxy = self._sidecar(run, "egress"), "http://gate:3128"
        elif kind is StepKind.LOAD_POLICY:
            self.policies[key] = want.policy
            run.policy_digest = hashlib.sha256(want.policy.encode()).hexdigest()[:16]
        elif kind is StepKind.START_DOCKER_PROXY:
            self._sidecar(run, "dockerproxy")
            run.docker_host = "tcp://dockerproxy:2375"
        elif kind is StepKind.CREATE_AGENT:
            if any(b.name == step.name for b in self.boxes.values()):
                raise RuntimeDriverError(f"a container named {step.name} exists")
            box = Box(
                self._new_id("agent"),
                step.name,
                key,
                "agent",
                image=want.agent.spec.image,
                spec_hash=want.spec_hash,
                generation=want.generation,
                networks=tuple(n.id for n in self.nets.values() if n.name == run.network),
            )
            self.boxes[box.id] = box
            run.agent = box.id
            run.made.append(Made("container", box.id))
        elif kind is StepKind.STOP_PREVIOUS:
            for cid in step.containers:
                self.boxes[cid].state = "exited"
                run.stopped.append(cid)
        elif kind is StepKind.START_AGENT:
            self.boxes[step.containers[0] if step.containers else run.agent].state = "running"
        elif kind is StepKind.WAIT_READY and run.ready is not None:
            ok, what = run.ready("10.0.0.2")
            if not ok:
                raise RuntimeDriverError(f"the health check did not pass: {what}")

    def _egress_network(self, run: DeployRun) -> None:
        tenant = run.want.key[0]
        net = next((n for n in self.nets.values() if n.key is None and n.tenant == tenant), None)
        if net is None:
            assert run.allocate is not None
            net = Net(self._new_id("net"), f"agentcell.{tenant}.egress", None, tenant)
            net.subnet = run.allocate()
            self.nets[net.id] = net
            run.made.append(Made("network", net.name))
        run.egress = (net.name, net.subnet)

    def _sidecar(self, run: DeployRun, role: str) -> tuple[str, int]:
        key = run.want.key
        found = next((b for b in self.boxes.values() if b.key == key and b.role == role), None)
        if found is None:
            found = Box(self._new_id(role), f"agentcell.{key[0]}.{key[1]}.{role}", key, role)
            self.boxes[found.id] = found
            run.made.append(Made("container", found.id))
        found.state = "running"
        return ("10.0.1.2", 8081)

    def undo(self, made: Made) -> None:
        if made.kind == "container":
            self.boxes.pop(made.ident, None)
        elif made.kind == "network":
            for net_id in [i for i, n in self.nets.items() if n.name == made.ident]:
                del self.nets[net_id]
        else:
            self.volumes.pop(made.ident, None)

    def start_again(self, container_id: str) -> None:
        if container_id in self.boxes:
            self.boxes[container_id].state = "running"

    # -- single actions ------------------------------------------------------------------

    def _agent(self, key: CellKey) -> Box:
        agents = [b for b in self.boxes.values() if b.key == key and b.role == "agent"]
        if not agents:
            raise NotFoundError(f"cell {key[0]}/{key[1]} has no agent container")
        return sorted(agents, key=lambda b: b.state != "running")[0]

    def restart(self, key: CellKey) -> None:
        self._agent(key).state = "running"

    def pause(self, key: CellKey) -> list[str]:
        stopped = []
        for b in self.boxes.values():
            if b.key == key and b.state == "running":
                b.state = "exited"
                stopped.append(f"{b.role} {b.name}")
        return stopped

    def remove(self, key: CellKey, *, keep_workspace: bool = False) -> list[str]:
        removed = [f"container {b.name}" for b in self.boxes.values() if b.key == key]
        self.boxes = {i: b for i, b in self.boxes.items() if b.key != key}
        removed += [f"network {n.name}" for n in self.nets.values() if n.key == key]
        self.nets = {i: n for i, n in self.nets.items() if n.key != key}
        if not keep_workspace:
            removed += [f"volume {v}" for v, k in self.volumes.items() if k == key]
            self.volumes = {v: k for v, k in self.volumes.items() if k != key}
        self.policies.pop(key, None)
        return removed

    def remove_role(self, key: CellKey, role: str) -> list[str]:
        gone = [b for b in self.boxes.values() if b.key == key and b.role == role]
        for b in gone:
            del self.boxes[b.id]
        return [b.name for b in gone]

    def load_policy(self, key: CellKey, token: str, policy: str) -> str:
        if not any(b.key == key and b.role == "egress" for b in self.boxes.values()):
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} has no running egress gate")
        self.policies[key] = policy
        return hashlib.sha256(policy.encode()).hexdigest()[:16]

    # -- reading and running inside ------------------------------------------------------

    def inspect_agent(self, key: CellKey) -> dict[str, Any] | None:
        try:
            box = self._agent(key)
        except NotFoundError:
            return None
        return {"Id": box.id, "Name": f"/{box.name}", "State": {"Status": box.state}}

    def cell_containers(self, key: CellKey) -> CellContainers:
        def shown(role: str) -> str | None:
            b = next((b for b in self.boxes.values() if b.key == key and b.role == role), None)
            return f"{b.name} ({b.state})" if b else None

        return CellContainers(self.inspect_agent(key), shown("egress"), shown("dockerproxy"))

    def secrets_dir(self, key: CellKey) -> str | None:
        return None

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        self._agent(key)
        return iter(())

    def sidecar_logs(self, key: CellKey, role: str, *, since: int) -> Iterator[bytes]:
        if not any(b.key == key and b.role == role for b in self.boxes.values()):
            raise NotFoundError(f"cell {key[0]}/{key[1]} has no {role} sidecar")
        return iter(())

    def exec(
        self, key: CellKey, command: list[str], *, user: str
    ) -> tuple[str, Iterator[tuple[int, bytes]]]:
        box = self._agent(key)
        if box.state != "running":
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} is not running ({box.state})")
        return "exec-1", iter(())

    def exec_exit_code(self, exec_id: str) -> int:
        return 0

    def canary(self, key: CellKey, *, pool: str | None = None) -> list[Decision]:
        return []

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
        box = self._agent(key)
        if box.state != "running":
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} is not running ({box.state})")
        return []

    # -- orphans -------------------------------------------------------------------------

    def labelled_objects(self) -> list[EngineObject]:
        return [
            EngineObject("container", b.name, b.id, b.key[0], b.key[1]) for b in self.boxes.values()
        ]

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome:
        out = GcOutcome()
        for o in objects:
            why = confirm(o)
            if why is not None:
                out.kept.append((o, why))
            else:
                self.boxes.pop(o.id, None)
                out.removed.append(o)
        return out


_checked: Backend = MemoryBackend()
