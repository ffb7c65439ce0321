"""Orphan collection against a real store and in-memory fakes of the driver and reconciler.

The live test (test_gc_live.py) runs it on the real engine; these cover the races, which
the engine cannot be made to hit on cue: the store learns of a cell between the listing
and the removal, and the reconciler is acting on a cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agentcell.control import Store
from agentcell.control._gc import collect_garbage
from agentcell.plan import CellKey, EngineObject, spec_hash
from agentcell.runtime import GcOutcome
from agentcell.spec import API_VERSION, Agent, Tenant


def make_agent(name: str, tenant: str = "acme") -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {"image": "agentcell/demo-agent:latest"},
        }
    )


def make_tenant(name: str = "acme") -> Tenant:
    return Tenant.model_validate(
        {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": name}, "spec": {}}
    )


def obj(cell: str, kind: Any = "container", tenant: str = "acme") -> EngineObject:
    return EngineObject(
        kind, f"agentcell-{tenant}-{cell}-{kind}", f"id-{cell}-{kind}", tenant, cell
    )


class FakeDriver:
    def __init__(self, objects: list[EngineObject]) -> None:
        self.objects = objects
        self.before_remove: Callable[[], None] = lambda: None
        self.removed: list[EngineObject] = []

    def labelled_objects(self) -> list[EngineObject]:
        return list(self.objects)

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome:
        self.before_remove()
        out = GcOutcome()
        for o in objects:
            why = confirm(o)
            if why is not None:
                out.kept.append((o, why))
            elif o.kind == "volume" and o.cell == "busy-volume":
                out.failed.append((o, "volume is in use"))
            else:
                self.removed.append(o)
                out.removed.append(o)
        return out


class FakeReconciler:
    def __init__(self) -> None:
        self.busy: set[CellKey] = set()
        self.held: list[CellKey] = []

    @contextmanager
    def hold(self, key: CellKey) -> Iterator[bool]:
        if key in self.busy:
            yield False
            return
        self.held.append(key)
        yield True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "agentcell.db")
    s.put_tenant(make_tenant())
    agent = make_agent("known")
    s.put_cell(agent, spec_hash(agent), "10.213.0.0/27")
    yield s
    s.close()


def run(store: Store, driver: FakeDriver, rec: FakeReconciler, **kw: Any) -> Any:
    return collect_garbage(store, driver, rec, actor="admin", **kw)  # type: ignore[arg-type]


def test_dry_run_lists_and_removes_nothing(store: Store) -> None:
    driver = FakeDriver([obj("known"), obj("ghost"), obj("ghost", "network")])
    result = run(store, driver, FakeReconciler(), apply=False)
    assert [o.object for o in result.orphans] == [obj("ghost"), obj("ghost", "network")]
    assert driver.removed == [] and not result.applied
    assert store.audit_records() == []


def test_apply_removes_holds_the_cell_and_audits_each_removal(store: Store) -> None:
    driver = FakeDriver([obj("known"), obj("ghost"), obj("ghost", "volume")])
    rec = FakeReconciler()
    result = run(store, driver, rec, apply=True)
    assert driver.removed == [obj("ghost"), obj("ghost", "volume")]
    assert rec.held == [("acme", "ghost")]
    records = store.audit_records()
    assert [(r.tenant, r.cell, r.kind, r.decision, r.reason) for r in records] == [
        ("acme", "ghost", "lifecycle", "allow", "cell unknown to the store")
    ] * 2
    assert [r.details["name"] for r in records] == [o.name for o in driver.removed]
    assert result.removed == result.orphans


def test_a_cell_the_store_learns_of_meanwhile_is_kept(store: Store) -> None:
    driver = FakeDriver([obj("late"), obj("ghost")])

    def apply_late() -> None:  # an apply lands between the listing and the removal
        agent = make_agent("late")
        store.put_cell(agent, spec_hash(agent), "10.213.0.32/27")

    driver.before_remove = apply_late
    result = run(store, driver, FakeReconciler(), apply=True)
    assert [o.object for o in result.orphans] == [obj("ghost"), obj("late")]
    assert driver.removed == [obj("ghost")]
    assert [(o.object, why) for o, why in result.kept] == [(obj("late"), "known to the store now")]
    assert [r.cell for r in store.audit_records()] == ["ghost"]


def test_a_tenant_egress_network_is_kept_once_the_tenant_has_a_cell(tmp_path: Path) -> None:
    store = Store(tmp_path / "agentcell.db")
    store.put_tenant(make_tenant())
    egress = obj("", "network")
    driver = FakeDriver([egress])

    def apply_first_cell() -> None:
        agent = make_agent("first")
        store.put_cell(agent, spec_hash(agent), "10.213.0.0/27")

    driver.before_remove = apply_first_cell
    result = run(store, driver, FakeReconciler(), apply=True)
    assert [o.reason for o in result.orphans] == ["no cell of the tenant in the store"]
    assert driver.removed == [] and len(result.kept) == 1
    store.close()


def test_a_cell_the_reconciler_acts_on_is_kept(store: Store) -> None:
    driver = FakeDriver([obj("ghost")])
    rec = FakeReconciler()
    rec.busy.add(("acme", "ghost"))
    result = run(store, driver, rec, apply=True)
    assert driver.removed == []
    assert [why for _, why in result.kept] == ["the reconciler is acting on its cell"]


def test_a_refused_removal_is_reported_and_audited(store: Store) -> None:
    driver = FakeDriver([obj("busy-volume", "volume")])
    result = run(store, driver, FakeReconciler(), apply=True)
    assert [why for _, why in result.failed] == ["volume is in use"]
    (record,) = store.audit_records()
    assert (record.decision, record.reason, record.details["error"]) == (
        "fail",
        "orphan not removed",
        "volume is in use",
    )


def test_tenant_scope(store: Store) -> None:
    driver = FakeDriver([obj("ghost"), obj("ghost", tenant="other")])
    result = run(store, driver, FakeReconciler(), apply=False, tenant="other")
    assert [o.object for o in result.orphans] == [obj("ghost", tenant="other")]
    assert [o.reason for o in result.orphans] == ["tenant unknown to the store"]
