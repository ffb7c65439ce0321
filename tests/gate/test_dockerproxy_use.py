"""Ordinary Docker work through the proxy, with the stock CLI and raw HTTP (real engine)."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
from collections.abc import Iterator

import pytest
from test_dockerproxy_support import (
    DOCKER,
    IMAGE,
    Proxy,
    World,
    engine_inspect,
    live_world,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield from live_world()


@pytest.fixture(scope="module")
def proxy(world: World) -> Proxy:
    return world.proxy("use")


def test_run_ps_logs_exec_rm(proxy: Proxy) -> None:
    rc, out = proxy.docker("run", "-d", IMAGE)
    assert rc == 0, out
    cid = out.strip()
    rc, out = proxy.docker("ps", "--no-trunc", "-q")
    assert rc == 0 and cid in out.split()
    rc, out = proxy.docker("logs", cid)
    assert rc == 0, out
    rc, out = proxy.docker("exec", cid, "sh", "-c", "echo $((6*7)); id -u")
    assert rc == 0 and out.split() == ["42", "10001"], out
    rc, out = proxy.docker("run", "--rm", IMAGE, "echo", "ran-attached")
    assert rc == 0 and "ran-attached" in out, out
    rc, out = proxy.docker("rm", "-f", cid)
    assert rc == 0, out
    rc, out = proxy.docker("ps", "-aq")
    assert cid[:12] not in out
    proxy.record(lambda r: r.get("rule") == "container.remove", "the remove")
    allowed = [r for r in proxy.records if r.get("decision") == "allow"]
    assert {r["rule"] for r in allowed} >= {"container.create", "exec.start", "container.remove"}
    for r in proxy.records:
        assert set(r) == {
            "time", "tenant", "cell", "method", "path", "object",
            "decision", "reason", "rule", "status", "duration_ms",
        }  # fmt: skip


def test_children_come_out_hardened(proxy: Proxy) -> None:
    rc, out = proxy.docker("run", "-d", "--name", f"{proxy.tenant}-hard", IMAGE)
    assert rc == 0, out
    doc = engine_inspect(out.strip())
    host, config = doc["HostConfig"], doc["Config"]
    assert config["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["Privileged"] is False
    assert "no-new-privileges" in " ".join(host["SecurityOpt"])
    assert host["NetworkMode"] == proxy.network
    assert list(doc["NetworkSettings"]["Networks"]) == [proxy.network]
    assert host["PidsLimit"] and host["Memory"] and host["NanoCpus"]
    assert config["Labels"]["agentcell.tenant"] == proxy.tenant
    assert config["Labels"]["agentcell.cell"] == proxy.cell
    assert config["Labels"]["agentcell.role"] == "child"
    assert not host["Binds"] and not host["PortBindings"]
    proxy.docker("rm", "-f", doc["Id"])


def _pty_run(args: list[str], env: dict[str, str], stdin: bytes) -> bytes:
    master, slave = os.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    os.write(master, stdin)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_interactive_exec_through_a_pty(proxy: Proxy) -> None:
    _, out = proxy.docker("run", "-d", IMAGE)
    cid = out.strip()
    env = {**os.environ, "DOCKER_HOST": proxy.host}
    out_bytes = _pty_run([DOCKER, "exec", "-it", cid, "sh"], env, b"echo $((6*7))-tty; tty; exit\n")
    assert b"42-tty" in out_bytes and b"/dev/pts/" in out_bytes, out_bytes
    out_bytes = _pty_run(
        [DOCKER, "run", "--rm", "-it", IMAGE, "sh", "-c", "echo run-$((6*7)); tty"], env, b""
    )
    assert b"run-42" in out_bytes and b"/dev/pts/" in out_bytes, out_bytes
    proxy.record(lambda r: r["status"] == 101 and r["rule"] == "exec.start", "exec upgrade")
    proxy.record(lambda r: r["status"] == 101 and r["rule"] == "container.attach", "attach")
    proxy.docker("rm", "-f", cid)


def test_raw_upgrade_relays_both_ways(proxy: Proxy) -> None:
    _, out = proxy.docker("run", "-d", IMAGE)
    cid = out.strip()
    made = proxy.request(
        "POST",
        f"/containers/{cid}/exec",
        json.dumps(
            {"AttachStdin": True, "AttachStdout": True, "Tty": True, "Cmd": ["sh"]}
        ).encode(),
    )
    assert made.status == 201, made
    exec_id = made.json()["Id"]
    body = b'{"Detach":false,"Tty":true}'
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(
            f"POST /v1.41/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 101"), data
        sock.sendall(b"echo up-$((20+22)); exit\n")
        while chunk := sock.recv(4096):
            data += chunk
    assert b"up-42" in data, data
    proxy.docker("rm", "-f", cid)


def test_info_is_scrubbed_and_version_answers(proxy: Proxy) -> None:
    info = proxy.request("GET", "/v1.41/info")
    assert info.status == 200
    doc = info.json()
    assert doc["Containers"] == 0 and "Name" not in doc and "DockerRootDir" not in doc
    assert proxy.request("GET", "/version").status == 200
    ping = proxy.request("GET", "/_ping")
    assert ping.status == 200 and ping.body == b"OK"
