"""Tenants are separated on the real engine: two tenants, two cells each, every path across denied.

One real ``agentcell serve`` runs tenants ``blue-*`` and ``green-*``, each with cells ``c1``
and ``c2``; every cell has an egress gate (its policy allows the whole test pool on the
sidecars' and the agent's ports, which the gate refuses anyway: the pool is the cells') and
a docker proxy (``docker: {access: own}``). From inside blue's agents, as the agent's user:

- network: TCP to green's agents, gates (cell and egress addresses, proxy and control
  ports) and docker proxies, and to blue's other cell, directly and through the cell's own
  gate; the cell's own gate and proxy answer, so the probe could see a path if one were open;
  the same connects from inside blue's gate, so the network is shown to hold without the
  gate's policy;
- engine objects, seen from the host: networks, attachments, labels;
- docker proxy (ATTACKS.md part C 4-6 and 8) aimed at green's objects by full id, short id,
  name and ``/name``; the same operation on the cell's own child works.

Green's containers are checked from the host at the end: same ids, running, same names.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import pytest
import yaml

from agentcell.policy import DOCKER_PROXY_PORT, GATE_CONTROL_PORT, GATE_PROXY_PORT, GATE_USER
from livecell import DEMO_IMAGE, TEST_POOL, Server, free_port, remove_labelled, wait_for

pytestmark = pytest.mark.integration

AGENT_USER = "10001:10001"
AGENT_PORT = 8080  # the demo agent's health server
CELLS = ("c1", "c2")
RUN = secrets.token_hex(3)
BLUE, GREEN = f"blue-{RUN}", f"green-{RUN}"
REFUSED = (400, 403, 404)
"""What the docker proxy answers a refused request: bad form, not allowed, not found
(a child name another tenant's child holds answers 409, and says nothing more)."""

# Run inside the agent: one Docker Engine API call through $DOCKER_HOST. Streams are read
# for at most a moment: the status line is the answer, the body only a hint.
CLIENT = r"""
import http.client, json, os, socket, sys
host, port = os.environ["DOCKER_HOST"].removeprefix("tcp://").split(":")
def one(method, path, body):
    c = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        if c.sock is not None:
            c.sock.settimeout(3)
        try:
            data = r.read(1 << 20) if method != "HEAD" else b""
        except (socket.timeout, http.client.IncompleteRead) as e:
            data = getattr(e, "partial", b"") or b""
        return {"status": r.status, "body": data.decode("latin-1")}
    except OSError as e:
        return {"status": 0, "body": repr(e)}
    finally:
        c.close()
print(json.dumps([one(*r) for r in json.loads(sys.stdin.read())]))
"""

# Run inside the agent: many TCP connects at once, directly or as CONNECT through the
# cell's own gate. An outcome per label: "connected", "refused", "timeout", "error <errno>",
# or "gate <status> <reason>".
PROBE = r"""
import concurrent.futures as cf, errno, json, os, socket, sys
targets = json.loads(sys.argv[1])
gate = os.environ["HTTP_PROXY"].removeprefix("http://").rstrip("/").split(":")
def tcp(host, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "error " + errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
def via_gate(host, port):
    # The gate answers 200 before it dials (it reads a ClientHello first on TLS ports), so
    # a tunnel is open only if the far side answers: every service probed speaks HTTP.
    s = socket.create_connection((gate[0], int(gate[1])), timeout=20)
    try:
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        line = head.decode("latin-1").split("\r\n")[0]
        status = line.split(" ")[1] if " " in line else "none"
        if status != "200":
            return f"gate {status}"
        try:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            while chunk := s.recv(4096):
                rest += chunk
        except ConnectionResetError:
            pass  # the gate closed a tunnel it could not dial, before reading what was sent
        return f"gate 200 then {len(rest)} bytes"
    except OSError as e:
        return "gate-error " + str(e)
    finally:
        s.close()
def one(t):
    label, how, host, port = t
    return label, (tcp if how == "tcp" else via_gate)(host, port)
with cf.ThreadPoolExecutor(64) as pool:
    print(json.dumps(dict(pool.map(one, targets))))
"""


def _demux(data: bytes) -> bytes:
    """Stdout of a non-tty exec stream (8-byte frame headers; stream 1 is stdout)."""
    out = b""
    while len(data) >= 8:
        kind, size = data[0], int.from_bytes(data[4:8], "big")
        if kind == 1:
            out += data[8 : 8 + size]
        data = data[8 + size :]
    return out


@dataclass
class Cell:
    """One deployed cell as the host sees it."""

    tenant: str
    name: str
    agent: Any
    gate: Any
    proxy: Any
    network: str  # the cell's internal network
    subnet: str
    egress_network: str  # the tenant's
    workspace: str

    @property
    def ref(self) -> str:
        return f"{self.tenant}/{self.name}"

    def ip(self, container: Any, network: str | None = None) -> str:
        container.reload()
        nets = container.attrs["NetworkSettings"]["Networks"]
        return str(nets[network or self.network]["IPAddress"])

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A Docker Engine API call from inside the agent, through its DOCKER_HOST."""
        return self.api_many([(method, path, body)])[0]

    def api_many(self, requests: list[tuple[str, str, Any]]) -> list[tuple[int, Any]]:
        """Docker Engine API calls, one after the other, from one process in the agent."""
        batch = [
            (m, p, None if b is None else b if isinstance(b, str) else json.dumps(b))
            for m, p, b in requests
        ]
        sock = self.agent.client.api.exec_create(
            self.agent.id, ["python3", "-c", CLIENT], user=AGENT_USER, stdin=True
        )["Id"]
        out = self.agent.client.api.exec_start(sock, socket=True)
        raw = getattr(out, "_sock", out)
        raw.sendall(json.dumps(batch).encode())
        raw.shutdown(1)  # SHUT_WR: the end of the batch
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
        raw.close()
        answers = json.loads(_demux(data))
        result: list[tuple[int, Any]] = []
        for a in answers:
            try:
                result.append((a["status"], json.loads(a["body"])))
            except ValueError:
                result.append((a["status"], a["body"]))
        return result

    def probe(
        self, targets: list[tuple[str, str, str, int]], *, gate: bool = False
    ) -> dict[str, str]:
        """Outcomes of (label, "tcp"|"gate", host, port) connects from inside the agent, or
        (``gate``, "tcp" only) from inside the cell's gate as the gate's user."""
        _, (out, err) = (self.gate if gate else self.agent).exec_run(
            ["python3", "-c", PROBE, json.dumps(targets)],
            user=GATE_USER if gate else AGENT_USER,
            environment={"HTTP_PROXY": "http://unused:1"} if gate else None,
            demux=True,
        )
        assert out, err
        result: dict[str, str] = json.loads(out)
        return result

    def child(self, name: str, *, start: bool = True, **extra: Any) -> str:
        """A child of this cell's agent, made through its proxy; its id."""
        body = {"Image": DEMO_IMAGE, "Cmd": ["sleep", "300"], **extra}
        status, made = self.api("POST", f"/v1.41/containers/create?name={name}", body)
        assert status == 201, made
        if start:
            status, started = self.api("POST", f"/v1.41/containers/{made['Id']}/start")
            assert status == 204, started
        return str(made["Id"])


@dataclass
class World:
    server: Server
    client: Any
    cells: dict[str, Cell]  # "b1", "b2", "g1", "g2"
    egress_subnets: dict[str, str]  # tenant -> subnet
    green_before: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, status)
    green_child: str = ""  # a stopped child of g1, made through g1's own proxy
    green_volume: str = ""  # an unused volume of g1, made through g1's own proxy
    green_exec: str = ""  # an exec instance in g1's agent, made from the host
    own_child: str = ""  # b1's running child, made through b1's own proxy

    @property
    def b1(self) -> Cell:
        return self.cells["b1"]


