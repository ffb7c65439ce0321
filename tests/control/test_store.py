"""The SQLite store on a real file: desired state, status versions, the append-only audit trail."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcell.control import AuditRecord, CellStatus, Store
from agentcell.errors import StoreError
from agentcell.plan import Attempt, InvalidTransition, spec_hash
from agentcell.spec import API_VERSION, Agent, Tenant

KEY = ("acme", "researcher")
SUBNET = "10.213.0.0/24"


def make_agent(name: str = "researcher", tenant: str = "acme", **spec: Any) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name, "tenant": tenant},
            "spec": {"image": "agentcell/demo-agent:latest", **spec},
        }
    )


def make_tenant(name: str = "acme", **quota: Any) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"quota": quota},
        }
    )


def put(store: Store, agent: Agent, subnet: str = SUBNET) -> tuple[int, bool]:
    return store.put_cell(agent, spec_hash(agent), subnet)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "agentcell.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = Store(path)
    yield s
    s.close()


# --- opening ---------------------------------------------------------------------------------


def test_opening_creates_the_file_and_its_directory(path: Path) -> None:
    assert not path.parent.exists()
    Store(path).close()
    assert path.is_file()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"^cannot open the state store .*garbage\.db: "):
        Store(path)


def test_a_directory_in_the_way_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    with pytest.raises(StoreError, match=r"^cannot open the state store "):
        Store(tmp_path / "db")


# --- tenants ---------------------------------------------------------------------------------


def test_a_tenant_is_stored_once_and_changed_only_by_a_new_spec(store: Store) -> None:
    assert store.put_tenant(make_tenant(agents=3)) is True
    assert store.put_tenant(make_tenant(agents=3)) is False
    assert store.put_tenant(make_tenant(agents=4)) is True
    assert store.tenant("acme") == make_tenant(agents=4)


def test_tenants_are_listed_by_name_and_deleted(store: Store) -> None:
    for name in ("globex", "acme", "initech"):
        store.put_tenant(make_tenant(name))
    assert [t.metadata.name for t in store.tenants()] == ["acme", "globex", "initech"]
    store.delete_tenant("globex")
    assert store.tenant("globex") is None
    assert [t.metadata.name for t in store.tenants()] == ["acme", "initech"]


def test_an_unknown_tenant_is_none(store: Store) -> None:
    assert store.tenant("nobody") is None


# --- cells: generations ------------------------------------------------------------------------


def test_a_new_cell_is_generation_one(store: Store) -> None:
    agent = make_agent()
    assert put(store, agent) == (1, True)
    cell = store.cell(KEY)
    assert cell is not None
    assert (cell.agent, cell.spec_hash, cell.generation, cell.subnet) == (
        agent,
        spec_hash(agent),
        1,
        SUBNET,
    )
    assert (cell.deleted, cell.keep_workspace) == (False, False)
    assert cell.created > 0


def test_an_unchanged_spec_keeps_its_generation(store: Store) -> None:
    put(store, make_agent())
    assert put(store, make_agent()) == (1, False)
    assert put(store, make_agent()) == (1, False)


def test_a_changed_spec_is_the_next_generation(store: Store) -> None:
    put(store, make_agent())
    assert put(store, make_agent(env={"A": "1"})) == (2, True)
    assert put(store, make_agent(env={"A": "2"})) == (3, True)
    assert put(store, make_agent(env={"A": "2"})) == (3, False)
    cell = store.cell(KEY)
    assert cell is not None
    assert cell.agent.spec.env == {"A": "2"}
    assert cell.generation == 3


def test_a_cell_keeps_its_subnet_across_changes(store: Store) -> None:
    put(store, make_agent(), subnet="10.213.0.0/24")
    put(store, make_agent(env={"A": "1"}), subnet="10.213.9.0/24")
    cell = store.cell(KEY)
    assert cell is not None
    assert cell.subnet == "10.213.0.0/24"
    assert store.subnets() == ["10.213.0.0/24"]


def test_a_label_change_is_stored_without_a_new_generation(store: Store) -> None:
    put(store, make_agent())
    relabelled = Agent.model_validate(
        {
            **make_agent().model_dump(by_alias=True),
            "metadata": {"name": "researcher", "tenant": "acme", "labels": {"x": "y"}},
        }
    )
    assert put(store, relabelled) == (1, False)
    cell = store.cell(KEY)
    assert cell is not None
    assert cell.agent.metadata.labels == {"x": "y"}


def test_cells_of_many_tenants_live_side_by_side(store: Store) -> None:
    put(store, make_agent("a", "acme"), "10.213.0.0/24")
    put(store, make_agent("a", "globex"), "10.213.1.0/24")
    put(store, make_agent("b", "acme"), "10.213.2.0/24")
    assert set(store.desired()) == {("acme", "a"), ("globex", "a"), ("acme", "b")}
    assert sorted(store.subnets()) == ["10.213.0.0/24", "10.213.1.0/24", "10.213.2.0/24"]
    assert store.cell(("acme", "c")) is None


# --- cells: deletion -----------------------------------------------------------------------------


def test_mark_deleted_marks_once(store: Store) -> None:
    put(store, make_agent())
    assert store.mark_deleted(KEY, keep_workspace=True) is True
    assert store.mark_deleted(KEY, keep_workspace=False) is False
    cell = store.cell(KEY)
    assert cell is not None
    assert (cell.deleted, cell.keep_workspace) == (True, True)


def test_mark_deleted_of_an_unknown_cell_is_false(store: Store) -> None:
    assert store.mark_deleted(("acme", "ghost"), keep_workspace=False) is False


def test_putting_a_deleted_cell_again_revives_it_as_the_next_generation(store: Store) -> None:
    put(store, make_agent(), subnet="10.213.0.0/24")
    store.mark_deleted(KEY, keep_workspace=True)
    assert put(store, make_agent(), subnet="10.213.5.0/24") == (2, True)
    cell = store.cell(KEY)
    assert cell is not None
    assert (cell.deleted, cell.keep_workspace, cell.subnet) == (False, False, "10.213.0.0/24")


def test_forget_drops_desired_state_and_status_but_not_audit(store: Store) -> None:
    put(store, make_agent())
    store.set_status(KEY, state="running")
    store.audit(AuditRecord("acme", "researcher", "admin", "deploy", "allow", "applied"))
    store.forget(KEY)
    assert store.cell(KEY) is None
    assert store.desired() == {}
    assert store.status(KEY) == CellStatus("acme", "researcher")
    assert [r.kind for r in store.audit_records(tenant="acme")] == ["deploy"]


# --- status --------------------------------------------------------------------------------------


def test_a_cell_without_status_is_pending_at_version_zero(store: Store) -> None:
    st = store.status(KEY)
    assert st == CellStatus("acme", "researcher")
    assert (st.state, st.health, st.reason, st.version) == (
        "pending",
        "none",
        "waiting for the reconciler",
        0,
    )


def test_a_state_change_outside_the_transition_table_is_refused(store: Store) -> None:
    store.set_status(KEY, state="removing")
    with pytest.raises(InvalidTransition, match="from removing to running"):
        store.set_status(KEY, state="running")
    assert store.status(KEY).state == "removing"  # nothing written


def test_each_change_bumps_the_version_once(store: Store) -> None:
    one = store.set_status(KEY, state="pending", reason="cell missing: starting")
    two = store.set_status(KEY, state="running", container_id="c1", ip="10.213.0.2")
    ladder = (Attempt(1.0, "restart"), Attempt(2.0, "recreate"))
    three = store.set_status(
        KEY, attempts=ladder, rung=2, failed_generation=0, observed_generation=1
    )
    assert (one.version, two.version, three.version) == (1, 2, 3)
    assert store.status(KEY) == three
    assert (three.state, three.container_id, three.ip, three.attempts, three.rung) == (
        "running",
        "c1",
        "10.213.0.2",
        ladder,
        2,
    )


def test_setting_what_is_already_there_changes_nothing(store: Store) -> None:
    first = store.set_status(KEY, state="running", reason="agent running")
    assert store.set_status(KEY, state="running", reason="agent running") == first
    assert store.set_status(KEY) == first
    assert store.status(KEY).version == 1


def test_since_moves_only_when_state_or_health_changes(store: Store) -> None:
    running = store.set_status(KEY, state="running")
    assert running.since > 0
    reasoned = store.set_status(KEY, reason="still running")
    assert reasoned.since == running.since
    healthy = store.set_status(KEY, health="healthy")
    assert healthy.since >= running.since
    pinned = store.set_status(KEY, state="failed", since=123.0)
    assert pinned.since == 123.0


def test_status_is_per_cell(store: Store) -> None:
    store.set_status(KEY, state="running")
    assert store.status(("acme", "other")).version == 0


def test_statuses_reads_what_status_reads_for_every_cell_at_once(store: Store) -> None:
    keys = [("acme", "a"), ("acme", "b"), ("zeta", "a")]
    store.set_status(keys[0], state="running", ip="10.0.0.2", attempts=(Attempt(1.0, "restart"),))
    store.set_status(keys[2], state="failed", breach="reached the host")
    assert store.statuses() == {k: store.status(k) for k in (keys[0], keys[2])}
    assert store.statuses("acme") == {keys[0]: store.status(keys[0])}
    assert store.statuses("nobody") == {}
    assert keys[1] not in store.statuses()  # no row: the caller's default, as status() gives


class SpyCondition(threading.Condition):
    """The store's condition, telling the test each time a waiter blocks on it."""

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.blocked = threading.Semaphore(0)

    def wait(self, timeout: float | None = None) -> bool:
        self.blocked.release()
        return super().wait(timeout)


