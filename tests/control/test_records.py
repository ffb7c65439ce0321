"""Sidecars' decision lines become audit records, one each; the canary's probe is filed apart."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcell.control import Store
from agentcell.control._records import RecordFollowers, docker_record, egress_record, log_time_ns
from agentcell.plan import CellKey
from agentcell.policy import CANARY_HOST
from memorybackend import MemoryBackend


def line(**fields: object) -> str:
    base = {
        "time": "2026-11-27T10:00:00.250Z",
        "decision": "deny",
        "reason": "no rule allows this host",
        "host": "example.test",
        "port": 443,
        "method": "CONNECT",
    }
    return json.dumps({**base, **fields})


def test_a_decision_line_is_anegress_record() -> None:
    record = egress_record(line(decision="allow", reason="allowed by rule", host="a.test"))
    assert record is not None
    assert (record.kind, record.decision, record.reason) == ("egress", "allow", "allowed by rule")
    assert record.details == {"host": "a.test", "port": 443, "method": "CONNECT"}
    assert record.time == pytest.approx(1795773600.25)


def test_the_canarys_probe_is_an_isolation_record() -> None:
    record = egress_record(line(host=CANARY_HOST))
    assert record is not None and (record.kind, record.decision) == ("isolation", "deny")


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", json.dumps({"decision": "deny"}), line(time="yesterday")],
)
def test_anything_else_is_skipped(text: str) -> None:
    assert egress_record(text) is None


# --- the docker proxy's lines, and the followers that copy lines into the trail ---------------


def docker_line(**fields: object) -> str:
    base = {
        "time": "2026-11-27T10:00:00.250Z",
        "tenant": "acme",
        "cell": "a",
        "method": "POST",
        "path": "/v1.41/containers/create",
        "object": "",
        "decision": "deny",
        "reason": "privileged",
        "rule": "",
        "status": 403,
        "duration_ms": 0.4,
    }
    return json.dumps({**base, **fields})


def test_a_docker_proxy_line_is_adocker_record() -> None:
    record = docker_record(docker_line())
    assert record is not None
    assert (record.kind, record.actor, record.decision, record.reason) == (
        "docker",
        "docker-proxy",
        "deny",
        "privileged",
    )
    assert record.details["path"] == "/v1.41/containers/create"
    assert "tenant" not in record.details and "time" not in record.details
    assert docker_record("not json") is None


class FakeDriver(MemoryBackend):
    """A backend whose sidecar streams ``chunks``."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = chunks
        self.asked: list[tuple[CellKey, str, int]] = []

    def sidecar_logs(self, key: CellKey, role: str, *, since: int) -> Iterator[bytes]:
        self.asked.append((key, role, since))
        return iter(self.chunks)


def follow(store: Store, role: str, chunks: list[bytes]) -> FakeDriver:
    driver = FakeDriver(chunks)
    stop = threading.Event()
    stop.set()
    RecordFollowers(store, driver, stop, lambda: None).copy(("acme", "a"), role, "c1")
    return driver


def logged(lines: list[str], start: int = 1) -> bytes:
    """Lines as the engine streams them with timestamps: each prefixed by its write time."""
    return "".join(
        f"2026-11-27T10:00:0{(start + i) // 10}.{(start + i) % 10}00000001Z {text}\n"
        for i, text in enumerate(lines)
    ).encode()


def test_every_docker_proxy_line_lands_once_even_in_the_same_millisecond(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        same = [docker_line(path=f"/containers/{i}/json") for i in range(3)]
        text = logged(same)
        follow(store, "dockerproxy", [text[:50], text[50:]])  # a line split across chunks
        got = store.audit_records(kind="docker")
        assert [r.details["path"] for r in got] == [f"/containers/{i}/json" for i in range(3)]
        assert {(r.tenant, r.cell, r.actor) for r in got} == {("acme", "a", "docker-proxy")}
        # A new follower (the proxy restarted) skips what the trail already holds.
        later = docker_line(time="2026-11-27T10:00:01.000Z", path="/new")
        driver = follow(store, "dockerproxy", [logged([*same, later])])
        assert driver.asked == [(("acme", "a"), "dockerproxy", 1795773600)]
        got = store.audit_records(kind="docker")
        assert [r.details["path"] for r in got][-2:] == ["/containers/2/json", "/new"]
        assert len(got) == 4
    finally:
        store.close()


def test_a_long_request_logged_after_shorter_later_ones_is_kept(tmp_path: Path) -> None:
    """A record carries the time its request began and is logged when it ends: a tunnel
    open for minutes is logged after requests that began later. None may be dropped, by
    the first follower or by one that starts again after them."""
    store = Store(tmp_path / "s.db")
    try:
        quick = [line(time=f"2026-11-27T10:00:0{i}.000Z", host=f"q{i}.test") for i in (5, 6)]
        long_ = line(time="2026-11-27T10:00:01.000Z", host="long.test")
        follow(store, "egress", [logged(quick)])
        follow(store, "egress", [logged([*quick, long_])])  # the server restarted meanwhile
        got = store.audit_records(kind="egress")
        assert [r.details["host"] for r in got] == ["q5.test", "q6.test", "long.test"]
        assert got[-1].time < got[0].time  # its own time is the earliest
        follow(store, "egress", [logged([*quick, long_])])  # nothing new: nothing copied
        assert len(store.audit_records(kind="egress")) == 3
    finally:
        store.close()


@pytest.mark.parametrize(
    ("stamp", "ns"),
    [
        ("2026-11-27T10:00:00.000000001Z", 1795773600_000000001),
        ("2026-11-27T10:00:00.5Z", 1795773600_500000000),
        ("2026-11-27T10:00:00.123456789Z", 1795773600_123456789),
        ("2026-11-27T10:00:00Z", None),
        ("2026-11-27T10:00:00.1234567890Z", None),
        ("2026-11-27T10:00:00.12+01:00", None),
        ("{json", None),
        ("", None),
    ],
    ids=[
        "1 ns",
        "trailing zeros trimmed",
        "9 digits",
        "no fraction",
        "10 digits",
        "zone",
        "json",
        "empty",
    ],
)
def testlog_time_ns(stamp: str, ns: int | None) -> None:
    assert log_time_ns(stamp) == ns


def test_gate_lines_land_as_egress_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        follow(store, "egress", [logged([line(), line(host="b.test")])])
        got = store.audit_records(kind="egress")
        assert [r.details["host"] for r in got] == ["example.test", "b.test"]
        assert {r.actor for r in got} == {"egress-gate"}
    finally:
        store.close()
