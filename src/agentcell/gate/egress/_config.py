"""The egress gate's configuration: read once from the environment, validated at start.

Also owns finding this container's own addresses (``/proc/net/fib_trie`` for IPv4,
``/proc/net/if_inet6`` for IPv6), for ``subnet:CIDR:PORT`` listen addresses and for
the gate's own-address list.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentcell.errors import AgentcellError
from agentcell.policy._egress import IPAddress, IPNetwork
from agentcell.policy._hostaddr import fib_trie_addresses, if_inet6_addresses
from agentcell.policy._sidecar_env import GateVar

__all__ = [
    "GateConfig",
    "GateConfigError",
    "local_addresses",
    "parse_fib_trie",
    "parse_if_inet6",
    "parse_listen",
]

_ALWAYS_OWN = (ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"))
"""Connecting to the unspecified address reaches this host: always the gate's own."""


class GateConfigError(AgentcellError):
    """The gate's environment is incomplete or invalid; the message names the variable."""


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
            raise GateConfigError(f"{GateVar.GATE_TOKEN} is required (the control port's token)")
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
            raise GateConfigError(
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
        for item in _split(env.get(GateVar.TLS_PORTS, "443")):
            tls_ports.add(_port(GateVar.TLS_PORTS, item))
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
    for item in _split(env.get(var, "")):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as e:
            raise GateConfigError(f"{var}: {item!r} is not a CIDR") from e
    return out


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _port(var: str, raw: str, *, zero_ok: bool = False) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise GateConfigError(f"{var}: port {raw!r} is not a number")
    port = int(raw)
    if not (0 if zero_ok else 1) <= port <= 65535:
        raise GateConfigError(f"{var}: port {port} is out of range")
    return port


def parse_listen(
    var: str,
    raw: str,
    local: Callable[[], Iterable[IPAddress]] | None = None,
    *,
    zero_ok: bool = True,
) -> tuple[IPAddress, int]:
    """``IP:PORT``, ``[IPv6]:PORT`` or ``subnet:CIDR:PORT`` (this host's address in CIDR).

    ``local`` gives this host's addresses (default: ``local_addresses``); it is asked
    only for ``subnet:``. Port 0 asks the kernel for a free port (tests).
    """
    raw = raw.strip()
    if raw.startswith("subnet:"):
        cidr_text, sep, port_text = raw[len("subnet:") :].rpartition(":")
        if not sep:
            raise GateConfigError(f"{var}: expected subnet:CIDR:PORT, got {raw!r}")
        try:
            network = ipaddress.ip_network(cidr_text, strict=False)
        except ValueError as e:
            raise GateConfigError(f"{var}: {cidr_text!r} is not a CIDR") from e
        port = _port(var, port_text, zero_ok=zero_ok)
        candidates = list((local or local_addresses)())
        for address in candidates:
            if address.version == network.version and address in network:
                return address, port
        raise GateConfigError(
            f"{var}: this container has no address inside {network} "
            f"(its addresses: {', '.join(map(str, candidates)) or 'none found'})"
        )
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
    else:
        host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise GateConfigError(f"{var}: expected IP:PORT, got {raw!r}")
    if ":" in host and not raw.startswith("["):
        raise GateConfigError(f"{var}: write an IPv6 address in brackets, [{host}]:PORT")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as e:
        raise GateConfigError(f"{var}: {host!r} is not an IP address") from e
    return address, _port(var, port_text, zero_ok=zero_ok)


def parse_fib_trie(text: str) -> list[ipaddress.IPv4Address]:
    """This host's IPv4 addresses: the ``/32 host LOCAL`` leaves of ``/proc/net/fib_trie``."""
    return fib_trie_addresses(text)


def parse_if_inet6(text: str) -> list[ipaddress.IPv6Address]:
    """This host's IPv6 addresses from ``/proc/net/if_inet6``, every scope."""
    return if_inet6_addresses(text)


def local_addresses(proc: Path = Path("/proc/net")) -> list[IPAddress]:
    """Every address configured on this host's (container's) interfaces."""
    addresses: list[IPAddress] = []
    with contextlib.suppress(OSError):
        addresses.extend(parse_fib_trie((proc / "fib_trie").read_text()))
    with contextlib.suppress(OSError):
        addresses.extend(parse_if_inet6((proc / "if_inet6").read_text()))
    return addresses
