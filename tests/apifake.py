"""Helpers for API tests without an engine: a seeded control plane on an in-memory driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentcell.control import ControlPlane, PlaneConfig
from agentcell.plan import EngineObject
from agentcell.runtime import Backend
from livecell import TEST_POOL
from memorybackend import MemoryBackend

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


class FakeDriver(MemoryBackend):
    """An in-memory backend holding no containers (what the engine answers for stored
    cells that were never deployed), and two orphans for ``gc``."""

    def __init__(self) -> None:
        super().__init__()
        self.objects = [
            EngineObject("container", "agentcell-t1-lost-g1", "id-lost", "t1", "lost"),
            EngineObject("container", "agentcell-gone-x-g1", "id-gone", "gone", "x"),
        ]

    def labelled_objects(self) -> list[EngineObject]:
        return list(self.objects)


@contextmanager
def control_plane(state_dir: Path, driver: Backend) -> Iterator[ControlPlane]:
    plane = ControlPlane(PlaneConfig(state_dir, subnet_pool=TEST_POOL), driver=driver)
    try:  # never started: nothing is deployed, the reconciler never runs
        plane.apply(SEED, "seed.yaml", "test")
        yield plane
    finally:
        plane.store.close()
