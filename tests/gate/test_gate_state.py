"""GateState: resolution, fail-closed decisions, and reload semantics for open flows.

The resolver is a fake here (nothing is looked up); the decision function is real.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from agentcell.gate._records import Record
from agentcell.gate.egress import _state
from agentcell.gate.egress._state import Flow, GateState
from agentcell.policy._egress import EgressDecision, EgressPolicy

OWN = [ipaddress.ip_network("127.0.0.2/32")]
LOOP = ipaddress.ip_address("127.0.0.1")


def policy(**doc: Any) -> EgressPolicy:
    return EgressPolicy.from_json(doc)


ALLOW_NAMES = policy(
    allow=[
        {"host": "dns.allowed.test", "ports": [80]},
        {"host": "static.allowed.test", "ports": [80]},
        {"cidr": "127.0.0.1/32", "ports": [80]},
    ],
    resolve={"static.allowed.test": ["127.0.0.1"]},
)


class FakeResolver:
    """Answers from a table; records what it was asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int, family: int, kind: int) -> Sequence[Any]:
        self.asked.append((host, port))
        answer = self.answers[host]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, threading.Event):
            answer.wait(10)
            return []
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answer]


def state_with(answers: dict[str, Any], timeout: float = 5.0) -> tuple[GateState, FakeResolver]:
    resolver = FakeResolver(answers)
    return GateState(OWN, resolver=resolver, resolve_timeout=timeout), resolver


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_nothing_is_allowed_before_a_policy_loads() -> None:
    state, resolver = state_with({})
    decision, generation = asyncio.run(state.decide("static.allowed.test", 80))
    assert (decision.allow, decision.reason, generation) == (False, "no policy", 0)
    assert not state.loaded
    assert resolver.asked == []


def test_a_resolve_entry_answers_without_a_lookup() -> None:
    state, resolver = state_with({})
    state.load(ALLOW_NAMES, "d1")
    decision, generation = asyncio.run(state.decide("Static.Allowed.Test.", 80))
    assert (decision.allow, decision.address, generation) == (True, LOOP, 1)
    assert resolver.asked == []
    assert (state.loaded, state.digest) == (True, "d1")


def test_a_name_is_resolved_by_its_normalised_form_and_decided_again() -> None:
    state, resolver = state_with({"dns.allowed.test": ["127.0.0.1", "127.0.0.1"]})
    state.load(ALLOW_NAMES, "d1")
    decision, _ = asyncio.run(state.decide("DNS.allowed.test.", 80))
    assert (decision.allow, decision.reason, decision.address) == (True, "allowed", LOOP)
    assert resolver.asked == [("dns.allowed.test", 80)]


def test_an_answer_mixing_public_and_private_addresses_is_denied() -> None:
    state, _ = state_with({"dns.allowed.test": ["127.0.0.1", "10.1.2.3"]})
    state.load(ALLOW_NAMES, "d1")
    decision, _ = asyncio.run(state.decide("dns.allowed.test", 80))
    assert (decision.allow, decision.reason) == (False, "address not public")


def test_a_name_resolving_into_the_subnet_pool_is_denied_before_any_dial() -> None:
    """The pool is every cell's; a policy allowing it (here 127.0.0.1) still never reaches it."""
    resolver = FakeResolver({"dns.allowed.test": ["127.0.0.1"]})
    state = GateState(OWN, cells=[ipaddress.ip_network("127.0.0.0/24")], resolver=resolver)
    state.load(ALLOW_NAMES, "d1")
    for host in ("dns.allowed.test", "static.allowed.test", "127.0.0.1"):
        decision, _ = asyncio.run(state.decide(host, 80))
        assert (decision.allow, decision.reason) == (False, "address is another cell's"), host


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "resolution failed"),
        (OSError("resolver broke"), "resolution failed"),
        ([], "resolution failed"),
        (["not-an-address"], "resolution failed"),
    ],
)
def test_a_failed_lookup_denies(answer: Any, reason: str) -> None:
    state, _ = state_with({"dns.allowed.test": answer})
    state.load(ALLOW_NAMES, "d1")
    decision, _ = asyncio.run(state.decide("dns.allowed.test", 80))
    assert (decision.allow, decision.reason) == (False, reason)
    assert decision.rule.startswith("allow[0] host dns.allowed.test")


def test_a_hanging_lookup_times_out_and_denies() -> None:
    stuck = threading.Event()
    state, _ = state_with({"dns.allowed.test": stuck}, timeout=0.2)
    state.load(ALLOW_NAMES, "d1")
    try:
        decision, _ = asyncio.run(state.decide("dns.allowed.test", 80))
    finally:
        stuck.set()
    assert (decision.allow, decision.reason) == (False, "resolution timed out")


