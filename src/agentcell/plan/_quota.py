"""Tenant quota arithmetic: would these cells fit the tenant's quota?"""

from __future__ import annotations

from collections.abc import Iterable

from agentcell.policy import Decision
from agentcell.spec import Agent, TenantQuota, format_bytes

__all__ = ["check_quota"]


def check_quota(quota: TenantQuota, agents: Iterable[Agent]) -> Decision:
    """Allow iff the tenant's cells, summed, fit every limit of its quota."""
    cells = list(agents)
    if quota.agents is not None and len(cells) > quota.agents:
        return Decision(
            False,
            "agents quota exceeded",
            f"{len(cells)} agents requested, quota is {quota.agents}",
        )
    cpus = sum(a.spec.resources.cpus for a in cells)
    if quota.cpus is not None and cpus > quota.cpus + 1e-9:
        return Decision(
            False, "cpus quota exceeded", f"{cpus:g} CPUs requested, quota is {quota.cpus:g}"
        )
    memory = sum(a.spec.resources.memory for a in cells)
    if quota.memory is not None and memory > quota.memory:
        return Decision(
            False,
            "memory quota exceeded",
            f"{format_bytes(memory)} requested, quota is {format_bytes(quota.memory)}",
        )
    return Decision(True, "within quota")