def _spec(tenant: str) -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": tenant}},
    ]
    for cell in CELLS:
        docs.append(
            {
                "apiVersion": "agentcell/v1",
                "kind": "Agent",
                "metadata": {"name": cell, "tenant": tenant},
                "spec": {
                    "image": DEMO_IMAGE,
                    "env": {"AGENT_PROBE_SECONDS": "3600"},
                    "health": {"http": {"port": AGENT_PORT, "path": "/healthz"}},
                    # A policy that names every address of the test pool: what refuses a
                    # dial across is the gate's own rule that the pool is the cells'.
                    "egress": {
                        "allow": [
                            {
                                "cidr": TEST_POOL,
                                "ports": [
                                    AGENT_PORT,
                                    GATE_PROXY_PORT,
                                    GATE_CONTROL_PORT,
                                    DOCKER_PROXY_PORT,
                                ],
                            }
                        ]
                    },
                    "docker": {
                        "access": "own",
                        "limits": {"containers": 12, "cpus": 4, "memory": "4Gi"},
                    },
                },
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def _find(client: Any, tenant: str, cell: str, role: str) -> Any:
    found = client.containers.list(
        filters={
            "label": [
                f"agentcell.tenant={tenant}",
                f"agentcell.cell={cell}",
                f"agentcell.role={role}",
            ]
        },
        ignore_removed=True,
    )
    assert len(found) == 1, (tenant, cell, role, [c.name for c in found])
    return found[0]


def _cell(client: Any, tenant: str, name: str) -> Cell:
    agent = _find(client, tenant, name, "agent")
    network = agent.attrs["HostConfig"]["NetworkMode"]
    net = client.networks.get(network)
    (egress,) = client.networks.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress-network"]}
    )
    (ws,) = client.volumes.list(
        filters={
            "label": [
                f"agentcell.tenant={tenant}",
                f"agentcell.cell={name}",
                "agentcell.role=workspace",
            ]
        }
    )
    return Cell(
        tenant=tenant,
        name=name,
        agent=agent,
        gate=_find(client, tenant, name, "egress"),
        proxy=_find(client, tenant, name, "dockerproxy"),
        network=network,
        subnet=net.attrs["IPAM"]["Config"][0]["Subnet"],
        egress_network=egress.name,
        workspace=ws.name,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    client = docker.from_env(timeout=120)
    client.images.get(DEMO_IMAGE)
    tmp: Path = tmp_path_factory.mktemp("tenants")
    port = free_port()
    srv = Server(
        url=f"http://127.0.0.1:{port}",
        state_dir=tmp / "state",
        port=port,
        extra_env={"AGENTCELL_CANARY_INTERVAL": "0"},
    )
    srv.state_dir.mkdir()
    srv.start()
    try:
        for tenant in (BLUE, GREEN):
            path = tmp / f"{tenant}.yaml"
            path.write_text(_spec(tenant))
            res = srv.cli("deploy", "-f", str(path), "--timeout", "90")
            assert res.returncode == 0, res.stdout + res.stderr + srv.log_text()
        cells = {
            f"{t[0]}{i}": _cell(client, tenant, f"c{i}")
            for tenant, t in ((BLUE, "b"), (GREEN, "g"))
            for i in (1, 2)
        }
        subnets = {
            t: client.networks.get(cells[f"{t[0]}1"].egress_network).attrs["IPAM"]["Config"][0][
                "Subnet"
            ]
            for t in (BLUE, GREEN)
        }
        w = World(srv, client, cells, subnets)
        g1 = cells["g1"]
        w.green_child = g1.child("green-stopped", start=False)
        status, vol = g1.api("POST", "/v1.41/volumes/create", {"Name": f"green-vol-{RUN}"})
        assert status == 201, vol
        w.green_volume = vol["Name"]
        w.green_exec = client.api.exec_create(g1.agent.id, ["true"], user=AGENT_USER)["Id"]
        w.own_child = cells["b1"].child("blue-own")
        for c in (g1, cells["g2"]):
            for container in (c.agent, c.gate, c.proxy):
                container.reload()
                w.green_before[container.id] = (container.name, container.status)
        yield w
    finally:
        srv.stop()
        remove_labelled(client, f"agentcell.tenant={BLUE}")
        remove_labelled(client, f"agentcell.tenant={GREEN}")


# --- network ------------------------------------------------------------------------------------

# (source, target cell, address, port): every one must fail.
_ADDRESSES = ("agent", "gate", "gate-egress", "dockerproxy")
_PORTS = {
    "agent": (AGENT_PORT, 22, 80, 443, GATE_PROXY_PORT, DOCKER_PROXY_PORT),
    "gate": (GATE_PROXY_PORT, GATE_CONTROL_PORT),
    "gate-egress": (GATE_PROXY_PORT, GATE_CONTROL_PORT),
    "dockerproxy": (DOCKER_PROXY_PORT,),
}
CROSS = [
    (src, dst, addr, port)
    for src in ("b1", "b2")
    for dst in ("g1", "g2", "b2" if src == "b1" else "b1")
    for addr in _ADDRESSES
    for port in _PORTS[addr]
]
THROUGH_GATE = [
    (src, dst, addr, port)
    for src in ("b1",)
    for dst in ("g1", "b2")
    for addr in _ADDRESSES
    for port in _PORTS[addr][:2]
]


def _address(w: World, cell: str, addr: str) -> str:
    c = w.cells[cell]
    if addr == "agent":
        return c.ip(c.agent)
    if addr == "gate":
        return c.ip(c.gate)
    if addr == "gate-egress":
        return c.ip(c.gate, c.egress_network)
    return c.ip(c.proxy)


@pytest.fixture(scope="module")
def probes(world: World) -> dict[str, str]:
    """Every connect of CROSS and THROUGH_GATE, plus the cells' own sidecars, done at once."""
    results: dict[str, str] = {}
    for src in ("b1", "b2"):
        me = world.cells[src]
        targets = [
            (f"tcp {s} {d} {a} {p}", "tcp", _address(world, d, a), p)
            for s, d, a, p in CROSS
            if s == src
        ]
        targets += [
            (f"gate {s} {d} {a} {p}", "gate", _address(world, d, a), p)
            for s, d, a, p in THROUGH_GATE
            if s == src
        ]
        targets += [
            (f"own {src} gate", "tcp", me.ip(me.gate), GATE_PROXY_PORT),
            (f"own {src} dockerproxy", "tcp", me.ip(me.proxy), DOCKER_PROXY_PORT),
            (f"own {src} agent", "tcp", me.ip(me.agent), AGENT_PORT),
        ]
        results.update(me.probe(targets))
    return results


def test_the_cells_own_gate_and_proxy_answer_the_probe(probes: dict[str, str]) -> None:
    """The probe sees an open path when there is one, so its refusals below mean something."""
    for src in ("b1", "b2"):
        for what in ("gate", "dockerproxy", "agent"):
            assert probes[f"own {src} {what}"] == "connected", (src, what)


# A packet that arrives draws an answer (a SYN-ACK, or a RST from a closed port); only a
# packet dropped on the way, or no route at all, is isolation.
_NO_PATH = ("timeout", "error EHOSTUNREACH", "error ENETUNREACH")


@pytest.mark.parametrize(("src", "dst", "addr", "port"), CROSS, ids=str)
def test_no_tcp_path_to_another_cell(
    probes: dict[str, str], src: str, dst: str, addr: str, port: int
) -> None:
    outcome = probes[f"tcp {src} {dst} {addr} {port}"]
    assert outcome in _NO_PATH, f"{src} reached {dst} {addr}:{port}: {outcome}"


@pytest.mark.parametrize(("src", "dst", "addr", "port"), THROUGH_GATE, ids=str)
def test_no_path_through_the_cells_own_gate(
    probes: dict[str, str], src: str, dst: str, addr: str, port: int
) -> None:
    """CONNECT through the cell's gate, whose policy names the address: never a tunnel."""
    outcome = probes[f"gate {src} {dst} {addr} {port}"]
    assert outcome in ("gate 403", "gate 200 then 0 bytes"), f"{src}'s gate: {outcome}"


def test_the_gate_refuses_every_address_of_the_pool(world: World, probes: dict[str, str]) -> None:
    """The policy names green's addresses, and the gate still never dials one: the subnet
    pool is the cells', never a destination. Blue's egress network is b1's own.

    Read from the gate's own records (its stdout), where every decision is, at once.
    """
    wanted = {(_address(world, d, a), p): (d, a) for _, d, a, p in THROUGH_GATE}

    def records() -> dict[tuple[str, int], set[str]]:
        found: dict[tuple[str, int], set[str]] = {}
        for line in world.b1.gate.logs(stderr=False).decode().splitlines():
            r = json.loads(line)
            if (r["host"], r["port"]) in wanted:
                found.setdefault((r["host"], r["port"]), set()).add(r["reason"])
        return found if len(found) == len(wanted) else {}

    found = wait_for(records, 20, "a decision record for every probe through the gate")
    assert isinstance(found, dict)
    for (host, port), reasons in found.items():
        dst, addr = wanted[host, port]
        own = dst.startswith("b") and addr == "gate-egress"
        expected = "address is the gate itself" if own else "address is another cell's"
        if port == 22:  # the one port the policy does not name: refused before any address
            expected = "no rule allows this port"
        assert reasons == {expected}, (dst, addr, host, port, reasons, _STALE)


def test_from_inside_the_gate_the_network_holds_too(world: World) -> None:
    """Without the gate's policy, the network alone: from inside blue's gate container (its
    namespace, routes and egress network), green's agents, gates and proxies do not answer,
    while blue's own agent does."""
    targets = [
        (f"{d} {a} {p}", "tcp", _address(world, d, a), p)
        for d in ("g1", "g2")
        for a in _ADDRESSES
        for p in _PORTS[a]
    ]
    b1 = world.b1
    targets.append(("own agent", "tcp", b1.ip(b1.agent), AGENT_PORT))
    outcomes = b1.probe(targets, gate=True)
    assert outcomes.pop("own agent") == "connected"
    for label, outcome in outcomes.items():
        assert outcome in _NO_PATH, f"blue's gate reached green {label}: {outcome}"


# --- engine objects -----------------------------------------------------------------------------


def test_each_tenant_has_its_own_egress_network(world: World) -> None:
    blue = world.client.networks.get(world.cells["b1"].egress_network)
    green = world.client.networks.get(world.cells["g1"].egress_network)
    assert blue.id != green.id
    assert world.egress_subnets[BLUE] != world.egress_subnets[GREEN]
    assert blue.attrs["Labels"]["agentcell.tenant"] == BLUE
    assert green.attrs["Labels"]["agentcell.tenant"] == GREEN
    # Both cells of a tenant share its egress network; no cell shares a cell network.
    assert world.cells["b1"].egress_network == world.cells["b2"].egress_network
    assert len({c.network for c in world.cells.values()}) == 4
    assert len({c.subnet for c in world.cells.values()}) == 4


def test_no_container_sits_on_another_tenants_network(world: World) -> None:
    checked = 0
    for tenant in (BLUE, GREEN):
        for net in world.client.networks.list(filters={"label": f"agentcell.tenant={tenant}"}):
            net.reload()
            for cid in net.attrs.get("Containers") or {}:
                labels = world.client.containers.get(cid).labels
                assert labels.get("agentcell.tenant") == tenant, (net.name, labels)
                checked += 1
    assert checked >= 4 * 3 + 1  # agent, gate and proxy of each cell, and b1's child


def test_workspace_volumes_carry_their_tenants_labels(world: World) -> None:
    for c in world.cells.values():
        labels = world.client.volumes.get(c.workspace).attrs["Labels"]
        assert labels == {
            "agentcell.tenant": c.tenant,
            "agentcell.cell": c.name,
            "agentcell.role": "workspace",
        }
        mounts = [m["Name"] for m in c.agent.attrs["Mounts"] if m["Type"] == "volume"]
        assert mounts == [c.workspace]


def test_each_container_is_only_on_its_own_cells_networks(world: World) -> None:
    for c in world.cells.values():
        for container, wanted in (
            (c.gate, {c.network, c.egress_network}),
            (c.agent, {c.network}),
            (c.proxy, {c.network}),
        ):
            container.reload()
            assert set(container.attrs["NetworkSettings"]["Networks"]) == wanted, container.name


# --- docker proxy: acting on green's containers -------------------------------------------------

_OPS: dict[str, tuple[str, str, Any]] = {
    # name: (method, path template with {ref}, body)
    "inspect": ("GET", "/containers/{ref}/json", None),
    "logs": ("GET", "/containers/{ref}/logs?stdout=1&stderr=1", None),
    "archive": ("GET", "/containers/{ref}/archive?path=/etc/hostname", None),
    "archive-stat": ("HEAD", "/containers/{ref}/archive?path=/etc/hostname", None),
    "export": ("GET", "/containers/{ref}/export", None),
    "exec-create": ("POST", "/containers/{ref}/exec", {"Cmd": ["true"], "User": AGENT_USER}),
    "attach": ("POST", "/containers/{ref}/attach?stream=1&stdout=1", None),
    "kill": ("POST", "/containers/{ref}/kill", None),
    "remove": ("DELETE", "/containers/{ref}?force=1", None),
    "rename": ("POST", "/containers/{ref}/rename?name=stolen-{run}", None),
    "update": ("POST", "/containers/{ref}/update", {"Memory": 1 << 30}),
    "pause": ("POST", "/containers/{ref}/pause", None),
    "stop": ("POST", "/containers/{ref}/stop?t=0", None),
    "top": ("GET", "/containers/{ref}/top", None),
}
_REFS = ("full id", "short id", "name", "/name", "//name")
_VERSIONS = ("/v1.41", "")


def _ref(container: Any, how: str) -> str:
    if how == "full id":
        return str(container.id)
    if how == "short id":
        return str(container.id[:12])
    if how == "name":
        return str(container.name)
    if how == "/name":
        return quote("/" + container.name, safe="")  # what a client sends for "/name"
    return "/" + str(container.name)  # a literal second slash


def _path(op: str, ref: str, version: str) -> tuple[str, str, Any]:
    method, template, body = _OPS[op]
    return method, version + template.format(ref=ref, run=RUN), body


_ROLES = ("agent", "egress", "dockerproxy")
FOREIGN_OPS = [
    (op, role, how, version)
    for op in _OPS
    for role in _ROLES
    for how in _REFS
    for version in ("versioned", "unversioned")
]


@pytest.fixture(scope="module")
def foreign_ops(world: World) -> dict[tuple[str, str, str, str], tuple[int, Any]]:
    """Every request of FOREIGN_OPS from inside b1, sent in one batch (one exec)."""
    targets = {role: _find(world.client, GREEN, "c1", role) for role in _ROLES}
    requests = [
        _path(op, _ref(targets[role], how), "/v1.41" if version == "versioned" else "")
        for op, role, how, version in FOREIGN_OPS
    ]
    return dict(zip(FOREIGN_OPS, world.b1.api_many(requests), strict=True))


@pytest.mark.parametrize(
    ("op", "role", "how", "version"), FOREIGN_OPS, ids=["-".join(x) for x in FOREIGN_OPS]
)
def test_green_containers_do_not_exist_for_blue(
    foreign_ops: dict[tuple[str, str, str, str], tuple[int, Any]],
    op: str,
    role: str,
    how: str,
    version: str,
) -> None:
    status, answer = foreign_ops[op, role, how, version]
    assert status in REFUSED, (status, answer)


_OWN_OK = {
    "inspect": 200,
    "logs": 200,
    "archive": 200,
    "archive-stat": 200,
    "export": 200,
    "exec-create": 201,
    "kill": 204,
    "remove": 204,
    "rename": 204,
    "pause": 204,
    "stop": 204,
    "top": 200,
}


@pytest.mark.parametrize("op", list(_OWN_OK))
def test_the_same_operation_works_on_the_cells_own_child(world: World, op: str) -> None:
    child = world.b1.child(f"own-{op}-{secrets.token_hex(2)}")
    try:
        method, path, body = _path(op, child, "/v1.41")
        status, answer = world.b1.api(method, path, body)
        assert status == _OWN_OK[op], (status, answer)
    finally:
        world.b1.api("DELETE", f"/v1.41/containers/{child}?force=1")


@pytest.mark.parametrize("how", ["full id", "short id"])
@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("POST", "/v1.41/exec/{ref}/start", {"Detach": True}),
        ("GET", "/v1.41/exec/{ref}/json", None),
        ("POST", "/v1.41/exec/{ref}/resize?h=10&w=10", None),
    ],
    ids=("start", "inspect", "resize"),
)
def test_green_exec_instances_do_not_exist_for_blue(
    world: World, how: str, method: str, template: str, body: Any
) -> None:
    ref = world.green_exec if how == "full id" else world.green_exec[:12]
    status, answer = world.b1.api(method, template.format(ref=ref), body)
    assert status in REFUSED, (status, answer)
    assert world.client.api.exec_inspect(world.green_exec)["Running"] is False
    assert world.client.api.exec_inspect(world.green_exec)["ExitCode"] is None  # never started


