"""Faults a cell must survive (issue 5), each injected into a real engine under a real
`agentcell serve`.

Every test checks, besides its own fault: the workspace keeps what was written before the
fault; no agent of a cell with egress ever starts while its gate is not running (the engine's
own start events, compared with the gate's start time); the recovery is in the audit trail;
afterwards each cell has exactly one container per role, all on the cell's one network, and
its gate holds the desired policy.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml

from agentcell.control import GateTokens
from agentcell.policy import GATE_CONTROL_PORT, is_egress_network
from livecell import DEMO_IMAGE, Server, free_port, is_back, is_healthy, spec_text, wait_for
from livecell import apply_and_wait as _deploy
from livecell import cell as _cell

pytestmark = pytest.mark.integration

RUNTIME_IMAGE = "agentcell/runtime:latest"
DOCKERD_LOG = "/var/log/agentcell-dockerd.log"
ENGINE_LOCK = Path("/tmp/agentcell-engine.lock")
"""Test runs beside each other hold it shared; one that restarts the engine, exclusively."""
PLACEHOLDER_EGRESS = {
    "allow": [{"host": "placeholder.allowed.test"}],
    "resolve": {"placeholder.allowed.test": ["192.0.2.1"]},
}
QUIET = {"AGENT_PROBE_SECONDS": "3600"}  # the demo agent's own egress probe stays idle
MARKER = "/workspace/fault-marker"


# -- reading the control plane ------------------------------------------------------------------


def _cells(server: Server, tenant: str) -> list[dict[str, Any]]:
    r = server.api("GET", "/v1/cells", params={"tenant": tenant})
    assert r.status_code == 200, r.text
    return list(r.json())


def _audit(server: Server, tenant: str, *, after: float = 0.0) -> list[dict[str, Any]]:
    r = server.api("GET", "/v1/audit", params={"tenant": tenant, "limit": 10000})
    assert r.status_code == 200, r.text
    return [a for a in r.json() if a["time"] > after]


def _recovered_in_audit(server: Server, tenant: str, name: str, after: float) -> list[str]:
    """Reasons of the lifecycle records the reconciler wrote for the cell after ``after``."""
    return [
        a["reason"]
        for a in _audit(server, tenant, after=after)
        if a["cell"] == name and a["kind"] == "lifecycle" and a["actor"] == "reconciler"
    ]


def _spec(tenant: str, cell: str = "agent", **spec: Any) -> str:
    spec.setdefault("env", QUIET)
    return spec_text(tenant, cell, **spec)


# -- the workspace ------------------------------------------------------------------------------


def _write_marker(server: Server, ref: str) -> str:
    value = secrets.token_hex(8)
    server.cli("exec", ref, "--", "sh", "-c", f"printf %s {value} > {MARKER}", check=True)
    return value


def _read_marker(server: Server, ref: str) -> str:
    return server.cli("exec", ref, "--", "cat", MARKER, check=True).stdout


# -- the engine ---------------------------------------------------------------------------------


def _containers(client: Any, tenant: str, cell: str | None = None, role: str | None = None) -> Any:
    labels = [f"agentcell.tenant={tenant}"]
    labels += [f"agentcell.cell={cell}"] if cell else []
    labels += [f"agentcell.role={role}"] if role else []
    return client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)


def _one(client: Any, tenant: str, cell: str, role: str) -> Any:
    found = _containers(client, tenant, cell, role)
    assert len(found) == 1, f"{role} containers of {tenant}/{cell}: {[c.name for c in found]}"
    return found[0]


def _started_ns(attrs: dict[str, Any]) -> int:
    """The container's State.StartedAt (RFC 3339, nanoseconds) as unix nanoseconds."""
    stamp = str(attrs["State"]["StartedAt"])
    whole, _, frac = stamp.rstrip("Z").partition(".")
    from datetime import UTC, datetime

    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return int(seconds) * 10**9 + int((frac + "000000000")[:9])


