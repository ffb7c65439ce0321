"""`agentcell gc` on a real engine: lists and removes only what the store does not know.

The engine is shared with other control planes (other tests' servers, the demo's), whose
cells this server's store does not know either: every call is scoped with ``--tenant``.
"""

from __future__ import annotations

import json
from pathlib import Path

import docker
import httpx
import pytest

from livecell import DEMO_IMAGE, Server, spec_text

pytestmark = pytest.mark.integration


def _labels(tenant: str, cell: str, role: str) -> dict[str, str]:
    return {"agentcell.tenant": tenant, "agentcell.cell": cell, "agentcell.role": role}


def _gc(server: Server, tenant: str, *args: str) -> dict:  # type: ignore[type-arg]
    res = server.cli("gc", "--tenant", tenant, "-o", "json", *args, check=True)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_gc_lists_then_removes_only_the_orphans(
    server: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(tenant))
    res = server.cli("deploy", "-f", str(spec), "--timeout", "60")
    assert res.returncode == 0, res.stderr + server.log_text()
    flt = {"label": [f"agentcell.tenant={tenant}", "agentcell.cell=agent"]}
    cell_objects = {
        *(
            c.name
            for c in docker_client.containers.list(all=True, filters=flt, ignore_removed=True)
        ),
        *(n.name for n in docker_client.networks.list(filters=flt)),
        *(v.name for v in docker_client.volumes.list(filters=flt)),
    }
    assert len(cell_objects) >= 3  # agent, network, workspace
    (agent_id,) = (
        c.id
        for c in docker_client.containers.list(
            filters={"label": [*flt["label"], "agentcell.role=agent"]}, ignore_removed=True
        )
    )

    # Out of band: a cell of the same tenant the store never heard of.
    base = f"agentcell-{tenant}-ghost"
    net = docker_client.networks.create(
        base, internal=True, labels=_labels(tenant, "ghost", "network")
    )
    vol = docker_client.volumes.create(
        f"{base}-workspace", labels=_labels(tenant, "ghost", "workspace")
    )
    box = docker_client.containers.run(
        DEMO_IMAGE,
        ["sleep", "600"],
        name=f"{base}-g1",
        detach=True,
        network=net.name,
        volumes={vol.name: {"bind": "/workspace", "mode": "rw"}},
        labels=_labels(tenant, "ghost", "agent"),
    )
    ghosts = {("container", box.name), ("network", net.name), ("volume", vol.name)}

    # Dry run: exactly the ghost's objects, none of the deployed cell's; nothing removed.
    dry = server.cli("gc", "--tenant", tenant, check=True)
    for _, name in ghosts:
        assert name in dry.stdout
    assert not any(name in dry.stdout for name in cell_objects), dry.stdout
    assert "cell unknown to the store" in dry.stdout
    assert "dry run: nothing removed; run `agentcell gc" in dry.stdout
    found = _gc(server, tenant)
    assert {(o["kind"], o["name"]) for o in found["orphans"]} == ghosts
    assert {o["reason"] for o in found["orphans"]} == {"cell unknown to the store"}
    assert found["removed"] == [] and not found["applied"]
    box.reload()
    assert box.status == "running"

    # Remove them: the running container goes first, then its network and volume.
    done = server.cli("gc", "--tenant", tenant, "--yes", check=True)
    assert "removed 3 of 3 orphan(s)" in done.stdout, done.stdout + done.stderr
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(box.id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.networks.get(net.id)
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(vol.name)

    # The deployed cell is untouched and still runs; nothing is left to collect.
    agent = docker_client.containers.list(
        filters={"label": [*flt["label"], "agentcell.role=agent"]}, ignore_removed=True
    )
    assert [(c.id, c.status) for c in agent] == [(agent_id, "running")]
    assert {
        c.name for c in docker_client.containers.list(all=True, filters=flt, ignore_removed=True)
    } <= cell_objects
    status = json.loads(server.cli("status", f"{tenant}/agent", "-o", "json", check=True).stdout)
    assert status["state"] in ("running", "healthy"), status
    assert server.cli("gc", "--tenant", tenant, check=True).stdout.strip() == "no orphans"

    # One audit record per removal, by the admin, with what and why.
    records = httpx.get(
        f"{server.url}/v1/audit",
        params={"tenant": tenant, "cell": "ghost", "kind": "lifecycle"},
        headers={"Authorization": f"Bearer {server.token()}"},
    ).json()
    gc_records = [r for r in records if r["details"].get("action") == "gc"]
    assert {(r["details"]["object"], r["details"]["name"]) for r in gc_records} == ghosts
    assert len(gc_records) == 3
    for r in gc_records:
        assert (r["actor"], r["decision"], r["reason"]) == (
            "admin",
            "allow",
            "cell unknown to the store",
        )


def test_gc_leaves_out_tenants_it_does_not_know_unless_asked(
    server: Server, tenant: str, docker_client: docker.DockerClient
) -> None:
    # A tenant this control plane never heard of: another control plane's, or a lost store's.
    vol = docker_client.volumes.create(
        f"agentcell-{tenant}-elsewhere-workspace", labels=_labels(tenant, "elsewhere", "workspace")
    )
    try:
        plain = json.loads(server.cli("gc", "-o", "json", check=True).stdout)
        assert vol.name not in {o["name"] for o in plain["orphans"]}
        assert plain["foreign"] >= 1
        assert "left out:" in server.cli("gc", check=True).stdout
        every = json.loads(server.cli("gc", "--all-tenants", "-o", "json", check=True).stdout)
        assert vol.name in {o["name"] for o in every["orphans"]}
        assert _gc(server, tenant)["orphans"][0]["name"] == vol.name  # --tenant names it
    finally:
        vol.remove(force=True)
