"""What both sidecars read from their environment alike: listen addresses (``IP:PORT``,
``[IPv6]:PORT``, ``subnet:CIDR:PORT``), ports, lists; and this container's own addresses
(``/proc/net/fib_trie`` for IPv4, ``/proc/net/if_inet6`` for IPv6)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path

from agentcell.errors import AgentcellError
from agentcell.policy._egress import IPAddress
from agentcell.policy._hostaddr import fib_trie_addresses, if_inet6_addresses

__all__ = [
    "SidecarConfigError",
    "local_addresses",
    "parse_fib_trie",
    "parse_if_inet6",
    "parse_listen",
    "parse_port",
    "split",
]


class SidecarConfigError(AgentcellError):
    """A sidecar's environment is incomplete or invalid; the message names the variable."""


def split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_port(var: str, raw: str, *, zero_ok: bool = False) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise SidecarConfigError(f"{var}: port {raw!r} is not a number")
    port = int(raw)
    if not (0 if zero_ok else 1) <= port <= 65535:
        raise SidecarConfigError(f"{var}: port {port} is out of range")
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
            raise SidecarConfigError(f"{var}: expected subnet:CIDR:PORT, got {raw!r}")
        try:
            network = ipaddress.ip_network(cidr_text, strict=False)
        except ValueError as e:
            raise SidecarConfigError(f"{var}: {cidr_text!r} is not a CIDR") from e
        port = parse_port(var, port_text, zero_ok=zero_ok)
        candidates = list((local or local_addresses)())
        for address in candidates:
            if address.version == network.version and address in network:
                return address, port
        raise SidecarConfigError(
            f"{var}: this container has no address inside {network} "
            f"(its addresses: {', '.join(map(str, candidates)) or 'none found'})"
        )
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
    else:
        host, sep, port_text = raw.rpartition(":")
    if not sep:
        raise SidecarConfigError(f"{var}: expected IP:PORT, got {raw!r}")
    if ":" in host and not raw.startswith("["):
        raise SidecarConfigError(f"{var}: write an IPv6 address in brackets, [{host}]:PORT")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as e:
        raise SidecarConfigError(f"{var}: {host!r} is not an IP address") from e
    return address, parse_port(var, port_text, zero_ok=zero_ok)


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
