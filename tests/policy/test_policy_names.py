"""Engine object names: no two different objects ever share one."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.policy import _names as names
from agentcell.policy import reserved_name
from agentcell.spec import NAME_PATTERN

name_st = st.from_regex(re.compile(NAME_PATTERN.removesuffix("$") + r"\Z"))


def every_name(tenant: str, cell: str, generation: int) -> dict[str, tuple[str, ...]]:
    """Every name the platform makes for this cell and its tenant -> what it stands for."""
    cell_names = names.cell_names(tenant, cell, generation, workspace=True)
    return {
        cell_names.container: ("agent", tenant, cell, str(generation)),
        cell_names.network: ("network", tenant, cell),
        cell_names.volume or "": ("workspace", tenant, cell),
        names.gate_container(tenant, cell): ("gate", tenant, cell),
        names.docker_proxy_container(tenant, cell): ("docker proxy", tenant, cell),
        names.egress_network(tenant): ("egress network", tenant),
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("xa", "prod-web"), ("xa-prod", "web"), id="a dash moved across the pair"),
        pytest.param(("acme", "egress"), ("acme", "web"), id="a cell named egress"),
        pytest.param(("acme", "net"), ("acme", "web"), id="a cell named net"),
        pytest.param(("a", "b-egress"), ("a-b", "x"), id="a cell ending like a tenant object"),
    ],
)
def test_names_that_collided_under_the_old_scheme_are_apart(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    a, b = every_name(*first, 1), every_name(*second, 1)
    assert len(a) == len(b) == 6
    same_tenant = {names.egress_network(first[0])} if first[0] == second[0] else set()
    assert a.keys() & b.keys() == same_tenant


@given(name_st, name_st, name_st, name_st, st.integers(1, 10**6), st.integers(1, 10**6))
def test_two_different_objects_never_share_a_name(
    t1: str, c1: str, t2: str, c2: str, g1: int, g2: int
) -> None:
    a, b = every_name(t1, c1, g1), every_name(t2, c2, g2)
    assert len(a) == 6 and len(b) == 6  # within one cell and its tenant, all distinct
    for shared in a.keys() & b.keys():
        assert a[shared] == b[shared], shared


@given(name_st, name_st, st.integers(1, 10**6))
def test_a_name_reads_back_as_its_parts(tenant: str, cell: str, generation: int) -> None:
    made = names.cell_names(tenant, cell, generation, workspace=True)
    assert names.parse(made.container) == (tenant, cell, f"g{generation}")
    assert names.parse(made.network) == (tenant, cell, "net")
    assert names.parse(names.egress_network(tenant)) == (tenant, "egress")
    assert all(reserved_name(n) for n in every_name(tenant, cell, generation))


@pytest.mark.parametrize(
    ("name", "tenant", "expected"),
    [
        pytest.param("agentcell.acme.egress", "acme", True, id="this release's name"),
        pytest.param("agentcell-acme-egress", "acme", True, id="the previous release's name"),
        pytest.param("agentcell.acme.web.net", "acme", False, id="a cell network"),
        pytest.param("agentcell-acme-web-egress", "acme", False, id="an old cell named web-egress"),
        pytest.param("agentcell.other.egress", "acme", False, id="another tenant's"),
    ],
)
def test_the_egress_network_is_known_by_its_exact_name(
    name: str, tenant: str, expected: bool
) -> None:
    assert names.is_egress_network(tenant, name) is expected


@pytest.mark.parametrize(
    "name", ["", "agentcell", "agentcell.x", "agentcell.a.b.c.d", "agentcell..x", "other.a.b"]
)
def test_a_name_not_made_here_does_not_parse(name: str) -> None:
    assert names.parse(name) is None
