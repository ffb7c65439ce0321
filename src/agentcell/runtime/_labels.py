"""Finding a cell's containers by their labels (the only way the runtime finds anything),
and keeping a sidecar the way its current body says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from agentcell.errors import RuntimeDriverError
from agentcell.plan import CellKey, sidecar_current
from agentcell.policy import LABEL_CELL, LABEL_GATE_HASH, LABEL_ROLE, LABEL_TENANT

__all__ = ["cell_labels", "ensure_sidecar", "find_role", "remove_leftover"]


def cell_labels(key: CellKey, role: str | None) -> list[str]:
    """The label filter naming one cell's objects (of one role, if given)."""
    out = [f"{LABEL_TENANT}={key[0]}", f"{LABEL_CELL}={key[1]}"]
    if role:
        out.append(f"{LABEL_ROLE}={role}")
    return out


def find_role(client: docker.DockerClient, key: CellKey, role: str) -> Container | None:
    """The cell's container of this role, running or not, or None."""
    found = client.containers.list(
        all=True, filters={"label": cell_labels(key, role)}, ignore_removed=True
    )
    return found[0] if found else None


def ensure_sidecar(
    client: docker.DockerClient,
    key: CellKey,
    role: str,
    *,
    name: str,
    body_hash: str,
    body: Callable[[], dict[str, Any]],
    networks: tuple[str, ...] = (),
    after_create: Callable[[str], None] | None = None,
) -> tuple[Container, bool]:
    """The cell's running sidecar of ``role`` and whether it was created now.

    One that is not current (``plan.sidecar_current``, against ``body_hash`` and
    ``networks``) is replaced. ``after_create`` runs on a new container before it starts.
    """
    container = find_role(client, key, role)
    if container is not None and not sidecar_current(
        label_hash=container.labels.get(LABEL_GATE_HASH, ""),
        wanted_hash=body_hash,
        state=container.status,
        attached=lambda: all(_attached(client, container, n) for n in networks),
    ):
        container.remove(force=True)
        container = None
    created = container is None
    if container is None:
        remove_leftover(client, name, key)
        cid = client.api.create_container_from_config(body(), name=name)["Id"]
        if after_create is not None:
            after_create(cid)
        container = client.containers.get(cid)
    if container.status != "running":
        container.start()
    return container, created


def _attached(client: docker.DockerClient, container: Container, network: str) -> bool:
    """Whether ``container`` is attached to the network named ``network`` as it is now."""
    try:
        net_id = client.api.inspect_network(network)["Id"]
    except docker.errors.NotFound:
        return False
    nets = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return bool((nets.get(network) or {}).get("NetworkID") == net_id)


def remove_leftover(client: docker.DockerClient, name: str, key: CellKey) -> str | None:
    """Remove a container of this cell left under ``name`` (a create interrupted before it
    was recorded); its id, or None. One that is not this cell's is never touched: it raises.
    """
    try:
        stale = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if stale.labels.get(LABEL_TENANT) != key[0] or stale.labels.get(LABEL_CELL) != key[1]:
        raise RuntimeDriverError(
            f"a container named {name} exists and is not this cell's; rename or remove it"
        )
    stale.remove(force=True)
    return str(stale.id)
