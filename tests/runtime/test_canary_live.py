"""The isolation canary against live cells deployed through a real server.

A healthy cell passes every check; with the host firewall's jump for the test pool
removed the canary sees the host; with the gate stopped it cannot get its denial; an
unhardened container of the test tenant fails the process and engine checks.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from agentcell.policy import Decision
from agentcell.runtime import DockerDriver, Firewall, jump_rule
from livecell import DEMO_IMAGE, TEST_POOL, Server, spec_text, wait_for

pytestmark = pytest.mark.integration

EGRESS = {"allow": [{"host": "api.allowed.test", "ports": [80]}]}


def _deploy(server: Server, tmp_path: Path, tenant: str, **spec: object) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tenant, "agent", **spec))
    server.cli("deploy", "-f", str(path), "--timeout", "90", check=True)


def _denied(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if not d.allow]


def _reasons(decisions: list[Decision]) -> list[str]:
    return [d.reason for d in decisions]


def _remove_jump() -> None:
    while (
        subprocess.run(["iptables", "-D", *jump_rule(TEST_POOL)], capture_output=True).returncode
        == 0
    ):
        pass


def test_a_healthy_cell_passes_every_check(server: Server, tmp_path: Path, tenant: str) -> None:
    _deploy(server, tmp_path, tenant)
    driver = DockerDriver()
    wait_for(Firewall(TEST_POOL).check, 10, "the firewall rules to be in place")
    started = time.monotonic()
    decisions = driver.canary((tenant, "agent"))
    elapsed = time.monotonic() - started
    assert _denied(decisions) == []
    reasons = _reasons(decisions)
    # docker-init and the agent itself, at least
    assert reasons.count("process is hardened") >= 2
    assert "all capabilities dropped" in reasons
    assert reasons[-1] == "host unreachable from the cell"
    assert not any(r.startswith("gate") for r in reasons)  # no egress, no gate
    assert elapsed < 5, f"one canary run took {elapsed:.2f}s"


def test_without_the_firewall_jump_the_canary_sees_the_host(
    server: Server, tmp_path: Path, tenant: str
) -> None:
    _deploy(server, tmp_path, tenant)
    server.stop()  # its reconciler would put the jump back at the next engine event
    driver = DockerDriver()
    key = (tenant, "agent")
    try:

        def breached() -> list[Decision]:
            _remove_jump()  # again: another server on this pool may have restored it
            return [d for d in driver.canary(key) if d.reason == "host reachable from the cell"]

        (seen,) = wait_for(breached, 20, "the canary to see the host")
        assert seen.rule  # the address that answered

        def breached_thinned() -> list[Decision]:
            # With the pool given, only the cell's own gateway is tried inside it: enough.
            _remove_jump()
            decisions = driver.canary(key, pool=TEST_POOL)
            return [d for d in decisions if d.reason == "host reachable from the cell"]

        wait_for(breached_thinned, 20, "the thinned canary to see the host")
    finally:
        Firewall(TEST_POOL).ensure()
    decisions = driver.canary(key)
    assert _denied(decisions) == []
    assert decisions[-1].reason == "host unreachable from the cell"


def test_the_gate_refuses_the_canary_and_a_stopped_gate_is_reported(
    server: Server, tmp_path: Path, tenant: str, docker_client: docker.DockerClient
) -> None:
    _deploy(server, tmp_path, tenant, egress=EGRESS)
    driver = DockerDriver()
    key = (tenant, "agent")
    decisions = driver.canary(key)
    assert _denied(decisions) == []
    assert decisions[-1] == Decision(
        True, "gate denied the destination", "no rule allows this host"
    )

    server.stop()  # so nothing restarts the gate behind the test's back
    (gate,) = docker_client.containers.list(
        filters={"label": [f"agentcell.tenant={tenant}", "agentcell.role=egress"]},
        ignore_removed=True,
    )
    gate.stop(timeout=1)
    decisions = driver.canary(key)
    # Its address is gone from the network: no route, or no answer before the deadline.
    assert _reasons(_denied(decisions)) == ["gate did not answer"]


def test_an_unhardened_container_fails_the_process_and_engine_checks(
    tenant: str, docker_client: docker.DockerClient
) -> None:
    labels = {
        "agentcell.tenant": tenant,
        "agentcell.cell": "unhardened",
        "agentcell.role": "agent",
    }
    driver = DockerDriver(docker_client)
    key = (tenant, "unhardened")
    for user, expected in (
        ("0", "process runs as root"),
        # A uid without a gid runs with group 0.
        ("10001", "process runs with group root"),
        # Non-root with the engine's default capabilities: nothing effective, but the
        # bounding set still holds them, and no-new-privileges is off.
        ("10001:10001", "capability bounding set is not empty"),
    ):
        c = docker_client.containers.run(
            DEMO_IMAGE,
            ["sleep", "infinity"],
            user=user,
            network_mode="none",
            labels=labels,
            detach=True,
        )
        try:

            def running(c: Any = c) -> bool:
                c.reload()
                return bool(c.status == "running")

            wait_for(running, 15, "the container to run")
            decisions = driver.canary(key)
            processes = [d for d in decisions if d.rule.startswith("pid ")]
            assert processes
            assert {d.reason for d in processes} == {expected}
            denied = _reasons(_denied(decisions))
            assert "capabilities are not all dropped" in denied
            assert "no-new-privileges is missing" in denied
            assert "root filesystem is writable" in denied
            assert "cell network not found" in denied
            # Without a network there is no way to the host at all.
            assert decisions[-1].reason == "host unreachable from the cell"
        finally:
            c.remove(force=True)


def test_a_cell_without_a_running_agent_is_reported(tenant: str) -> None:
    assert DockerDriver().canary((tenant, "nothing")) == [Decision(False, "agent is not running")]
