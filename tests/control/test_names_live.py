"""Engine object names on a real engine: names that collided under the previous scheme
deploy side by side, and cells the previous release named are adopted after an upgrade."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from livecell import AGENTCELL, Server, apply_and_wait, free_port, remove_labelled, spec_text

pytestmark = pytest.mark.integration

EGRESS = {
    "allow": [{"host": "placeholder.allowed.test"}],
    "resolve": {"placeholder.allowed.test": ["192.0.2.1"]},
}
QUIET = {"AGENT_PROBE_SECONDS": "3600"}  # the demo agent's own egress probe stays idle

# `agentcell serve` naming objects as the previous release did: agentcell-<tenant>-<cell>.
PREVIOUS_RELEASE = (
    sys.executable,
    "-c",
    "import runpy, agentcell.policy._names as n\n"
    "n.cell_object = lambda t, c, o: f'agentcell-{t}-{c}' + ('' if o == 'net' else f'-{o}')\n"
    "n.tenant_object = lambda t, o: f'agentcell-{t}-{o}'\n"
    "runpy.run_module('agentcell.cli.main', run_name='__main__', alter_sys=True)\n",
)


def _objects(client: docker.DockerClient, tenant: str, cell: str) -> dict[str, str]:
    """role -> name of every container, network and volume labelled as the cell's."""
    flt = {"label": [f"agentcell.tenant={tenant}", f"agentcell.cell={cell}"]}
    found = {
        c.labels["agentcell.role"]: c.name
        for c in client.containers.list(all=True, filters=flt, ignore_removed=True)
    }
    found.update({f"network:{n.name}": n.id for n in client.networks.list(filters=flt)})
    found.update({f"volume:{v.name}": v.id for v in client.volumes.list(filters=flt)})
    return found


def _doc(tenant: str, cell: str, **spec: Any) -> str:
    spec.setdefault("env", QUIET)
    return spec_text(tenant, cell, **spec)


@pytest.fixture
def neighbour(
    tmp_path: Path, tenant: str, docker_client: docker.DockerClient
) -> Iterator[tuple[Server, str]]:
    """A server, and ``<tenant>-prod``: with cell ``web`` it named what ``<tenant>``/``prod-web``
    did. The server stops before the neighbour's objects go, so it cannot make them again."""
    name = f"{tenant}-prod"
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    srv = Server(url=f"http://127.0.0.1:{port}", state_dir=state, port=port)
    srv.start()
    try:
        yield srv, name
    finally:
        srv.stop()
        remove_labelled(docker_client, f"agentcell.tenant={name}")


def test_cells_whose_old_names_collided_deploy_side_by_side(
    neighbour: tuple[Server, str], tenant: str, docker_client: docker.DockerClient
) -> None:
    server, neighbour_tenant = neighbour
    apply_and_wait(server, _doc(tenant, "prod-web", egress=EGRESS, docker={"access": "own"}))
    apply_and_wait(server, _doc(neighbour_tenant, "web", egress=EGRESS, docker={"access": "own"}))
    apply_and_wait(server, _doc(tenant, "egress", egress=EGRESS))  # the tenant network's name

    first = _objects(docker_client, tenant, "prod-web")
    second = _objects(docker_client, neighbour_tenant, "web")
    third = _objects(docker_client, tenant, "egress")
    assert {"agent", "egress", "dockerproxy"} <= first.keys() & second.keys()
    assert first["agent"] == f"agentcell.{tenant}.prod-web.g1"
    assert second["egress"] == f"agentcell.{neighbour_tenant}.web.egress"
    assert third["egress"] == f"agentcell.{tenant}.egress.egress"
    names = [set(o.values()) | {k for k in o if ":" in k} for o in (first, second, third)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    for t, c in ((tenant, "prod-web"), (neighbour_tenant, "web"), (tenant, "egress")):
        res = server.cli("verify", f"{t}/{c}", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr


def test_cells_the_previous_release_named_are_adopted_after_an_upgrade(
    tmp_path: Path, tenant: str, docker_client: docker.DockerClient
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    old = Server(
        url=f"http://127.0.0.1:{port}", state_dir=state, port=port, command=PREVIOUS_RELEASE
    )
    text = _doc(tenant, "agent", egress=EGRESS, docker={"access": "own"})
    old.start()
    try:
        apply_and_wait(old, text)
    finally:
        old.stop()
    before = _objects(docker_client, tenant, "agent")
    assert before["agent"] == f"agentcell-{tenant}-agent-g1"
    assert before["egress"] == f"agentcell-{tenant}-agent-egress"
    assert f"network:agentcell-{tenant}-agent" in before
    ids = {
        c.name: c.id
        for c in docker_client.containers.list(
            filters={"label": f"agentcell.tenant={tenant}"}, ignore_removed=True
        )
    }

    new = Server(
        url=f"http://127.0.0.1:{port}", state_dir=state, port=port, command=tuple(AGENTCELL)
    )
    new.start()
    try:
        apply_and_wait(new, text)  # the same spec: nothing to change
        assert _objects(docker_client, tenant, "agent") == before
        running = docker_client.containers.list(
            filters={"label": f"agentcell.tenant={tenant}"}, ignore_removed=True
        )
        assert {c.name: c.id for c in running} == ids, "an adopted container was replaced"
        res = new.cli("verify", f"{tenant}/agent", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr

        # A changed spec replaces the agent under this release's name, on the same network.
        env = {**QUIET, "REVISION": "2"}
        changed = _doc(tenant, "agent", egress=EGRESS, docker={"access": "own"}, env=env)
        apply_and_wait(new, changed)
        after = _objects(docker_client, tenant, "agent")
        assert after["agent"] == f"agentcell.{tenant}.agent.g2"
        assert f"network:agentcell-{tenant}-agent" in after
        res = new.cli("verify", f"{tenant}/agent", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        new.stop()
