"""Harness for the docker proxy's live tests: cells, proxies, raw HTTP, the docker CLI.

No tests here. Everything the harness creates directly on the engine carries
``agentcell.test=dockerproxy``; children created through a proxy cannot (the proxy
refuses labels in the ``agentcell.`` namespace) and are found by their test tenant.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import livecell

DOCKER = "/usr/local/bin/docker"
ENGINE = "/var/run/docker.sock"
IMAGE = "agentcell/demo-agent:latest"
TEST_LABEL = "agentcell.test=dockerproxy"
_STARTED = re.compile(r"docker proxy started: listen=([0-9.]+):(\d+)")


def docker(*args: str, host: str | None = None, check: bool = True) -> str:
    """Run the stock docker CLI: on the engine directly, or through a proxy (``host``)."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    if host is not None:
        env["DOCKER_HOST"] = host
    done = subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.returncode} {done.stderr}")
    return done.stdout if check else done.stdout + done.stderr


def docker_rc(*args: str, host: str) -> tuple[int, str]:
    env = {**os.environ, "DOCKER_HOST": host}
    done = subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout + done.stderr


def engine_inspect(ident: str) -> dict[str, Any]:
    doc = json.loads(docker("inspect", "--type", "container", ident))
    assert isinstance(doc, list)
    result: dict[str, Any] = doc[0]
    return result


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(sock: socket.socket) -> Reply:
    """Read one response on a ``Connection: close`` exchange: to the end of the stream."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, body = out + body[:size], body[size + 2 :]
        body = out
    return Reply(status, headers, body)


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    tenant: str
    cell: str
    network: str
    port: int = 0
    log: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def record(self, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The newest record matching ``pred``, waiting for it: the proxy writes a record
        after it has answered, so it may land a moment after the reply."""

        def find() -> dict[str, Any] | None:
            return next((r for r in reversed(self.records) if pred(r)), None)

        found = livecell.wait_for(find, 10, f"a decision record: {what}")
        assert isinstance(found, dict)
        return found

    def send(self, raw: bytes) -> Reply:
        """Send raw bytes (a whole request or several) and read to the end of the stream.

        The proxy may answer and close before all of a refused body is sent (a body over
        1 MiB): sending then fails, and the answer is still there to read."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            try:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError, OSError) as e:
                if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise
            return read_reply(sock)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return self.send(head.encode() + b"\r\n" + (body or b""))

    def create(self, body: dict[str, Any] | bytes, version: str = "/v1.41") -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", f"{version}/containers/create", raw)

    def docker(self, *args: str) -> tuple[int, str]:
        return docker_rc(*args, host=self.host)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (a condition, never a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def start_proxy(tenant: str, cell: str, network: str, **env: str) -> Proxy:
    full = {
        "PATH": os.environ.get("PATH", ""),
        "AGENTCELL_PROXY_LISTEN": "127.0.0.1:0",
        "AGENTCELL_ENGINE_SOCKET": ENGINE,
        "AGENTCELL_TENANT": tenant,
        "AGENTCELL_CELL": cell,
        "AGENTCELL_NETWORK": network,
        "AGENTCELL_LIMIT_CONTAINERS": "3",
        "AGENTCELL_LIMIT_CPUS": "2",
        "AGENTCELL_LIMIT_MEMORY": "1g",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentcell.gate.dockerproxy"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proxy = Proxy(proc, tenant, cell, network)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                proxy.records.append(json.loads(line))
            except ValueError:
                proxy.records.append({"not json": line.decode(errors="replace")})

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            proxy.log.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()

    def started() -> re.Match[str] | None:
        if proc.poll() is not None:
            pytest.fail(f"proxy exited {proc.returncode}: {proxy.log}")
        return next((m for line in list(proxy.log) if (m := _STARTED.search(line))), None)

    m = wait_for(started, 15, "the docker proxy to start")
    proxy.port = int(m[2])
    return proxy


def remove_tenant(tenant: str) -> None:
    """Remove every container and volume of a test tenant, and what the harness made."""
    for label in (f"agentcell.tenant={tenant}", f"agentcell.test-run={tenant}"):
        ids = docker("ps", "-aq", "--filter", f"label={label}").split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        vols = docker("volume", "ls", "-q", "--filter", f"label={label}").split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"label={label}").split()
        if nets:
            docker("network", "rm", *nets, check=False)


@dataclass
class World:
    """One test tenant: proxies for its cells, and a way to make foreign objects."""

    tenant: str
    proxies: list[Proxy] = field(default_factory=list)

    def network(self, cell: str, tenant: str | None = None) -> str:
        name = f"dp-{self.tenant}-{cell}"
        docker(
            "network", "create", "--internal",
            "--label", TEST_LABEL,
            "--label", f"agentcell.test-run={self.tenant}",
            "--label", f"agentcell.tenant={tenant or self.tenant}",
            "--label", f"agentcell.cell={cell}",
            "--label", "agentcell.role=network",
            name,
        )  # fmt: skip
        return name

    def proxy(self, cell: str, **env: str) -> Proxy:
        proxy = start_proxy(self.tenant, cell, self.network(cell), **env)
        self.proxies.append(proxy)
        return proxy

    def foreign(self, name: str, *labels: str, start: bool = True) -> str:
        """A container made directly on the engine, owned by no proxy's cell."""
        args = ["--network", "none", "--label", TEST_LABEL]
        args += ["--label", f"agentcell.test-run={self.tenant}"]
        for label in labels:
            args += ["--label", label]
        verb = ["run", "-d"] if start else ["create"]
        return docker(*verb, "--name", name, *args, IMAGE).strip()


def live_world() -> Iterator[World]:
    """The body of each test module's ``world`` fixture: a tenant, torn down after."""
    w = World(tenant="dpt" + uuid.uuid4().hex[:8])
    yield w
    try:
        for proxy in w.proxies:
            assert proxy.stop() == 0, proxy.log
            assert not any("Traceback" in line for line in proxy.log), proxy.log
            assert not any("not json" in r for r in proxy.records), "stdout carries records only"
    finally:
        remove_tenant(w.tenant)
