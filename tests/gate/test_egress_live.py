"""Battery part B against a live cell: the agent's only way out is its egress gate.

"The internet" is a server container the test starts on its own network and attaches to
the tenant's egress network; test names resolve to it through the policy's `resolve`
entries, so no name is ever looked up outside and nothing leaves this machine.
"""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from agentcell.control import GateTokens
from agentcell.policy import GATE_CONTROL_PORT, gate_address, is_egress_network
from livecell import AGENTCELL, DEMO_IMAGE, TEST_POOL, Server, free_port, remove_labelled, wait_for

pytestmark = pytest.mark.integration

RUNTIME_IMAGE = "agentcell/runtime:latest"
INTERNET = r"""
import http.server, os, ssl, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"hello {self.server.kind} host={self.headers.get('Host')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
for name in ("cert", "key"):
    with open(f"/tmp/{name}.pem", "w") as f:
        f.write(os.environ[name.upper()])
plain = http.server.ThreadingHTTPServer(("0.0.0.0", 80), H); plain.kind = "plain"
tls = http.server.ThreadingHTTPServer(("0.0.0.0", 443), H); tls.kind = "tls"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tmp/cert.pem", "/tmp/key.pem")
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
"""


def _ca(tmp: Path) -> tuple[str, str, str]:
    """A test CA and a certificate for api.allowed.test signed by it: (ca, cert, key)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=agentcell test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=api.allowed.test",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
    )
    (tmp / "ext").write_text("subjectAltName=DNS:api.allowed.test,DNS:other.allowed.test\n")
    run(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "srv.pem",
    )
    return tuple((tmp / n).read_text() for n in ("ca.pem", "srv.pem", "srv.key"))  # type: ignore[return-value]


def _route(egress: str, internet: str) -> list[list[str]]:
    """Let the tenant's egress network reach the test's "internet" network (test only).

    The engine isolates its bridges from each other; a real host routes its egress
    network to the internet through its uplink instead.
    """
    rules = [
        ["DOCKER-USER", "-s", egress, "-d", internet, "-j", "ACCEPT"],
        [
            "DOCKER-USER",
            "-s",
            internet,
            "-d",
            egress,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule[:1], "1", *rule[1:]], check=True)
    return rules


def _spec(tenant: str, egress: dict[str, Any]) -> str:
    docs = [
        {"apiVersion": "agentcell/v1", "kind": "Tenant", "metadata": {"name": tenant}},
        {
            "apiVersion": "agentcell/v1",
            "kind": "Agent",
            "metadata": {"name": "agent", "tenant": tenant},
            "spec": {
                "image": DEMO_IMAGE,
                "env": {"AGENT_PROBE_SECONDS": "3600"},
                "health": {"http": {"port": 8080, "path": "/healthz"}},
                "egress": egress,
            },
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _policy(inet: str, *, wildcard: bool = True) -> dict[str, Any]:
    allow: list[dict[str, Any]] = [{"host": "api.allowed.test", "ports": [80, 443]}]
    if wildcard:
        allow.append({"host": "*.allowed.test", "ports": [80, 443]})
    allow.append({"cidr": f"{inet}/32", "ports": [80, 443]})
    # Even a rule that covers the cell's own networks never reaches the gate itself.
    allow.append({"cidr": TEST_POOL, "ports": [3128, 3129]})
    return {
        "allow": allow,
        "resolve": {
            "api.allowed.test": [inet],
            "other.allowed.test": [inet],
            "inside.allowed.test": ["127.0.0.1"],
            "mixed.allowed.test": [inet, "127.0.0.1"],
        },
    }


@dataclass
class Cell:
    server: Server
    tenant: str
    agent: Any
    inet: str
    gate_ip: str
    ca: str
    tmp: Path
    spec_path: Path

    def run(self, *cmd: str) -> tuple[int, str]:
        """Exit code and stdout+stderr of a command in the agent, as the agent's user."""
        code, out = self.agent.exec_run(list(cmd), user="10001:10001")
        return code, out.decode(errors="replace")

    def stdout(self, *cmd: str) -> str:
        _, (out, _err) = self.agent.exec_run(list(cmd), user="10001:10001", demux=True)
        return (out or b"").decode(errors="replace")

    def curl(self, *args: str) -> tuple[str, str]:
        """(HTTP status, or '000' when no answer came, body) of curl inside the agent."""
        out = self.stdout("curl", "-sS", "-m", "10", "-w", "\n%{http_code}", *args)
        body, _, status = out.rpartition("\n")
        return status.strip(), body

    def deploy(self, egress: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        self.spec_path.write_text(_spec(self.tenant, egress))
        return self.server.cli("deploy", "-f", str(self.spec_path), "--timeout", "60")

    def records(self) -> list[dict[str, Any]]:
        res = self.server.cli(
            "egress", "log", f"{self.tenant}/agent", "-o", "json", "--limit", "1000", check=True
        )
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def reason_for(self, host: str) -> str:
        """The reason of the newest decision record about ``host`` (waits for it to land)."""

        def find() -> str:
            hits = [r for r in self.records() if r["details"].get("host") == host]
            return hits[-1]["reason"] if hits else ""

        return str(wait_for(find, 15, f"a decision record for {host}"))


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    client = docker.from_env()
    client.images.get(DEMO_IMAGE)
    tmp = tmp_path_factory.mktemp("egress")
    tenant = f"e{secrets.token_hex(4)}"
    label = f"agentcell.test={tenant}"
    ca, cert, key = _ca(tmp)
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", state_dir=tmp / "state", port=port)
    srv.state_dir.mkdir()
    net = client.networks.create(f"agentcell-test-{tenant}", labels={"agentcell.test": tenant})
    internet = client.containers.run(
        RUNTIME_IMAGE,
        ["-c", INTERNET],
        user="0",
        detach=True,
        network=net.name,
        environment={"CERT": cert, "KEY": key},
        labels={"agentcell.test": tenant},
        name=f"agentcell-test-{tenant}-internet",
    )
    routes: list[list[str]] = []
    srv.start()
    try:
        c = Cell(srv, tenant, None, "", "", ca, tmp, tmp / "spec.yaml")
        # First a placeholder policy: the deploy creates the tenant's egress network...
        res = c.deploy(
            {
                "allow": [{"host": "placeholder.allowed.test"}],
                "resolve": {"placeholder.allowed.test": ["192.0.2.1"]},
            }
        )
        assert res.returncode == 0, res.stderr + srv.log_text()
        egress_net = client.networks.list(
            filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress-network"]}
        )[0]
        # ...and the host routes between it and "the internet", as a real router would.
        egress_subnet = egress_net.attrs["IPAM"]["Config"][0]["Subnet"]
        net.reload()
        inet_subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
        routes.extend(_route(egress_subnet, inet_subnet))
        internet.reload()
        c.inet = internet.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        c.agent = client.containers.list(
            filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]},
            ignore_removed=True,
        )[0]
        res = c.deploy(_policy(c.inet))
        assert res.returncode == 0, res.stderr + srv.log_text()
        assert "unchanged" in res.stdout
        net_name = c.agent.attrs["HostConfig"]["NetworkMode"]
        subnet = client.networks.get(net_name).attrs["IPAM"]["Config"][0]["Subnet"]
        c.gate_ip = gate_address(subnet)
        c.run("python3", "-c", f"open('/tmp/ca.pem','w').write({ca!r})")
        last: list[tuple[str, str]] = []
        try:

            def reaches() -> bool:
                last.append(c.curl("http://api.allowed.test/"))
                return last[-1][0] == "200"

            wait_for(
                reaches,
                20,
                "the reloaded policy to let the agent reach the test server",
            )
        except BaseException:
            print("last curl:", last[-1:], c.records()[-3:], srv.log_text())
            raise
        yield c
    finally:
        srv.stop()
        for rule in routes:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)
        remove_labelled(client, label)
        remove_labelled(client, f"agentcell.tenant={tenant}")


