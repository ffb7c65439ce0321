"""Engine object names: what the platform calls the objects it creates, collision-free.

Tenant and cell names match ``spec.NAME_PATTERN`` (``[a-z0-9-]``), so they never hold a
dot. Every name made here is ``agentcell`` and its parts joined by dots: a cell's
objects have three parts (tenant, cell, object), a tenant's two (tenant, object). So the
parts can be read back from the name, and two different objects never share a name: not
``xa``/``prod-web`` and ``xa-prod``/``web``, not a cell called ``egress`` and its
tenant's egress network.

Names only serve creating and reading; what an object is, is decided by its labels. The
previous release named objects ``agentcell-<tenant>-<cell>...`` (which collided): those
are still found, by their labels, and keep their names until they are replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "agentcell"
SEPARATOR = "."
"""Not in any tenant or cell name, so it separates them unambiguously."""
RESERVED_PREFIXES = (PREFIX + SEPARATOR, PREFIX + "-")
"""The platform's namespace (this release's names, and the previous release's)."""

CELL_NETWORK = "net"
WORKSPACE = "workspace"
GATE = "egress"
DOCKER_PROXY = "dockerproxy"
EGRESS_NETWORK = "egress"


@dataclass(frozen=True)
class CellNames:
    """The engine object names of one cell (found again by labels, never by these names)."""

    container: str
    network: str
    volume: str | None


def cell_object(tenant: str, cell: str, obj: str) -> str:
    """The name of one of a cell's objects: ``agentcell.<tenant>.<cell>.<obj>``."""
    return SEPARATOR.join((PREFIX, tenant, cell, obj))


def tenant_object(tenant: str, obj: str) -> str:
    """The name of one of a tenant's objects: ``agentcell.<tenant>.<obj>``."""
    return SEPARATOR.join((PREFIX, tenant, obj))


def agent_container(tenant: str, cell: str, generation: int) -> str:
    return cell_object(tenant, cell, f"g{generation}")


def cell_names(tenant: str, cell: str, generation: int, *, workspace: bool) -> CellNames:
    """The names a deploy of generation ``generation`` creates its objects under."""
    return CellNames(
        container=agent_container(tenant, cell, generation),
        network=cell_object(tenant, cell, CELL_NETWORK),
        volume=cell_object(tenant, cell, WORKSPACE) if workspace else None,
    )


def gate_container(tenant: str, cell: str) -> str:
    return cell_object(tenant, cell, GATE)


def docker_proxy_container(tenant: str, cell: str) -> str:
    return cell_object(tenant, cell, DOCKER_PROXY)


def egress_network(tenant: str) -> str:
    return tenant_object(tenant, EGRESS_NETWORK)


def is_egress_network(tenant: str, name: str) -> bool:
    """Whether ``name`` is the name of ``tenant``'s egress network, as this release or the
    previous one (``agentcell-<tenant>-egress``) named it."""
    return name in (egress_network(tenant), f"{PREFIX}-{tenant}-{EGRESS_NETWORK}")


def parse(name: str) -> tuple[str, ...] | None:
    """The parts after ``agentcell`` of a name made here, or None for any other name."""
    parts = name.split(SEPARATOR)
    if parts[0] != PREFIX or len(parts) not in (3, 4) or not all(parts[1:]):
        return None
    return tuple(parts[1:])


def reserved_name(name: str) -> bool:
    """Whether ``name`` (a leading ``/`` aside) is in the platform's namespace, in any case."""
    return name.lstrip("/").lower().startswith(RESERVED_PREFIXES)