def _gate_policy(server: Server, gate: Any, tenant: str, cell: str) -> dict[str, Any]:
    """What the gate's control port says it has loaded."""
    gate.reload()
    ip = next(
        n["IPAddress"]
        for name, n in gate.attrs["NetworkSettings"]["Networks"].items()
        if is_egress_network(tenant, name) and n.get("IPAddress")
    )
    token = GateTokens(server.state_dir).token(tenant, cell)
    conn = http.client.HTTPConnection(ip, GATE_CONTROL_PORT, timeout=5)
    try:
        conn.request("GET", "/v1/policy", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        assert resp.status == 200
        return dict(json.loads(resp.read()))
    finally:
        conn.close()


def _gate_loaded(server: Server, client: Any, tenant: str, cell: str) -> bool:
    """The cell's one gate runs and holds the desired policy."""
    want = _cell(server, tenant, cell)["egress"]["policy_digest"]
    gates = _containers(client, tenant, cell, "egress")
    if len(gates) != 1 or gates[0].status != "running":
        return False
    try:
        return bool(_gate_policy(server, gates[0], tenant, cell).get("digest") == want)
    except OSError:
        return False


def assert_intact(server: Server, client: Any, tenant: str) -> None:
    """Every cell of the tenant is whole: one container per role, all running on the cell's
    one network, the gate holding the desired policy; and nothing labelled for the tenant
    belongs to a cell the store does not know."""
    cells = {c["name"]: c for c in _cells(server, tenant)}
    flt = {"label": [f"agentcell.tenant={tenant}"]}
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        assert c.labels.get("agentcell.cell") in cells, f"orphan container {c.name}"
    for n in client.networks.list(filters=flt):
        role = n.attrs["Labels"].get("agentcell.role")
        assert role == "egress-network" or n.attrs["Labels"].get("agentcell.cell") in cells, (
            f"orphan network {n.name}"
        )
    for v in client.volumes.list(filters=flt):
        assert v.attrs["Labels"].get("agentcell.cell") in cells, f"orphan volume {v.name}"
    for name, summary in cells.items():
        full = _cell(server, tenant, name)
        spec = full["spec"]["spec"]
        nets = client.networks.list(
            filters={"label": [f"agentcell.tenant={tenant}", f"agentcell.cell={name}"]}
        )
        assert len(nets) == 1, f"networks of {name}: {[n.name for n in nets]}"
        net_id = nets[0].id
        roles = ["agent"]
        egress = (spec.get("egress") or {}).get("allow")
        roles += ["egress"] if egress else []
        roles += ["dockerproxy"] if (spec.get("docker") or {}).get("access") == "own" else []
        for role in roles:
            c = _one(client, tenant, name, role)
            assert c.status == "running", f"{role} of {name} is {c.status}"
            on = c.attrs["NetworkSettings"]["Networks"]
            assert any(n.get("NetworkID") == net_id for n in on.values()), (
                f"{role} of {name} is not on the cell's network"
            )
        assert is_back(summary), summary
        if egress:
            assert _gate_loaded(server, client, tenant, name), f"gate of {name} lacks its policy"


@dataclass
class StartWatch:
    """Follows the engine's start events for one tenant: every agent of a cell with egress
    must start while its gate already runs (the gate started before the agent and runs).

    Reconnects after an engine restart, replaying from the last event seen.
    """

    client: Any
    tenant: str
    egress_cells: set[str]
    starts: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _stream: Any = None
    _seen: set[tuple[str, int]] = field(default_factory=set)

    def __enter__(self) -> StartWatch:
        self._since = int(time.time()) - 1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._stream is not None, 10, "the engine's event stream")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._stream.close()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = docker.from_env(timeout=30)
                self._stream = client.events(
                    decode=True,
                    since=self._since,
                    filters={
                        "type": ["container"],
                        "event": ["start"],
                        "label": [f"agentcell.tenant={self.tenant}", "agentcell.role=agent"],
                    },
                )
                for ev in self._stream:
                    self._since = max(self._since, int(ev.get("time", 0)) - 1)
                    ident = (str(ev.get("id")), int(ev.get("timeNano", 0)))
                    if ident in self._seen:
                        continue
                    self._seen.add(ident)
                    self._check(client, ev)
            except Exception:  # the engine went away (dockerd restart): reconnect
                self._stop.wait(0.2)

    def _check(self, client: Any, ev: dict[str, Any]) -> None:
        cell = ev["Actor"]["Attributes"].get("agentcell.cell", "")
        self.starts.append(cell)
        if cell not in self.egress_cells:
            return
        gates = _containers(client, self.tenant, cell, "egress")
        running = [g for g in gates if g.status == "running"]
        if not running:
            self.violations.append(f"{cell}: agent started, no gate runs")
        elif all(_started_ns(g.attrs) > int(ev["timeNano"]) for g in running):
            self.violations.append(f"{cell}: agent started before its gate")