def test_live_reload_did_not_restart_the_agent(cell: Cell) -> None:
    cell.agent.reload()
    assert cell.agent.status == "running"
    assert cell.agent.attrs["RestartCount"] == 0
    before = cell.agent.attrs["State"]["StartedAt"]
    cell.agent.reload()
    assert cell.agent.attrs["State"]["StartedAt"] == before


def test_the_api_shows_the_gate_by_name_and_state_and_its_policy_loaded(cell: Cell) -> None:
    gate = docker.from_env().containers.list(
        all=True,
        filters={"label": [f"agentcell.tenant={cell.tenant}", "agentcell.role=egress"]},
        ignore_removed=True,
    )[0]
    name = cell.agent.labels["agentcell.cell"]
    got = cell.server.api("GET", f"/v1/cells/{cell.tenant}/{name}").json()
    assert got["egress"]["gate"] == f"{gate.name} ({gate.status})"
    assert got["egress"]["loaded_digest"] == got["egress"]["policy_digest"]
    assert got["container"]["id"] == cell.agent.id


def test_allowed_http_works_for_curl_and_python(cell: Cell) -> None:
    status, body = cell.curl("http://api.allowed.test/")
    assert status == "200"
    assert body.startswith("hello plain host=api.allowed.test")
    code, out = cell.run(
        "python3",
        "-c",
        "import urllib.request as u; "
        "print(u.urlopen('http://api.allowed.test/', timeout=10).read().decode())",
    )
    assert code == 0
    assert "hello plain" in out
    assert cell.reason_for("api.allowed.test") == "allowed"


