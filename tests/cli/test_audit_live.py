"""Live: `agentcell audit -f` shows a record as it happens, `-o csv` exports, records survive
a killed server. Needs no cell: authentication failures and tenant applies make records."""

from __future__ import annotations

import csv
import io
import queue
import subprocess
import threading

import httpx
import pytest
import yaml

from livecell import AGENTCELL, Server, wait_for

pytestmark = pytest.mark.integration


def tenant_yaml(name: str) -> str:
    return yaml.safe_dump(
        {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": name}, "spec": {}}
    )


def test_follow_shows_new_records_and_csv_exports_them(server: Server, tenant: str) -> None:
    proc = subprocess.Popen(
        [*AGENTCELL, "audit", "-f", "-k", "auth", "-k", "api", "--limit", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []

    def shows(*words: str) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(all(w in line for w in words) for line in seen)

    try:
        # The follower may still be connecting: refuse a request until the record shows.
        def refused_and_shown() -> bool:
            httpx.get(f"{server.url}/v1/cells", headers={"Authorization": "Bearer nope"})
            return shows("auth", "deny", "invalid token")

        wait_for(refused_and_shown, 20, "audit -f to show an authentication failure")
        applied = server.api("POST", "/v1/apply", json={"yaml": tenant_yaml(tenant)})
        assert applied.status_code == 200, applied.text
        wait_for(lambda: shows(f"{tenant}/-", "api", "allow", "tenant applied"), 20, "the apply")
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait(10)

    export = server.cli("audit", "-o", "csv", "--limit", "1000", check=True)
    rows = list(csv.DictReader(io.StringIO(export.stdout, newline="")))
    assert [r["reason"] for r in rows if r["tenant"] == tenant] == ["tenant applied"]
    assert "invalid token" in {r["reason"] for r in rows if r["kind"] == "auth"}
    assert [r["reason"] for r in rows if r["kind"] == "token"] == ["admin token created"]

    # Every confirmed record is on disk: a server killed with SIGKILL loses none.
    before = server.cli("audit", "-o", "json", "--limit", "1000", check=True).stdout
    server.kill()
    server.start()
    after = server.cli("audit", "-o", "json", "--limit", "1000", check=True).stdout
    assert after == before
