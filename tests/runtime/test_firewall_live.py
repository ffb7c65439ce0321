"""The host firewall on the real machine: installed, restored when removed, fail closed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest

from agentcell.runtime import CHAIN, Firewall, jump_rule
from livecell import TEST_POOL, Server, free_port, spec_text, wait_for

pytestmark = pytest.mark.integration


def _jump_present() -> bool:
    return (
        subprocess.run(["iptables", "-C", *jump_rule(TEST_POOL)], capture_output=True).returncode
        == 0
    )


def test_serve_installs_the_rules_and_restores_them_when_removed(server: Server) -> None:
    fw = Firewall(TEST_POOL)
    wait_for(fw.check, 10, "the firewall rules to be installed")
    listing = subprocess.run(["iptables", "-S", CHAIN], capture_output=True, text=True).stdout
    assert f"-A {CHAIN} -j DROP" in listing
    subprocess.run(["iptables", "-D", *jump_rule(TEST_POOL)], check=True)
    assert not _jump_present()
    # Any engine event wakes the reconciler, which checks the rules on every pass.
    server.cli("ps", check=True)
    subprocess.run(
        ["docker", "network", "create", "agentcell-fw-wake"], check=True, capture_output=True
    )
    subprocess.run(
        ["docker", "network", "rm", "agentcell-fw-wake"], check=True, capture_output=True
    )
    wait_for(_jump_present, 15, "the reconciler to restore the INPUT jump")


def test_deploy_fails_closed_when_the_rules_cannot_be_installed(
    tmp_path: Path, tenant: str, docker_client: docker.DockerClient
) -> None:
    port = free_port()
    srv = Server(
        url=f"http://127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        port=port,
        pool="10.217.0.0/16",
        extra_env={"AGENTCELL_IPTABLES": "/bin/false"},
    )
    srv.state_dir.mkdir()
    srv.start()
    try:
        path = tmp_path / "spec.yaml"
        path.write_text(spec_text(tenant))
        res = srv.cli("deploy", "-f", str(path), "--timeout", "30")
        assert res.returncode == 1
        assert "step 'install host firewall' failed" in res.stderr
        flt = {"label": [f"agentcell.tenant={tenant}"]}
        assert docker_client.containers.list(all=True, filters=flt, ignore_removed=True) == []
        assert docker_client.networks.list(filters=flt) == []
    finally:
        srv.stop()