def _wait_recovered(
    server: Server, tenant: str, name: str, after: float, *, healthy: bool, timeout: float = 90
) -> dict[str, Any]:
    """Until the cell went through a transition after ``after`` and runs (healthy) again;
    then the reconciler must have recorded what it did (a lifecycle record)."""

    def done() -> dict[str, Any] | None:
        c = _cell(server, tenant, name)
        ok = is_healthy(c) if healthy else is_back(c)
        return c if c["since"] > after and ok else None

    try:
        found = wait_for(done, timeout, f"{tenant}/{name} to recover")
    except BaseException:
        c = _cell(server, tenant, name)
        c.pop("hardening", None)
        c.pop("spec", None)
        print(json.dumps(c, indent=1, default=str)[:6000])
        print(server.log_text())
        raise
    assert isinstance(found, dict)
    with contextlib.suppress(BaseException):  # records land a moment after the status
        wait_for(lambda: _recovered_in_audit(server, tenant, name, after), 5, "a record")
    trail = [
        f"{a['actor']} {a['kind']} {a['decision']}: {a['reason']}"
        for a in _audit(server, tenant, after=after)
        if a["cell"] == name
    ]
    assert _recovered_in_audit(server, tenant, name, after), (
        f"no lifecycle record of the recovery of {tenant}/{name}; its trail since: {trail}"
    )
    return found


# -- a. the agent process killed -----------------------------------------------------------------


