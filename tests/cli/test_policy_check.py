"""`agentcell policy check`: the gate's decision, offline, from a spec file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SPEC = """
apiVersion: agentcell/v1
kind: Tenant
metadata: {name: acme}
spec:
  egress:
    deny: [{host: blocked.example.com}]
---
apiVersion: agentcell/v1
kind: Agent
metadata: {name: researcher, tenant: acme}
spec:
  image: agentcell/demo-agent:latest
  egress:
    allow:
      - {host: api.example.com, ports: [443]}
      - {host: "*.example.com"}
      - {cidr: 198.51.100.0/24, ports: [80]}
    resolve: {static.example.com: [8.8.8.8], inside.example.com: [10.0.0.5]}
"""


def check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return subprocess.run(
        [sys.executable, "-m", "agentcell.cli.main", "policy", "check", "-f", str(spec), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("target", "extra", "code", "says"),
    [
        ("https://api.example.com/v1", [], 0, "its addresses are not checked"),
        (
            "https://api.example.com/v1",
            ["--resolve", "api.example.com=1.1.1.1"],
            0,
            "reason: allowed",
        ),
        ("198.51.100.7:443", [], 1, "reason: no rule allows this port"),
        ("http://static.example.com/", [], 0, "-> 8.8.8.8"),
        ("http://inside.example.com/", [], 1, "reason: address not public"),
        ("http://blocked.example.com/", [], 1, "reason: denied by rule"),
        ("http://evil.test/", [], 1, "reason: no rule allows this host"),
        ("http://198.51.100.7/", [], 0, "reason: allowed"),
        ("http://127.1/", [], 1, "reason: no rule allows this host"),
        ("http://user@api.example.com/", [], 1, "invalid host: host has userinfo"),
    ],
    ids=[
        "allowed by name, addresses not given",
        "allowed with the addresses given",
        "a port the rule does not list",
        "a resolve entry of the policy answers",
        "a name resolving inside",
        "the tenant's deny rule wins",
        "no rule for the host",
        "a cidr rule allows a documentation address",
        "a loopback spelling",
        "userinfo in the authority",
    ],
)
def test_policy_check(tmp_path: Path, target: str, extra: list[str], code: int, says: str) -> None:
    res = check(tmp_path, target, *extra)
    assert res.returncode == code, res.stdout + res.stderr
    assert says in res.stdout + res.stderr


def test_bad_targets_and_resolve_answers_say_what_is_valid(tmp_path: Path) -> None:
    res = check(tmp_path, "ftp://x/")
    assert res.returncode == 2
    assert "only http:// and https:// URLs, or HOST:PORT" in res.stderr
    res = check(tmp_path, "api.example.com")
    assert res.returncode == 2
    assert "neither a URL nor HOST:PORT" in res.stderr
    res = check(tmp_path, "api.example.com:443", "--resolve", "api.example.com=nope")
    assert res.returncode == 2
    assert "write NAME=IP[,IP]" in res.stderr