def wait_in_thread(store: Store, after: int, timeout: float) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        start = time.monotonic()
        st = store.wait_status(KEY, after, timeout)
        out.append((st, time.monotonic() - start))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def spy(store: Store) -> SpyCondition:
    store.changed = SpyCondition(store._lock)
    return store.changed


def test_wait_status_returns_on_a_change(store: Store, spy: SpyCondition) -> None:
    put(store, make_agent())
    before = store.set_status(KEY, state="pending", reason="starting").version
    thread, out = wait_in_thread(store, before, timeout=30)
    assert spy.blocked.acquire(timeout=10), "the waiter never blocked"
    store.set_status(KEY, state="running")
    thread.join(timeout=10)
    ((st, elapsed),) = out
    assert (st.state, st.version) == ("running", before + 1)
    assert elapsed < 5  # woken by the change, far from the 30 s timeout


def test_wait_status_returns_at_once_when_already_newer(store: Store) -> None:
    put(store, make_agent())
    store.set_status(KEY, state="running")
    start = time.monotonic()
    assert store.wait_status(KEY, 0, timeout=30).version == 1
    assert time.monotonic() - start < 5


def test_a_change_to_another_cell_does_not_end_the_wait(store: Store, spy: SpyCondition) -> None:
    put(store, make_agent())
    put(store, make_agent("other"))
    thread, out = wait_in_thread(store, 0, timeout=30)
    assert spy.blocked.acquire(timeout=10)
    store.set_status(("acme", "other"), state="running")
    assert spy.blocked.acquire(timeout=10), "the waiter did not go back to waiting"
    assert out == []
    store.set_status(KEY, state="failed")
    thread.join(timeout=10)
    ((st, elapsed),) = out
    assert (st.state, st.version) == ("failed", 1)
    assert elapsed < 5


