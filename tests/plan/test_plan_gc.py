"""Orphans: one table whose rows mirror the precedence list in _gc.py's docstring.

1. no agentcell.tenant label                     -> never an orphan
2. a cell label, (tenant, cell) known            -> not an orphan, whatever its role
3. a cell label, tenant unknown                  -> "tenant unknown to the store"
4. a cell label, cell unknown                    -> "cell unknown to the store"
5. no cell label, the store knows a tenant's cell -> not an orphan
6. no cell label, tenant unknown                 -> "tenant unknown to the store"
7. no cell label, the tenant has no cell          -> "no cell of the tenant in the store"
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.plan import GC_REASONS, CellKey, EngineObject, ObjectKind, Orphan, find_orphans

CELLS: frozenset[CellKey] = frozenset({("acme", "researcher"), ("acme", "gone")})
"""("acme", "gone") stands for a cell marked deleted whose objects are not removed yet."""
TENANTS = frozenset({"acme", "idle"})


def obj(
    kind: ObjectKind = "container", tenant: str = "acme", cell: str = "researcher", role: str = ""
) -> EngineObject:
    name = f"agentcell-{tenant}-{cell or 'egress'}-{role or kind}"
    return EngineObject(kind, name, f"id-{name}", tenant, cell, role)


TABLE = [
    ("1 no tenant label: nobody's we know", obj(tenant="", cell="x", role="agent"), None),
    ("1 no tenant label, no cell label", obj(tenant="", cell=""), None),
    ("2 the agent of a known cell", obj(role="agent"), None),
    ("2 the egress gate of a known cell", obj(role="egress"), None),
    ("2 the docker proxy of a known cell", obj(role="dockerproxy"), None),
    ("2 a child the cell's docker proxy made", obj(role="child"), None),
    ("2 a volume a child's mount made", obj("volume", role="child"), None),
    ("2 the network of a known cell", obj("network", role="network"), None),
    ("2 the workspace of a known cell", obj("volume", role="workspace"), None),
    ("2 an object of a deleted cell not yet removed", obj(cell="gone", role="agent"), None),
    ("2 an object without a role of a known cell", obj(role=""), None),
    (
        "3 a container of an unknown tenant",
        obj(tenant="ghost", role="agent"),
        "tenant unknown to the store",
    ),
    (
        "3 a network of an unknown tenant, same cell name as a known one",
        obj("network", tenant="ghost", role="network"),
        "tenant unknown to the store",
    ),
    (
        "4 an agent of an unknown cell of a known tenant",
        obj(cell="other", role="agent"),
        "cell unknown to the store",
    ),
    (
        "4 a child of an unknown cell",
        obj(cell="other", role="child"),
        "cell unknown to the store",
    ),
    (
        "4 a volume of an unknown cell of a tenant with no cell",
        obj("volume", tenant="idle", cell="x", role="workspace"),
        "cell unknown to the store",
    ),
    (
        "5 the egress network of a tenant with cells",
        obj("network", cell="", role="egress-network"),
        None,
    ),
    (
        "6 the egress network of an unknown tenant",
        obj("network", tenant="ghost", cell="", role="egress-network"),
        "tenant unknown to the store",
    ),
    (
        "7 the egress network of a known tenant without cells",
        obj("network", tenant="idle", cell="", role="egress-network"),
        "no cell of the tenant in the store",
    ),
]


@pytest.mark.parametrize(("obj_", "want"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
def test_orphan_table(obj_: EngineObject, want: str | None) -> None:
    got = find_orphans([obj_], CELLS, TENANTS)
    assert got == ([] if want is None else [Orphan(obj_, want)])
    assert want is None or want in GC_REASONS


def test_orphans_come_in_removal_order_containers_networks_volumes() -> None:
    vol = obj("volume", cell="b", role="workspace")
    net = obj("network", cell="a", role="network")
    c2 = obj(cell="b", role="agent")
    c1 = obj(cell="a", role="agent")
    got = [o.object for o in find_orphans([vol, net, c2, c1], set(), {"acme"})]
    assert got == [c1, c2, net, vol]


def test_nothing_known_everything_labelled_is_an_orphan() -> None:
    objs = [obj(), obj("network", cell=""), obj("volume", tenant="idle")]
    assert len(find_orphans(objs, set(), set())) == 3


def test_empty_engine_no_orphans() -> None:
    assert find_orphans([], CELLS, TENANTS) == []


# --- properties ---------------------------------------------------------------------------------

_names = st.sampled_from(["", "a", "b", "c"])
_objects = st.builds(
    EngineObject,
    kind=st.sampled_from(["container", "network", "volume"]),
    name=st.text(max_size=4),
    id=st.text(max_size=4),
    tenant=_names,
    cell=_names,
    role=st.sampled_from(["", "agent", "egress", "dockerproxy", "child", "network", "workspace"]),
)
_keys = st.frozensets(st.tuples(_names.filter(bool), _names.filter(bool)), max_size=6)


@given(st.lists(_objects, max_size=12), _keys, st.frozensets(_names.filter(bool), max_size=3))
def test_never_an_object_of_a_known_cell(
    objects: list[EngineObject], cells: frozenset[CellKey], tenants: frozenset[str]
) -> None:
    for o in find_orphans(objects, cells, tenants):
        assert o.object.key not in cells
        assert o.object.tenant
        assert o.object.cell or all(t != o.object.tenant for t, _ in cells)
        assert o.reason in GC_REASONS


@given(st.lists(_objects, max_size=12), _keys, st.frozensets(_names.filter(bool), max_size=3))
def test_every_object_of_an_unknown_cell(
    objects: list[EngineObject], cells: frozenset[CellKey], tenants: frozenset[str]
) -> None:
    found = [o.object for o in find_orphans(objects, cells, tenants)]
    unknown = [o for o in objects if o.tenant and o.cell and o.key not in cells]
    for o in unknown:
        assert found.count(o) == objects.count(o)
    assert len(found) <= len(objects)
