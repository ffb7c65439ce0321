"""The egress gate's configuration: read once from the environment, validated at start
(the variables: ``policy._sidecar_env.GateVar``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agentcell.gate._listen import (
    SidecarConfigError,
    local_addresses,
    parse_listen,
    parse_port,
    split,
)
from agentcell.policy._egress import IPAddress, IPNetwork
from agentcell.policy._sidecar_env import GateVar

__all__ = ["GateConfig"]

_ALWAYS_OWN = (ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"))
"""Connecting to the unspecified address reaches this host: always the gate's own."""


@dataclass(frozen=True)
class GateConfig:
    """Everything the gate needs to start, from ``AGENTCELL_*`` variables."""

    tenant: str
    cell: str
    proxy_listen: tuple[IPAddress, int]
    control_listen: tuple[IPAddress, int]
    token: str
    own_networks: tuple[IPNetwork, ...]
    tls_ports: frozenset[int]
    cell_networks: tuple[IPNetwork, ...] = ()
    """The subnet pool: every cell's networks, never a destination (``AGENTCELL_CELL_NETWORKS``)."""

    def __repr__(self) -> str:  # never show the token
        return (
            f"GateConfig(tenant={self.tenant!r}, cell={self.cell!r}, "
            f"proxy_listen={self.proxy_listen!r}, control_listen={self.control_listen!r}, "
            f"own_networks={self.own_networks!r}, tls_ports={sorted(self.tls_ports)!r}, "
            f"cell_networks={self.cell_networks!r})"
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, local: Iterable[IPAddress] | None = None
    ) -> GateConfig:
        """Read and check the environment; ``local`` overrides address discovery (tests)."""
        token = env.get(GateVar.GATE_TOKEN, "")
        if not token:
            raise SidecarConfigError(f"{GateVar.GATE_TOKEN} is required (the control port's token)")
        locals_: list[IPAddress] | None = None if local is None else list(local)

        def discovered() -> list[IPAddress]:
            nonlocal locals_
            if locals_ is None:
                locals_ = local_addresses()
            return locals_

        proxy = parse_listen(
            GateVar.PROXY_LISTEN, env.get(GateVar.PROXY_LISTEN, "0.0.0.0:3128"), discovered
        )
        raw_control = env.get(GateVar.CONTROL_LISTEN, "")
        if not raw_control:
            raise SidecarConfigError(
                f"{GateVar.CONTROL_LISTEN} is required (IP:PORT or subnet:CIDR:PORT)"
            )
        control = parse_listen(GateVar.CONTROL_LISTEN, raw_control, discovered)

        own: list[IPNetwork] = [*_ALWAYS_OWN, *_networks(env, GateVar.OWN_NETWORKS)]
        for address, _ in (proxy, control):
            if address.is_unspecified:
                # A wildcard listener is reachable at every address of this host.
                own.extend(ipaddress.ip_network(a) for a in discovered())
            else:
                own.append(ipaddress.ip_network(address))

        tls_ports: set[int] = set()
        for item in split(env.get(GateVar.TLS_PORTS, "443")):
            tls_ports.add(parse_port(GateVar.TLS_PORTS, item))
        return cls(
            tenant=env.get(GateVar.TENANT, ""),
            cell=env.get(GateVar.CELL, ""),
            proxy_listen=proxy,
            control_listen=control,
            token=token,
            own_networks=tuple(dict.fromkeys(own)),
            tls_ports=frozenset(tls_ports),
            cell_networks=tuple(dict.fromkeys(_networks(env, GateVar.CELL_NETWORKS))),
        )


def _networks(env: Mapping[str, str], var: str) -> list[IPNetwork]:
    """A comma-separated list of CIDRs."""
    out: list[IPNetwork] = []
    for item in split(env.get(var, "")):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as e:
            raise SidecarConfigError(f"{var}: {item!r} is not a CIDR") from e
    return out