def test_wait_status_returns_when_the_cell_is_forgotten(store: Store, spy: SpyCondition) -> None:
    put(store, make_agent())
    thread, out = wait_in_thread(store, 0, timeout=30)
    assert spy.blocked.acquire(timeout=10)
    store.forget(KEY)
    thread.join(timeout=10)
    ((st, elapsed),) = out
    assert st == CellStatus("acme", "researcher")
    assert elapsed < 5


def test_wait_status_gives_up_at_its_timeout(store: Store) -> None:
    put(store, make_agent())
    store.set_status(KEY, state="running")
    start = time.monotonic()
    st = store.wait_status(KEY, 1, timeout=0.2)
    elapsed = time.monotonic() - start
    assert st.version == 1
    assert 0.2 <= elapsed < 5


def test_wait_status_for_an_unknown_cell_returns_at_once(store: Store) -> None:
    start = time.monotonic()
    assert store.wait_status(("acme", "ghost"), 0, timeout=30).version == 0
    assert time.monotonic() - start < 5


# --- audit -----------------------------------------------------------------------------------


def record(
    i: int, tenant: str = "acme", cell: str = "researcher", kind: str = "deploy"
) -> AuditRecord:
    return AuditRecord(
        tenant, cell, "admin", kind, "allow", f"reason {i}", {"i": i}, time=1000.0 + i
    )


def test_an_audit_record_is_stored_as_given(store: Store) -> None:
    store.audit(record(1))
    (got,) = store.audit_records()
    assert got.id > 0
    assert got == AuditRecord(
        "acme", "researcher", "admin", "deploy", "allow", "reason 1", {"i": 1}, 1001.0, got.id
    )