# --- docker proxy: lists, events, prune ---------------------------------------------------------


def _green_strings(w: World) -> list[str]:
    ids = [w.green_child, *w.green_before]
    names = [name for name, _ in w.green_before.values()]
    return [GREEN, *ids, *(i[:12] for i in ids), *names, w.green_volume]


@pytest.mark.parametrize(
    "path",
    [
        "/v1.41/containers/json?all=1",
        "/containers/json?all=1",
        "/v1.41/containers/json?all=1&filters="
        + quote(json.dumps({"label": [f"agentcell.tenant={GREEN}"]})),
        "/v1.41/containers/json?all=1&filters=" + quote(json.dumps({"name": ["green"]})),
        "/v1.41/networks",
        "/v1.41/networks?filters=" + quote(json.dumps({"name": [GREEN]})),
        "/v1.41/volumes",
        "/v1.41/volumes?filters=" + quote(json.dumps({"name": ["green"]})),
    ],
)
def test_lists_never_show_green_objects(world: World, path: str) -> None:
    status, listed = world.b1.api("GET", path)
    assert status == 200, listed
    text = json.dumps(listed)
    for s in _green_strings(world):
        assert s not in text, (s, path)


def test_lists_show_the_cells_own_objects(world: World) -> None:
    """The positive half: the same lists do show what is blue's, so the test could fail."""
    _, containers = world.b1.api("GET", "/v1.41/containers/json?all=1")
    assert world.own_child in [c["Id"] for c in containers]
    _, networks = world.b1.api("GET", "/v1.41/networks")
    assert [n["Name"] for n in networks] == [world.b1.network]


