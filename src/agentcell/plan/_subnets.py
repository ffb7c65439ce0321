"""Small per-cell subnets from a configurable pool, instead of the engine's /16 defaults."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from agentcell.errors import ConflictError

__all__ = ["allocate_subnet", "parse_pool"]


def parse_pool(pool: str, prefix: int) -> ipaddress.IPv4Network:
    """Validate the pool and the per-cell prefix length together."""
    try:
        net = ipaddress.ip_network(pool, strict=True)
    except ValueError as e:
        raise ConflictError(
            f"subnet pool {pool!r} is not an IPv4 CIDR such as 10.213.0.0/16: {e}"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConflictError(f"subnet pool {pool!r} must be IPv4")
    if not net.prefixlen <= prefix <= 29:
        raise ConflictError(
            f"cell subnet size /{prefix} must lie between the pool's /{net.prefixlen} and /29"
        )
    return net


def allocate_subnet(pool: str, prefix: int, used: Iterable[str]) -> str:
    """The first /prefix of ``pool`` that overlaps none of ``used``."""
    net = parse_pool(pool, prefix)
    taken = [ipaddress.ip_network(u, strict=False) for u in used]
    taken4 = [t for t in taken if isinstance(t, ipaddress.IPv4Network) and t.overlaps(net)]
    for candidate in net.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(t) for t in taken4):
            return str(candidate)
    raise ConflictError(
        f"subnet pool {pool} is exhausted: all {2 ** (prefix - net.prefixlen)} /{prefix} "
        "subnets are in use; remove cells or configure a larger pool (--subnet-pool)"
    )