def test_a_decision_function_that_raises_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> EgressDecision:
        raise RuntimeError("bug")

    state, _ = state_with({})
    state.load(ALLOW_NAMES, "d1")
    monkeypatch.setattr(_state, "decide_egress", broken)
    decision, _ = asyncio.run(state.decide("static.allowed.test", 80))
    assert (decision.allow, decision.reason) == (False, "internal error")


def test_an_allow_without_an_address_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    state, _ = state_with({})
    state.load(ALLOW_NAMES, "d1")
    monkeypatch.setattr(_state, "decide_egress", lambda *a, **k: EgressDecision(True, "allowed"))
    decision, _ = asyncio.run(state.decide("static.allowed.test", 80))
    assert (decision.allow, decision.reason) == (False, "internal error")


def flow(sock: socket.socket, host: str = "static.allowed.test", port: int = 80) -> Flow:
    return Flow(sock, Record(), host, port, LOOP)


def test_admit_redecides_a_flow_decided_before_a_reload(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    state, _ = state_with({})
    state.load(ALLOW_NAMES, "d1")
    decision, generation = asyncio.run(state.decide("static.allowed.test", 80))
    assert decision.allow
    state.load(policy(allow=[{"host": "other.test"}]), "d2")
    refused = state.admit(flow(pair[0]), generation)
    assert refused is not None
    assert refused.reason == "no rule allows this host"
    assert state.open_flows() == 0
    _, generation = asyncio.run(state.decide("static.allowed.test", 80))
    state.load(ALLOW_NAMES, "d3")  # allows it again
    assert state.admit(flow(pair[0]), generation) is None
    assert state.open_flows() == 1


def test_a_reload_closes_the_flows_it_no_longer_allows_and_only_those() -> None:
    state, _ = state_with({})
    state.load(ALLOW_NAMES, "d1")
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    with a, a_peer, b, b_peer:
        by_name, by_address = flow(a), flow(b, host="127.0.0.1")
        for f in (by_name, by_address):
            assert state.admit(f, 1) is None
        closed = state.load(
            policy(allow=[{"cidr": "127.0.0.1/32", "ports": [80]}], resolve={}), "d2"
        )
        assert closed == 1
        assert (by_name.end_reason, by_address.end_reason) == ("closed by policy reload", None)
        assert a_peer.recv(10) == b""  # shut down: the peer sees the end
        b_peer.sendall(b"alive")
        assert b.recv(10) == b"alive"
        assert state.open_flows() == 1


def test_a_reload_that_sends_a_name_elsewhere_closes_its_flow(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    state, _ = state_with({})
    state.load(ALLOW_NAMES, "d1")
    f = flow(pair[0])
    assert state.admit(f, 1) is None
    moved = ALLOW_NAMES.to_json()
    moved["resolve"] = {"static.allowed.test": ["127.0.0.9"]}
    moved["allow"].append({"cidr": "127.0.0.9/32", "ports": [80]})
    assert state.load(EgressPolicy.from_json(moved), "d2") == 1
    assert f.end_reason == "closed by policy reload"


def test_a_flow_closed_before_its_upstream_is_attached_shuts_the_upstream(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    f = flow(pair[0])
    f.close("closed by policy reload")
    up, up_peer = socket.socketpair()
    with up, up_peer:
        assert not f.attach(up)
        assert up_peer.recv(10) == b""


def test_decisions_without_a_lookup_are_reused_until_the_next_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = _state.decide_egress  # type: ignore[attr-defined]  # patched where it is used

    def counting(policy: EgressPolicy, host: str, *args: Any, **kwargs: Any) -> EgressDecision:
        calls.append(host)
        return real(policy, host, *args, **kwargs)

    monkeypatch.setattr(_state, "decide_egress", counting)
    state, resolver = state_with({"dns.allowed.test": ["127.0.0.1"]})
    state.load(ALLOW_NAMES, "d1")
    for _ in range(3):
        assert asyncio.run(state.decide("static.allowed.test", 80))[0].allow
        assert not asyncio.run(state.decide("evil.test", 80))[0].allow
    assert calls == ["static.allowed.test", "evil.test"]
    for _ in range(2):  # a looked-up answer is never reused: the name may move
        assert asyncio.run(state.decide("dns.allowed.test", 80))[0].allow
    assert len(resolver.asked) == 2
    state.load(policy(allow=[{"host": "other.test"}]), "d2")
    decision, generation = asyncio.run(state.decide("static.allowed.test", 80))
    assert (decision.allow, decision.reason, generation) == (False, "no rule allows this host", 2)
