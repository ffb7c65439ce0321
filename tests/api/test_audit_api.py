"""``GET /v1/audit``: filters, formats (json, ndjson, csv), follow, errors saying what is valid."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from agentcell.api._app import _follow
from agentcell.control import AuditLog, AuditQuery, AuditRecord
from agentcell.control._audit import CSV_COLUMNS
from agentcell.spec import API_VERSION, Tenant
from auditserver import AuditServer, audit_server, auth


def rec(i: int, tenant: str = "acme", kind: str = "egress", decision: str = "allow") -> AuditRecord:
    return AuditRecord(
        tenant, "a", "egress-gate", kind, decision, f"r{i}", {"i": i}, time.time() - 1000 * (3 - i)
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuditServer]:
    with audit_server(tmp_path) as s:
        s.store.audit_many(
            [
                rec(0),
                rec(1, decision="deny"),
                rec(2, "globex", "docker", "deny"),
                rec(3, kind="lifecycle"),
            ]
        )
        yield s


def get(server: AuditServer, **params: object) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/audit", params=params, headers=auth(), timeout=10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [0, 1, 2, 3]),
        ({"tenant": "acme"}, [0, 1, 3]),
        ({"kind": ["egress", "docker"]}, [0, 1, 2]),
        ({"denied": "true"}, [1, 2]),
        ({"since": "1500s"}, [2, 3]),
        ({"until": "25m"}, [0, 1]),
        ({"actor": "egress-gate", "limit": 1}, [3]),
        ({"actor": "admin"}, []),
    ],
    ids=[
        "all",
        "tenant",
        "repeated kind",
        "denied",
        "since an age",
        "until an age",
        "actor and limit",
        "no match",
    ],
)
def test_filters(server: AuditServer, params: dict[str, object], expected: list[int]) -> None:
    r = get(server, **params)
    assert r.status_code == 200, r.text
    assert [x["details"]["i"] for x in r.json()] == expected


def test_csv_export_has_a_header_and_every_record(server: AuditServer) -> None:
    r = get(server, format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [json.loads(row[-1])["i"] for row in rows[1:]] == [0, 1, 2, 3]
    assert rows[2][6:8] == ["deny", "r1"]


def test_ndjson_is_one_record_per_line(server: AuditServer) -> None:
    r = get(server, format="ndjson", tenant="globex")
    assert [json.loads(line)["reason"] for line in r.text.splitlines()] == ["r2"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": "yesterday"}, "'yesterday' is not a time: write an age like 30s"),
        ({"until": "2026-01-01T00:00:00"}, "'2026-01-01T00:00:00' is not a time"),
        ({"format": "xml"}, "format"),
        ({"limit": 0}, "limit"),
    ],
    ids=["bad since", "until without a zone", "unknown format", "zero limit"],
)
def test_bad_input_is_refused_saying_what_is_valid(
    server: AuditServer, params: dict[str, object], says: str
) -> None:
    r = get(server, **params)
    assert r.status_code == 422
    assert says in r.text
    # The framework's documented shape: where (loc) and what (msg), never the input echoed.
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))] and "input" not in error


def test_without_a_token_nothing_is_shown_and_the_refusal_is_audited(server: AuditServer) -> None:
    r = httpx.get(f"{server.url}/v1/audit", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    (last,) = server.store.audit_records(kind="auth")
    assert (last.decision, last.details["path"]) == ("deny", "/v1/audit")


def test_follow_streams_new_matches_as_they_are_stored(server: AuditServer) -> None:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        params: dict[str, str | int] = {"follow": "true", "kind": "docker", "limit": 1}
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream(
                "GET", f"{server.url}/v1/audit", params=params, headers=auth(), timeout=30
            ) as r,
        ):
            for line in r.iter_lines():
                if line:
                    lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    assert json.loads(lines.get(timeout=10))["reason"] == "r2"  # the newest match first
    server.store.audit(rec(4, kind="egress"))  # not a match
    server.store.audit(rec(5, kind="docker"))
    assert json.loads(lines.get(timeout=10))["reason"] == "r5"
    assert lines.empty()


class _StoresWhileLooking(AuditLog):
    """A trail on which a matching record is stored while the first follow query runs."""

    raced = False

    def query(self, q: AuditQuery) -> list[AuditRecord]:
        got = super().query(q)
        if q.after_id and not self.raced:
            self.raced = True
            self.append(rec(5, kind="docker"))
        return got


def test_follow_loses_no_record_stored_while_its_query_runs(tmp_path: Path) -> None:
    log = _StoresWhileLooking(tmp_path / "audit.db", durable=False)
    try:
        log.append_many([rec(0), rec(2, kind="docker"), rec(3)])
        query = AuditQuery(kinds=("docker",))
        first = log.query(replace(query, limit=1))
        stream = _follow(log, query, first, lambda got: "".join(r.reason for r in got).encode())
        assert next(stream) == b"r2"
        # The first look finds nothing new, and r5 is stored meanwhile: the next chunk is a
        # keepalive, then r5. Skipping it would block the generator for its 15 s keepalive.
        chunks = [next(stream), next(stream)]
        assert chunks == [b"\n", b"r5"]
    finally:
        log.close()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [0, 1, 3]),
        ({"tenant": "acme"}, [0, 1, 3]),
        ({"tenant": "globex"}, []),
        ({"kind": "docker"}, []),
        ({"denied": "true"}, [1]),
    ],
    ids=["everything it may see", "its own", "another tenant", "the other's kind", "denied"],
)
def test_a_tenant_token_sees_its_own_records_only(
    server: AuditServer, params: dict[str, object], expected: list[int]
) -> None:
    server.store.put_tenant(
        Tenant.model_validate(
            {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": "acme"}}
        )
    )
    token = server.plane.tokens.issue("acme", "test").token
    for fmt in ("json", "csv"):
        r = httpx.get(
            f"{server.url}/v1/audit",
            params={**params, "format": fmt},  # type: ignore[dict-item]
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert "globex" not in r.text
    body = httpx.get(
        f"{server.url}/v1/audit",
        params=params,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert [r["details"]["i"] for r in body if r["kind"] != "token"] == expected
    assert {r["tenant"] for r in body} <= {"acme"}