def test_https_passes_the_tunnel_end_to_end(cell: Cell) -> None:
    status, body = cell.curl("--cacert", "/tmp/ca.pem", "https://api.allowed.test/")
    assert status == "200"
    assert body.startswith("hello tls host=api.allowed.test")
    code, out = cell.run(
        "python3",
        "-c",
        (
            "import ssl, urllib.request as u\n"
            "ctx = ssl.create_default_context(cafile='/tmp/ca.pem')\n"
            "print(u.urlopen('https://api.allowed.test/', context=ctx, timeout=10).read().decode())"
        ),
    )
    assert code == 0, out
    assert "hello tls" in out


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_b1_literal_internal_addresses_are_denied(cell: Cell, url: str) -> None:
    # --noproxy '': send even loopback spellings to the gate (NO_PROXY keeps them local).
    status, _ = cell.curl("--noproxy", "", url)
    assert status == "403"


def test_b1_the_hosts_and_gateways_addresses_are_denied(cell: Cell) -> None:
    client = docker.from_env()
    gateways = {
        cfg["Gateway"]
        for n in client.networks.list()
        for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []
        if cfg.get("Gateway")
    }
    assert gateways
    for gw in sorted(gateways):
        status, _ = cell.curl(f"http://{gw}/")
        assert status == "403", gw


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("inside.allowed.test", "address not public"),
        ("mixed.allowed.test", "address not public"),
    ],
)
def test_b2_names_resolving_inside_are_denied(cell: Cell, host: str, reason: str) -> None:
    status, _ = cell.curl(f"http://{host}/")
    assert status == "403"
    assert cell.reason_for(host) == reason


def test_b3_a_redirect_inside_is_relayed_not_followed(cell: Cell) -> None:
    code, out = cell.run(
        "curl", "-sS", "-m", "10", "-D", "-", "-o", "/dev/null", "http://api.allowed.test/redirect"
    )
    assert code == 0
    assert " 302" in out.splitlines()[0]
    assert "Location: http://127.0.0.1:9/" in out


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://API.ALLOWED.TEST./", "200"),
        ("http://evil-allowed.test/", "403"),
        ("http://allowed.test.evil.test/", "403"),
        ("http://api.allowed.test@evil.test/", "403"),
        ("http://allowed.test/", "403"),
    ],
)
def test_b4_host_normalisation(cell: Cell, url: str, want: str) -> None:
    assert cell.curl(url)[0] == want


def test_b5_sni_must_match_the_connect_host(cell: Cell) -> None:
    code, out = cell.run(
        "python3",
        "-c",
        (
            "import http.client, ssl\n"
            "ctx = ssl.create_default_context(cafile='/tmp/ca.pem'); ctx.check_hostname = False\n"
            "c = http.client.HTTPSConnection(PROXY, 3128, context=ctx, timeout=10)\n"
            "c.set_tunnel('api.allowed.test', 443)\n"
            "c.connect()\n"
            "c.sock = ctx.wrap_socket(c.sock.detach() if hasattr(c.sock, 'detach') else c.sock,"
            " server_hostname='evil.test')\n"
        ).replace("PROXY", repr(cell.gate_ip)),
    )
    # Either the TLS handshake fails or the tunnel is closed: the server never answers.
    assert code != 0
    assert "Error" in out or "error" in out


def test_b5_ports_and_host_headers(cell: Cell) -> None:
    assert cell.curl("--connect-timeout", "5", "-p", "http://api.allowed.test:22/")[0] in (
        "403",
        "000",
    )
    assert cell.reason_for("api.allowed.test") in ("no rule allows this port",)
    assert cell.curl("-H", "Host: evil.test", "http://api.allowed.test/")[0] == "403"


