"""Fixtures for the egress gate tests; the harness itself is ``gatelive.py``."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
from gatelive import (
    TOKEN,
    UPSTREAM,
    EchoServer,
    Gate,
    Upstreams,
    UpstreamServer,
    gate_env,
    make_ca,
    start_gate,
    wait_started,
)


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    ca, leaf, key = make_ca(tmp_path_factory.mktemp("ca"))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(leaf, key)
    servers = [UpstreamServer(), UpstreamServer(), UpstreamServer(tls)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    http_, trap, https = servers
    http_.redirect_to = f"http://{UPSTREAM}:{trap.port}/stolen"
    echo = (EchoServer(), EchoServer())
    yield Upstreams(http_, trap, https, echo, ca)
    for s in servers:
        s.shutdown()
        s.server_close()
    for e in echo:
        e.sock.close()


@pytest.fixture
def make_gate(upstreams: Upstreams) -> Iterator[Callable[..., Gate]]:
    """Start gates (``make_gate(**env)``); each is stopped and checked at the end."""
    gates: list[Gate] = []

    def make(**overrides: str) -> Gate:
        overrides.setdefault("AGENTCELL_TLS_PORTS", f"443,{upstreams.https.port}")
        gate = wait_started(start_gate(gate_env(**overrides)))
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        assert gate.stop() == 0, gate.log
        text = "\n".join(gate.log) + b"".join(gate.raw_stdout).decode()
        assert TOKEN not in text, "the gate printed its token"
        assert not any("Traceback" in line for line in gate.log), gate.log
        assert not any("not json" in r for r in gate.records), "stdout carries records only"


@pytest.fixture
def gate(make_gate: Callable[..., Gate]) -> Gate:
    return make_gate()


@pytest.fixture
def loaded(gate: Gate, upstreams: Upstreams) -> Gate:
    gate.load(upstreams.policy())
    return gate
