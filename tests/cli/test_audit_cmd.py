"""``agentcell audit`` against a real in-process API server: table, json, csv, errors."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentcell.cli.main import app
from agentcell.control import AuditRecord
from agentcell.control._audit import CSV_COLUMNS
from auditserver import TOKEN, AuditServer, audit_server

T0 = 0.0

STEP = 600.0
"""Seconds between the records, so that an age filter does not depend on how fast tests run."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuditServer]:
    global T0
    T0 = time.time() - 3600
    with audit_server(tmp_path) as s:
        s.store.audit_many(
            [
                AuditRecord(
                    "acme", "a", "admin", "api", "allow", "cell applied", {}, T0 + 0 * STEP
                ),
                AuditRecord(
                    "acme",
                    "a",
                    "egress-gate",
                    "egress",
                    "deny",
                    "host not in policy",
                    {"method": "CONNECT", "host": "evil.test", "port": 443},
                    T0 + 1 * STEP,
                ),
                AuditRecord(
                    "globex",
                    "b",
                    "docker-proxy",
                    "docker",
                    "deny",
                    "privileged",
                    {"method": "POST", "path": "/containers/create"},
                    T0 + 2 * STEP,
                ),
                AuditRecord(
                    "", "", "client 127.0.0.1", "auth", "deny", "invalid token", {}, T0 + 3 * STEP
                ),
            ]
        )
        yield s


def run(server: AuditServer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["audit", *args], env={"AGENTCELL_URL": server.url, "AGENTCELL_TOKEN": TOKEN}
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_table_shows_each_record_on_one_readable_line(server: AuditServer) -> None:
    code, out, _ = run(server)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4
    local = datetime.fromtimestamp(T0 + STEP).astimezone().isoformat(timespec="seconds")
    assert lines[1].split() == [
        local,
        "acme/a",
        "egress-gate",
        "egress",
        "deny",
        "host",
        "not",
        "in",
        "policy",
        "CONNECT",
        "evil.test:443",
    ]
    assert lines[3].split()[1:5] == ["-/-", "client", "127.0.0.1", "auth"]


def test_filters_reach_the_server(server: AuditServer) -> None:
    code, out, _ = run(server, "--denied", "-k", "egress", "-k", "docker", "-o", "json")
    assert code == 0
    assert [r["reason"] for r in json.loads(out)] == ["host not in policy", "privileged"]
    code, out, _ = run(server, "--cell", "globex/b", "-o", "json")
    assert [r["kind"] for r in json.loads(out)] == ["docker"]
    code, out, _ = run(server, "--since", "2000s", "--limit", "1", "-o", "json")
    assert [r["kind"] for r in json.loads(out)] == ["auth"]


def test_csv_goes_to_stdout_with_a_header(server: AuditServer) -> None:
    code, out, _ = run(server, "-o", "csv", "--tenant", "acme")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[7] for r in rows[1:]] == ["cell applied", "host not in policy"]
    assert json.loads(rows[2][8]) == {"host": "evil.test", "method": "CONNECT", "port": 443}


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--since", "last week"], 1, "since: 'last week' is not a time: write an age like 30s"),
        (["-o", "xml"], 2, "-o 'xml' is not an output: write one of table, json, csv"),
        (["--limit", "0"], 2, "--limit 0 is not a count"),
        (["--cell", "a/b/c"], 2, "write NAME, or TENANT/NAME"),
        (["--tenant", "x", "--cell", "acme/a"], 2, "with the same tenant"),
    ],
    ids=["bad since", "bad output", "zero limit", "bad cell", "cell of another tenant"],
)
def test_errors_say_what_is_valid(
    server: AuditServer, args: list[str], code: int, says: str
) -> None:
    got, out, err = run(server, *args)
    assert got == code
    assert says in " ".join(err.split())
    assert out == ""


def test_a_wrong_token_is_an_error_not_an_empty_trail(server: AuditServer) -> None:
    result = CliRunner().invoke(
        app, ["audit"], env={"AGENTCELL_URL": server.url, "AGENTCELL_TOKEN": "wrong"}
    )
    assert result.exit_code == 1
    assert "unauthorized" in result.stderr
