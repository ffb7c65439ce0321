"""Live harness for the egress gate: the real process, real upstream servers, all on loopback.

The fixtures that use it are in ``conftest.py``.

Upstreams listen on 127.0.0.1 (the policies allow them with ``cidr: 127.0.0.1/32``); the
gate's proxy port listens on 127.0.0.2 and its control port on 127.0.0.3, both its own
addresses, so requests to the gate itself are denied. ``api.allowed.test`` reaches the
HTTPS upstream only through the policy's ``resolve``: no test name is ever looked up.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from livecell import wait_for

GATE_HOST = "127.0.0.2"
CONTROL_HOST = "127.0.0.3"
UPSTREAM = "127.0.0.1"
TLS_NAME = "api.allowed.test"
TOKEN = "tok-" + secrets.token_hex(16)
PROXY_ENV = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")


# -- upstream servers ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: UpstreamServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        self.server.hits.append(self.path)
        body = self._body()
        path, _, query = self.path.partition("?")
        if path == "/redirect":
            self._send(302, b"", {"Location": self.server.redirect_to})
        elif path == "/big":
            n = int(query.split("=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 256
            while n:
                chunk = block[: min(n, len(block))]
                self.wfile.write(chunk)
                n -= len(chunk)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/hold":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"12345")
            self.wfile.flush()
            self.server.release.wait(30)
            with contextlib.suppress(OSError):
                self.wfile.write(b"67890")
        else:
            doc = {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
                "tls": isinstance(self.connection, ssl.SSLSocket),
            }
            self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__((UPSTREAM, 0), _Handler)
        self.tls = tls
        self.hits: list[str] = []
        self.accepted = 0
        self.redirect_to = ""
        self.release = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class EchoServer:
    """Raw TCP: echoes every byte back until the peer closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server((UPSTREAM, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


@dataclass
class Upstreams:
    http: UpstreamServer
    trap: UpstreamServer
    https: UpstreamServer
    echo: tuple[EchoServer, EchoServer]
    ca: Path

    def policy(self, *, echo: tuple[int, ...] = (0, 1), **extra: Any) -> dict[str, Any]:
        """The test policy: api.allowed.test and 127.0.0.1 on the upstreams' ports."""
        allow: list[dict[str, Any]] = [
            {"host": TLS_NAME, "ports": [self.http.port, self.https.port]},
            {"cidr": "127.0.0.1/32", "ports": [self.http.port, self.https.port]},
            *({"cidr": "127.0.0.1/32", "ports": [self.echo[i].port]} for i in echo),
            *extra.pop("allow", []),
        ]
        return {
            "allow": allow,
            "deny": extra.pop("deny", []),
            "resolve": {TLS_NAME: ["127.0.0.1"], **extra.pop("resolve", {})},
        }


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a leaf for api.allowed.test, made with the openssl CLI."""
    ca_key, ca, key, csr, leaf = (
        directory / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem")
    )
    ext = directory / "leaf.ext"
    ext.write_text(
        f"subjectAltName=DNS:{TLS_NAME}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run: dict[str, Any] = {"check": True, "capture_output": True}
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=agentcell gate test CA"],
        **run,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={TLS_NAME}"], **run
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", leaf, "-days", "2", "-extfile", ext],
        **run,
    )  # fmt: skip
    return ca, leaf, key


# -- the gate process ----------------------------------------------------------------------------


@dataclass
class Gate:
    """A running ``python -m agentcell.gate.egress`` and what it has said."""

    proc: subprocess.Popen[bytes]
    records: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    raw_stdout: list[bytes] = field(default_factory=list)
    proxy: tuple[str, int] = ("", 0)
    control: tuple[str, int] = ("", 0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy[0]}:{self.proxy[1]}"

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(*self.control, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            data = None
            if body is not None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
        finally:
            conn.close()

    def load(self, policy: Any) -> str:
        status, body = self.call("PUT", "/v1/policy", policy)
        assert status == 200, body
        return str(body["digest"])

    def wait_record(
        self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10
    ) -> dict[str, Any]:
        found = wait_for(lambda: next((r for r in self.records if pred(r)), None), timeout, what)
        assert isinstance(found, dict)
        return found

    def said(self, *fragments: str, timeout: float = 10) -> str:
        """The first stderr line holding every fragment (waits: a thread reads stderr)."""
        found = wait_for(
            lambda: next((ln for ln in list(self.log) if all(f in ln for f in fragments)), None),
            timeout,
            f"the gate to log {fragments}",
        )
        assert isinstance(found, str)
        return found

    def connect(self) -> socket.socket:
        return socket.create_connection(self.proxy, timeout=10)

    def fds(self, kind: str = "") -> int:
        """Open descriptors, or only those whose link starts with ``kind`` (socket, pipe)."""
        count = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            count += target.startswith(kind)
        return count

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def gate_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV}
    env.update(
        {
            "AGENTCELL_TENANT": "acme",
            "AGENTCELL_CELL": "researcher",
            "AGENTCELL_PROXY_LISTEN": f"{GATE_HOST}:0",
            "AGENTCELL_CONTROL_LISTEN": f"{CONTROL_HOST}:0",
            "AGENTCELL_GATE_TOKEN": TOKEN,
            "AGENTCELL_OWN_NETWORKS": f"{GATE_HOST}/32,{CONTROL_HOST}/32",
            "AGENTCELL_TLS_PORTS": "443",
        }
    )
    env.update(overrides)
    return env


_STARTED = re.compile(r"started: proxy=(\S+):(\d+) control=(\S+):(\d+)")


def start_gate(env: dict[str, str]) -> Gate:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentcell.gate.egress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    gate = Gate(proc)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            gate.raw_stdout.append(line)
            try:
                gate.records.append(json.loads(line))
            except ValueError:
                gate.records.append({"not json": line.decode(errors="replace")})

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            gate.log.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    return gate


def wait_started(gate: Gate) -> Gate:
    def started() -> re.Match[str] | None:
        if gate.proc.poll() is not None:
            pytest.fail(f"gate exited {gate.proc.returncode}: {gate.log}")
        return next((m for line in gate.log if (m := _STARTED.search(line))), None)

    m = wait_for(started, 15, "the gate to start")
    assert isinstance(m, re.Match)
    gate.proxy = (m[1], int(m[2]))
    gate.control = (m[3], int(m[4]))
    return gate


# -- clients -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    head: bytes
    body: bytes


def read_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """Read a response head; (status, head, bytes already read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def exchange(gate: Gate, request: bytes) -> Reply:
    """Send raw bytes to the proxy port, read the whole answer until the gate closes."""
    with gate.connect() as s:
        s.sendall(request)
        status, head, rest = read_head(s)
        while chunk := s.recv(65536):
            rest += chunk
        return Reply(status, head, rest)


def open_tunnel(gate: Gate, authority: str, extra: bytes = b"") -> tuple[socket.socket, int]:
    """CONNECT; returns the socket and the status (the socket is open only on 200)."""
    s = gate.connect()
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode() + extra)
    status, _, rest = read_head(s)
    assert status != 200 or not rest
    return s, status


def curl(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV}
    env["NO_PROXY"] = ""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-x", gate.proxy_url, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
