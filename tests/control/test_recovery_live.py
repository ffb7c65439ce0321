"""The recovery ladder and the kill switch, on the real engine through a real `agentcell serve`.

Health is an exec probe on a marker file: in /tmp (tmpfs, gone when the container
restarts) a restart cures it; in /workspace (kept) nothing does, so the ladder climbs to
the end and the webhook hears about it.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from livecell import Server, free_port, spec_text, wait_for

pytestmark = pytest.mark.integration

HEALTH = {
    "exec": {"command": ["sh", "-c", "test ! -e /tmp/sick && test ! -e /workspace/sick"]},
    "interval": "500ms",
    "timeout": "400ms",
    "retries": 2,
}


class Hook:
    """A webhook receiver on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def srv(
    tmp_path: Path, docker_client: docker.DockerClient, tenant: str, hook: Hook
) -> Iterator[Server]:
    port = free_port()
    s = Server(
        url=f"http://127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        port=port,
        extra_env={
            "AGENTCELL_WEBHOOK": hook.url,
            "AGENTCELL_CANARY_INTERVAL": "0",
            # No resync within a test: every recovery must come from the engine's events.
            "AGENTCELL_RESYNC_INTERVAL": "3600",
        },
    )
    s.state_dir.mkdir()
    s.start()
    yield s
    s.stop()


def cell(srv: Server, ref: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v1/cells/{ref}", headers={"Authorization": f"Bearer {srv.token()}"})
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def audit(srv: Server, tenant: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{srv.url}/v1/audit",
        params={"tenant": tenant, "limit": 500},
        headers={"Authorization": f"Bearer {srv.token()}"},
    )
    r.raise_for_status()
    out: list[dict[str, Any]] = r.json()
    return out


def deploy(srv: Server, tenant: str, tmp_path: Path, **spec: Any) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tenant, "a", **spec))
    srv.cli("deploy", "-f", str(path), check=True)
    return f"{tenant}/a"


def state_is(srv: Server, ref: str, *states: str) -> dict[str, Any] | None:
    c = cell(srv, ref)
    return c if c["state"] in states else None


def agent_of(docker_client: docker.DockerClient, tenant: str) -> Any:
    found = docker_client.containers.list(
        all=True,
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]},
        ignore_removed=True,
    )
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def test_a_killed_agent_is_restarted_and_healthy_again(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path, health=HEALTH, restart={"maxRestarts": 100})
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    srv.cli("exec", ref, "--", "sh", "-c", "echo kept > /workspace/data", check=True)
    before = agent_of(docker_client, tenant)
    before.kill()
    wait_for(
        lambda: any("restarted: agent exited (137)" in r["reason"] for r in audit(srv, tenant)),
        30,
        "the restart to be recorded",
    )
    back = wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy again")
    assert agent_of(docker_client, tenant).id == before.id  # first rung: the same container
    assert back["recovery"]["attempts"][-1]["step"] == "restart"
    data = srv.cli("exec", ref, "--", "cat", "/workspace/data", check=True)
    assert data.stdout.strip() == "kept"


def test_unhealthy_is_restarted_and_a_restart_cures_a_tmpfs_fault(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path, health=HEALTH)
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    srv.cli("exec", ref, "--", "touch", "/tmp/sick", check=True)
    wait_for(
        lambda: any(
            r["reason"].startswith("restarted: agent unhealthy") for r in audit(srv, tenant)
        ),
        30,
        "a restart for being unhealthy",
    )
    back = wait_for(lambda: state_is(srv, ref, "healthy"), 30, "healthy after the restart")
    assert back["recovery"]["rung"] == 0  # well again: the ladder starts over
    kinds = [(r["kind"], r["decision"]) for r in audit(srv, tenant)]
    assert ("health", "deny") in kinds and ("health", "allow") in kinds


