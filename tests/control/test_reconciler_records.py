"""Sidecars' decision lines become audit records, one each; the canary's probe is filed apart."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentcell.control import Reconciler, Store
from agentcell.control._reconciler import _docker_record, _egress_record
from agentcell.plan import CellKey
from agentcell.policy import CANARY_HOST


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


def test_a_decision_line_is_an_egress_record() -> None:
    record = _egress_record(line(decision="allow", reason="allowed by rule", host="a.test"))
    assert record is not None
    assert (record.kind, record.decision, record.reason) == ("egress", "allow", "allowed by rule")
    assert record.details == {"host": "a.test", "port": 443, "method": "CONNECT"}
    assert record.time == pytest.approx(1795773600.25)


def test_the_canarys_probe_is_an_isolation_record() -> None:
    record = _egress_record(line(host=CANARY_HOST))
    assert record is not None and (record.kind, record.decision) == ("isolation", "deny")


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", json.dumps({"decision": "deny"}), line(time="yesterday")],
)
def test_anything_else_is_skipped(text: str) -> None:
    assert _egress_record(text) is None


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


def test_a_docker_proxy_line_is_a_docker_record() -> None:
    record = _docker_record(docker_line())
    assert record is not None
    assert (record.kind, record.actor, record.decision, record.reason) == (
        "docker",
        "docker-proxy",
        "deny",
        "privileged",
    )
    assert record.details["path"] == "/v1.41/containers/create"
    assert "tenant" not in record.details and "time" not in record.details
    assert _docker_record("not json") is None


class FakeDriver:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.asked: list[tuple[CellKey, str, int]] = []

    def sidecar_logs(self, key: CellKey, role: str, *, since: int) -> Iterator[bytes]:
        self.asked.append((key, role, since))
        return iter(self.chunks)


def follow(store: Store, role: str, chunks: list[bytes]) -> FakeDriver:
    driver = FakeDriver(chunks)
    fake = SimpleNamespace(
        store=store,
        driver=driver,
        _followers={},
        _followers_lock=threading.Lock(),
        _stop=threading.Event(),
        wake=lambda: None,
    )
    fake._stop.set()
    Reconciler._follow(fake, ("acme", "a"), role, "c1")  # type: ignore[arg-type]
    return driver


def test_every_docker_proxy_line_lands_once_even_in_the_same_millisecond(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        same = [docker_line(path=f"/containers/{i}/json") for i in range(3)]
        text = ("\n".join(same) + "\n").encode()
        follow(store, "dockerproxy", [text[:50], text[50:]])  # a line split across chunks
        got = store.audit_records(kind="docker")
        assert [r.details["path"] for r in got] == [f"/containers/{i}/json" for i in range(3)]
        assert {(r.tenant, r.cell, r.actor) for r in got} == {("acme", "a", "docker-proxy")}
        # A new follower (the proxy restarted) skips what the trail already holds.
        later = docker_line(time="2026-11-27T10:00:01.000Z", path="/new")
        driver = follow(store, "dockerproxy", [("\n".join([*same, later]) + "\n").encode()])
        assert driver.asked == [(("acme", "a"), "dockerproxy", 1795773600)]
        got = store.audit_records(kind="docker")
        assert [r.details["path"] for r in got][-2:] == ["/containers/2/json", "/new"]
        assert len(got) == 4
    finally:
        store.close()


def test_gate_lines_land_as_egress_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        follow(store, "egress", [(line() + "\n" + line(host="b.test") + "\n").encode()])
        got = store.audit_records(kind="egress")
        assert [r.details["host"] for r in got] == ["example.test", "b.test"]
        assert {r.actor for r in got} == {"egress-gate"}
    finally:
        store.close()
