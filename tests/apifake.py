"""Helpers for API tests without an engine: a seeded control plane on an in-memory driver."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentcell.control import ControlPlane, PlaneConfig
from agentcell.errors import NotFoundError
from agentcell.plan import CellKey, EngineObject, ObservedCell
from agentcell.runtime import CellContainers, GcOutcome
from livecell import TEST_POOL

MARKERS = ("t2-marker-cell", "t2-marker-other", "t2-marker-secret-env", "t2-marker-image")
"""Strings only tenant t2's objects hold."""

SEED = f"""
apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: t1}}
spec: {{quota: {{agents: 20}}}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: t1-cell, tenant: t1}}
spec:
  image: agentcell/demo-agent:latest
  egress: {{allow: [{{host: api.example.com, ports: [443]}}]}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: t1-docker, tenant: t1}}
spec: {{image: agentcell/demo-agent:latest, docker: {{access: own}}}}
---
apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: t2}}
spec: {{quota: {{agents: 20}}}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {MARKERS[0]}, tenant: t2}}
spec:
  image: {MARKERS[3]}:latest
  env: {{T2_MARKER: {MARKERS[2]}}}
  egress: {{allow: [{{host: api.example.com, ports: [443]}}]}}
---
apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {MARKERS[1]}, tenant: t2}}
spec: {{image: agentcell/demo-agent:latest}}
"""

KNOWN = {"t1": ["t1-cell", "t1-docker"], "t2": [MARKERS[0], MARKERS[1]]}


class FakeDriver:
    """The engine seam as the API uses it, holding no containers: what the real driver
    answers for stored cells that were never deployed."""

    def __init__(self) -> None:
        self.objects = [
            EngineObject("container", "agentcell-t1-lost-g1", "id-lost", "t1", "lost"),
            EngineObject("container", "agentcell-gone-x-g1", "id-gone", "gone", "x"),
        ]

    def used_subnets(self) -> list[str]:
        return []

    def cell_containers(self, key: CellKey) -> CellContainers:
        return CellContainers(None, None, None)

    def agent_container(self, key: CellKey) -> Any:
        raise NotFoundError(f"cell {key[0]}/{key[1]} has no agent container")

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        return self.agent_container(key)  # type: ignore[no-any-return]

    def exec(self, key: CellKey, command: list[str], *, user: str) -> Any:
        return self.agent_container(key)

    def observe(self) -> dict[CellKey, ObservedCell]:
        return {}

    def labelled_objects(self) -> list[EngineObject]:
        return list(self.objects)

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome:
        out = GcOutcome()
        for o in objects:
            why = confirm(o)
            if why is not None:
                out.kept.append((o, why))
            else:
                out.removed.append(o)
        return out


@contextmanager
def control_plane(state_dir: Path, driver: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(PlaneConfig(state_dir, subnet_pool=TEST_POOL), driver=driver)
    try:  # never started: nothing is deployed, the reconciler never runs
        plane.apply(SEED, "seed.yaml", "test")
        yield plane
    finally:
        plane.store.close()
