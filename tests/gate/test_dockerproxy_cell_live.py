"""Battery part C from inside a live agent: its docker proxy lets it manage its own
containers and nothing else (the proxy's own tests cover the combinatorics on loopback)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from livecell import DEMO_IMAGE, Server, free_port, remove_labelled, wait_for

pytestmark = pytest.mark.integration

CLIENT = r"""
import http.client, json, os, sys
host, port = os.environ["DOCKER_HOST"].removeprefix("tcp://").split(":")
method, path, body = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None
c = http.client.HTTPConnection(host, int(port), timeout=20)
headers = {"Content-Type": "application/json"} if body else {}
c.request(method, path, body=body, headers=headers)
r = c.getresponse()
data = r.read().decode(errors="replace")
print(json.dumps({"status": r.status, "body": data}))
"""


def _spec(tenant: str, cell: str, containers: int = 2) -> str:
    docs = [
        {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": tenant}},
        {
            "apiVersion": "agentcell/v1",
            "kind": "Agent",
            "metadata": {"name": cell, "tenant": tenant},
            "spec": {
                "image": DEMO_IMAGE,
                "health": {"http": {"port": 8080, "path": "/healthz"}},
                "docker": {
                    "access": "own",
                    "limits": {"containers": containers, "cpus": 2, "memory": "1Gi"},
                },
            },
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


@dataclass
class Cell:
    tenant: str
    agent: Any
    server: Server

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """A Docker Engine API call from inside the agent, through its DOCKER_HOST."""
        args = ["python3", "-c", CLIENT, method, path]
        if body is not None:
            args.append(json.dumps(body))
        _, (out, err) = self.agent.exec_run(args, user="10001:10001", demux=True)
        answer = json.loads((out or b"").decode() or json.dumps({"status": 0, "body": str(err)}))
        try:
            return answer["status"], json.loads(answer["body"])
        except ValueError:
            return answer["status"], answer["body"]

    def child(self, name: str, **extra: Any) -> tuple[int, Any]:
        body = {"Image": DEMO_IMAGE, "Cmd": ["sleep", "300"], **extra}
        return self.api("POST", f"/v1.41/containers/create?name={name}", body)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cell, Cell]]:
    client = docker.from_env()
    tmp: Path = tmp_path_factory.mktemp("dockerproxy")
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", state_dir=tmp / "state", port=port)
    srv.state_dir.mkdir()
    mine, theirs = f"d{secrets.token_hex(4)}", f"o{secrets.token_hex(4)}"
    srv.start()
    try:
        out = []
        for tenant, cell in ((mine, "a"), (theirs, "b")):
            path = tmp / f"{tenant}.yaml"
            path.write_text(_spec(tenant, cell))
            res = srv.cli("deploy", "-f", str(path), "--timeout", "60")
            assert res.returncode == 0, res.stderr + srv.log_text()
            agent = client.containers.list(
                filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]},
                ignore_removed=True,
            )[0]
            status = srv.cli("status", f"{tenant}/{cell}", check=True).stdout
            assert f"its own containers through agentcell.{tenant}.{cell}.dockerproxy" in status
            assert "at most 2 containers" in status
            proxy = client.containers.list(
                filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=dockerproxy"]},
                ignore_removed=True,
            )[0]
            got = srv.api("GET", f"/v1/cells/{tenant}/{cell}").json()
            assert got["docker"]["proxy"] == f"{proxy.name} ({proxy.status})"
            out.append(Cell(tenant, agent, srv))
        yield out[0], out[1]
        # Removing a cell removes the containers its agent made.
        for c in out:
            assert srv.cli("rm", f"{c.tenant}/{'a' if c.tenant == mine else 'b'}").returncode == 0
            left = client.containers.list(
                all=True, filters={"label": f"agentcell.tenant={c.tenant}"}, ignore_removed=True
            )
            assert [x.name for x in left] == []
    finally:
        srv.stop()
        remove_labelled(client, f"agentcell.tenant={mine}")
        remove_labelled(client, f"agentcell.tenant={theirs}")


def test_the_agent_runs_hardened_children_on_its_own_network(cells: tuple[Cell, Cell]) -> None:
    me, _ = cells
    assert me.api("GET", "/_ping") == (200, "OK")
    status, created = me.child("worker")
    assert status == 201, created
    status, _ = me.api("POST", f"/v1.41/containers/{created['Id']}/start")
    assert status == 204
    child = docker.from_env().containers.get(created["Id"])
    hc = child.attrs["HostConfig"]
    assert child.attrs["Config"]["User"] == "10001:10001"
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"]
    assert hc["NetworkMode"] == me.agent.attrs["HostConfig"]["NetworkMode"]
    assert child.labels["agentcell.role"] == "child"
    assert child.labels["agentcell.tenant"] == me.tenant
    status, listed = me.api("GET", "/v1.41/containers/json?all=1")
    assert status == 200
    assert [c["Names"] for c in listed] == [["/worker"]]


@pytest.mark.parametrize(
    ("what", "extra"),
    [
        ("privileged", {"HostConfig": {"Privileged": True}}),
        ("host network", {"HostConfig": {"NetworkMode": "host"}}),
        ("a bind of the host's root", {"HostConfig": {"Binds": ["/:/host"]}}),
        ("an added capability", {"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}),
        (
            "the engine's socket",
            {
                "HostConfig": {
                    "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]
                }
            },
        ),
        ("the host's pid namespace", {"HostConfig": {"PidMode": "host"}}),
        ("a lower-case key the engine reads anyway", {"hostconfig": {"privileged": True}}),
    ],
)
def test_unsafe_children_are_refused(
    cells: tuple[Cell, Cell], what: str, extra: dict[str, Any]
) -> None:
    me, _ = cells
    status, body = me.child(f"bad-{secrets.token_hex(2)}", **extra)
    assert status == 403, (what, body)


def test_another_tenants_containers_do_not_exist_for_the_agent(cells: tuple[Cell, Cell]) -> None:
    me, them = cells
    status, created = them.child("theirs")
    assert status == 201
    foreign = created["Id"]
    for ref in (foreign, foreign[:12], "theirs", them.agent.id, them.agent.name, me.agent.name):
        assert me.api("GET", f"/v1.41/containers/{ref}/json")[0] == 404, ref
        assert me.api("POST", f"/containers/{ref}/kill")[0] == 404, ref
    status, listed = me.api("GET", "/containers/json?all=1")
    assert status == 200
    assert all(c["Labels"]["agentcell.tenant"] == me.tenant for c in listed)
    assert docker.from_env().containers.get(foreign).status == "created"


def test_the_cell_quota_caps_the_children(cells: tuple[Cell, Cell]) -> None:
    me, _ = cells
    existing = len(me.api("GET", "/containers/json?all=1")[1])
    statuses = [me.child(f"q{i}-{secrets.token_hex(2)}")[0] for i in range(3 - existing)]
    assert statuses[-1] == 403
    assert statuses.count(201) == 2 - existing


def test_endpoints_outside_the_table_are_refused(cells: tuple[Cell, Cell]) -> None:
    me, _ = cells
    assert me.api("POST", "/v1.41/networks/create", {"Name": "escape"})[0] == 403
    assert me.api("POST", "/v1.41/build")[0] == 403
    assert me.api("GET", "/v%31.41/containers/json")[0] in (400, 403)


def _install_cli(agent: Any) -> str:
    """Put the host's stock docker CLI (Debian's docker.io) into the agent's workspace."""
    import io
    import tarfile

    cli = Path("/usr/bin/docker")
    if not cli.exists():
        pytest.skip("no stock docker CLI on this host (Debian's docker.io provides it)")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tar.gettarinfo(str(cli), arcname="docker")
        info.uid = info.gid = 10001
        info.mode = 0o755
        with cli.open("rb") as f:
            tar.addfile(info, f)
    assert agent.put_archive("/workspace", data.getvalue())
    return "/workspace/docker"


