"""The gate's configuration: listen addresses, own addresses, environment checks."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

import pytest
from gatelive import gate_env, start_gate, wait_started

from agentcell.gate._listen import (
    SidecarConfigError,
    local_addresses,
    parse_fib_trie,
    parse_if_inet6,
    parse_listen,
)
from agentcell.gate.egress._config import GateConfig

ip = ipaddress.ip_address
net = ipaddress.ip_network

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.214.3.0/24 2 0 2
        +-- 10.214.3.0/30 2 0 2
           |-- 10.214.3.0
              /24 link UNICAST
           |-- 10.214.3.2
              /32 host LOCAL
        |-- 10.214.3.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 172.30.0.7
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.214.3.2
        /32 host LOCAL
"""

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000004281fffebb5b3a 05 40 20 80  eth0
fd000000000000000000000000000002 04 40 00 82     eth1
garbage line
"""

LOCAL = [ip("127.0.0.1"), ip("10.214.3.2"), ip("172.30.0.7"), ip("fd00::2")]


def test_fib_trie_gives_the_local_host_addresses_once_each() -> None:
    assert parse_fib_trie(FIB_TRIE) == [ip("10.214.3.2"), ip("127.0.0.1"), ip("172.30.0.7")]


def test_if_inet6_gives_every_address_and_skips_garbage() -> None:
    assert parse_if_inet6(IF_INET6) == [ip("::1"), ip("fe80::42:81ff:febb:5b3a"), ip("fd00::2")]


def test_this_hosts_addresses_include_loopback() -> None:
    assert ip("127.0.0.1") in local_addresses()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.2:3128", (ip("127.0.0.2"), 3128)),
        ("0.0.0.0:0", (ip("0.0.0.0"), 0)),
        ("[::1]:80", (ip("::1"), 80)),
        ("subnet:10.214.3.0/24:3129", (ip("10.214.3.2"), 3129)),
        ("subnet:172.30.0.0/16:1", (ip("172.30.0.7"), 1)),
        ("subnet:fd00::/64:9000", (ip("fd00::2"), 9000)),
        (" 127.0.0.2:3128 ", (ip("127.0.0.2"), 3128)),
    ],
)
def test_listen_addresses(raw: str, expected: tuple[object, int]) -> None:
    assert parse_listen("X", raw, lambda: LOCAL) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("127.0.0.2", "expected IP:PORT"),
        ("gate.test:3128", "not an IP address"),
        ("127.0.0.2:http", "not a number"),
        ("127.0.0.2:70000", "out of range"),
        ("::1:80", "in brackets"),
        ("subnet:10.99.0.0/16:3129", "no address inside 10.99.0.0/16"),
        ("subnet:10.214.3.0/24", "expected subnet:CIDR:PORT"),
        ("subnet:nonsense:1", "not a CIDR"),
        ("subnet:10.214.3.0/24:x", "not a number"),
    ],
)
def test_bad_listen_addresses_name_the_variable(raw: str, says: str) -> None:
    with pytest.raises(SidecarConfigError, match=r"^X: ") as e:
        parse_listen("X", raw, lambda: LOCAL)
    assert says in str(e.value)


BASE = {
    "AGENTCELL_GATE_TOKEN": "s3cret-token",
    "AGENTCELL_CONTROL_LISTEN": "subnet:172.30.0.0/16:3129",
    "AGENTCELL_PROXY_LISTEN": "10.214.3.2:3128",
}


def test_from_env_collects_own_networks_and_tls_ports() -> None:
    config = GateConfig.from_env(
        {
            **BASE,
            "AGENTCELL_TENANT": "acme",
            "AGENTCELL_CELL": "researcher",
            "AGENTCELL_OWN_NETWORKS": "10.214.3.0/24, 172.30.0.0/16",
            "AGENTCELL_CELL_NETWORKS": "10.214.0.0/16,10.214.0.0/16",
            "AGENTCELL_TLS_PORTS": "443,8443",
        },
        local=LOCAL,
    )
    assert (config.tenant, config.cell) == ("acme", "researcher")
    assert config.proxy_listen == (ip("10.214.3.2"), 3128)
    assert config.control_listen == (ip("172.30.0.7"), 3129)
    assert config.tls_ports == frozenset({443, 8443})
    assert set(config.own_networks) == {
        net("0.0.0.0/32"),
        net("::/128"),
        net("10.214.3.0/24"),
        net("172.30.0.0/16"),
        net("10.214.3.2/32"),
        net("172.30.0.7/32"),
    }
    assert config.cell_networks == (net("10.214.0.0/16"),)


def test_defaults() -> None:
    config = GateConfig.from_env(
        {"AGENTCELL_GATE_TOKEN": "t", "AGENTCELL_CONTROL_LISTEN": "127.0.0.3:3129"}, local=LOCAL
    )
    assert config.proxy_listen == (ip("0.0.0.0"), 3128)
    assert config.tls_ports == frozenset({443})
    assert config.cell_networks == ()


def test_a_wildcard_listener_makes_every_local_address_the_gates_own() -> None:
    config = GateConfig.from_env({**BASE, "AGENTCELL_PROXY_LISTEN": "0.0.0.0:3128"}, local=LOCAL)
    for address in LOCAL:
        assert net(address) in config.own_networks


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"AGENTCELL_GATE_TOKEN": ""}, "AGENTCELL_GATE_TOKEN is required"),
        ({"AGENTCELL_CONTROL_LISTEN": ""}, "AGENTCELL_CONTROL_LISTEN is required"),
        ({"AGENTCELL_OWN_NETWORKS": "10.0.0.0/8,nope"}, "AGENTCELL_OWN_NETWORKS: 'nope'"),
        ({"AGENTCELL_CELL_NETWORKS": "10.213.0.0/33"}, "AGENTCELL_CELL_NETWORKS: '10.213.0.0/33'"),
        ({"AGENTCELL_TLS_PORTS": "443,0"}, "AGENTCELL_TLS_PORTS: port 0 is out of range"),
        ({"AGENTCELL_PROXY_LISTEN": "localhost:3128"}, "AGENTCELL_PROXY_LISTEN"),
    ],
)
def test_from_env_refuses_an_incomplete_environment(env: dict[str, str], says: str) -> None:
    with pytest.raises(SidecarConfigError, match=says):
        GateConfig.from_env({**BASE, **env}, local=LOCAL)


def test_the_config_never_shows_its_token() -> None:
    config = GateConfig.from_env(BASE, local=LOCAL)
    assert "s3cret-token" not in repr(config)
    assert "s3cret-token" not in str(config)


# -- the process at start ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"AGENTCELL_GATE_TOKEN": ""}, "AGENTCELL_GATE_TOKEN is required"),
        ({"AGENTCELL_CONTROL_LISTEN": "subnet:10.254.254.0/24:0"}, "no address inside"),
        ({"AGENTCELL_PROXY_LISTEN": "taken"}, "cannot start: proxy port"),
    ],
)
def test_the_gate_refuses_to_start_with_a_clear_message(env: dict[str, str], says: str) -> None:
    taken = socket.create_server(("127.0.0.2", 0))
    if env.get("AGENTCELL_PROXY_LISTEN") == "taken":
        env = {"AGENTCELL_PROXY_LISTEN": f"127.0.0.2:{taken.getsockname()[1]}"}
    with taken:
        result = subprocess.run(
            [sys.executable, "-m", "agentcell.gate.egress"],
            env=gate_env(**env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""


def test_the_control_port_binds_to_its_own_address_inside_a_subnet() -> None:
    gate = wait_started(start_gate(gate_env(AGENTCELL_CONTROL_LISTEN="subnet:127.0.0.0/8:0")))
    try:
        assert gate.control[0] == "127.0.0.1"
        assert gate.call("GET", "/healthz", token=None) == (200, {"status": "ok"})
    finally:
        assert gate.stop() == 0
    assert os.path.exists("/proc/net/fib_trie")
