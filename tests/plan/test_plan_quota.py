"""Tenant quotas: the sum over a tenant's cells against each limit, boundary included."""

from __future__ import annotations

from typing import Any

import pytest

from agentcell.plan import check_quota
from agentcell.policy import Decision
from agentcell.spec import API_VERSION, Agent, TenantQuota

MI, GI = 1024**2, 1024**3


def cell(name: str = "a", cpus: float = 1.0, memory: int = 512 * MI) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": "acme"},
            "spec": {"image": "busybox", "resources": {"cpus": cpus, "memory": memory}},
        }
    )


def cells(n: int, **resources: Any) -> list[Agent]:
    return [cell(f"c{i}", **resources) for i in range(n)]


def quota(**limits: Any) -> TenantQuota:
    return TenantQuota.model_validate(limits)


WITHIN = Decision(True, "within quota")
ROWS: list[tuple[str, TenantQuota, list[Agent], Decision]] = [
    ("no quota: anything fits", quota(), cells(50, cpus=8, memory=64 * GI), WITHIN),
    ("no cells fit any quota", quota(agents=0, cpus=0.5, memory=16 * MI), [], WITHIN),
    ("agents: exactly the limit is allowed", quota(agents=3), cells(3), WITHIN),
    (
        "agents: one over the limit",
        quota(agents=3),
        cells(4),
        Decision(False, "agents quota exceeded", "4 agents requested, quota is 3"),
    ),
    (
        "agents: a zero quota refuses the first",
        quota(agents=0),
        cells(1),
        Decision(False, "agents quota exceeded", "1 agents requested, quota is 0"),
    ),
    ("cpus: exactly the limit is allowed", quota(cpus=4), cells(4, cpus=1.0), WITHIN),
    (
        "cpus: a float sum at the limit is allowed (0.1 + 0.2 = 0.3)",
        quota(cpus=0.3),
        [cell("a", cpus=0.1), cell("b", cpus=0.2)],
        WITHIN,
    ),
    (
        "cpus: over the limit",
        quota(cpus=2),
        cells(2, cpus=1.25),
        Decision(False, "cpus quota exceeded", "2.5 CPUs requested, quota is 2"),
    ),
    (
        "memory: exactly the limit is allowed",
        quota(memory="1Gi"),
        cells(2, memory=512 * MI),
        WITHIN,
    ),
    (
        "memory: one byte over the limit",
        quota(memory=GI),
        [cell("a", memory=512 * MI), cell("b", memory=512 * MI + 1)],
        Decision(False, "memory quota exceeded", "1073741825 requested, quota is 1Gi"),
    ),
    (
        "memory: over the limit, in binary units",
        quota(memory="1Gi"),
        cells(3, memory=512 * MI),
        Decision(False, "memory quota exceeded", "1536Mi requested, quota is 1Gi"),
    ),
    (
        "agents are checked before cpus and memory",
        quota(agents=1, cpus=1, memory=GI),
        cells(2, cpus=4, memory=4 * GI),
        Decision(False, "agents quota exceeded", "2 agents requested, quota is 1"),
    ),
    (
        "cpus are checked before memory",
        quota(cpus=1, memory=GI),
        cells(2, cpus=4, memory=4 * GI),
        Decision(False, "cpus quota exceeded", "8 CPUs requested, quota is 1"),
    ),
    (
        "every limit at its boundary at once",
        quota(agents=2, cpus=3, memory="1Gi"),
        [cell("a", cpus=1.5, memory=768 * MI), cell("b", cpus=1.5, memory=256 * MI)],
        WITHIN,
    ),
]


@pytest.mark.parametrize(
    ("limits", "agents", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_check_quota(limits: TenantQuota, agents: list[Agent], expected: Decision) -> None:
    decision = check_quota(limits, agents)
    assert decision == expected
    assert bool(decision) is expected.allow


def test_any_iterable_of_agents_is_counted() -> None:
    assert not check_quota(quota(agents=2), (a for a in cells(3)))