def test_events_never_show_green_objects(world: World) -> None:
    since = int(time.time()) - 1
    g1 = world.cells["g1"]
    made = g1.child(f"green-ev-{secrets.token_hex(2)}")  # green events: create, start
    world.client.api.exec_create(g1.agent.id, ["true"])  # and exec_create on green's agent
    mine = world.b1.child(f"blue-ev-{secrets.token_hex(2)}")
    until = int(time.time()) + 1
    status, raw = world.b1.api("GET", f"/v1.41/events?since={since}&until={until}")
    assert status == 200, raw
    text = raw if isinstance(raw, str) else json.dumps(raw)
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(e.get("id") == mine for e in events), "blue's own child's events must show"
    for s in [*_green_strings(world), made, made[:12]]:
        assert s not in text, s
    world.b1.api("DELETE", f"/v1.41/containers/{mine}?force=1")
    g1.api("DELETE", f"/v1.41/containers/{made}?force=1")


def test_prune_touches_only_the_cells_own_objects(world: World) -> None:
    stopped = world.b1.child(f"blue-stopped-{secrets.token_hex(2)}", start=False)
    status, vol = world.b1.api("POST", "/v1.41/volumes/create", {"Name": f"blue-vol-{RUN}"})
    assert status == 201, vol
    status, pruned = world.b1.api("POST", "/v1.41/containers/prune")
    assert status == 200, pruned
    assert pruned["ContainersDeleted"] == [stopped]
    status, pruned = world.b1.api("POST", "/v1.41/volumes/prune")
    assert status == 200, pruned
    assert pruned["VolumesDeleted"] == [vol["Name"]]
    # Green's stopped child and unused volume, both prunable by the engine, are still there.
    assert world.client.containers.get(world.green_child).status == "created"
    assert world.client.volumes.get(world.green_volume).name == world.green_volume


