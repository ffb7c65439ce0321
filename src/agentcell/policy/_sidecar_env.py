"""The host-to-sidecar contract: the ``AGENTCELL_*`` environment each sidecar reads.

The host side builds it (``gate_env``, ``docker_proxy_env``, used by the container
bodies in ``_hardening``); the sidecar side parses it (``gate.egress``'s ``GateConfig``,
``gate.dockerproxy``'s ``DockerProxyConfig``) by the same variable names, defined here
once. A variable's value is text; its format is written beside its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["DockerProxyVar", "GateVar", "docker_proxy_env", "gate_env"]


class GateVar(StrEnum):
    """What the egress gate reads."""

    TENANT = "AGENTCELL_TENANT"
    """The cell's tenant, for its records."""
    CELL = "AGENTCELL_CELL"
    """The cell's name, for its records."""
    PROXY_LISTEN = "AGENTCELL_PROXY_LISTEN"
    """``IP:PORT``, ``[IPv6]:PORT`` or ``subnet:CIDR:PORT``; default ``0.0.0.0:3128``."""
    CONTROL_LISTEN = "AGENTCELL_CONTROL_LISTEN"
    """The control port, formatted as PROXY_LISTEN; required."""
    GATE_TOKEN = "AGENTCELL_GATE_TOKEN"  # noqa: S105 (a variable name)
    """The control port's bearer token; required."""
    OWN_NETWORKS = "AGENTCELL_OWN_NETWORKS"
    """Comma-separated CIDRs that are the gate's or its cell's own: never destinations."""
    CELL_NETWORKS = "AGENTCELL_CELL_NETWORKS"
    """Comma-separated CIDRs: the subnet pool every cell's networks come from."""
    TLS_PORTS = "AGENTCELL_TLS_PORTS"
    """Comma-separated ports whose tunnels must open with a TLS ClientHello; default 443."""


class DockerProxyVar(StrEnum):
    """What the docker proxy reads."""

    TENANT = "AGENTCELL_TENANT"
    """The cell whose children this proxy serves; required."""
    CELL = "AGENTCELL_CELL"
    """Required, with TENANT."""
    NETWORK = "AGENTCELL_NETWORK"
    """The cell's internal network, the only one a child joins; required."""
    PROXY_LISTEN = "AGENTCELL_PROXY_LISTEN"
    """``IP:PORT`` or ``subnet:CIDR:PORT``; default ``0.0.0.0:2375``."""
    ENGINE_SOCKET = "AGENTCELL_ENGINE_SOCKET"
    """The engine's unix socket (an absolute path); default ``/var/run/docker.sock``."""
    SECCOMP = "AGENTCELL_SECCOMP"
    """Path of the cell's seccomp profile (JSON) for children; unset: the engine's default."""
    LIMIT_CONTAINERS = "AGENTCELL_LIMIT_CONTAINERS"
    """How many children at once; required."""
    LIMIT_CPUS = "AGENTCELL_LIMIT_CPUS"
    """CPUs of all children together, a decimal (``1.5``); required."""
    LIMIT_MEMORY = "AGENTCELL_LIMIT_MEMORY"
    """Memory of all children together: bytes, or with a ``k``/``m``/``g`` suffix; required."""
    LIMIT_PIDS = "AGENTCELL_LIMIT_PIDS"
    """Processes per child; default 256."""
    CHILD_USER = "AGENTCELL_CHILD_USER"
    """The numeric ``uid:gid`` a child runs as when its body names none; default 10001:10001."""
    RUNTIMES = "AGENTCELL_RUNTIMES"
    """Comma-separated runtimes a child may ask for besides the default."""


def gate_env(
    *,
    tenant: str,
    cell: str,
    proxy_listen: str,
    control_listen: str,
    token: str,
    own_networks: Iterable[str],
    cell_networks: Iterable[str],
) -> dict[str, str]:
    """The egress gate's environment."""
    env = {
        GateVar.TENANT: tenant,
        GateVar.CELL: cell,
        GateVar.PROXY_LISTEN: proxy_listen,
        GateVar.CONTROL_LISTEN: control_listen,
        GateVar.OWN_NETWORKS: ",".join(own_networks),
        GateVar.CELL_NETWORKS: ",".join(cell_networks),
        GateVar.GATE_TOKEN: token,
    }
    return {str(k): v for k, v in env.items()}


def docker_proxy_env(
    *,
    tenant: str,
    cell: str,
    network: str,
    proxy_listen: str,
    engine_socket: str,
    child_user: str,
    containers: int,
    cpus: float,
    memory: int,
    seccomp: str | None,
) -> dict[str, str]:
    """The docker proxy's environment (``seccomp``: the profile's path in its container)."""
    env = {
        DockerProxyVar.TENANT: tenant,
        DockerProxyVar.CELL: cell,
        DockerProxyVar.NETWORK: network,
        DockerProxyVar.PROXY_LISTEN: proxy_listen,
        DockerProxyVar.ENGINE_SOCKET: engine_socket,
        DockerProxyVar.CHILD_USER: child_user,
        DockerProxyVar.LIMIT_CONTAINERS: str(containers),
        DockerProxyVar.LIMIT_CPUS: f"{cpus:g}",
        DockerProxyVar.LIMIT_MEMORY: str(memory),
    }
    if seccomp is not None:
        env[DockerProxyVar.SECCOMP] = seccomp
    return {str(k): v for k, v in env.items()}
