"""Secrets end to end on the real engine through a real `agentcell serve`: files under
/run/secrets with the right bytes, modes and owner; never in the environment, inspect
output, logs, the store file or the audit trail; rotation reaches the cell on restart."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from livecell import Server, is_back, remove_labelled, spec_text, wait_for

pytestmark = pytest.mark.integration

KEY_V1 = b"sk-alpha-0f3b9c1d2e"
KEY_V2 = b"sk-beta-7a6b5c4d3e"
KEY_V3 = b"sk-gamma-1122334455"
DB_PASS = b"\x00\xffpw-with-binary\n"
OTHER = b"sk-other-tenant-9988"
USER = "10001:10001"


def run(container: Any, *cmd: str, user: str = USER) -> tuple[int, bytes]:
    r = container.exec_run(list(cmd), user=user)
    return int(r.exit_code), bytes(r.output)


def agent(docker_client: Any, tenant: str) -> Any:
    found = docker_client.containers.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]},
        ignore_removed=True,
    )
    return found[0] if len(found) == 1 else None


def tenant_only(tenant: str) -> str:
    return yaml.safe_dump(next(yaml.safe_load_all(spec_text(tenant))))


def cell(server: Server, ref: str) -> dict[str, Any]:
    r = server.api("GET", f"/v1/cells/{ref}")
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def file_is(docker_client: Any, tenant: str, name: str, value: bytes) -> bool:
    c = agent(docker_client, tenant)
    return c is not None and run(c, "cat", f"/run/secrets/{name}") == (0, value)


def test_secrets_end_to_end(
    server: Server, tenant: str, docker_client: Any, tmp_path: Path
) -> None:
    ref = f"{tenant}/a"
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(tenant, "a", secrets=["api-key", "db-pass"]))
    tfile = tmp_path / "tenant.yaml"
    tfile.write_text(tenant_only(tenant))

    # A secret of an unknown tenant: 404, nothing stored.
    r = server.cli("secret", "set", tenant, "api-key", input="x")
    assert r.returncode != 0 and "no tenant" in r.stderr
    put = f"/v1/tenants/{tenant}/secrets/api-key"
    assert server.api("PUT", put, json={"value": "eA=="}).status_code == 404
    assert httpx.put(server.url + put, json={"value": "eA=="}).status_code == 401
    server.api("POST", "/v1/apply", json={"yaml": tfile.read_text()}).raise_for_status()

    # An agent listing secrets its tenant lacks is refused, naming them and the command.
    r = server.cli("deploy", "-f", str(spec))
    assert r.returncode != 0
    assert "'api-key'" in r.stderr and f"agentcell secret set {tenant} api-key" in r.stderr
    assert server.api("GET", "/v1/cells", params={"tenant": tenant}).json() == []

    r = server.api("PUT", put, json={"value": "not base64!"})
    assert r.status_code == 422 and "not base64" in r.text
    assert "not base64!" not in r.text  # the input is not echoed back
    r = server.api("PUT", put, json={"value": ""})
    assert r.status_code == 422 and "the value is empty" in r.text
    assert server.api("GET", f"/v1/tenants/{tenant}/secrets").json() == []

    # Values never from an argument: stdin (one trailing newline dropped) or a file.
    server.cli("secret", "set", tenant, "api-key", input=KEY_V1.decode() + "\n", check=True)
    (tmp_path / "db").write_bytes(DB_PASS)
    server.cli(
        "secret",
        "set",
        tenant,
        "db-pass",
        "--from-file",
        str(tmp_path / "db"),
        "--keep-newline",
        check=True,
    )
    server.cli("deploy", "-f", str(spec), check=True)
    c = agent(docker_client, tenant)
    assert c is not None
    assert run(c, "cat", "/run/secrets/api-key") == (0, KEY_V1)
    assert run(c, "cat", "/run/secrets/db-pass") == (0, DB_PASS)
    assert run(c, "stat", "-c", "%a %u:%g", "/run/secrets/api-key") == (0, b"400 10001:10001\n")
    assert run(c, "stat", "-c", "%a %u:%g", "/run/secrets") == (0, b"500 10001:10001\n")
    assert run(c, "ls", "-A", "/run/secrets") == (0, b"api-key\ndb-pass\n")
    # Read-only and tmpfs-backed, seen from inside; another uid reads nothing.
    code, mounts = run(c, "cat", "/proc/self/mounts")
    line = next(m for m in mounts.decode().splitlines() if m.split()[1] == "/run/secrets")
    assert line.split()[2] == "tmpfs" and "ro" in line.split()[3].split(","), line
    assert run(c, "sh", "-c", "echo x > /run/secrets/new")[0] != 0
    assert run(c, "cat", "/run/secrets/api-key", user="4242:4242")[0] != 0
    assert run(c, "ls", "/run/secrets", user="4242:4242")[0] != 0

    # Never in the environment, the engine's inspect output, the logs, the audit trail,
    # the store's files or the server's log.
    secrets_now = (KEY_V1, DB_PASS.strip(b"\x00\n"))
    code, environ = run(c, "cat", "/proc/1/environ")
    assert code == 0 and environ
    inspect = json.dumps(docker_client.api.inspect_container(c.id)).encode()
    logs = server.cli("logs", ref, check=True).stdout.encode()
    trail = json.dumps(server.api("GET", "/v1/audit", params={"limit": 10000}).json()).encode()
    stored = b"".join(p.read_bytes() for p in server.state_dir.glob("agentcell.db*"))
    for value in secrets_now:
        for where, blob in (
            ("environ", environ),
            ("inspect", inspect),
            ("logs", logs),
            ("audit", trail),
            ("store", stored),
            ("serve log", server.log.read_bytes() if server.log else b""),
        ):
            assert value not in blob, f"secret value found in {where}"
            assert base64.b64encode(value) not in blob, f"secret (base64) found in {where}"
    # The one host mount is the secrets directory, on tmpfs, read-only; hardening holds.
    binds = [m for m in docker_client.api.inspect_container(c.id)["Mounts"] if m["Type"] == "bind"]
    assert [(m["Destination"], m["RW"]) for m in binds] == [("/run/secrets", False)]
    host_dir = Path(binds[0]["Source"])
    assert str(host_dir).startswith("/dev/shm/agentcell-")
    assert oct(host_dir.stat().st_mode & 0o777) == "0o500"
    assert all(h["ok"] for h in cell(server, ref)["hardening"]), cell(server, ref)["hardening"]
    # The in-cell battery (mounts included) passes with the secrets bind.
    verify = server.cli("verify", ref)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "A5.mounts" in verify.stdout and "secrets" in verify.stdout

    # Write-only API: listings carry names, versions and users, never values.
    listed = server.api("GET", f"/v1/tenants/{tenant}/secrets").json()
    assert [(s["name"], s["version"], s["cells"]) for s in listed] == [
        ("api-key", 1, ["a"]),
        ("db-pass", 1, ["a"]),
    ]
    assert "value" not in json.dumps(listed) and KEY_V1.decode() not in json.dumps(listed)
    r = server.api("DELETE", f"/v1/tenants/{tenant}/secrets/api-key")
    assert r.status_code == 409 and "used by cell(s) a of tenant" in r.json()["reason"]

    # Rotation: the running file keeps the old value until a restart.
    server.cli("secret", "set", tenant, "api-key", input=KEY_V2.decode(), check=True)
    assert file_is(docker_client, tenant, "api-key", KEY_V1)
    before = cell(server, ref)
    server.cli("restart", ref, check=True)
    assert file_is(docker_client, tenant, "api-key", KEY_V2)
    after = cell(server, ref)
    assert after["restart"]["honoured"] >= 1
    assert after["recovery"]["rung"] == before["recovery"]["rung"]  # not a crash
    assert after["spec"] == before["spec"] and after["generation"] == before["generation"]

    # A kill, and the recovery restart brings the newest value too.
    server.cli("secret", "set", tenant, "api-key", input=KEY_V3.decode(), check=True)
    c = agent(docker_client, tenant)
    c.kill()
    wait_for(lambda: file_is(docker_client, tenant, "api-key", KEY_V3), 60, "recovered agent")
    wait_for(lambda: is_back(cell(server, ref)), 30, "cell back")

    # Another tenant's secret of the same name is its own.
    other = f"{tenant}o"
    try:
        server.api("POST", "/v1/apply", json={"yaml": tenant_only(other)}).raise_for_status()
        server.cli("secret", "set", other, "api-key", input=OTHER.decode(), check=True)
        ospec = tmp_path / "other.yaml"
        ospec.write_text(spec_text(other, "a", secrets=["api-key"]))
        server.cli("deploy", "-f", str(ospec), check=True)
        assert file_is(docker_client, other, "api-key", OTHER)
        oc = agent(docker_client, other)
        assert run(oc, "ls", "-A", "/run/secrets") == (0, b"api-key\n")
        assert file_is(docker_client, tenant, "api-key", KEY_V3)
        server.cli("rm", f"{other}/a", check=True)
    finally:
        remove_labelled(docker_client, f"agentcell.tenant={other}")

    # Removing the cell removes its directory; then the secret can go.
    server.cli("rm", ref, check=True)
    assert not host_dir.exists()
    server.cli("secret", "rm", tenant, "api-key", check=True)
    ls = server.cli("secret", "ls", tenant, "-o", "json", check=True)
    assert [s["name"] for s in json.loads(ls.stdout)] == ["db-pass"]
    names = [
        (r["reason"], r["details"])
        for r in server.api(
            "GET", "/v1/audit", params={"tenant": tenant, "kind": "secret", "limit": 1000}
        ).json()
        if r["cell"] == ""
    ]
    assert names[:4] == [
        ("secret set", {"name": "api-key", "version": 1}),
        ("secret set", {"name": "db-pass", "version": 1}),
        ("secret rotated", {"name": "api-key", "version": 2}),
        ("secret rotated", {"name": "api-key", "version": 3}),
    ]
    assert names[-1] == ("secret removed", {"name": "api-key", "version": 3})
    server.stop()  # an empty root goes with the server
    assert not os.path.exists(host_dir.parent.parent)