# --- docker proxy: reaching green's objects from a create ---------------------------------------


def _create_attacks(w: World) -> dict[str, dict[str, Any]]:
    g1, g2, b2 = w.cells["g1"], w.cells["g2"], w.cells["b2"]
    green = g1.agent
    return {
        "VolumesFrom a green agent by name": {"HostConfig": {"VolumesFrom": [green.name]}},
        "VolumesFrom a green agent by id": {"HostConfig": {"VolumesFrom": [f"{green.id}:ro"]}},
        "VolumesFrom green's gate": {"HostConfig": {"VolumesFrom": [g1.gate.name]}},
        "green's workspace in Binds": {"HostConfig": {"Binds": [f"{g1.workspace}:/x"]}},
        "green's workspace as a volume mount": {
            "HostConfig": {"Mounts": [{"Type": "volume", "Source": g1.workspace, "Target": "/x"}]}
        },
        "green's child volume as a volume mount": {
            "HostConfig": {"Mounts": [{"Type": "volume", "Source": w.green_volume, "Target": "/x"}]}
        },
        "blue's other cell's workspace as a volume mount": {
            "HostConfig": {"Mounts": [{"Type": "volume", "Source": b2.workspace, "Target": "/x"}]}
        },
        "NetworkMode container:<green name>": {
            "HostConfig": {"NetworkMode": f"container:{green.name}"}
        },
        "NetworkMode container:<green id>": {
            "HostConfig": {"NetworkMode": f"container:{green.id}"}
        },
        "NetworkMode container:<green gate>": {
            "HostConfig": {"NetworkMode": f"container:{g1.gate.name}"}
        },
        "PidMode container:<green>": {"HostConfig": {"PidMode": f"container:{green.name}"}},
        "IpcMode container:<green>": {"HostConfig": {"IpcMode": f"container:{green.id}"}},
        "NetworkMode green's cell network": {"HostConfig": {"NetworkMode": g2.network}},
        "NetworkMode green's egress network": {"HostConfig": {"NetworkMode": g1.egress_network}},
        "NetworkMode blue's egress network": {"HostConfig": {"NetworkMode": b2.egress_network}},
        "NetworkMode blue's other cell's network": {"HostConfig": {"NetworkMode": b2.network}},
        "EndpointsConfig green's cell network": {
            "NetworkingConfig": {"EndpointsConfig": {g1.network: {}}}
        },
        "EndpointsConfig green's egress network": {
            "NetworkingConfig": {"EndpointsConfig": {g1.egress_network: {}}}
        },
        "Links to green's agent": {"HostConfig": {"Links": [f"{green.name}:x"]}},
    }