def test_the_ladder_climbs_to_failed_and_the_webhook_hears_it(
    srv: Server, tenant: str, tmp_path: Path, hook: Hook, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path, health=HEALTH)
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    first = agent_of(docker_client, tenant).id
    srv.cli("exec", ref, "--", "touch", "/workspace/sick", check=True)
    failed = wait_for(lambda: state_is(srv, ref, "failed"), 60, "the cell to be failed")
    assert failed["reason"].startswith("recovery exhausted: restarted and recreated")
    steps = [a["step"] for a in failed["recovery"]["attempts"]]
    assert steps == ["restart", "recreate"]
    assert agent_of(docker_client, tenant).id != first  # recreated: a new container
    wait_for(lambda: hook.events, 15, "the webhook to be called")
    (event,) = hook.events
    assert (event["tenant"], event["cell"], event["state"]) == (tenant, "a", "failed")
    assert event["reason"] == failed["reason"]
    wait_for(
        lambda: any(r["kind"] == "notify" and r["decision"] == "allow" for r in audit(srv, tenant)),
        15,
        "the notification to be audited",
    )
    # The workspace survived both rungs.
    ws = docker_client.volumes.list(filters={"label": f"agentcell.tenant={tenant}"})
    assert len(ws) == 1


def test_pause_kills_at_once_holds_and_resume_brings_it_back(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(
        srv,
        tenant,
        tmp_path,
        health=HEALTH,
        egress={"allow": [{"host": "api.allowed.test"}]},
    )
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    srv.cli("exec", ref, "--", "sh", "-c", "echo kept > /workspace/data", check=True)
    out = srv.cli("pause", ref, check=True)
    assert "paused" in out.stdout
    wait_for(lambda: state_is(srv, ref, "paused"), 15, "the cell to be paused")
    cell_filter = {"label": f"agentcell.tenant={tenant}", "status": "running"}
    wait_for(
        lambda: not docker_client.containers.list(filters=cell_filter, ignore_removed=True),
        15,
        "the agent and its gate to stop",
    )
    # Recovery is suspended: nothing starts again on its own.
    srv.cli("ps", check=True)
    assert not docker_client.containers.list(filters=cell_filter, ignore_removed=True)
    assert cell(srv, ref)["state"] == "paused"
    assert srv.cli("exec", ref, "--", "true").returncode != 0

    srv.cli("resume", ref, check=True)
    wait_for(lambda: state_is(srv, ref, "healthy"), 60, "the cell to be healthy again")
    roles = {
        c.labels["agentcell.role"]
        for c in docker_client.containers.list(filters=cell_filter, ignore_removed=True)
    }
    assert roles == {"agent", "egress"}
    assert srv.cli("exec", ref, "--", "cat", "/workspace/data", check=True).stdout.strip() == "kept"
    reasons = [r["reason"] for r in audit(srv, tenant)]
    assert "cell paused" in reasons and "cell resumed" in reasons


def test_pausing_a_tenant_pauses_its_cells(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path)
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to run")
    out = srv.cli("pause", tenant, check=True)
    assert f"tenant {tenant} (1 cells) paused" in out.stdout
    wait_for(lambda: state_is(srv, ref, "paused"), 15, "the cell to be paused")
    refused = srv.cli("resume", ref)
    assert refused.returncode != 0 and "resume the tenant" in refused.stderr
    # A cell deployed into a paused tenant is stored, and paused from the start.
    (tmp_path / "b.yaml").write_text(spec_text(tenant, "b"))
    later = srv.cli("deploy", "-f", str(tmp_path / "b.yaml"), check=True)
    assert "paused" in later.stdout and "agentcell resume" in later.stdout
    assert not docker_client.containers.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.cell=b"]}, ignore_removed=True
    )
    srv.cli("resume", tenant, check=True)
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to run again")
    wait_for(lambda: state_is(srv, f"{tenant}/b", "healthy"), 30, "the later cell to start")
    missing = srv.cli("pause", "no-such-tenant")
    assert missing.returncode != 0 and "no tenant" in missing.stderr


