"""The host-to-sidecar contract: what the host puts in a sidecar's environment is what
the sidecar reads back, variable by variable."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from agentcell.gate.dockerproxy._config import DockerProxyConfig
from agentcell.gate.egress._config import GateConfig
from agentcell.policy import (
    DOCKER_PROXY_PORT,
    GATE_CONTROL_PORT,
    GATE_PROXY_PORT,
    DockerProxyBlueprint,
    GateBlueprint,
    docker_proxy_address,
    docker_proxy_body,
    gate_address,
    gate_body,
)
from agentcell.policy._sidecar_env import DockerProxyVar, GateVar

CELL_SUBNET = "10.214.3.0/24"
EGRESS_SUBNET = "10.214.200.0/24"
POOL = "10.214.0.0/16"


def env_of(body: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in body["Env"])


def gate_blueprint() -> GateBlueprint:
    return GateBlueprint(
        tenant="acme",
        cell="web",
        image="agentcell/runtime:latest",
        container="agentcell.acme.web.egress",
        network="agentcell.acme.web.net",
        address=gate_address(CELL_SUBNET),
        egress_subnet=EGRESS_SUBNET,
        cell_subnet=CELL_SUBNET,
        token="t0ken",
        pool=POOL,
    )


def proxy_blueprint(seccomp_file: str | None) -> DockerProxyBlueprint:
    return DockerProxyBlueprint(
        tenant="acme",
        cell="web",
        image="agentcell/runtime:latest",
        container="agentcell.acme.web.dockerproxy",
        network="agentcell.acme.web.net",
        address=docker_proxy_address(CELL_SUBNET),
        engine_socket="/var/run/docker.sock",
        socket_gid=999,
        seccomp_file=seccomp_file,
        child_user="10001:10001",
        containers=4,
        cpus=1.5,
        memory=512 * 1024**2,
    )


def test_the_gate_reads_what_the_host_writes() -> None:
    env = env_of(gate_body(gate_blueprint(), seccomp=None, gate_hash="h"))
    proxy_ip = ipaddress.ip_address(gate_address(CELL_SUBNET))
    control_ip = ipaddress.ip_address("10.214.200.7")  # its address on the egress network

    config = GateConfig.from_env(env, local=[proxy_ip, control_ip])
    assert config.tenant == "acme" and config.cell == "web"
    assert config.token == "t0ken"
    assert config.proxy_listen == (proxy_ip, GATE_PROXY_PORT)
    assert config.control_listen == (control_ip, GATE_CONTROL_PORT)
    assert {ipaddress.ip_network(CELL_SUBNET), ipaddress.ip_network(EGRESS_SUBNET)} <= set(
        config.own_networks
    )
    assert config.cell_networks == (ipaddress.ip_network(POOL),)


@pytest.mark.parametrize("seccomp_file", [None, "/etc/agentcell/cell.json"])
def test_the_docker_proxy_reads_what_the_host_writes(seccomp_file: str | None) -> None:
    env = env_of(docker_proxy_body(proxy_blueprint(seccomp_file), seccomp=None, proxy_hash="h"))
    assert (DockerProxyVar.SECCOMP in env) is (seccomp_file is not None)
    env.pop(DockerProxyVar.SECCOMP, None)  # a path inside the proxy's container, not here

    config = DockerProxyConfig.from_env(env)
    assert (config.tenant, config.cell) == ("acme", "web")
    assert config.network == "agentcell.acme.web.net"
    assert config.listen == (
        ipaddress.ip_address(docker_proxy_address(CELL_SUBNET)),
        DOCKER_PROXY_PORT,
    )
    assert config.engine_socket == "/run/agentcell/engine.sock"
    assert config.child_user == "10001:10001"
    assert (config.limits.containers, config.limits.nano_cpus, config.limits.memory) == (
        4,
        1_500_000_000,
        512 * 1024**2,
    )


def test_the_host_writes_only_variables_the_sidecars_define() -> None:
    gate = env_of(gate_body(gate_blueprint(), seccomp=None, gate_hash="h"))
    proxy = env_of(docker_proxy_body(proxy_blueprint("/p.json"), seccomp=None, proxy_hash="h"))
    assert set(gate) <= set(GateVar)
    assert set(proxy) <= set(DockerProxyVar)