def test_the_stock_docker_cli_works_inside_the_cell(cells: tuple[Cell, Cell]) -> None:
    me, _ = cells
    docker_cli = _install_cli(me.agent)
    for c in me.api("GET", "/containers/json?all=1")[1]:  # room under the quota
        assert me.api("DELETE", f"/containers/{c['Id']}?force=1")[0] == 204

    def run(*cmd: str) -> tuple[int, str]:
        code, out = me.agent.exec_run(list(cmd), user="10001:10001")
        return code, out.decode(errors="replace")

    code, out = run(docker_cli, "run", "--rm", DEMO_IMAGE, "echo", "hello from a child")
    assert code == 0, out
    assert "hello from a child" in out
    code, out = run(docker_cli, "run", "-d", "--name", "cli-child", DEMO_IMAGE, "sleep", "300")
    assert code == 0, out
    code, out = run(docker_cli, "ps", "--format", "{{.Names}}")
    assert code == 0
    assert "cli-child" in out.split()
    assert them_not_in(out, cells[1])
    # Interactive: `script` gives the CLI a terminal, as a person's shell would.
    code, out = run(
        "script", "-qec", f"{docker_cli} exec -it cli-child sh -c 'tty; echo tty-ok'", "/dev/null"
    )
    assert code == 0, out
    assert "tty-ok" in out
    assert "/dev/pts/" in out
    code, out = run(docker_cli, "run", "--rm", "--privileged", DEMO_IMAGE, "true")
    assert code != 0
    assert "privileged" in out.lower()
    code, out = run(docker_cli, "rm", "-f", "cli-child")
    assert code == 0, out


def them_not_in(listing: str, them: Cell) -> bool:
    return them.agent.name not in listing


def test_each_docker_api_request_is_one_audit_record(cells: tuple[Cell, Cell]) -> None:
    me, _ = cells
    marker = secrets.token_hex(4)
    paths = [f"/v1.41/containers/{marker}-{i}/json" for i in range(5)]
    for path in paths:
        assert me.api("GET", path)[0] == 404
    assert me.api("POST", f"/v1.41/networks/create?{marker}", {"Name": "escape"})[0] == 403

    def records() -> list[dict[str, Any]]:
        res = me.server.cli(
            "audit", "-k", "docker", "--cell", f"{me.tenant}/a", "--limit", "1000", "-o", "json"
        )
        assert res.returncode == 0, res.stderr
        return [r for r in json.loads(res.stdout) if marker in r["details"]["path"]]

    got = wait_for(lambda: len(records()) >= 6 and records(), 30, "the proxy's records")
    assert isinstance(got, list)
    assert sorted(r["details"]["path"] for r in got) == sorted(
        [*paths, f"/v1.41/networks/create?{marker}"]
    )
    assert {(r["actor"], r["kind"]) for r in got} == {("docker-proxy", "docker")}
    assert [r["decision"] for r in got if "networks" in r["details"]["path"]] == ["deny"]
