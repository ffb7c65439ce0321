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
    """The first /prefix of ``pool`` that overlaps none of ``used``.

    One pass over the used ranges sorted by start, so a pool with a thousand cells in use
    costs a thousand steps, not a thousand per candidate."""
    net = parse_pool(pool, prefix)
    size = 2 ** (32 - prefix)
    base, last = int(net.network_address), int(net.broadcast_address)
    ranges = sorted(
        (int(t.network_address), int(t.broadcast_address))
        for t in (ipaddress.ip_network(u, strict=False) for u in used)
        if isinstance(t, ipaddress.IPv4Network) and t.overlaps(net)
    )
    at = base  # the candidate: the first subnet not yet known to overlap a used range
    for start, end in ranges:
        if start >= at + size:  # every range before this one ends below ``at``: it is free
            break
        if end >= at:  # overlaps the candidate: the next candidate starts past its end
            at = base + -(-(end + 1 - base) // size) * size
    if at + size - 1 <= last:
        return str(ipaddress.IPv4Network((at, prefix)))
    raise ConflictError(
        f"subnet pool {pool} is exhausted: all {2 ** (prefix - net.prefixlen)} /{prefix} "
        "subnets are in use; remove cells or configure a larger pool (--subnet-pool)"
    )
