"""Finding a cell's containers by their labels: the only way the runtime finds anything."""

from __future__ import annotations

import docker
from docker.models.containers import Container

from agentcell.plan import CellKey
from agentcell.policy import LABEL_CELL, LABEL_ROLE, LABEL_TENANT

__all__ = ["cell_labels", "find_role"]


def cell_labels(key: CellKey, role: str | None) -> list[str]:
    """The label filter naming one cell's objects (of one role, if given)."""
    out = [f"{LABEL_TENANT}={key[0]}", f"{LABEL_CELL}={key[1]}"]
    if role:
        out.append(f"{LABEL_ROLE}={role}")
    return out


def find_role(client: docker.DockerClient, key: CellKey, role: str) -> Container | None:
    """The cell's container of this role, running or not, or None."""
    found = client.containers.list(all=True, filters={"label": cell_labels(key, role)})
    return found[0] if found else None