def test_an_audit_record_without_a_time_gets_now(store: Store) -> None:
    before = time.time()
    store.audit(AuditRecord("", "", "api", "auth", "deny", "invalid token"))
    (got,) = store.audit_records()
    assert before <= got.time <= time.time()
    assert got.details == {}


def test_audit_records_come_oldest_first_and_the_limit_keeps_the_newest(store: Store) -> None:
    for i in range(10):
        store.audit(record(i))
    assert [r.reason for r in store.audit_records()] == [f"reason {i}" for i in range(10)]
    assert [r.reason for r in store.audit_records(limit=3)] == ["reason 7", "reason 8", "reason 9"]
    ids = [r.id for r in store.audit_records()]
    assert ids == sorted(ids)
    assert len(set(ids)) == 10


def test_audit_records_after_an_id_are_the_newer_ones(store: Store) -> None:
    for i in range(5):
        store.audit(record(i))
    third = store.audit_records()[2].id
    assert [r.reason for r in store.audit_records(after_id=third)] == ["reason 3", "reason 4"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"tenant": "acme"}, [0, 1, 3]),
        ({"tenant": "globex"}, [2]),
        ({"cell": "writer"}, [1]),
        ({"kind": "remove"}, [3]),
        ({"tenant": "acme", "cell": "researcher"}, [0, 3]),
        ({"tenant": "acme", "kind": "deploy"}, [0, 1]),
        ({"tenant": "nobody"}, []),
    ],
    ids=[
        "by tenant",
        "another tenant",
        "by cell",
        "by kind",
        "tenant and cell",
        "tenant and kind",
        "no match",
    ],
)
def test_audit_records_filter(store: Store, filters: dict[str, Any], expected: list[int]) -> None:
    store.audit(record(0, "acme", "researcher", "deploy"))
    store.audit(record(1, "acme", "writer", "deploy"))
    store.audit(record(2, "globex", "researcher", "deploy"))
    store.audit(record(3, "acme", "researcher", "remove"))
    assert [r.details["i"] for r in store.audit_records(**filters)] == expected


@pytest.mark.parametrize(
    "sql",
    ["UPDATE audit SET decision = 'allow', reason = 'nothing happened'", "DELETE FROM audit"],
    ids=["update", "delete"],
)
def test_the_audit_trail_is_append_only(store: Store, path: Path, sql: str) -> None:
    store.audit(AuditRecord("acme", "researcher", "api", "auth", "deny", "invalid token"))
    with pytest.raises(StoreError, match="the audit trail is append-only"):
        store._query(sql)
    other = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="the audit trail is append-only"):
            other.execute(sql)
    finally:
        other.close()
    (kept,) = store.audit_records()
    assert (kept.decision, kept.reason) == ("deny", "invalid token")


# --- durability ------------------------------------------------------------------------------


def test_reopening_the_store_keeps_everything(path: Path) -> None:
    first = Store(path)
    first.put_tenant(make_tenant(agents=2))
    put(first, make_agent(), "10.213.0.0/24")
    put(first, make_agent(env={"A": "1"}), "10.213.0.0/24")
    put(first, make_agent("gone"), "10.213.1.0/24")
    first.mark_deleted(("acme", "gone"), keep_workspace=True)
    status = first.set_status(
        KEY, state="running", attempts=(Attempt(5.0, "restart"),), container_id="c1"
    )
    first.audit(record(1))
    desired, audit = first.desired(), first.audit_records()
    first.close()

    second = Store(path)
    try:
        assert second.tenant("acme") == make_tenant(agents=2)
        assert second.desired() == desired
        assert second.status(KEY) == status
        assert second.audit_records() == audit
        assert put(second, make_agent(env={"A": "1"})) == (2, False)
        assert second.set_status(KEY, state="failed").version == status.version + 1
    finally:
        second.close()


def test_a_cell_with_a_long_restart_window_can_be_read_back(store: Store) -> None:
    agent = make_agent(restart={"window": "300h"})
    put(store, agent)
    cell = store.cell(KEY)
    assert cell is not None
    assert cell.agent == agent


# --- the kill switch and the parsed copy of the desired state ----------------------------------


