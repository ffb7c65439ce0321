"""Tenant quota arithmetic: would the tenant's cells, after a change, fit its quota?

A cell counts its agent's CPUs and memory plus, when it may start containers
(``docker.access: own``), the most its children may take (``docker.limits``): both run on
the tenant's share of the host.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentcell.policy import Decision
from agentcell.spec import Agent, TenantQuota, format_bytes

__all__ = ["check_quota", "footprint"]


def footprint(agent: Agent) -> tuple[float, int]:
    """(CPUs, memory bytes) one cell counts against its tenant's quota."""
    r = agent.spec.resources
    cpus, memory = r.cpus, r.memory
    if agent.spec.docker.access == "own":
        cpus += agent.spec.docker.limits.cpus
        memory += agent.spec.docker.limits.memory
    return cpus, memory


def check_quota(
    quota: TenantQuota, agents: Iterable[Agent], in_use: Iterable[Agent] = ()
) -> Decision:
    """Allow iff ``agents`` (the tenant's cells after the change), summed, fit every limit.

    ``in_use`` (the cells before the change) only feeds the message, so a refusal names the
    quota, the current use and what the change would make it.
    """
    after, before = list(agents), list(in_use)

    def use(cells: list[Agent]) -> tuple[int, float, int]:
        sums = [footprint(a) for a in cells]
        return len(cells), sum(c for c, _ in sums), sum(m for _, m in sums)

    n, cpus, memory = use(after)
    n0, cpus0, memory0 = use(before)
    if quota.agents is not None and n > quota.agents:
        return Decision(
            False,
            "agents quota exceeded",
            f"quota is {quota.agents} agents; {n0} in use, {n} after this change",
        )
    if quota.cpus is not None and cpus > quota.cpus + 1e-9:
        return Decision(
            False,
            "cpus quota exceeded",
            f"quota is {quota.cpus:g} CPUs; {cpus0:g} in use, {cpus:g} after this change",
        )
    if quota.memory is not None and memory > quota.memory:
        return Decision(
            False,
            "memory quota exceeded",
            f"quota is {format_bytes(quota.memory)}; {format_bytes(memory0)} in use, "
            f"{format_bytes(memory)} after this change",
        )
    return Decision(True, "within quota")
