"""Tenant quotas: the sum over a tenant's cells against each limit, boundary included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import check_quota, footprint
from agentcell.policy import Decision
from agentcell.spec import API_VERSION, Agent, TenantQuota

MI, GI = 1024**2, 1024**3


def cell(
    name: str = "a", cpus: float = 1.0, memory: int = 512 * MI, docker: dict[str, Any] | None = None
) -> Agent:
    spec: dict[str, Any] = {"image": "busybox", "resources": {"cpus": cpus, "memory": memory}}
    if docker is not None:
        spec["docker"] = docker
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": "acme"},
            "spec": spec,
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
        Decision(
            False, "agents quota exceeded", "quota is 3 agents; 0 in use, 4 after this change"
        ),
    ),
    (
        "agents: a zero quota refuses the first",
        quota(agents=0),
        cells(1),
        Decision(
            False, "agents quota exceeded", "quota is 0 agents; 0 in use, 1 after this change"
        ),
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
        Decision(False, "cpus quota exceeded", "quota is 2 CPUs; 0 in use, 2.5 after this change"),
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
        Decision(
            False, "memory quota exceeded", "quota is 1Gi; 0 in use, 1073741825 after this change"
        ),
    ),
    (
        "memory: over the limit, in binary units",
        quota(memory="1Gi"),
        cells(3, memory=512 * MI),
        Decision(
            False, "memory quota exceeded", "quota is 1Gi; 0 in use, 1536Mi after this change"
        ),
    ),
    (
        "agents are checked before cpus and memory",
        quota(agents=1, cpus=1, memory=GI),
        cells(2, cpus=4, memory=4 * GI),
        Decision(
            False, "agents quota exceeded", "quota is 1 agents; 0 in use, 2 after this change"
        ),
    ),
    (
        "cpus are checked before memory",
        quota(cpus=1, memory=GI),
        cells(2, cpus=4, memory=4 * GI),
        Decision(False, "cpus quota exceeded", "quota is 1 CPUs; 0 in use, 8 after this change"),
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


def test_the_message_names_the_quota_the_use_and_the_result() -> None:
    decision = check_quota(quota(agents=2), cells(3), in_use=cells(2))
    assert decision == Decision(
        False, "agents quota exceeded", "quota is 2 agents; 2 in use, 3 after this change"
    )
    decision = check_quota(quota(memory="1Gi"), cells(3, memory=512 * MI), in_use=cells(1))
    assert decision.rule == "quota is 1Gi; 512Mi in use, 1536Mi after this change"


OWN = {"access": "own", "limits": {"containers": 2, "cpus": 1.5, "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (cell(cpus=1, memory=512 * MI), (1.0, 512 * MI)),
        (cell(cpus=1, memory=512 * MI, docker={"access": "none"}), (1.0, 512 * MI)),
        (cell(cpus=1, memory=512 * MI, docker=OWN), (2.5, 512 * MI + GI)),
    ],
    ids=["no docker access", "docker access none", "docker access own adds its limits"],
)
def test_a_cell_counts_its_children_limits(agent: Agent, expected: tuple[float, int]) -> None:
    assert footprint(agent) == expected


def test_children_limits_count_against_the_tenant() -> None:
    decision = check_quota(quota(cpus=2), [cell(cpus=1, docker=OWN)])
    assert decision == Decision(
        False, "cpus quota exceeded", "quota is 2 CPUs; 0 in use, 2.5 after this change"
    )


@given(
    st.lists(st.tuples(st.floats(0.1, 4), st.integers(64, 4096)), max_size=8),
    st.integers(0, 8),
    st.floats(0.5, 32),
    st.integers(64, 32768),
)
def test_the_decision_is_the_sum_against_every_limit(
    sizes: list[tuple[float, int]], agents: int, cpus: float, memory_mi: int
) -> None:
    fleet = [cell(f"c{i}", cpus=c, memory=m * MI) for i, (c, m) in enumerate(sizes)]
    decision = check_quota(quota(agents=agents, cpus=cpus, memory=memory_mi * MI), fleet)
    fits = (
        len(fleet) <= agents
        and sum(c for c, _ in sizes) <= cpus + 1e-9
        and sum(m for _, m in sizes) <= memory_mi
    )
    assert decision.allow is fits
    # Adding a cell never turns a refusal into an allow.
    if not fits:
        assert not check_quota(
            quota(agents=agents, cpus=cpus, memory=memory_mi * MI), [*fleet, cell("z")]
        )
