"""The CLI end to end against a real `agentcell serve` and a real Docker Engine."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from agentcell.policy import check_container
from livecell import TEST_POOL, Server, spec_text, wait_for

pytestmark = pytest.mark.integration


def _objects(docker_client: docker.DockerClient, tenant: str) -> dict[str, list[str]]:
    flt = {"label": [f"agentcell.tenant={tenant}"]}
    return {
        "containers": [
            c.name
            for c in docker_client.containers.list(all=True, filters=flt, ignore_removed=True)
        ],
        "networks": [n.name for n in docker_client.networks.list(filters=flt)],
        "volumes": [v.name for v in docker_client.volumes.list(filters=flt)],
    }


def _agent(docker_client: docker.DockerClient, tenant: str, cell: str = "agent") -> Any:
    found = docker_client.containers.list(
        all=True,
        filters={
            "label": [
                f"agentcell.tenant={tenant}",
                f"agentcell.cell={cell}",
                "agentcell.role=agent",
            ]
        },
        ignore_removed=True,
    )
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def _deploy(server: Server, tmp_path: Path, text: str, name: str = "spec.yaml"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(text)
    return server.cli("deploy", "-f", str(path), "--timeout", "60")


def test_deploy_runs_a_hardened_cell_and_every_command_works(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = f"{tenant}/agent"
    res = _deploy(server, tmp_path, spec_text(tenant))
    assert res.returncode == 0, res.stderr + server.log_text()
    assert f"{ref}: ready in" in res.stdout and "healthy" in res.stdout

    # The engine's view: every hardening property holds.
    c = _agent(docker_client, tenant)
    attrs = docker_client.api.inspect_container(c.id)
    network = attrs["HostConfig"]["NetworkMode"]
    assert [d.reason for d in check_container(attrs, network=network) if not d.allow] == []
    hc = attrs["HostConfig"]
    assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"]
    assert "noexec" in hc["Tmpfs"]["/tmp"] and "nosuid" in hc["Tmpfs"]["/tmp"]
    assert attrs["Config"]["User"] == "10001:10001"
    net = docker_client.networks.get(network)
    assert net.attrs["Internal"] is True
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.IPv4Network(subnet).subnet_of(ipaddress.IPv4Network(TEST_POOL))
    assert subnet.endswith("/27")
    assert set(_objects(docker_client, tenant)) and all(_objects(docker_client, tenant).values())

    ps = server.cli("ps", check=True)
    row = next(line for line in ps.stdout.splitlines() if tenant in line)
    assert "healthy" in row and "demo-agent" in row and "256 pids" in row

    status = server.cli("status", ref, check=True)
    assert "✗" not in status.stdout and "all capabilities dropped" in status.stdout
    got = server.api("GET", f"/v1/cells/{ref}").json()  # one engine list + one inspect
    assert (got["container"]["id"], got["container"]["name"]) == (c.id, c.name)
    assert got["container"]["network"] == network
    assert got["hardening"] and all(h["ok"] for h in got["hardening"])

    ex = server.cli("exec", ref, "--", "python3", "-c", "import os; print(os.getuid())", check=True)
    assert ex.stdout.strip() == "10001"
    assert server.cli("exec", ref, "--", "sh", "-c", "exit 3").returncode == 3

    logs = wait_for(
        lambda: (
            (r := server.cli("logs", ref)).returncode == 0
            and "healthz" in r.stdout + "listening"
            and r.stdout
        ),
        20,
        "agent output in logs",
    )
    assert logs

    rm = server.cli("rm", ref, check=True)
    assert "removed" in rm.stdout
    assert _objects(docker_client, tenant) == {"containers": [], "networks": [], "volumes": []}
    assert tenant not in server.cli("ps", check=True).stdout


def test_verify_runs_battery_a_inside_the_cell(server: Server, tenant: str, tmp_path: Path) -> None:
    assert _deploy(server, tmp_path, spec_text(tenant)).returncode == 0
    res = server.cli("verify", f"{tenant}/agent", "-o", "json", timeout=120)
    report = json.loads(res.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert res.returncode == 0 and failed == [], failed
    sections = {c["section"] for c in report["checks"]}
    assert {"A1", "A2", "A3", "A4", "A5", "A6"} <= sections


def test_redeploying_an_unchanged_spec_changes_nothing(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    assert _deploy(server, tmp_path, spec_text(tenant)).returncode == 0
    first = _agent(docker_client, tenant).id
    again = _deploy(server, tmp_path, spec_text(tenant))
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert _agent(docker_client, tenant).id == first


def test_a_changed_spec_replaces_the_container_and_keeps_the_workspace(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = f"{tenant}/agent"
    assert _deploy(server, tmp_path, spec_text(tenant)).returncode == 0
    first = _agent(docker_client, tenant).id
    server.cli("exec", ref, "--", "sh", "-c", "echo kept > /workspace/note", check=True)
    res = _deploy(server, tmp_path, spec_text(tenant, env={"MODE": "two"}))
    assert res.returncode == 0, res.stderr
    second = _agent(docker_client, tenant)
    assert second.id != first
    assert "MODE=two" in second.attrs["Config"]["Env"]
    assert server.cli("exec", ref, "--", "cat", "/workspace/note", check=True).stdout == "kept\n"


def test_a_failing_deploy_removes_what_it_created_and_names_the_step(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    res = _deploy(server, tmp_path, spec_text(tenant, command=["sh", "-c", "echo bye; exit 7"]))
    assert res.returncode == 1
    # It starts, then exits: caught while starting or while waiting for readiness.
    assert re.search(
        r"step '(start container|wait until ready)' failed: the agent exited at "
        r"once with code 7; its last output: bye",
        res.stderr,
    ), res.stderr
    assert _objects(docker_client, tenant) == {"containers": [], "networks": [], "volumes": []}

    res = _deploy(server, tmp_path, spec_text(tenant, image="agentcell/absent:none"))
    assert res.returncode == 1 and "step 'check image' failed" in res.stderr
    assert _objects(docker_client, tenant) == {"containers": [], "networks": [], "volumes": []}


def test_a_failed_replacement_keeps_the_previous_container_running(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    assert _deploy(server, tmp_path, spec_text(tenant)).returncode == 0
    first = _agent(docker_client, tenant).id
    res = _deploy(server, tmp_path, spec_text(tenant, command=["sh", "-c", "exit 9"]))
    assert res.returncode == 1 and "code 9" in res.stderr
    survivor = _agent(docker_client, tenant)
    assert survivor.id == first and survivor.status == "running"


def test_invalid_spec_is_refused_before_anything_is_created(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    bad = spec_text(tenant).replace("interval: 2s", "interval: 2 parsecs")
    res = _deploy(server, tmp_path, bad, "bad.yaml")
    assert res.returncode == 1
    assert "bad.yaml: document 2, line" in res.stderr and "spec.health.interval" in res.stderr
    assert "nothing was deployed" in res.stderr
    assert tenant not in server.cli("ps", "-o", "json", check=True).stdout
    assert _objects(docker_client, tenant) == {"containers": [], "networks": [], "volumes": []}


def test_quota_is_enforced_at_apply(server: Server, tenant: str, tmp_path: Path) -> None:
    text = spec_text(tenant).replace("agents: 20", "agents: 0")
    res = _deploy(server, tmp_path, text)
    assert res.returncode == 1 and "agents quota exceeded" in res.stderr
    assert tenant not in server.cli("ps", "-o", "json", check=True).stdout


def test_server_restart_readopts_running_cells(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    assert _deploy(server, tmp_path, spec_text(tenant)).returncode == 0
    first = _agent(docker_client, tenant).id
    server.kill()
    server.start()
    ps = wait_for(
        lambda: "healthy" in (r := server.cli("ps", check=True).stdout) and r,
        30,
        "the cell to show as healthy after the restart",
    )
    assert tenant in str(ps)
    assert _agent(docker_client, tenant).id == first
    again = _deploy(server, tmp_path, spec_text(tenant))
    assert again.returncode == 0 and "unchanged" in again.stdout


def test_requests_without_a_valid_token_are_refused_and_audited(server: Server) -> None:
    assert httpx.get(f"{server.url}/v1/cells").status_code == 401
    wrong = httpx.get(f"{server.url}/v1/cells", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["reason"] == "invalid token"
    records = httpx.get(
        f"{server.url}/v1/audit",
        params={"kind": "auth"},
        headers={"Authorization": f"Bearer {server.token()}"},
    ).json()
    assert [r["reason"] for r in records] == ["missing token", "invalid token"]
    assert (server.state_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    res = server.cli("ps", "--url", server.url)
    assert res.returncode == 0
    env_cli = server.cli("ps")  # reads the token from the state directory
    assert env_cli.returncode == 0


def test_openapi_document_is_served(server: Server) -> None:
    doc = httpx.get(f"{server.url}/v1/openapi.json").json()
    assert "/v1/apply" in doc["paths"] and "/v1/cells/{tenant}/{name}/verify" in doc["paths"]


def test_cli_errors_say_what_is_wrong(server: Server, tmp_path: Path) -> None:
    res = server.cli("status", "no-slash")
    assert res.returncode == 2 and "write TENANT/NAME" in res.stderr
    res = server.cli("status", "nobody/nothing")
    assert res.returncode == 1 and "no cell nobody/nothing" in res.stderr
    res = server.cli("deploy", "-f", str(tmp_path / "missing.yaml"))
    assert res.returncode == 1 and "file not found" in res.stderr
    down = server.cli("ps", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the control plane" in down.stderr
    schema = json.loads(server.cli("schema", check=True).stdout)
    assert schema["title"].startswith("agentcell/v1")


def test_logs_follow_streams_new_output(server: Server, tenant: str, tmp_path: Path) -> None:
    import selectors
    import subprocess

    from livecell import AGENTCELL

    text = spec_text(tenant)
    assert _deploy(server, tmp_path, text).returncode == 0
    proc = subprocess.Popen(
        [*AGENTCELL, "logs", f"{tenant}/agent", "-f", "--tail", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=server.env(),
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        seen: list[str] = []
        agent = docker.from_env().containers.list(
            filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]},
            ignore_removed=True,
        )[0]

        def marker() -> bool:
            # The follower may still be connecting: write the marker until it shows.
            agent.exec_run(["sh", "-c", "echo marker > /proc/1/fd/1"], user="10001:10001")
            if sel.select(timeout=0.2):
                seen.append(proc.stdout.readline())  # type: ignore[union-attr]
            return any("marker" in line for line in seen)

        wait_for(marker, 20, "the followed log to show output written after it started")
    finally:
        proc.kill()
        proc.wait(10)
