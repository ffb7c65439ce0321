"""Benchmark: recovery after an agent's death and after its egress gate's death, same run.

Agent: `docker kill` (SIGKILL) of the agent container of a healthy cell, timed until the
control plane reports the cell healthy again (its status long poll, the source of
`GET /v1/cells/{tenant}/{name}`: state "healthy", or state "running" with health
"healthy"). The baseline in the same kill: the agent's /healthz probed directly from
the host at the cell's address every 5 ms, timed until it answers again. The gap is
the control plane's share (noticing the death, restarting, probing, reporting).

Sidecar: `docker kill` of the egress gate of a cell with an egress policy, timed until
the gate runs again and its policy is loaded: the gate's own "policy <digest> loaded"
line (its stderr, timestamped by the engine) after the kill. Also timed: the engine's
`start` event of the gate, and the first `GET /v1/cells/{tenant}/{name}` that reports
the gate running, the desired policy digest loaded and the cell healthy.

Every time is measured from just before the kill request; the engine's `die`/`start`
events split it into its steps. Reports p50/p95 and writes results/recovery.json.

    .venv/bin/python bench/recovery.py [--agent-kills 20] [--gate-kills 10]

Runs its own `agentcell serve` (subnet pool 10.218.0.0/16, a free port, a temporary
state directory) and removes everything it made on exit, Ctrl-C and SIGTERM included.
Hold `flock -s /tmp/agentcell-engine.lock` while it runs beside other test runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import httpx
from _serve import wait_serving

IMAGE = "agentcell/demo-agent:latest"
POOL = "10.218.0.0/16"
RESULTS = Path(__file__).parent / "results"


# -- the harness: one `agentcell serve` and everything it makes, removed at the end ----------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy_status(st: dict[str, Any]) -> bool:
    """The control plane says healthy: today running + healthy, soon state "healthy"."""
    return st.get("state") == "healthy" or (
        st.get("state") == "running" and st.get("health") == "healthy"
    )


@dataclass
class Harness:
    """A real `agentcell serve` on a free port, its own pool and state dir, one bench tenant."""

    prefix: str
    pool: str = POOL
    tenant: str = ""
    state: Path = field(default_factory=Path)
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    client: Any = None
    api: httpx.Client | None = None
    _jump_was_there: bool = True
    keep_log: Path | None = None
    tenants: list[str] = field(default_factory=list)
    """Further tenants the bench makes (removed and swept like ``tenant``)."""

    def start(self, argv: list[str] | None = None) -> None:
        """Start the server; ``argv`` replaces ``python -m agentcell.cli.main`` (profiling)."""
        self.tenant = f"{self.prefix}{secrets.token_hex(3)}"
        self.client = docker.from_env(timeout=120)
        self.client.images.get(IMAGE)
        self._jump_was_there = _iptables_jump(self.pool, "-C")
        self.state = Path(tempfile.mkdtemp(prefix=f"agentcell-{self.prefix}-"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = argv or [sys.executable, "-m", "agentcell.cli.main"]
        log = (self.state / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *cmd,
                "serve",
                "--port",
                str(port),
                "--state-dir",
                str(self.state),
                "--subnet-pool",
                self.pool,
            ],
            stdout=log,
            stderr=log,
        )
        token = wait_serving(self.url, self.proc, self.state)
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def apply(self, text: str) -> None:
        assert self.api is not None
        res = self.api.post("/v1/apply", json={"yaml": text, "source": "bench"})
        if res.status_code != 200:
            raise SystemExit(f"apply failed ({res.status_code}): {res.text}")

    def status(self, name: str, after: int = 0, timeout: float = 30) -> dict[str, Any]:
        assert self.api is not None
        res = self.api.get(
            f"/v1/cells/{self.tenant}/{name}/wait", params={"after": after, "timeout": timeout}
        )
        res.raise_for_status()
        out: dict[str, Any] = res.json()
        return out

    def cell(self, name: str) -> dict[str, Any]:
        assert self.api is not None
        res = self.api.get(f"/v1/cells/{self.tenant}/{name}")
        res.raise_for_status()
        out: dict[str, Any] = res.json()
        return out

    def wait_healthy(self, name: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st = self.status(name)
        while not healthy_status(st):
            if st.get("state") == "failed":
                raise SystemExit(f"{self.tenant}/{name} failed: {st.get('reason')}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"{self.tenant}/{name} not healthy: {st}")
            st = self.status(name, st["version"], min(left, 30))
        return st

    def container(self, name: str, role: str, tenant: str = "") -> Any:
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"agentcell.tenant={tenant or self.tenant}",
                    f"agentcell.cell={name}",
                    f"agentcell.role={role}",
                ]
            },
            ignore_removed=True,
        )
        return found[0] if found else None

    def close(self) -> None:
        """Remove the cells through the API, stop the server, then sweep leftovers by label."""
        if self.api is not None and self.proc is not None and self.proc.poll() is None:
            try:
                for c in self.api.get("/v1/cells").json():
                    self.api.delete(f"/v1/cells/{c['tenant']}/{c['name']}")
                deadline = time.monotonic() + 600
                while self.api.get("/v1/cells").json() and time.monotonic() < deadline:
                    time.sleep(0.5)
                for t in self.api.get("/v1/tenants").json():
                    self.api.delete(f"/v1/tenants/{t['metadata']['name']}")
            except (httpx.HTTPError, ValueError) as e:
                print(f"cleanup through the API failed ({e}); sweeping by label", file=sys.stderr)
        if self.api is not None:
            self.api.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for tenant in [self.tenant, *self.tenants] if self.client is not None else []:
            flt = {"label": [f"agentcell.tenant={tenant}"]}
            for c in self.client.containers.list(all=True, filters=flt, ignore_removed=True):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
            for n in self.client.networks.list(filters=flt):
                with contextlib.suppress(docker.errors.NotFound):
                    n.remove()
            for v in self.client.volumes.list(filters=flt):
                with contextlib.suppress(docker.errors.NotFound):
                    v.remove(force=True)
        if not self._jump_was_there:
            while _iptables_jump(self.pool, "-D"):
                pass
        if self.keep_log is not None and (self.state / "serve.log").is_file():
            shutil.copyfile(self.state / "serve.log", self.keep_log)
        if self.state.name.startswith("agentcell-"):
            shutil.rmtree(self.state, ignore_errors=True)

    @contextlib.contextmanager
    def running(self, argv: list[str] | None = None) -> Iterator[Harness]:
        old = signal.signal(signal.SIGTERM, _term)
        try:
            self.start(argv)
            yield self
        except BaseException:
            log = self.state / "serve.log"
            if log.is_file():
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print("agentcell serve's log, last lines:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            self.close()
            signal.signal(signal.SIGTERM, old)


def _iptables_jump(pool: str, op: str) -> bool:
    """Check (-C) or delete (-D) the server's INPUT jump for ``pool``; True on success."""
    cmd = ["iptables", "-w", "5", op, "INPUT", "-s", pool, "-j", "AGENTCELL-INPUT"]
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def machine(client: Any) -> dict[str, str]:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}",
        "python": platform.python_version(),
        "engine": str(client.version()["Version"]),
    }


