"""Tenant tokens on a live control plane: every route, another tenant's objects, the trail.

Two tenants with a running cell each. Blue's token must reach blue alone: a route naming
green's objects answers exactly as it does for objects that do not exist, listings never
carry green, admin-only routes refuse. Tokens rotate and revoke at once; failures are
audited and, past the limit, refused without being checked.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from livecell import Server, free_port, is_back, remove_labelled, spec_text, wait_for

pytestmark = pytest.mark.integration

TENANTS = ("tnblue", "tngreen")
CELL = "worker"
TENANT_ONLY = re.compile(r"^act_[0-9a-f]{12}\.[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import docker

    port = free_port()
    srv = Server(f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("tenancy"), port)
    srv.start()
    try:
        for t in TENANTS:
            (srv.state_dir / f"{t}.yaml").write_text(spec_text(t, CELL))
            srv.cli("deploy", "-f", str(srv.state_dir / f"{t}.yaml"), check=True)
        yield srv
    finally:
        for t in TENANTS:
            srv.cli("rm", f"{t}/{CELL}", timeout=120)
        srv.stop()
        client = docker.from_env()
        for t in TENANTS:
            remove_labelled(client, f"agentcell.tenant={t}")


@pytest.fixture(scope="module")
def tokens(server: Server) -> dict[str, str]:
    out = {}
    for t in TENANTS:
        r = server.api("POST", f"/v1/tenants/{t}/tokens")
        assert r.status_code == 201, r.text
        assert TENANT_ONLY.match(r.json()["token"])
        out[t] = r.json()["token"]
    return out


def call(server: Server, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return server.api(method, path, token=token, **kw)  # type: ignore[no-any-return]


# -- every route, with the other tenant's token ---------------------------------------------------

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/cells/{tenant}/{name}/exec"): {"json": {"command": ["id"]}},
}


def routes(server: Server) -> list[tuple[str, str]]:
    """Every (method, path) of the API that names a tenant, from its OpenAPI document."""
    doc = httpx.get(f"{server.url}/v1/openapi.json", timeout=10).json()
    out = []
    for path, item in doc["paths"].items():
        if "{tenant}" in path:
            out += [(m.upper(), path) for m in item if m in ("get", "post", "put", "delete")]
    return sorted(out)


def fill(path: str, tenant: str, name: str) -> str:
    return (
        path.replace("{tenant}", tenant)
        .replace("{name}", name)
        .replace("{token_id}", "0123456789ab")
        .replace("{secret}", "some-secret")
    )


def scrub(text: str, *names: str) -> str:
    for n in names:
        text = text.replace(n, "X")
    return text


def test_the_route_list_covers_cells_tenants_and_tokens(server: Server) -> None:
    paths = {p for _, p in routes(server)}
    assert {
        "/v1/cells/{tenant}/{name}",
        "/v1/cells/{tenant}/{name}/exec",
        "/v1/tenants/{tenant}/tokens",
        "/v1/tenants/{tenant}/export",
    } <= paths


def test_every_route_answers_for_another_tenant_as_for_nobody(
    server: Server, tokens: dict[str, str]
) -> None:
    blue = tokens["tnblue"]
    checked = 0
    for method, path in routes(server):
        kw = BODIES.get((method, path), {})
        if method in ("POST", "PUT") and not kw and "secrets" in path:
            kw = {"json": {"value": "c2VjcmV0"}}
        theirs = call(server, blue, method, fill(path, "tngreen", CELL), **kw)
        nobody = call(server, blue, method, fill(path, "tnnobody", "nocell"), **kw)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.status_code == nobody.status_code, (method, path)
        assert scrub(theirs.text, "tngreen", CELL) == scrub(nobody.text, "tnnobody", "nocell"), (
            method,
            path,
        )
        checked += 1
    assert checked >= 15


def test_the_same_routes_work_on_the_callers_own_tenant(
    server: Server, tokens: dict[str, str]
) -> None:
    blue = tokens["tnblue"]
    assert call(server, blue, "GET", f"/v1/cells/tnblue/{CELL}").status_code == 200
    assert call(server, blue, "GET", f"/v1/cells/tnblue/{CELL}/logs?tail=5").status_code == 200
    assert call(server, blue, "GET", "/v1/tenants/tnblue/tokens").status_code == 200
    r = call(server, blue, "POST", f"/v1/cells/tnblue/{CELL}/exec", json={"command": ["id"]})
    assert r.status_code == 200 and '"exit_code": 0' in r.text


def test_listings_never_carry_the_other_tenant(server: Server, tokens: dict[str, str]) -> None:
    blue = tokens["tnblue"]
    for path in (
        "/v1/cells",
        "/v1/cells?tenant=tngreen",
        "/v1/tenants",
        "/v1/audit?limit=10000",
        "/v1/audit?tenant=tngreen",
        "/v1/whoami",
    ):
        r = call(server, blue, "GET", path)
        assert r.status_code == 200, (path, r.text)
        assert "tngreen" not in r.text, path
    assert [c["tenant"] for c in call(server, blue, "GET", "/v1/cells").json()] == ["tnblue"]
    assert call(server, blue, "GET", "/v1/cells?tenant=tngreen").json() == []
    # ... while the admin sees both, so the filter is what hides green.
    admin = {c["tenant"] for c in server.api("GET", "/v1/cells").json()}
    assert set(TENANTS) <= admin


def test_admin_only_routes_refuse_a_tenant_token(server: Server, tokens: dict[str, str]) -> None:
    blue = tokens["tnblue"]
    for method, path, kw in (
        ("GET", "/v1/gc", {}),
        ("POST", "/v1/gc", {}),
        ("POST", "/v1/tenants", {"json": {"name": "tnnew"}}),
        ("DELETE", "/v1/tenants/tnblue", {}),
    ):
        r = call(server, blue, method, path, **kw)
        assert r.status_code == 403, (method, path, r.text)
        assert "admin token" in r.json()["reason"]
    assert server.api("GET", "/v1/tenants/tnblue").status_code in (404, 405)


def test_apply_with_a_tenant_token_reaches_its_own_agents_only(
    server: Server, tokens: dict[str, str]
) -> None:
    blue = tokens["tnblue"]
    docs = list(yaml.safe_load_all(spec_text("tngreen", "intruder")))
    agent_only = yaml.safe_dump(docs[1])
    theirs = call(server, blue, "POST", "/v1/apply", json={"yaml": agent_only})
    nobody = call(
        server, blue, "POST", "/v1/apply", json={"yaml": agent_only.replace("tngreen", "tnnobody")}
    )
    assert theirs.status_code == nobody.status_code == 409
    assert scrub(theirs.text, "tngreen") == scrub(nobody.text, "tnnobody")
    assert server.api("GET", "/v1/cells/tngreen/intruder").status_code == 404
    # A Tenant document (its quota) is the admin's to change.
    tenant_doc = yaml.safe_dump(next(iter(yaml.safe_load_all(spec_text("tnblue", CELL)))))
    r = call(server, blue, "POST", "/v1/apply", json={"yaml": tenant_doc})
    assert r.status_code == 403 and "Tenant documents" in r.json()["reason"]


def test_the_cli_takes_the_token_from_flag_env_and_config(
    server: Server, tokens: dict[str, str], tmp_path: Path
) -> None:
    blue = tokens["tnblue"]
    assert "the admin" in server.cli("whoami", check=True).stdout
    by_flag = server.cli("--token", blue, "whoami", check=True).stdout
    assert "tenant tnblue" in by_flag
    env_run = server.cli("ps", check=True)
    assert "tngreen" in env_run.stdout  # admin
    server.extra_env = {"AGENTCELL_TOKEN": blue}
    try:
        ps = server.cli("ps", check=True).stdout
        assert "tnblue" in ps and "tngreen" not in ps
    finally:
        server.extra_env = None
    login = server.cli("login", input=blue + "\n", check=True)
    assert "tenant tnblue" in login.stdout
    config = server.state_dir / "cli-config.yaml"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert "tenant tnblue" in server.cli("whoami", check=True).stdout
    denied = server.cli("status", f"tngreen/{CELL}")
    assert denied.returncode == 1 and f"no cell tngreen/{CELL}" in denied.stderr
    assert "token removed" in server.cli("logout", check=True).stdout
    assert "the admin" in server.cli("whoami", check=True).stdout
    bad = server.cli("login", input="act_000000000000." + "x" * 43 + "\n")
    assert bad.returncode == 1 and "invalid token" in bad.stderr
    assert not config.exists() or "act_000000000000" not in config.read_text()


def test_tokens_are_listed_rotated_and_revoked(server: Server) -> None:
    r = server.cli("token", "create", "tngreen", "-o", "json", check=True)
    issued = yaml.safe_load(r.stdout)
    old, old_id = issued["token"], issued["token_id"]
    assert call(server, old, "GET", "/v1/whoami").json()["tenant"] == "tngreen"
    listing = server.cli("token", "ls", "tngreen", "-o", "json", check=True).stdout
    rows = {t["id"]: t for t in yaml.safe_load(listing)}
    assert rows[old_id]["revoked"] is None and rows[old_id]["created"] > 0
    assert old not in listing and old.split(".")[1] not in listing
    rotated = yaml.safe_load(
        server.cli("token", "rotate", "tngreen", old_id, "-o", "json", check=True).stdout
    )
    new = rotated["token"]
    refused = call(server, old, "GET", "/v1/whoami")
    assert refused.status_code == 401 and refused.json()["reason"] == "revoked token"
    assert call(server, new, "GET", "/v1/whoami").status_code == 200
    revoked = server.cli("token", "revoke", "tngreen", rotated["token_id"], check=True)
    assert "revoked" in revoked.stdout
    assert call(server, new, "GET", "/v1/whoami").status_code == 401
    # A token id of another tenant is unknown to this one.
    other = server.cli("token", "revoke", "tnblue", old_id)
    assert other.returncode == 1 and "has no token" in other.stderr
    kinds = [
        r["reason"]
        for r in server.api(
            "GET", "/v1/audit", params={"tenant": "tngreen", "kind": "token"}
        ).json()
    ]
    assert {"token issued", "token rotated", "token revoked"} <= set(kinds)


def test_tenant_create_shows_the_token_once_and_stores_a_hash(server: Server) -> None:
    r = server.cli("tenant", "create", "tnfresh", check=True)
    token = next(line for line in r.stdout.splitlines() if line.startswith("act_"))
    assert call(server, token, "GET", "/v1/whoami").json()["tenant"] == "tnfresh"
    again = server.cli("tenant", "create", "tnfresh")
    assert again.returncode == 1 and "exists" in again.stderr
    bad = server.cli("tenant", "create", "Not_A_Name")
    assert bad.returncode == 1 and "name" in bad.stderr
    db = sqlite3.connect(server.state_dir / "agentcell.db")
    try:
        dumped = "\n".join(db.iterdump())
    finally:
        db.close()
    assert token not in dumped and token.split(".")[1] not in dumped
    assert "tnfresh" in server.cli("tenant", "ls", check=True).stdout
    server.cli("tenant", "rm", "tnfresh", check=True)
    assert call(server, token, "GET", "/v1/whoami").status_code == 401


def test_a_token_with_a_lifetime_shows_and_lists_its_expiry(server: Server) -> None:
    made = server.cli("tenant", "create", "tnlife", "--expires", "90d", check=True)
    assert "expires 20" in made.stdout  # the local time, ISO 8601
    token = next(line for line in made.stdout.splitlines() if line.startswith("act_"))
    assert call(server, token, "GET", "/v1/whoami").json()["tenant"] == "tnlife"
    server.cli("token", "create", "tnlife", "--expires", "12h", check=True)
    table = server.cli("token", "ls", "tnlife", check=True).stdout
    assert "EXPIRES" in table and table.count(" live") == 2
    rows = yaml.safe_load(server.cli("token", "ls", "tnlife", "-o", "json", check=True).stdout)
    lifetimes = sorted(round((t["expires"] - t["created"]) / 3600) for t in rows)
    assert lifetimes == [12, 90 * 24]
    server.cli("tenant", "rm", "tnlife", check=True)


def test_export_writes_specs_that_deploy_again(server: Server, tmp_path: Path) -> None:
    text = server.cli("export", "tnblue", check=True).stdout
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Tenant", "Agent"]
    assert docs[1]["metadata"] == {"name": CELL, "tenant": "tnblue", "labels": {}}
    path = tmp_path / "tnblue.yaml"
    path.write_text(text)
    assert server.cli("validate", "-f", str(path), check=True).returncode == 0
    # Deployed again unchanged: nothing to do.
    again = server.cli("deploy", "-f", str(path), check=True).stdout
    assert "unchanged" in again
    missing = server.cli("export", "tnnobody")
    assert missing.returncode == 1 and "no tenant 'tnnobody'" in missing.stderr


def test_failed_authentication_is_audited_then_limited(tmp_path: Path) -> None:
    port = free_port()
    srv = Server(f"http://127.0.0.1:{port}", tmp_path, port)
    srv.start()
    try:
        wrong = "act_0123456789ab." + "w" * 43
        codes = [call(srv, wrong, "GET", "/v1/cells").status_code for _ in range(30)]
        assert codes == [401] * 30
        limited = call(srv, wrong, "GET", "/v1/cells")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        # Refused before any check: even the right token waits out the limit.
        assert srv.api("GET", "/v1/cells").status_code == 429
    finally:
        srv.stop()
    db = sqlite3.connect(srv.state_dir / "agentcell.db")
    try:
        rows = db.execute(
            "SELECT reason, details FROM audit WHERE kind='auth' AND decision='deny'"
        ).fetchall()
    finally:
        db.close()
    reasons = [r[0] for r in rows]
    assert reasons.count("invalid token") == 30
    assert reasons.count("client rate limited") == 1
    assert all("0123456789ab" in r[1] for r in rows if r[0] == "invalid token")


def test_the_cells_keep_running(server: Server) -> None:
    for t in TENANTS:

        def back(t: str = t) -> bool:
            return is_back(server.api("GET", f"/v1/cells/{t}/{CELL}").json())

        wait_for(back, 30, t)