def test_an_isolation_breach_found_by_the_canary_recreates_the_cell(
    tmp_path: Path, docker_client: docker.DockerClient, tenant: str, hook: Hook
) -> None:
    port = free_port()
    s = Server(
        url=f"http://127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        port=port,
        extra_env={"AGENTCELL_CANARY_INTERVAL": "1"},
    )
    s.state_dir.mkdir()
    s.start()
    try:
        ref = deploy(s, tenant, tmp_path)
        wait_for(lambda: state_is(s, ref, "healthy"), 30, "the cell to be healthy")
        first = agent_of(docker_client, tenant)
        # Someone with the engine's socket starts a root process in the cell.
        first.exec_run(["sleep", "600"], user="0", detach=True)
        wait_for(
            lambda: any(
                r["kind"] == "isolation"
                and r["decision"] == "deny"
                and "process runs as root" in r["reason"]
                for r in audit(s, tenant)
            ),
            30,
            "the canary to report the root process",
        )
        agents = {"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]}
        wait_for(
            lambda: [
                c
                for c in docker_client.containers.list(filters=agents, ignore_removed=True)
                if c.id != first.id
            ],
            30,
            "the cell to be recreated",
        )
        back = wait_for(lambda: state_is(s, ref, "healthy"), 30, "healthy after the recreate")
        assert back["recovery"]["attempts"][-1]["step"] == "recreate"
        lifecycle = [r["reason"] for r in audit(s, tenant) if r["kind"] == "lifecycle"]
        assert any(r.startswith("isolation breach: ") for r in lifecycle)
        top = agent_of(docker_client, tenant).top(ps_args="-o pid,user,args")
        assert not [p for p in top["Processes"] if p[1] in ("root", "0")], top
        wait_for(lambda: not cell(s, ref)["breach"], 30, "the breach to be cleared")
    finally:
        s.stop()


def test_a_hung_gate_is_replaced_and_its_policy_loaded(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path, egress={"allow": [{"host": "api.allowed.test"}]})
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    gates = {"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress"]}
    (gate,) = docker_client.containers.list(filters=gates, ignore_removed=True)
    # Hung, as far as anyone can tell from outside: the engine still says running, the
    # kernel still accepts connections, nothing answers.
    for pid in [int(p[1]) for p in gate.top()["Processes"]]:
        os.kill(pid, signal.SIGSTOP)
    wait_for(
        lambda: any(r["kind"] == "sidecar" and r["decision"] == "deny" for r in audit(srv, tenant)),
        40,
        "the hung gate to be noticed",
    )
    wait_for(
        lambda: [
            c
            for c in docker_client.containers.list(filters=gates, ignore_removed=True)
            if c.id != gate.id
        ],
        30,
        "a new gate",
    )
    c = wait_for(
        lambda: (
            (c := cell(srv, ref))["egress"]["loaded_digest"] == c["egress"]["policy_digest"] and c
        ),
        30,
        "the policy to be loaded into the new gate",
    )
    assert c
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy again")
    reasons = [r["reason"] for r in audit(srv, tenant) if r["kind"] == "lifecycle"]
    assert "egress gate not answering" in reasons and "egress gate missing" in reasons


def test_a_gate_frozen_out_of_band_is_replaced(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    ref = deploy(srv, tenant, tmp_path, egress={"allow": [{"host": "api.allowed.test"}]})
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy")
    gates = {"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress"]}
    (gate,) = docker_client.containers.list(filters=gates, ignore_removed=True)
    gate.pause()  # the engine reports it paused: not running, so it is restored at once
    wait_for(
        lambda: [
            c
            for c in docker_client.containers.list(filters=gates, ignore_removed=True)
            if c.id != gate.id
        ],
        30,
        "a new gate",
    )
    wait_for(
        lambda: (c := cell(srv, ref))["egress"]["loaded_digest"] == c["egress"]["policy_digest"],
        30,
        "the policy to be loaded into the new gate",
    )
    wait_for(lambda: state_is(srv, ref, "healthy"), 30, "the cell to be healthy again")


def test_each_death_is_seen_from_the_engines_events_alone(
    srv: Server, tenant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    # The engine sends "die" before its container list says the container stopped, and
    # with a gate the events after it can all come too early as well: the server must
    # look again by itself (this server never resyncs within the test).
    ref = deploy(
        srv,
        tenant,
        tmp_path,
        egress={"allow": [{"host": "api.allowed.test"}]},
        restart={"maxRestarts": 100, "window": "1s"},
        health=None,  # no failing probe to notice it either
    )
    # Two deaths in a row, before the cell counts as well again (10 s up): the ladder's
    # first two rungs, each started from the events alone.
    for kill, step in ((1, "restart"), (2, "recreate")):
        wait_for(lambda: state_is(srv, ref, "running"), 30, "the cell to run")
        agents = {"label": [f"agentcell.tenant={tenant}", "agentcell.role=agent"]}
        docker_client.containers.list(filters=agents, ignore_removed=True)[0].kill()
        attempts = wait_for(
            lambda kill=kill: len(a := cell(srv, ref)["recovery"]["attempts"]) == kill and a,  # type: ignore[misc]
            30,
            f"the {step} without a resync",
        )
        assert attempts[-1]["step"] == step