def test_pausing_a_cell_or_its_tenant_shows_in_the_desired_state(store: Store) -> None:
    store.put_tenant(make_tenant())
    put(store, make_agent())
    put(store, make_agent("other"))
    assert not store.desired()[KEY].paused
    assert store.set_paused(KEY, True) is True
    assert store.set_paused(KEY, True) is False  # unchanged
    assert store.desired()[KEY].paused and not store.desired()[("acme", "other")].paused
    assert store.set_tenant_paused("acme", True) is True
    assert all(d.paused for d in store.desired().values())
    store.set_paused(KEY, False)
    assert store.desired()[KEY].paused  # the tenant's switch still holds it
    store.set_tenant_paused("acme", False)
    assert not any(d.paused for d in store.desired().values())
    assert store.tenant_paused("acme") is False


def test_the_desired_state_is_reparsed_after_every_write(store: Store) -> None:
    store.put_tenant(make_tenant())
    put(store, make_agent())
    first = store.desired()
    assert store.desired() == first  # served from the parsed copy
    put(store, make_agent(env={"B": "2"}))
    assert store.desired()[KEY].generation == first[KEY].generation + 1
    store.mark_deleted(KEY, keep_workspace=False)
    assert store.desired()[KEY].deleted
    store.forget(KEY)
    assert store.desired() == {}
    assert store.cell(KEY) is None


def test_a_write_parses_again_only_the_specs_that_changed(store: Store) -> None:
    store.put_tenant(make_tenant())
    put(store, make_agent())
    put(store, make_agent("other"))
    first = store.desired()
    put(store, make_agent(env={"B": "2"}))
    second = store.desired()
    assert second[("acme", "other")].agent is first[("acme", "other")].agent
    assert second[KEY].agent is not first[KEY].agent
    assert second[KEY].agent.spec.env == {"B": "2"}


def test_a_cell_read_sees_every_write_and_callers_cannot_change_the_parsed_copy(
    store: Store,
) -> None:
    store.put_tenant(make_tenant())
    assert store.cell(KEY) is None
    put(store, make_agent())
    assert store.cell(KEY) is not None
    store.desired().clear()  # a caller's copy
    assert store.cell(KEY) is not None
    store.set_tenant_paused("acme", True)
    assert store.cell(KEY).paused  # type: ignore[union-attr]


def test_tenants_are_reparsed_after_every_write(store: Store) -> None:
    store.put_tenant(make_tenant(agents=1))
    assert [t.spec.quota.agents for t in store.tenants()] == [1]
    store.tenants().clear()  # a caller's copy
    store.put_tenant(make_tenant(agents=2))
    store.put_tenant(make_tenant("beta"))
    assert [(t.metadata.name, t.spec.quota.agents) for t in store.tenants()] == [
        ("acme", 2),
        ("beta", None),
    ]
    store.delete_tenant("acme")
    assert [t.metadata.name for t in store.tenants()] == ["beta"]


def test_a_store_from_an_older_release_keeps_its_restart_times(path: Path) -> None:
    import sqlite3

    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO status(tenant, name, state, health, reason, since, attempts) "
        "VALUES ('acme', 'researcher', 'running', 'none', '', 0, '[3.5, 4.5]')"
    )
    db.commit()
    db.close()
    again = Store(path)
    try:
        assert again.status(KEY).attempts == (Attempt(3.5, "restart"), Attempt(4.5, "restart"))
    finally:
        again.close()


def test_a_store_of_the_previous_release_keeps_its_attempts_under_the_new_column(
    path: Path,
) -> None:
    # The previous release's status table: the attempts lived in a column named restarts.
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE status (tenant TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, "
        "health TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL, "
        "observed_generation INTEGER NOT NULL DEFAULT 0, "
        "failed_generation INTEGER NOT NULL DEFAULT 0, container_id TEXT NOT NULL DEFAULT '', "
        "ip TEXT NOT NULL DEFAULT '', restarts TEXT NOT NULL DEFAULT '[]', "
        "policy_digest TEXT NOT NULL DEFAULT '', version INTEGER NOT NULL DEFAULT 0, "
        "PRIMARY KEY (tenant, name))"
    )
    db.execute(
        "INSERT INTO status(tenant, name, state, health, reason, since, restarts, version) "
        "VALUES ('acme', 'researcher', 'running', 'none', 'deployed', 1.0, "
        "'[[5.0, \"restart\"]]', 3)"
    )
    db.commit()
    db.close()

    store = Store(path)
    try:
        st = store.status(KEY)
        assert (st.state, st.attempts, st.version) == ("running", (Attempt(5.0, "restart"),), 3)
        columns = {r[1] for r in store._db.execute("PRAGMA table_info(status)")}
        assert "attempts" in columns and "restarts" not in columns
    finally:
        store.close()