def test_a_killed_agent_comes_back_with_its_workspace(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    ref = f"{tenant}/agent"
    _deploy(server, _spec(tenant, egress=PLACEHOLDER_EGRESS))
    marker = _write_marker(server, ref)
    with StartWatch(docker_client, tenant, {"agent"}) as watch:
        # docker kill
        before = _one(docker_client, tenant, "agent", "agent")
        t0 = time.time()
        before.kill()
        _wait_recovered(server, tenant, "agent", t0, healthy=True)
        assert _read_marker(server, ref) == marker

        # SIGKILL to the container's PID 1, from the host
        agent = _one(docker_client, tenant, "agent", "agent")
        pid = int(agent.attrs["State"]["Pid"])
        assert pid > 0
        t1 = time.time()
        os.kill(pid, signal.SIGKILL)
        _wait_recovered(server, tenant, "agent", t1, healthy=True)
        assert _read_marker(server, ref) == marker
    assert len(watch.starts) >= 2 and watch.violations == []
    assert_intact(server, docker_client, tenant)


# -- b. the agent OOM-killed ---------------------------------------------------------------------

OOM_AGENT = """
import os, runpy, sys, threading, time
def hog():
    while not os.path.exists("/workspace/oom-now"):
        time.sleep(0.1)
    os.remove("/workspace/oom-now")
    grab = []
    while True:
        grab.append(b"x" * (8 << 20))
threading.Thread(target=hog, daemon=True).start()
sys.argv = ["/app/agent.py"]
runpy.run_path("/app/agent.py", run_name="__main__")
"""


def test_b_an_oom_killed_agent_comes_back_and_the_trail_says_oom(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    ref = f"{tenant}/agent"
    text = _spec(
        tenant,
        command=["python3", "-c", OOM_AGENT],
        resources={"memory": "64Mi"},
        egress=PLACEHOLDER_EGRESS,
    )
    _deploy(server, text)
    marker = _write_marker(server, ref)
    with StartWatch(docker_client, tenant, {"agent"}) as watch:
        t0 = time.time()
        server.cli("exec", ref, "--", "touch", "/workspace/oom-now", check=True)
        _wait_recovered(server, tenant, "agent", t0, healthy=True)
    assert _read_marker(server, ref) == marker
    said = [
        a["reason"]
        for a in _audit(server, tenant, after=t0)
        if a["cell"] == "agent" and a["kind"] == "lifecycle"
    ]
    assert any("oom" in r.lower() for r in said), said
    assert watch.violations == []
    assert_intact(server, docker_client, tenant)


# -- c. a sidecar killed -------------------------------------------------------------------------

INTERNET = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the test internet\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""


@dataclass
class Internet:
    """A web server on a network the test made; the tenant's egress network is routed to
    it the way a host routes to its uplink."""

    client: Any
    label: str
    ip: str = ""
    subnet: str = ""
    rules: list[list[str]] = field(default_factory=list)

    def route(self, egress_subnet: str) -> None:
        rules = [
            ["DOCKER-USER", "-s", egress_subnet, "-d", self.subnet, "-j", "ACCEPT"],
            [
                "DOCKER-USER",
                "-s",
                self.subnet,
                "-d",
                egress_subnet,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ]
        for rule in rules:
            subprocess.run(["iptables", "-I", rule[0], "1", *rule[1:]], check=True)
            self.rules.append(rule)


@pytest.fixture
def internet(docker_client: Any, tenant: str) -> Iterator[Internet]:
    label = f"agentcell.test={tenant}"
    net = docker_client.networks.create(
        f"agentcell-test-{tenant}", labels={"agentcell.test": tenant}
    )
    inet = Internet(docker_client, label)
    try:
        web = docker_client.containers.run(
            RUNTIME_IMAGE,
            ["-c", INTERNET],
            user="0",
            detach=True,
            network=net.name,
            labels={"agentcell.test": tenant},
            name=f"agentcell-test-{tenant}-internet",
        )
        web.reload()
        net.reload()
        inet.ip = web.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        inet.subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
        yield inet
    finally:
        for rule in inet.rules:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)
        for c in docker_client.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        ):
            c.remove(force=True)
        net.remove()


def _curl(agent: Any, *args: str) -> str:
    """The HTTP status curl inside the agent saw ('000': no answer)."""
    _, (out, _err) = agent.exec_run(
        ["curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}", *args],
        user="10001:10001",
        demux=True,
    )
    return (out or b"").decode().strip()


@dataclass
class Prober:
    """Tries, from inside the agent, a denied name through the gate and the test server's
    address directly, over and over, until stopped."""

    agent: Any
    denied_url: str
    direct_url: str
    seen: list[tuple[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(docker.errors.APIError):
                self.seen.append(("denied", _curl(self.agent, self.denied_url)))
                self.seen.append(("direct", _curl(self.agent, "--noproxy", "*", self.direct_url)))

    def leaks(self) -> list[tuple[str, str]]:
        """Answers from anywhere but the gate's refusal: 2xx or 3xx."""
        return [(what, code) for what, code in self.seen if code[:1] in ("2", "3")]


def test_c_killed_sidecars_are_restored_and_the_agent_never_gets_out(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any, internet: Internet
) -> None:
    ref = f"{tenant}/agent"
    egress = {
        "allow": [
            {"host": "api.allowed.test", "ports": [80]},
            {"cidr": f"{internet.ip}/32", "ports": [80]},  # a private address: named
        ],
        "resolve": {"api.allowed.test": [internet.ip], "denied.allowed.test": [internet.ip]},
    }
    _deploy(server, _spec(tenant, egress=egress, docker={"access": "own"}))
    marker = _write_marker(server, ref)
    egress_net = docker_client.networks.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress-network"]}
    )[0]
    internet.route(egress_net.attrs["IPAM"]["Config"][0]["Subnet"])
    agent = _one(docker_client, tenant, "agent", "agent")
    allowed = "http://api.allowed.test/"
    wait_for(lambda: _curl(agent, allowed) == "200", 20, "the agent to reach the allowed server")
    assert _curl(agent, "http://denied.allowed.test/") == "403"

    def docker_ping() -> str:
        code, out = agent.exec_run(
            ["sh", "-c", 'curl -s -m 3 "http://${DOCKER_HOST#tcp://}/_ping"'], user="10001:10001"
        )
        return out.decode(errors="replace") if code == 0 else ""

    assert docker_ping() == "OK"

    with (
        StartWatch(docker_client, tenant, {"agent"}) as watch,
        Prober(agent, "http://denied.allowed.test/", f"http://{internet.ip}/") as prober,
    ):
        # The egress gate.
        gate = _one(docker_client, tenant, "agent", "egress")
        t0 = time.time()
        gate.kill()
        _wait_recovered(server, tenant, "agent", t0, healthy=True)
        wait_for(lambda: _gate_loaded(server, docker_client, tenant, "agent"), 30, "the policy")
        restored = _one(docker_client, tenant, "agent", "egress")
        assert _started_ns(restored.attrs) > int(t0 * 1e9)
        wait_for(lambda: _curl(agent, allowed) == "200", 20, "egress through the restored gate")
        assert _curl(agent, "http://denied.allowed.test/") == "403"

        # The docker proxy.
        proxy = _one(docker_client, tenant, "agent", "dockerproxy")
        t1 = time.time()
        proxy.kill()
        _wait_recovered(server, tenant, "agent", t1, healthy=True)
        wait_for(lambda: docker_ping() == "OK", 30, "docker access through the restored proxy")
    assert len(prober.seen) >= 2 and prober.leaks() == [], prober.seen  # one round at least
    assert watch.violations == []
    assert _one(docker_client, tenant, "agent", "agent").id == agent.id
    assert _read_marker(server, ref) == marker
    assert_intact(server, docker_client, tenant)


# -- d. the cell's network removed out of band ----------------------------------------------------


def test_d_a_removed_network_is_recreated_with_workspace_and_gate(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    ref = f"{tenant}/agent"
    _deploy(server, _spec(tenant, egress=PLACEHOLDER_EGRESS))
    marker = _write_marker(server, ref)
    net = docker_client.networks.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.cell=agent"]}
    )[0]
    with StartWatch(docker_client, tenant, {"agent"}) as watch:
        t0 = time.time()
        net.reload()
        for cid in list(net.attrs.get("Containers") or {}):
            net.disconnect(cid, force=True)
        net.remove()
        _wait_recovered(server, tenant, "agent", t0, healthy=True)
        wait_for(lambda: _gate_loaded(server, docker_client, tenant, "agent"), 30, "the policy")
    new = docker_client.networks.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.cell=agent"]}
    )
    assert len(new) == 1 and new[0].id != net.id
    assert _read_marker(server, ref) == marker
    assert watch.violations == []
    assert_intact(server, docker_client, tenant)


# -- e. containers removed out of band ------------------------------------------------------------


def test_e_removed_agent_and_gate_containers_are_recreated(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    ref = f"{tenant}/agent"
    _deploy(server, _spec(tenant, egress=PLACEHOLDER_EGRESS))
    marker = _write_marker(server, ref)
    with StartWatch(docker_client, tenant, {"agent"}) as watch:
        agent = _one(docker_client, tenant, "agent", "agent")
        t0 = time.time()
        agent.remove(force=True)
        _wait_recovered(server, tenant, "agent", t0, healthy=True)
        assert _one(docker_client, tenant, "agent", "agent").id != agent.id
        assert _read_marker(server, ref) == marker

        gate = _one(docker_client, tenant, "agent", "egress")
        t1 = time.time()
        gate.remove(force=True)
        _wait_recovered(server, tenant, "agent", t1, healthy=True)
        wait_for(lambda: _gate_loaded(server, docker_client, tenant, "agent"), 30, "the policy")
        assert _one(docker_client, tenant, "agent", "egress").id != gate.id
    assert _read_marker(server, ref) == marker
    assert watch.violations == []
    assert_intact(server, docker_client, tenant)


# -- f. agentcell serve SIGKILLed mid-deploy -------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "action", "role"),
    [
        ("network", "create", None),  # the first object of the deploy exists
        ("container", "start", "egress"),  # the gate runs, its policy is not loaded yet
        ("container", "start", "agent"),  # the agent runs, not yet found ready
    ],
    ids=["network-created", "gate-started", "agent-started"],
)
def test_f_serve_killed_mid_deploy_and_restarted(
    server: Server,
    tenant: str,
    tmp_path: Path,
    docker_client: Any,
    event_type: str,
    action: str,
    role: str | None,
) -> None:
    ref = f"{tenant}/agent"
    filters: dict[str, list[str]] = {"type": [event_type], "event": [action]}
    if role:  # network events carry no labels: those are matched by name
        filters["label"] = [f"agentcell.tenant={tenant}", f"agentcell.role={role}"]
    stream = docker_client.events(decode=True, since=int(time.time()) - 1, filters=filters)
    killed = threading.Event()

    def kill_on_event() -> None:
        with contextlib.suppress(Exception):
            for ev in stream:
                name = str(ev["Actor"]["Attributes"].get("name", ""))
                if role or name.startswith(f"agentcell.{tenant}."):
                    server.kill()
                    killed.set()
                    return

    killer = threading.Thread(target=kill_on_event, daemon=True)
    killer.start()
    text = _spec(tenant, egress=PLACEHOLDER_EGRESS, docker={"access": "own"})
    try:
        r = server.api("POST", "/v1/apply", json={"yaml": text, "source": "f.yaml"})
        assert r.status_code == 200, r.text
        wait_for(killed.is_set, 60, f"the deploy to reach {event_type} {action} {role or ''}")
    finally:
        stream.close()
    assert server.proc is not None and server.proc.poll() is not None
    t0 = time.time()
    server.start()
    c = _wait_recovered(server, tenant, "agent", t0 - 60, healthy=True)
    assert c["observed_generation"] == c["generation"] == 1
    wait_for(lambda: _gate_loaded(server, docker_client, tenant, "agent"), 30, "the policy")
    assert_intact(server, docker_client, tenant)
    # A deploy of the same spec now finds nothing to do, and the cell is usable.
    r = server.api("POST", "/v1/apply", json={"yaml": text})
    assert r.status_code == 200 and not r.json()["cells"][0]["changed"], r.text
    marker = _write_marker(server, ref)
    assert _read_marker(server, ref) == marker
    assert_intact(server, docker_client, tenant)


# -- g. dockerd restarted -------------------------------------------------------------------------


def _dockerd_pid() -> int | None:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def _engine_answers() -> bool:
    try:
        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    return True


def _start_dockerd() -> None:
    """Exactly as scripts/setup.sh starts it when there is no systemd."""
    subprocess.run(
        ["bash", "-c", f"nohup setsid dockerd >>{DOCKERD_LOG} 2>&1 </dev/null &"], check=True
    )


def _engine_lock_is_ours_alone() -> bool:
    """True if no engine lock is in use here, or one of our ancestors holds it exclusively
    (``flock -x``): restarting the engine then disturbs no other test run."""
    if not ENGINE_LOCK.exists():
        return True
    ino = ENGINE_LOCK.stat().st_ino
    ancestors, pid = set(), os.getpid()
    while pid > 1:
        ancestors.add(pid)
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f or len(f) < 6:  # a waiter, not a holder
            continue
        held = f[1] == "FLOCK" and f[3] == "WRITE" and int(f[5].rsplit(":", 1)[1]) == ino
        if held and int(f[4]) in ancestors:
            return True
    return False


def test_g_dockerd_restart_brings_cells_back_isolated(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    if Path("/proc/1/comm").read_text().strip() == "systemd":
        pytest.skip("this host's engine is systemd's; the test restarts a background dockerd")
    if not _engine_lock_is_ours_alone():
        pytest.skip(f"restarts the engine: run alone, under flock -x {ENGINE_LOCK}")
    _deploy(server, _spec(tenant, "gated", egress=PLACEHOLDER_EGRESS))
    _deploy(server, _spec(tenant, "builder", docker={"access": "own"}))
    markers = {name: _write_marker(server, f"{tenant}/{name}") for name in ("gated", "builder")}
    pid = _dockerd_pid()
    assert pid is not None
    with StartWatch(docker_client, tenant, {"gated"}) as watch:
        t0 = time.time()
        try:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 90, "dockerd to exit")
        finally:
            if not _engine_answers():
                _start_dockerd()
            wait_for(_engine_answers, 90, "the restarted dockerd to answer", every=0.25)
        _wait_recovered(server, tenant, "gated", t0, healthy=True, timeout=120)
        wait_for(lambda: _gate_loaded(server, docker_client, tenant, "gated"), 30, "the policy")
    assert watch.violations == []
    chain = subprocess.run(["iptables", "-S", "AGENTCELL-INPUT"], capture_output=True, text=True)
    assert "-j DROP" in chain.stdout, chain.stdout + chain.stderr
    jump = ["iptables", "-C", "INPUT", "-s", server.pool, "-j", "AGENTCELL-INPUT"]
    assert subprocess.run(jump, capture_output=True).returncode == 0
    for name, marker in markers.items():
        if name != "gated":
            _wait_recovered(server, tenant, name, t0, healthy=True, timeout=120)
        assert _read_marker(server, f"{tenant}/{name}") == marker
        res = server.cli("verify", f"{tenant}/{name}", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
    assert_intact(server, docker_client, tenant)


# -- h. the state database locked, its disk full ---------------------------------------------------

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


def _integrity(db: Path) -> str:
    con = sqlite3.connect(str(db))
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def _minimal(tenant: str, cell: str) -> str:
    return _spec(tenant, cell, health=None, workspace={"access": "rw"})


def test_h_a_locked_database_gives_a_clear_error_and_no_corruption(
    server: Server, tenant: str, tmp_path: Path, docker_client: Any
) -> None:
    _deploy(server, _spec(tenant, "first"))
    marker = _write_marker(server, f"{tenant}/first")
    db = server.state_dir / "agentcell.db"
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        r = server.api("POST", "/v1/apply", json={"yaml": _minimal(tenant, "second")})
        assert r.status_code == 503, r.text
        assert "locked" in r.json()["reason"], r.text
        (tmp_path / "second.yaml").write_text(_minimal(tenant, "second"))
        res = server.cli("deploy", "-f", str(tmp_path / "second.yaml"), "--timeout", "30")
        assert res.returncode != 0
        assert "locked" in res.stderr and "Traceback" not in res.stderr + res.stdout, res.stderr
        print("locked:", r.text, res.stderr, sep="\n")
        ps = server.cli("ps")
        assert "Traceback" not in ps.stderr + ps.stdout
    finally:
        assert locker.stdin is not None
        locker.stdin.write("\n")
        locker.stdin.close()
        locker.wait(10)
    assert _integrity(db) == "ok"
    _deploy(server, _minimal(tenant, "second"))
    assert _read_marker(server, f"{tenant}/first") == marker
    assert {c["name"] for c in _cells(server, tenant)} == {"first", "second"}
    assert_intact(server, docker_client, tenant)


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory on a tmpfs of its own, 4 MiB."""
    state = tmp_path / "small-state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(directory: Path) -> Path:
    """Write one file until the filesystem is full; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        with contextlib.suppress(OSError):
            while True:  # the last few bytes too
                f.write(b"\0" * 512)
    return filler


def test_h_a_full_disk_gives_a_clear_error_and_no_corruption(
    tenant: str, tmp_path: Path, docker_client: Any, small_state_dir: Path
) -> None:
    port = free_port()
    server = Server(
        url=f"http://127.0.0.1:{port}",
        state_dir=small_state_dir,
        port=port,
        log_path=tmp_path / "serve.log",
    )
    server.start()
    try:
        _deploy(server, _spec(tenant, "first"))
        marker = _write_marker(server, f"{tenant}/first")
        filler = _fill(small_state_dir)
        refused: list[str] = []
        # SQLite may still fit a few pages in its log; within a few writes the disk says no.
        for n in range(20):
            text = _spec(tenant, f"c{n}", health=None, env={**QUIET, "PAD": "x" * 20000})
            r = server.api("POST", "/v1/apply", json={"yaml": text})
            if r.status_code != 200:
                refused.append(r.text)
                break
        assert refused, "every apply succeeded on a full disk"
        assert '"error":"StoreError"' in refused[0] and "full" in refused[0], refused
        (tmp_path / "more.yaml").write_text(_minimal(tenant, "more"))
        res = server.cli("deploy", "-f", str(tmp_path / "more.yaml"), "--timeout", "30")
        assert res.returncode != 0 and "full" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr + res.stdout
        print("full:", refused[0], res.stderr, sep="\n")
        assert _integrity(small_state_dir / "agentcell.db") == "ok"
        filler.unlink()
        _deploy(server, _minimal(tenant, "more"))
        assert _integrity(small_state_dir / "agentcell.db") == "ok"
        assert _read_marker(server, f"{tenant}/first") == marker
        assert_intact(server, docker_client, tenant)
    finally:
        server.stop()


# -- i. a hundred cells deployed and removed concurrently -----------------------------------------

HUNDRED = 100


def _tiny(tenant: str, name: str) -> str:
    doc = {
        "apiVersion": "agentcell/v1",
        "kind": "Agent",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {
            "image": DEMO_IMAGE,
            "env": QUIET,
            "workspace": {"access": "none"},
            "resources": {"cpus": 0.1, "memory": "48Mi", "pids": 64},
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.timeout(1500)
def test_i_a_hundred_cells_deployed_and_removed_concurrently(
    server: Server, tenant: str, docker_client: Any
) -> None:
    tenant_doc = {
        "apiVersion": "agentcell/v1",
        "kind": "Tenant",
        "metadata": {"name": tenant},
        "spec": {"quota": {"agents": HUNDRED, "cpus": HUNDRED, "memory": "100Gi"}},
    }
    r = server.api("POST", "/v1/apply", json={"yaml": yaml.safe_dump(tenant_doc)})
    assert r.status_code == 200, r.text
    names = [f"c{i:03d}" for i in range(HUNDRED)]

    started = time.monotonic()
    with ThreadPoolExecutor(HUNDRED) as pool:
        applied = list(
            pool.map(
                lambda n: server.api("POST", "/v1/apply", json={"yaml": _tiny(tenant, n)}),
                names,
            )
        )
    assert [a.text for a in applied if a.status_code != 200] == []
    subnets: dict[str, list[str]] = {}
    for n in names:
        subnets.setdefault(_cell(server, tenant, n)["subnet"], []).append(n)
    assert {s: c for s, c in subnets.items() if len(c) > 1} == {}, "one subnet, several cells"

    def all_running() -> bool:
        cells = _cells(server, tenant)
        failed = [(c["name"], c["reason"]) for c in cells if c["state"] == "failed"]
        assert failed == [], failed
        return len(cells) == HUNDRED and all(is_back(c) for c in cells)

    wait_for(all_running, 900, "a hundred cells to run", every=0.5)
    deployed = time.monotonic() - started
    assert_intact(server, docker_client, tenant)

    started = time.monotonic()
    with ThreadPoolExecutor(HUNDRED) as pool:
        removed = list(pool.map(lambda n: server.api("DELETE", f"/v1/cells/{tenant}/{n}"), names))
    assert [d.text for d in removed if d.status_code != 202] == []
    flt = {"label": [f"agentcell.tenant={tenant}"]}

    def all_gone() -> bool:
        return (
            _cells(server, tenant) == []
            and docker_client.containers.list(all=True, filters=flt, ignore_removed=True) == []
            and docker_client.networks.list(filters=flt) == []
            and docker_client.volumes.list(filters=flt) == []
        )

    wait_for(all_gone, 600, "a hundred cells to be removed", every=0.5)
    gone = time.monotonic() - started
    lifecycle = [a for a in _audit(server, tenant) if a["kind"] == "lifecycle"]
    assert len({a["cell"] for a in lifecycle}) == HUNDRED
    line = f"\n{HUNDRED} cells: deployed in {deployed:.1f}s, removed in {gone:.1f}s\n"
    print(line)  # shown with -s or -rP
    if report := os.environ.get("AGENTCELL_FAULTS_REPORT"):
        Path(report).write_text(line)