_CREATE_ATTACKS = [
    "VolumesFrom a green agent by name",
    "VolumesFrom a green agent by id",
    "VolumesFrom green's gate",
    "green's workspace in Binds",
    "green's workspace as a volume mount",
    "green's child volume as a volume mount",
    "blue's other cell's workspace as a volume mount",
    "NetworkMode container:<green name>",
    "NetworkMode container:<green id>",
    "NetworkMode container:<green gate>",
    "PidMode container:<green>",
    "IpcMode container:<green>",
    "NetworkMode green's cell network",
    "NetworkMode green's egress network",
    "NetworkMode blue's egress network",
    "NetworkMode blue's other cell's network",
    "EndpointsConfig green's cell network",
    "EndpointsConfig green's egress network",
    "Links to green's agent",
]


@pytest.mark.parametrize("attack", _CREATE_ATTACKS)
def test_a_child_cannot_reach_green_objects(world: World, attack: str) -> None:
    extra = _create_attacks(world)[attack]
    name = f"bad-{secrets.token_hex(3)}"
    body = {"Image": DEMO_IMAGE, "Cmd": ["sleep", "300"], **extra}
    status, answer = world.b1.api("POST", f"/v1.41/containers/create?name={name}", body)
    assert status in (403, 404), (status, answer)
    with pytest.raises(docker.errors.NotFound):
        world.client.containers.get(name)