def test_b6_the_gate_itself_is_not_a_destination(cell: Cell) -> None:
    assert cell.curl("-p", f"http://{cell.gate_ip}:3128/")[0] in ("403", "000")
    assert cell.reason_for(cell.gate_ip) == "address is the gate itself"
    assert cell.curl(f"http://{cell.gate_ip}:{GATE_CONTROL_PORT}/")[0] == "403"


def test_b7_there_is_no_way_around_the_gate(cell: Cell) -> None:
    status, _ = cell.curl("--noproxy", "*", "--connect-timeout", "3", f"http://{cell.inet}/")
    assert status == "000"
    _, out = cell.run(
        "python3",
        "-c",
        (
            "import socket\n"
            f"s = socket.socket(); s.settimeout(3)\n"
            f"try:\n    s.connect(({cell.inet!r}, 80)); print('connected')\n"
            "except OSError as e:\n    print('blocked', e)\n"
            "try:\n    print(socket.gethostbyname('api.allowed.test'))\n"
            "except OSError as e:\n    print('no resolver', e)\n"
        ),
    )
    assert "connected" not in out
    assert "no resolver" in out


def test_b8_a_removed_rule_denies_at_once_and_bad_policies_keep_the_last_good(cell: Cell) -> None:
    assert cell.curl("http://other.allowed.test/")[0] == "200"
    res = cell.deploy(_policy(cell.inet, wildcard=False))
    assert res.returncode == 0, res.stderr
    assert cell.curl("http://other.allowed.test/")[0] == "403"
    assert cell.curl("http://api.allowed.test/")[0] == "200"

    token = GateTokens(cell.server.state_dir).token(cell.tenant, "agent")
    client = docker.from_env()
    gate = client.containers.list(
        filters={"label": [f"agentcell.tenant={cell.tenant}", "agentcell.role=egress"]},
        ignore_removed=True,
    )[0]
    ip = next(
        n["IPAddress"]
        for name, n in gate.attrs["NetworkSettings"]["Networks"].items()
        if is_egress_network(cell.tenant, name)
    )
    conn = http.client.HTTPConnection(ip, GATE_CONTROL_PORT, timeout=5)
    conn.request(
        "PUT",
        "/v1/policy",
        body=b'{"allow": [{"cidr": "not a network"}]}',
        headers={"Authorization": f"Bearer {token}"},
    )
    resp = conn.getresponse()
    assert resp.status == 400
    assert "cidr" in resp.read().decode()
    assert cell.curl("http://api.allowed.test/")[0] == "200"
    res = cell.deploy(_policy(cell.inet))
    assert res.returncode == 0, res.stderr


def test_the_gate_down_means_no_way_out_until_it_is_restored(cell: Cell) -> None:
    client = docker.from_env()
    gate = client.containers.list(
        filters={"label": [f"agentcell.tenant={cell.tenant}", "agentcell.role=egress"]},
        ignore_removed=True,
    )[0]
    cell.server.kill()  # or the reconciler restores the gate before we can look
    gate.kill()
    assert cell.curl("--connect-timeout", "3", "http://api.allowed.test/")[0] == "000"
    cell.server.start()
    wait_for(
        lambda: cell.curl("http://api.allowed.test/")[0] == "200",
        30,
        "the reconciler to restore the gate and its policy",
    )


def test_denials_are_in_the_egress_log(cell: Cell) -> None:
    res = cell.server.cli("egress", "log", f"{cell.tenant}/agent", "--denied", check=True)
    assert "deny" in res.stdout
    assert "allow " not in res.stdout


def test_egress_log_follows_new_decisions(cell: Cell) -> None:
    import selectors

    proc = subprocess.Popen(
        [*AGENTCELL, "egress", "log", f"{cell.tenant}/agent", "-f", "--limit", "1", "-o", "json"],
        stdout=subprocess.PIPE,
        text=True,
        env=cell.server.env(),
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        # A name no rule allows: denied by name, so the gate never resolves it.
        marker = f"follow-{secrets.token_hex(3)}.denied.test"
        cell.curl(f"http://{marker}/")
        seen = []

        def got_marker() -> bool:
            if sel.select(timeout=0.2):
                seen.append(proc.stdout.readline())  # type: ignore[union-attr]
            return any(marker in line for line in seen)

        wait_for(got_marker, 20, "the followed log to show the new decision")
        record = json.loads(next(line for line in seen if marker in line))
        assert record["decision"] == "deny"
        assert record["reason"] == "no rule allows this host"
    finally:
        proc.kill()
        proc.wait(10)