# -- the engine's events, with their times --------------------------------------------------


class Events:
    """Container events of the bench tenant, collected in the background."""

    def __init__(self, client: Any, tenant: str) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, str, str, str]] = []  # (time, action, id, role)
        self._stream = client.events(
            decode=True,
            since=int(time.time()) - 1,
            filters={"type": "container", "label": f"agentcell.tenant={tenant}"},
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when closed
            for ev in self._stream:
                attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                item = (
                    ev["timeNano"] / 1e9,
                    str(ev.get("Action", "")),
                    str(ev.get("id", "")),
                    str(attrs.get("agentcell.role", "")),
                )
                with self._lock:
                    self.items.append(item)

    def first(self, action: str, after: float, *, cid: str = "", role: str = "") -> float | None:
        with self._lock:
            for t, a, i, r in self.items:
                if a == action and t >= after and (not cid or i == cid) and (not role or r == role):
                    return t
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


def wait_until(cond: Callable[[], float | None], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


# -- the spec ----------------------------------------------------------------------------------


def spec(tenant: str, names: list[str], *, interval: str) -> str:
    docs = [
        f"""apiVersion: agentcell/v1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{quota: {{agents: 1000, cpus: 1000, memory: 1000Gi}}}}
"""
    ]
    for name in names:
        docs.append(
            f"""apiVersion: agentcell/v1
kind: Agent
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  image: {IMAGE}
  env: {{AGENT_PROBE_SECONDS: "3600"}}
  resources: {{cpus: 0.5, memory: 128Mi, pids: 64}}
  health: {{http: {{port: 8080, path: /healthz}}, interval: {interval}, timeout: 500ms}}
  restart: {{maxRestarts: 1000, window: 1s}}
  egress:
    allow:
      - {{host: api.allowed.test, ports: [443]}}
"""
        )
    return "---\n".join(docs)


# -- the agent's death -------------------------------------------------------------------------


def direct_ok(ip: str) -> bool:
    conn = http.client.HTTPConnection(ip, 8080, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def last_recovery(st: dict[str, Any]) -> float:
    """When the control plane last recovered the cell (0: never), from its status."""
    attempts = st.get("attempts") or []
    return float(attempts[-1]["time"]) if attempts else 0.0


def kill_agent(h: Harness, name: str, events: Events) -> dict[str, float]:
    st = h.wait_healthy(name)
    ip = st["ip"]
    restarts0 = last_recovery(st)
    agent = h.container(name, "agent")
    direct: list[float] = []
    lock = threading.Lock()
    killed: list[float] = []

    def attempt() -> None:
        if direct_ok(ip):
            with lock:
                direct.append(time.time())

    def probe_direct() -> None:
        # From the engine's die event on, only the new process can answer: start one
        # probe every 5 ms (each may wait up to 1 s while the address comes up) and
        # keep the time of the first answer.
        wait_until(lambda: killed[0] if killed else None, 10, "the kill")
        wait_until(lambda: events.first("die", killed[0], cid=agent.id), 10, "the die event")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if direct:
                    return
            threading.Thread(target=attempt, daemon=True).start()
            time.sleep(0.005)

    prober = threading.Thread(target=probe_direct, daemon=True)
    prober.start()
    t0 = time.time()
    agent.kill()  # SIGKILL
    killed.append(t0)
    seen_down = False
    while True:
        st = h.status(name, st["version"], 30)
        if not healthy_status(st):
            seen_down = True
            if st.get("state") == "failed":
                raise SystemExit(f"the cell failed instead of recovering: {st.get('reason')}")
        elif seen_down or last_recovery(st) != restarts0:
            reported = time.time()
            break
    prober.join(60)
    time.sleep(0.05)  # let probes already answered record their time
    if not direct:
        raise SystemExit("the agent's /healthz did not answer directly after the kill")
    die = wait_until(lambda: events.first("die", t0, cid=agent.id), 10, "the die event")
    start = wait_until(lambda: events.first("start", t0, cid=agent.id), 10, "the start event")
    if h.status(name)["ip"] != ip:
        print(f"  note: the agent's address changed from {ip}", file=sys.stderr)
    return {
        "die": die - t0,
        "start": start - t0,
        "direct": min(direct) - t0,
        "reported": reported - t0,
    }


# -- the gate's death --------------------------------------------------------------------------


def _loaded_at(gate: Any, digest: str, after: float) -> float | None:
    """The engine's timestamp of the gate's "policy <digest> loaded" line after ``after``."""
    raw = gate.logs(stdout=False, stderr=True, timestamps=True, since=int(after) - 1)
    for line in raw.decode(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if f"policy {digest} loaded" not in text:
            continue
        # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
        head, _, frac = stamp.rstrip("Z").partition(".")
        when = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
        if when > after:
            return when
    return None


def kill_gate(h: Harness, name: str, events: Events) -> dict[str, float]:
    h.wait_healthy(name)
    want = h.cell(name)["egress"]["policy_digest"]
    gate = h.container(name, "egress")
    t0 = time.time()
    gate.kill()
    wait_until(lambda: events.first("die", t0, cid=gate.id), 10, "the gate's die event")
    loaded: dict[str, float] = {}

    def restored() -> float | None:
        # The engine says it runs, then the gate says the policy is in.
        if "start" not in loaded:
            start = events.first("start", t0, role="egress")
            if start is None:
                return None
            loaded["start"] = start
        current = h.container(name, "egress")
        if current is None or current.status != "running":
            return None
        return _loaded_at(current, want, t0)

    def reported() -> float | None:
        c = h.cell(name)
        eg = c.get("egress") or {}
        ok = (
            str(eg.get("gate", "")).endswith("(running)")
            and eg.get("loaded_digest") == want
            and healthy_status(c)
        )
        return time.time() if ok else None

    t_reported = wait_until(reported, 60, "the control plane to report the gate restored")
    t_loaded = wait_until(restored, 60, "the gate's policy loaded line")
    return {
        "start": loaded["start"] - t0,
        "loaded": t_loaded - t0,
        "reported": t_reported - t0,
    }


# -- main --------------------------------------------------------------------------------------


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        k: {"p50": statistics.median(v), "p95": pct(v, 95), "max": max(v)}
        for k in runs[0]
        for v in [[r[k] for r in runs]]
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent-kills", type=int, default=20)
    ap.add_argument("--gate-kills", type=int, default=10)
    ap.add_argument("--interval", default="1s", help="the cells' health check interval")
    ap.add_argument("--output", type=Path, default=RESULTS / "recovery.json")
    ap.add_argument("--serve-log", type=Path, help="keep the server's log here")
    args = ap.parse_args()
    h = Harness("benchrec", keep_log=args.serve_log)
    with h.running():
        events = Events(h.client, h.tenant)
        try:
            h.apply(spec(h.tenant, ["agent", "gated"], interval=args.interval))
            for name in ("agent", "gated"):
                h.wait_healthy(name)
            agent_runs: list[dict[str, float]] = []
            gate_runs: list[dict[str, float]] = []
            # Interleave the two kinds so machine noise hits both alike.
            total = max(args.agent_kills, args.gate_kills)
            for i in range(total):
                if i < args.agent_kills:
                    agent_runs.append(kill_agent(h, "agent", events))
                    r = agent_runs[-1]
                    print(
                        f"agent kill {len(agent_runs):2}: die {r['die']:.3f}  "
                        f"start {r['start']:.3f}  /healthz {r['direct']:.3f}  "
                        f"reported healthy {r['reported']:.3f} s"
                    )
                if i < args.gate_kills:
                    gate_runs.append(kill_gate(h, "gated", events))
                    r = gate_runs[-1]
                    print(
                        f"gate kill  {len(gate_runs):2}: start {r['start']:.3f}  "
                        f"policy loaded {r['loaded']:.3f}  reported {r['reported']:.3f} s"
                    )
                # Do not phase-lock the kills with the health probes.
                time.sleep(1.0 + random.random())
            restarts = len(h.status("agent")["attempts"])
        finally:
            events.close()
        info = machine(h.client)
    result: dict[str, Any] = {
        **info,
        "agent_kills": len(agent_runs),
        "gate_kills": len(gate_runs),
        "health_interval": args.interval,
        "agent": summary(agent_runs),
        "gate": summary(gate_runs),
        "agent_restarts_recorded": restarts,
        "agent_runs": agent_runs,
        "gate_runs": gate_runs,
    }
    a, g = result["agent"], result["gate"]
    result["control_plane_share_p50"] = a["reported"]["p50"] - a["direct"]["p50"]
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"{info['machine']}, Python {info['python']}, engine {info['engine']}")
    print(f"seconds from the kill request, p50 / p95 / max over {len(agent_runs)} agent kills:")
    for k, what in (
        ("die", "engine: die event"),
        ("start", "engine: start event (restarted)"),
        ("direct", "agent /healthz answers (host probe)"),
        ("reported", "control plane reports healthy"),
    ):
        print(f"  {what:40} {a[k]['p50']:.3f} / {a[k]['p95']:.3f} / {a[k]['max']:.3f}")
    print(f"and over {len(gate_runs)} egress gate kills:")
    for k, what in (
        ("start", "engine: gate start event"),
        ("loaded", "gate: policy loaded (restored)"),
        ("reported", "control plane reports it restored"),
    ):
        print(f"  {what:40} {g[k]['p50']:.3f} / {g[k]['p95']:.3f} / {g[k]['max']:.3f}")
    print(
        f"goals: agent healthy <= 3 s p50: {a['reported']['p50']:.2f} s; "
        f"sidecar restored <= 2 s p50: {g['loaded']['p50']:.2f} s"
    )


if __name__ == "__main__":
    main()