def _network_ops(w: World) -> dict[str, tuple[str, str, Any]]:
    g1, b1 = w.cells["g1"], w.b1
    green_net = w.client.networks.get(g1.network)
    green_egress = w.client.networks.get(g1.egress_network)
    return {
        "create a network": ("POST", "/v1.41/networks/create", {"Name": f"escape-{RUN}"}),
        "connect own child to green's network": (
            "POST",
            f"/v1.41/networks/{g1.network}/connect",
            {"Container": w.own_child},
        ),
        "connect own child to green's egress network": (
            "POST",
            f"/v1.41/networks/{green_egress.id}/connect",
            {"Container": w.own_child},
        ),
        "connect green's agent to blue's network": (
            "POST",
            f"/v1.41/networks/{b1.network}/connect",
            {"Container": g1.agent.id},
        ),
        "disconnect green's agent": (
            "POST",
            f"/v1.41/networks/{g1.network}/disconnect",
            {"Container": g1.agent.id},
        ),
        "remove green's network": ("DELETE", f"/v1.41/networks/{green_net.id}", None),
        "inspect green's network by name": ("GET", f"/v1.41/networks/{g1.network}", None),
        "inspect green's network by id": ("GET", f"/v1.41/networks/{green_net.id}", None),
        "inspect green's network by short id": ("GET", f"/networks/{green_net.id[:12]}", None),
        "inspect green's egress network": ("GET", f"/v1.41/networks/{g1.egress_network}", None),
        "inspect blue's own egress network": ("GET", f"/v1.41/networks/{b1.egress_network}", None),
        "inspect green's workspace volume": ("GET", f"/v1.41/volumes/{g1.workspace}", None),
        "remove green's workspace volume": ("DELETE", f"/volumes/{g1.workspace}?force=1", None),
        "inspect green's child volume": ("GET", f"/v1.41/volumes/{w.green_volume}", None),
        "remove green's child volume": ("DELETE", f"/v1.41/volumes/{w.green_volume}", None),
        "create a volume named as green's workspace": (
            "POST",
            "/v1.41/volumes/create",
            {"Name": g1.workspace},
        ),
    }


_NETWORK_OPS = [
    "create a network",
    "connect own child to green's network",
    "connect own child to green's egress network",
    "connect green's agent to blue's network",
    "disconnect green's agent",
    "remove green's network",
    "inspect green's network by name",
    "inspect green's network by id",
    "inspect green's network by short id",
    "inspect green's egress network",
    "inspect blue's own egress network",
    "inspect green's workspace volume",
    "remove green's workspace volume",
    "inspect green's child volume",
    "remove green's child volume",
    "create a volume named as green's workspace",
]


