"""The audit trail on a real file: filters, following, group commit, durability settings, CSV."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.control import AuditRecord, Store
from agentcell.control._audit import CSV_COLUMNS, AuditLog, AuditQuery, csv_header, csv_rows
from agentcell.errors import StoreError


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.db")
    yield log
    log.close()


def rec(
    i: int,
    tenant: str = "acme",
    cell: str = "a",
    kind: str = "egress",
    decision: str = "allow",
    actor: str = "egress-gate",
) -> AuditRecord:
    return AuditRecord(tenant, cell, actor, kind, decision, f"r{i}", {"i": i}, time=1000.0 + i)


# Ten records, one second apart (time 1000..1009), of two tenants, kinds and decisions.
TRAIL = [
    rec(0, "acme", "a", "egress", "allow"),
    rec(1, "acme", "a", "egress", "deny"),
    rec(2, "acme", "b", "docker", "deny", "docker-proxy"),
    rec(3, "globex", "a", "egress", "deny"),
    rec(4, "acme", "a", "lifecycle", "allow", "reconciler"),
    rec(5, "", "", "auth", "deny", "client 127.0.0.1"),
    rec(6, "acme", "b", "docker", "allow", "docker-proxy"),
    rec(7, "globex", "a", "lifecycle", "fail", "reconciler"),
    rec(8, "acme", "a", "egress", "deny"),
    rec(9, "acme", "", "api", "allow", "admin"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (AuditQuery(), list(range(10))),
        (AuditQuery(limit=3), [7, 8, 9]),
        (AuditQuery(tenant="acme"), [0, 1, 2, 4, 6, 8, 9]),
        (AuditQuery(tenant="acme", cell="b"), [2, 6]),
        (AuditQuery(cell="a"), [0, 1, 3, 4, 7, 8]),
        (AuditQuery(kinds=("docker",)), [2, 6]),
        (AuditQuery(kinds=("docker", "auth")), [2, 5, 6]),
        (AuditQuery(decision="deny"), [1, 2, 3, 5, 8]),
        (AuditQuery(tenant="acme", kinds=("egress",), decision="deny"), [1, 8]),
        (AuditQuery(actor="reconciler"), [4, 7]),
        (AuditQuery(since=1005.0), [5, 6, 7, 8, 9]),
        (AuditQuery(until=1002.0), [0, 1, 2]),
        (AuditQuery(since=1002.0, until=1004.0), [2, 3, 4]),
        (AuditQuery(tenant="acme", since=1003.0, decision="deny"), [8]),
        (AuditQuery(since=1002.0, until=1001.0), []),
        (AuditQuery(tenant="initech"), []),
        (AuditQuery(kinds=("egress",), limit=2), [3, 8]),
    ],
    ids=[
        "everything, oldest first",
        "the limit keeps the newest",
        "one tenant",
        "one cell",
        "a cell name across tenants",
        "one kind",
        "any of several kinds",
        "denied only",
        "tenant, kind and denied",
        "one actor",
        "since (inclusive)",
        "until (inclusive)",
        "a window",
        "tenant, since and denied",
        "an empty window",
        "a tenant with no records",
        "the newest of one kind",
    ],
)
def test_queries_filter(log: AuditLog, query: AuditQuery, expected: list[int]) -> None:
    log.append_many(TRAIL)
    assert [r.details["i"] for r in log.query(query)] == expected


def test_following_gives_the_oldest_newer_matches_and_skips_none(log: AuditLog) -> None:
    log.append_many(TRAIL)
    ids = [r.id for r in log.query(AuditQuery())]
    q = AuditQuery(decision="deny", after_id=ids[2], limit=2)
    assert [r.details["i"] for r in log.query(q)] == [3, 5]
    assert [r.details["i"] for r in log.query(AuditQuery(decision="deny", after_id=ids[5]))] == [8]
    assert log.query(AuditQuery(after_id=ids[-1])) == []


def test_store_keeps_its_keyword_interface(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        store.audit_many(TRAIL)
        got = store.audit_records(tenant="acme", kind=("egress", "docker"), decision="deny")
        assert [r.details["i"] for r in got] == [1, 2, 8]
        assert [r.details["i"] for r in store.audit_records(kind="api")] == [9]
        assert store.last_audit_id() == got[-1].id + 1
        assert store.last_audit_time(("acme", "a"), "egress") == 1008.0
    finally:
        store.close()


def test_a_batch_is_stored_whole_and_in_order(log: AuditLog) -> None:
    log.append_many(rec(i) for i in range(600))  # more than one INSERT statement's rows
    got = log.query(AuditQuery(limit=1000))
    assert [r.details["i"] for r in got] == list(range(600))
    assert [r.id for r in got] == sorted({r.id for r in got})
    assert log.last_id() == got[-1].id


def test_the_writer_fsyncs_each_commit(log: AuditLog) -> None:
    # WAL with synchronous=FULL syncs the WAL at every commit; NORMAL would not (2 = FULL).
    assert log._w.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert log._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_appenders_all_land_once_each_in_their_own_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    threads, each = 16, 60
    commits: list[int] = []
    commit = log._commit

    def counting(group: Any) -> tuple[str | None, int]:
        commits.append(len(group))
        return commit(group)

    log._commit = counting  # type: ignore[method-assign]
    start = threading.Barrier(threads)

    def run(t: int) -> None:
        start.wait()
        for i in range(each):
            log.append(rec(i, tenant=f"t{t}"))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    # A fresh connection sees every record: each was committed before append returned.
    again = AuditLog(tmp_path / "audit.db")
    try:
        got = again.query(AuditQuery(limit=10_000))
    finally:
        again.close()
    assert len(got) == threads * each
    for t in range(threads):
        mine = [r.details["i"] for r in got if r.tenant == f"t{t}"]
        assert mine == list(range(each))  # ids follow each appender's order
    assert sum(commits) == threads * each
    assert len(commits) < threads * each  # some commits were shared


@pytest.mark.parametrize("good", [1, 100], ids=["one statement", "executemany"])
def test_a_failed_commit_raises_and_stores_nothing_of_it(log: AuditLog, good: int) -> None:
    log._w.execute(
        "CREATE TEMP TRIGGER refuse BEFORE INSERT ON audit "
        "WHEN NEW.reason = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    poison = AuditRecord("a", "b", "c", "d", "e", "poison")
    with pytest.raises(StoreError, match="refused"):
        log.append_many([*(rec(i) for i in range(good)), poison])
    assert log.query(AuditQuery()) == []  # nothing half-stored
    log.append(rec(2))
    assert [r.details["i"] for r in log.query(AuditQuery())] == [2]


def test_waiting_returns_when_a_record_is_committed(log: AuditLog) -> None:
    assert log.wait(0, timeout=0.01) == 0
    t = threading.Timer(0.05, log.append, args=(rec(1),))
    t.start()
    assert log.wait(0, timeout=10) > 0
    t.join()


@pytest.mark.parametrize(
    "sql",
    ["UPDATE audit SET decision = 'allow'", "DELETE FROM audit"],
    ids=["update", "delete"],
)
def test_the_trail_stays_append_only(log: AuditLog, sql: str) -> None:
    log.append(rec(1))
    with pytest.raises(sqlite3.DatabaseError, match="the audit trail is append-only"):
        log._w.execute(sql)


@pytest.mark.parametrize(
    "query",
    [
        AuditQuery(tenant="t"),
        AuditQuery(tenant="t", cell="c"),
        AuditQuery(tenant="t", kinds=("egress",), decision="deny"),
        AuditQuery(kinds=("egress",), since=1.0),
        AuditQuery(tenant="t", since=1.0),
        AuditQuery(),
        AuditQuery(tenant="t", after_id=5),
    ],
    ids=[
        "tenant",
        "tenant+cell",
        "tenant+kind+denied",
        "kind+since",
        "tenant+since",
        "all",
        "follow",
    ],
)
def test_benchmarked_queries_walk_an_index_and_never_sort(log: AuditLog, query: AuditQuery) -> None:
    plan = " | ".join(log.plan(query))
    assert "USING INDEX" in plan or "INTEGER PRIMARY KEY" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# --- CSV --------------------------------------------------------------------------------------


def test_csv_has_the_documented_header_and_one_row_per_record() -> None:
    tricky = AuditRecord(
        "acme",
        "a",
        "admin",
        "api",
        "allow",
        'said "hi", then\nleft',
        {"b": [1, 2], "a": "x,y"},
        time=0.5,
        id=7,
    )
    text = csv_header() + csv_rows([tricky, rec(1)])
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == [
        "7",
        "1970-01-01T00:00:00.500Z",
        "acme",
        "a",
        "admin",
        "api",
        "allow",
        'said "hi", then\nleft',
        '{"a":"x,y","b":[1,2]}',
    ]
    assert len(rows) == 3


@given(
    st.lists(
        st.builds(
            AuditRecord,
            st.text(),
            st.text(),
            st.text(),
            st.text(),
            st.sampled_from(["allow", "deny", "fail"]),
            st.text(),
            st.dictionaries(st.text(), st.one_of(st.integers(), st.text(), st.booleans())),
            st.floats(min_value=0, max_value=4e9),
            st.integers(min_value=1, max_value=2**62),
        ),
        max_size=5,
    )
)
def test_csv_round_trips_any_record(records: list[AuditRecord]) -> None:
    text = csv_header() + csv_rows(records)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(records)
    for row, r in zip(rows, records, strict=True):
        assert (row["tenant"], row["cell"], row["actor"], row["kind"]) == (
            r.tenant,
            r.cell,
            r.actor,
            r.kind,
        )
        assert (row["reason"], int(row["id"])) == (r.reason, r.id)
        assert json.loads(row["details"]) == r.details