@pytest.mark.parametrize("op", _NETWORK_OPS)
def test_green_networks_and_volumes_are_out_of_reach(world: World, op: str) -> None:
    method, path, body = _network_ops(world)[op]
    status, answer = world.b1.api(method, path, body)
    assert status in (*REFUSED, 409), (status, answer, _STALE)


_STALE = "(if this fails only here, the runtime image predates the fix: agentcell images build)"


def _name(world: World, what: str, name: str) -> tuple[int, Any]:
    """Blue asks its proxy to create a child named ``name``, or to rename its own child so."""
    if what == "create":
        body = {"Image": DEMO_IMAGE, "Cmd": ["sleep", "300"]}
        return world.b1.api("POST", f"/v1.41/containers/create?name={name}", body)
    return world.b1.api("POST", f"/v1.41/containers/{world.own_child}/rename?name={name}")


@pytest.mark.parametrize("what", ["create", "rename"])
@pytest.mark.parametrize("role", ["agent", "egress", "dockerproxy"])
def test_a_platform_name_tells_blue_nothing_of_green(world: World, what: str, role: str) -> None:
    """Names are one namespace on the engine, so the platform's are refused whether taken or
    not: an answer of "in use" would tell blue which tenants and cells exist."""
    target = _find(world.client, GREEN, "c1", role)
    status, answer = _name(world, what, target.name)
    assert status == 403, (status, answer, _STALE)
    assert (status, answer) == _name(world, what, f"agentcell.nobody-{RUN}.c1.{role}")
    assert "reserved name" in answer["message"]


@pytest.mark.parametrize("what", ["create", "rename"])
def test_a_name_green_chose_is_taken_and_nothing_more(world: World, what: str) -> None:
    """A child's name is the agent's choice and the engine's one namespace: blue learns that
    the name is taken, never by whom or the id."""
    target = world.client.containers.get(world.green_child)
    status, answer = _name(world, what, target.name)
    assert status == 409, (status, answer)
    assert target.id[:12] not in json.dumps(answer), f"green's id leaked {_STALE}"


def test_a_volume_named_as_green_s_workspace_answers_as_one_nobody_has(world: World) -> None:
    def create(name: str) -> tuple[int, Any]:
        return world.b1.api("POST", "/v1.41/volumes/create", {"Name": name})

    def mount(name: str) -> tuple[int, Any]:
        mounts = [{"Type": "volume", "Source": name, "Target": "/data"}]
        body = {"Image": DEMO_IMAGE, "Cmd": ["true"], "HostConfig": {"Mounts": mounts}}
        return world.b1.api("POST", "/v1.41/containers/create", body)

    nobody = f"agentcell.nobody-{RUN}.c1.workspace"
    for ask in (create, mount):
        status, answer = ask(world.cells["g1"].workspace)
        assert status == 403, (status, answer, _STALE)
        assert (status, answer) == ask(nobody)
    assert not world.client.volumes.list(filters={"name": nobody})


def test_the_cells_own_network_and_volume_can_be_inspected(world: World) -> None:
    assert world.b1.api("GET", f"/v1.41/networks/{world.b1.network}")[0] == 200
    status, vol = world.b1.api("POST", "/v1.41/volumes/create", {"Name": f"blue-own-{RUN}"})
    assert status == 201, vol
    assert world.b1.api("GET", f"/v1.41/volumes/{vol['Name']}")[0] == 200
    assert world.b1.api("DELETE", f"/v1.41/volumes/{vol['Name']}")[0] == 204


# --- afterwards, from the host ------------------------------------------------------------------


def test_green_is_unchanged_afterwards(world: World) -> None:
    """Runs last in this module: nothing above moved any of green's objects."""
    for cid, (name, status) in world.green_before.items():
        c = world.client.containers.get(cid)
        assert (c.name, c.status) == (name, status), cid
        assert c.attrs["State"]["Paused"] is False
        assert c.attrs["RestartCount"] == 0
    g1 = world.cells["g1"]
    assert world.client.containers.get(world.green_child).status == "created"
    for vol in (g1.workspace, world.cells["g2"].workspace, world.green_volume):
        assert world.client.volumes.get(vol).name == vol
    nets = set(g1.agent.attrs["NetworkSettings"]["Networks"])
    g1.agent.reload()
    assert set(g1.agent.attrs["NetworkSettings"]["Networks"]) == nets
    leaked = world.client.networks.list(names=[f"escape-{RUN}"])
    assert leaked == []
    stolen = world.client.containers.list(
        all=True, filters={"name": f"stolen-{RUN}"}, ignore_removed=True
    )
    assert [c for c in stolen if c.labels.get("agentcell.tenant") == GREEN] == []
    wait_for(
        lambda: (
            world.server.api("GET", f"/v1/cells/{GREEN}/c1").json()["state"]
            in ("running", "healthy")
        ),
        10,
        "green's cell to still be up",
    )
