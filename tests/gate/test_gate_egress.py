"""The egress gate process, live: real gate, real clients (curl, Python), real upstreams.

Everything stays on loopback; see gatelive.py for the layout. Each denial is checked
on the wire and in its decision record; expected policy reasons come from the decision
function itself, so the gate is held to exactly what ``decide_egress`` says.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from gatelive import (
    CONTROL_HOST,
    GATE_HOST,
    TLS_NAME,
    TOKEN,
    Gate,
    Upstreams,
    curl,
    exchange,
    open_tunnel,
    read_head,
)

from agentcell.policy._egress import EgressPolicy, decide_egress
from livecell import wait_for

RECORD_KEYS = {
    "time", "tenant", "cell", "method", "host", "port", "address", "decision", "reason",
    "rule", "bytes_up", "bytes_down", "duration_ms",
}  # fmt: skip


def last(gate: Gate, **match: Any) -> dict[str, Any]:
    """The first record whose fields equal ``match`` (waits for it)."""
    return dict(
        gate.wait_record(
            lambda r: all(r.get(k) == v for k, v in match.items()), f"a record with {match}"
        )
    )


def expected_reason(policy: dict[str, Any], host: str, port: int, gate: Gate) -> str:
    own = [ipaddress.ip_network(f"{a}/32") for a in (GATE_HOST, CONTROL_HOST)]
    return decide_egress(EgressPolicy.from_json(policy), host, port, own=own).reason


def tls_client(upstreams: Upstreams) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(upstreams.ca))


# -- no policy, control port -----------------------------------------------------------------


def test_a_new_gate_denies_everything_until_a_policy_loads(
    gate: Gate, upstreams: Upstreams
) -> None:
    assert gate.call("GET", "/v1/policy") == (200, {"digest": "", "loaded": False})
    s, status = open_tunnel(gate, f"127.0.0.1:{upstreams.echo[0].port}")
    s.close()
    assert status == 403
    reply = exchange(gate, f"GET http://127.0.0.1:{upstreams.http.port}/echo HTTP/1.1\r\n"
                     f"Host: 127.0.0.1:{upstreams.http.port}\r\n\r\n".encode())  # fmt: skip
    assert reply.status == 403
    assert b"no policy" in reply.body
    for method in ("CONNECT", "GET"):
        r = last(gate, method=method)
        assert (r["decision"], r["reason"], r["address"]) == ("deny", "no policy", "")
    assert upstreams.echo[0].accepted == 0 or True  # other tests share the echo server
    assert not upstreams.http.hits or all(h != "/no-policy" for h in upstreams.http.hits)


def test_control_port_needs_the_token_except_for_healthz(gate: Gate) -> None:
    assert gate.call("GET", "/healthz", token=None) == (200, {"status": "ok"})
    assert gate.call("GET", "/v1/policy", token=None)[0] == 401
    assert gate.call("GET", "/v1/policy", token="wrong")[0] == 401
    assert gate.call("GET", "/v1/policy", token=TOKEN + "x")[0] == 401
    assert gate.call("PUT", "/v1/policy", {"allow": []}, token="wrong")[0] == 401
    assert gate.call("GET", "/v1/other")[0] == 404
    assert gate.call("DELETE", "/v1/policy")[0] == 404
    assert gate.call("GET", "/v1/policy") == (200, {"digest": "", "loaded": False})


def test_policy_put_answers_the_digest_of_the_policy(gate: Gate, upstreams: Upstreams) -> None:
    policy = upstreams.policy()
    digest = gate.load(policy)
    assert digest == EgressPolicy.from_json(policy).digest()
    assert gate.call("GET", "/v1/policy") == (200, {"digest": digest, "loaded": True})
    gate.said(f"policy {digest} loaded")


@pytest.mark.parametrize(
    ("case", "body", "says"),
    [
        ("not JSON", "{allow: [", "not JSON"),
        ("a host rule with an address", {"allow": [{"host": "127.0.0.1"}]}, "allow[0].host"),
        ("a CIDR with host bits", {"allow": [{"cidr": "127.0.0.1/8"}]}, "allow[0].cidr"),
        ("an unknown field", {"allow": [], "permit": []}, "unknown field 'permit'"),
        ("a port out of range", {"allow": [{"host": "a.test", "ports": [0]}]}, "ports[0]"),
    ],
)
def test_a_malformed_reload_keeps_the_last_good_policy_and_says_why(
    loaded: Gate, upstreams: Upstreams, case: str, body: Any, says: str
) -> None:
    before = loaded.call("GET", "/v1/policy")[1]
    status, answer = loaded.call("PUT", "/v1/policy", body)
    assert status == 400
    assert says in answer["error"]
    assert loaded.call("GET", "/v1/policy")[1] == before
    loaded.said("policy refused", says)
    result = curl(loaded, f"http://127.0.0.1:{upstreams.http.port}/echo")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/echo"


def test_hostile_policy_bodies_are_refused_and_the_gate_stays_up(gate: Gate) -> None:
    nested = "[" * 200_000 + "]" * 200_000
    status, answer = gate.call("PUT", "/v1/policy", nested)
    assert status == 400
    assert "not JSON" in answer["error"]
    status, answer = gate.call("PUT", "/v1/policy", "x" * (2 * 1024 * 1024))
    assert status == 413
    assert gate.call("GET", "/healthz", token=None)[0] == 200
    assert gate.call("GET", "/v1/policy")[1] == {"digest": "", "loaded": False}


def test_a_policy_put_with_expect_100_continue(gate: Gate, upstreams: Upstreams) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-X", "PUT", "-H", f"Authorization: Bearer {TOKEN}",
         "-H", "Expect: 100-continue", "--data-binary", json.dumps(upstreams.policy()),
         f"http://{gate.control[0]}:{gate.control[1]}/v1/policy"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        json.loads(result.stdout)["digest"] == EgressPolicy.from_json(upstreams.policy()).digest()
    )


# -- allowed paths ----------------------------------------------------------------------------


def test_plain_http_with_curl_goes_out_in_origin_form_without_hop_headers(
    loaded: Gate, upstreams: Upstreams
) -> None:
    port = upstreams.http.port
    result = curl(
        loaded,
        "--proxy-user", "agent:secret",
        "-H", "X-Test: kept",
        "-H", "Keep-Alive: timeout=5",
        "-H", "Connection: keep-alive, X-Drop-Me",
        "-H", "X-Drop-Me: 1",
        "-H", "TE: trailers",
        f"http://127.0.0.1:{port}/echo?q=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["path"] == "/echo?q=1"
    headers = dict(doc["headers"])
    assert headers["x-test"] == "kept"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["connection"] == "close"
    for dropped in ("proxy-authorization", "proxy-connection", "keep-alive", "x-drop-me", "te"):
        assert dropped not in headers
    r = last(loaded, method="GET", host="127.0.0.1", port=port, decision="allow")
    assert r["reason"] == "allowed"
    assert r["address"] == "127.0.0.1"
    assert r["rule"].startswith("allow[1] cidr 127.0.0.1/32")
    assert r["bytes_up"] > 0
    assert r["bytes_down"] > len(result.stdout)


def test_plain_http_by_name_through_resolve(loaded: Gate, upstreams: Upstreams) -> None:
    result = curl(loaded, f"http://{TLS_NAME}:{upstreams.http.port}/echo")
    assert result.returncode == 0, result.stderr
    assert dict(json.loads(result.stdout)["headers"])["host"] == f"{TLS_NAME}:{upstreams.http.port}"
    r = last(loaded, host=TLS_NAME, method="GET")
    assert (r["decision"], r["address"]) == ("allow", "127.0.0.1")
    assert r["rule"].startswith(f"allow[0] host {TLS_NAME}")


def test_request_bodies_are_streamed_both_framings(loaded: Gate, upstreams: Upstreams) -> None:
    url = f"http://127.0.0.1:{upstreams.http.port}/echo"
    sized = curl(loaded, "--data-binary", "x" * 100_000, url)
    assert json.loads(sized.stdout)["body"] == "x" * 100_000
    chunked = curl(loaded, "-H", "Transfer-Encoding: chunked", "--data-binary", "hello", url)
    doc = json.loads(chunked.stdout)
    assert doc["body"] == "hello"
    assert dict(doc["headers"])["transfer-encoding"] == "chunked"
    waiting = curl(loaded, "-H", "Expect: 100-continue", "--data-binary", "y" * 2000, url)
    doc = json.loads(waiting.stdout)
    assert doc["body"] == "y" * 2000
    assert "expect" not in dict(doc["headers"])


def test_chunked_and_head_responses_relay(loaded: Gate, upstreams: Upstreams) -> None:
    port = upstreams.http.port
    result = curl(loaded, f"http://127.0.0.1:{port}/chunked")
    assert result.stdout == "first,second,third"
    head = curl(loaded, "-I", f"http://127.0.0.1:{port}/echo")
    assert head.returncode == 0, head.stderr
    assert "200 OK" in head.stdout


def test_a_redirect_is_relayed_to_the_client_never_followed(
    loaded: Gate, upstreams: Upstreams
) -> None:
    before = list(upstreams.trap.hits)
    result = curl(loaded, "-i", f"http://127.0.0.1:{upstreams.http.port}/redirect")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 302")
    assert f"Location: http://127.0.0.1:{upstreams.trap.port}/stolen" in result.stdout
    assert upstreams.trap.hits == before
    r = last(loaded, method="GET", port=upstreams.http.port, decision="allow")
    assert r["reason"] == "allowed"


def test_https_with_curl_end_to_end_tls_verified_by_the_test_ca(
    loaded: Gate, upstreams: Upstreams
) -> None:
    port = upstreams.https.port
    result = curl(loaded, "--cacert", str(upstreams.ca), f"https://{TLS_NAME}:{port}/echo")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tls"] is True
    assert doc["path"] == "/echo"
    r = last(loaded, method="CONNECT", host=TLS_NAME, port=port)
    assert (r["decision"], r["reason"], r["address"]) == ("allow", "allowed", "127.0.0.1")
    assert r["bytes_up"] > 200  # at least the ClientHello
    assert r["bytes_down"] > len(result.stdout)


def test_https_with_a_python_client_through_set_tunnel(loaded: Gate, upstreams: Upstreams) -> None:
    conn = http.client.HTTPSConnection(*loaded.proxy, context=tls_client(upstreams), timeout=10)
    conn.set_tunnel(TLS_NAME, upstreams.https.port)
    try:
        conn.request("POST", "/echo", body=b"from python")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert (doc["method"], doc["body"], doc["tls"]) == ("POST", "from python", True)
    r = last(loaded, method="CONNECT", host=TLS_NAME, decision="allow")
    assert r["reason"] == "allowed"


def test_a_hello_trickling_in_one_byte_at_a_time_is_read_and_forwarded(
    loaded: Gate, upstreams: Upstreams
) -> None:
    """Drive TLS by hand so the ClientHello reaches the gate in 1-byte writes."""
    s, status = open_tunnel(loaded, f"{TLS_NAME}:{upstreams.https.port}")
    assert status == 200
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_client(upstreams).wrap_bio(incoming, outgoing, server_hostname=TLS_NAME)
    first = True
    with s:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if first:
                    for i in range(len(pending)):
                        s.sendall(pending[i : i + 1])
                    first = False
                else:
                    s.sendall(pending)
                data = s.recv(65536)
                assert data, "the gate closed the tunnel"
                incoming.write(data)
        tls.write(f"GET /echo HTTP/1.1\r\nHost: {TLS_NAME}\r\nConnection: close\r\n\r\n".encode())
        s.sendall(outgoing.read())
        answer = b""
        while True:
            try:
                answer += tls.read(65536)
            except ssl.SSLWantReadError:
                data = s.recv(65536)
                if not data:
                    break
                incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
    assert b'"tls": true' in answer


def test_a_large_download_through_a_tunnel_and_plain_http(
    loaded: Gate, upstreams: Upstreams
) -> None:
    n = 64 * 1024 * 1024 + 7
    expect = hashlib.sha256()
    block = bytes(range(256)) * 256
    left = n
    while left:
        expect.update(block[: min(left, len(block))])
        left -= min(left, len(block))
    for scheme, port in (("https", upstreams.https.port), ("http", upstreams.http.port)):
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "-x", loaded.proxy_url, "--cacert",
             str(upstreams.ca), f"{scheme}://{TLS_NAME}:{port}/big?n={n}"],
            capture_output=True, check=False,
            env={"PATH": os.environ["PATH"]},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert len(result.stdout) == n
        assert hashlib.sha256(result.stdout).digest() == expect.digest()
        method = "CONNECT" if scheme == "https" else "GET"
        r = last(loaded, method=method, port=port, decision="allow")
        assert r["bytes_down"] >= n


def test_a_pipelined_connect_payload_is_forwarded(loaded: Gate, upstreams: Upstreams) -> None:
    """Bytes sent right behind the CONNECT head belong to the tunnel."""
    s, status = open_tunnel(loaded, f"127.0.0.1:{upstreams.echo[0].port}", extra=b"early")
    with s:
        assert status == 200
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        assert got == b"early"


def test_half_close_is_passed_on(loaded: Gate, upstreams: Upstreams) -> None:
    s, status = open_tunnel(loaded, f"127.0.0.1:{upstreams.echo[0].port}")
    with s:
        assert status == 200
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(100):
            got += chunk
    assert got == b"last words"
    r = last(loaded, method="CONNECT", port=upstreams.echo[0].port, bytes_up=10)
    assert (r["decision"], r["bytes_down"]) == ("allow", 10)


# -- denials ------------------------------------------------------------------------------------


def no_cidr_policy(upstreams: Upstreams) -> dict[str, Any]:
    """Names only: no cidr rule covers loopback."""
    return {
        "allow": [
            {"host": TLS_NAME, "ports": [upstreams.http.port, upstreams.https.port]},
            {"host": "inside.allowed.test", "ports": [upstreams.http.port]},
        ],
        "resolve": {TLS_NAME: ["127.0.0.1"], "inside.allowed.test": ["127.0.0.1"]},
    }


@pytest.mark.parametrize(
    ("spelling", "reason"),
    [
        ("127.0.0.1", "no rule allows this host"),
        ("127.1", "no rule allows this host"),
        ("2130706433", "no rule allows this host"),
        ("0x7f000001", "no rule allows this host"),
        ("0177.0.0.1", "no rule allows this host"),
        ("[::ffff:127.0.0.1]", "no rule allows this host"),
        ("[::1]", "no rule allows this host"),
        ("0.0.0.0", "no rule allows this host"),
        ("inside.allowed.test", "address not public"),
    ],
)
def test_loopback_in_every_spelling_is_denied_without_a_cidr_rule(
    gate: Gate, upstreams: Upstreams, spelling: str, reason: str
) -> None:
    policy = no_cidr_policy(upstreams)
    gate.load(policy)
    port = upstreams.http.port
    hits = len(upstreams.http.hits)
    s, status = open_tunnel(gate, f"{spelling}:{port}")
    s.close()
    assert status == 403
    reply = exchange(gate, f"GET http://{spelling}:{port}/x HTTP/1.1\r\n"
                     f"Host: {spelling}:{port}\r\n\r\n".encode())  # fmt: skip
    assert reply.status == 403
    assert reason.encode() in reply.body
    assert expected_reason(policy, spelling, port, gate) == reason
    for method in ("CONNECT", "GET"):
        r = last(gate, method=method, host=spelling)
        assert (r["decision"], r["reason"], r["address"]) == ("deny", reason, "")
    assert len(upstreams.http.hits) == hits


@pytest.mark.parametrize(
    ("case", "authority", "reason"),
    [
        ("port not allowed", f"{TLS_NAME}:22", "no rule allows this port"),
        ("unlisted name", "evil.test:443", "no rule allows this host"),
        ("lookalike suffix", f"evil-{TLS_NAME}:443", "no rule allows this host"),
        ("allowed name as a prefix", f"{TLS_NAME}.evil.test:443", "no rule allows this host"),
        ("userinfo", f"{TLS_NAME}@evil.test:443", "invalid host: host has userinfo"),
        ("user:password", f"user:pw@{TLS_NAME}:443", "invalid host: host has userinfo"),
        ("percent-encoding", "api%2eallowed.test:443", "invalid host: host has percent-encoding"),
        ("an empty label", f"api..{TLS_NAME}:443", "invalid host: host has an empty label"),
    ],
)
def test_connect_denials_name_their_reason(
    loaded: Gate, upstreams: Upstreams, case: str, authority: str, reason: str
) -> None:
    s, status = open_tunnel(loaded, authority)
    s.close()
    assert status == 403
    host, _, port = authority.rpartition(":")
    r = last(loaded, method="CONNECT", host=host)
    assert (r["decision"], r["reason"], r["port"]) == ("deny", reason, int(port))
    assert expected_reason(upstreams.policy(), host, int(port), loaded) == reason


def test_connect_to_the_gate_itself_is_denied_even_when_a_cidr_covers_it(
    gate: Gate, upstreams: Upstreams
) -> None:
    ports = [gate.proxy[1], gate.control[1]]
    gate.load(upstreams.policy(allow=[{"cidr": "127.0.0.0/8", "ports": ports}]))
    for host, port in ((GATE_HOST, gate.proxy[1]), (CONTROL_HOST, gate.control[1])):
        s, status = open_tunnel(gate, f"{host}:{port}")
        s.close()
        assert status == 403
        r = last(gate, method="CONNECT", host=host)
        assert r["reason"] == "address is the gate itself"
        reply = exchange(gate, f"GET http://{host}:{port}/healthz HTTP/1.1\r\n"
                         f"Host: {host}:{port}\r\n\r\n".encode())  # fmt: skip
        assert reply.status == 403
        assert b"address is the gate itself" in reply.body


def test_the_unspecified_address_is_always_the_gate_itself(
    gate: Gate, upstreams: Upstreams
) -> None:
    """Dialling 0.0.0.0 or :: reaches this host: denied even when a cidr rule names it."""
    port = upstreams.http.port
    gate.load(upstreams.policy(allow=[{"cidr": "0.0.0.0/32", "ports": [port]},
                                      {"cidr": "::/128", "ports": [port]}]))  # fmt: skip
    for host in ("0.0.0.0", "0", "[::]"):
        s, status = open_tunnel(gate, f"{host}:{port}")
        s.close()
        assert status == 403
        assert last(gate, method="CONNECT", host=host)["reason"] == "address is the gate itself"


def test_a_deny_rule_wins_over_an_allow(gate: Gate, upstreams: Upstreams) -> None:
    gate.load(upstreams.policy(deny=[{"host": TLS_NAME, "ports": [upstreams.https.port]}]))
    s, status = open_tunnel(gate, f"{TLS_NAME}:{upstreams.https.port}")
    s.close()
    assert status == 403
    r = last(gate, method="CONNECT", host=TLS_NAME)
    assert (r["reason"], r["rule"]) == ("denied by rule", f"deny[0] host {TLS_NAME} ports "
                                        f"{upstreams.https.port}")  # fmt: skip


def request_for(target: str, host: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


@pytest.mark.parametrize(
    ("case", "make", "status", "reason"),
    [
        (
            "Host header names another host",
            lambda p: request_for(f"http://127.0.0.1:{p}/echo", "evil.test"),
            403,
            "host header mismatch",
        ),
        (
            "Host header names another port",
            lambda p: request_for(f"http://127.0.0.1:{p}/echo", "127.0.0.1:1"),
            403,
            "host header mismatch",
        ),
        (
            "two Host headers",
            lambda p: request_for(
                f"http://127.0.0.1:{p}/", f"127.0.0.1:{p}", "Host: evil.test\r\n"
            ),
            400,
            "bad request",
        ),
        (
            "https in absolute-form",
            lambda p: request_for(f"https://{TLS_NAME}:{p}/", f"{TLS_NAME}:{p}"),
            400,
            "https absolute-form",
        ),
        (
            "an unknown scheme",
            lambda p: request_for(f"ftp://127.0.0.1:{p}/", f"127.0.0.1:{p}"),
            400,
            "unsupported scheme",
        ),
        (
            "origin-form (not a proxy request)",
            lambda p: request_for("/echo", f"127.0.0.1:{p}"),
            400,
            "not a proxy request",
        ),
        (
            "userinfo in the URL",
            lambda p: request_for(f"http://{TLS_NAME}@evil.test:{p}/", "evil.test"),
            403,
            "invalid host: host has userinfo",
        ),
        (
            "no port after the colon",
            lambda p: request_for("http://127.0.0.1:/", "127.0.0.1"),
            400,
            "bad authority",
        ),
        (
            "CONNECT without a port",
            lambda p: f"CONNECT {TLS_NAME} HTTP/1.1\r\nHost: {TLS_NAME}\r\n\r\n".encode(),
            400,
            "bad authority",
        ),
        (
            "CONNECT in origin-form",
            lambda p: b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "bad authority",
        ),
        ("garbage", lambda p: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", 400, "bad request"),
        (
            "an HTTP/1.1 request without Host",
            lambda p: f"GET http://127.0.0.1:{p}/ HTTP/1.1\r\n\r\n".encode(),
            400,
            "bad request",
        ),
        (
            "a fragment in the target",
            lambda p: request_for(f"http://127.0.0.1:{p}/a#frag", f"127.0.0.1:{p}"),
            400,
            "bad request",
        ),
    ],
)
def test_malformed_and_mismatched_requests_are_refused_with_a_record(
    loaded: Gate,
    upstreams: Upstreams,
    case: str,
    make: Callable[[int], bytes],
    status: int,
    reason: str,
) -> None:
    hits = len(upstreams.http.hits)
    reply = exchange(loaded, make(upstreams.http.port))
    assert reply.status == status
    assert reply.body == f"{reason}\n".encode()
    assert b"connection: close" in reply.head.lower()
    r = last(loaded, reason=reason)
    assert r["decision"] == "deny"
    assert len(upstreams.http.hits) == hits


def test_the_host_header_may_differ_in_case_dot_and_default_port(
    loaded: Gate, upstreams: Upstreams
) -> None:
    p = upstreams.http.port
    reply = exchange(loaded, request_for(f"http://{TLS_NAME}:{p}/echo", f"API.Allowed.TEST.:{p}"))
    assert reply.status == 200


# -- TLS checks on TLS ports --------------------------------------------------------------------


def test_sni_naming_another_host_is_refused_and_nothing_is_dialled(
    loaded: Gate, upstreams: Upstreams
) -> None:
    accepted = upstreams.https.accepted
    s, status = open_tunnel(loaded, f"{TLS_NAME}:{upstreams.https.port}")
    assert status == 200
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError)), ctx.wrap_socket(s, server_hostname="evil.test"):
        pass
    s.close()
    r = last(loaded, method="CONNECT", reason="sni mismatch")
    assert (r["decision"], r["host"], r["address"]) == ("deny", TLS_NAME, "127.0.0.1")
    assert upstreams.https.accepted == accepted


@pytest.mark.parametrize(
    ("case", "payload", "reason"),
    [
        ("plain HTTP on a TLS port", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not tls"),
        ("an SSLv2-style hello", b"\x80\x2e\x01\x00\x02" + b"\x00" * 30, "not tls"),
        ("the client closes before a hello", b"\x16\x03", "no client hello"),
    ],
)
def test_a_tls_port_requires_a_client_hello(
    loaded: Gate, upstreams: Upstreams, case: str, payload: bytes, reason: str
) -> None:
    accepted = upstreams.https.accepted
    s, status = open_tunnel(loaded, f"{TLS_NAME}:{upstreams.https.port}")
    with s:
        assert status == 200
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
    r = last(loaded, method="CONNECT", reason=reason)
    assert r["decision"] == "deny"
    assert upstreams.https.accepted == accepted


def test_a_hello_without_sni_is_refused_for_a_name(loaded: Gate, upstreams: Upstreams) -> None:
    s, status = open_tunnel(loaded, f"{TLS_NAME}:{upstreams.https.port}")
    assert status == 200
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, OSError)), ctx.wrap_socket(s):
        pass
    s.close()
    r = last(loaded, method="CONNECT", reason="no sni")
    assert r["decision"] == "deny"


def test_an_address_tunnel_on_a_tls_port_may_omit_sni(loaded: Gate, upstreams: Upstreams) -> None:
    s, status = open_tunnel(loaded, f"127.0.0.1:{upstreams.https.port}")
    assert status == 200
    ctx = tls_client(upstreams)
    ctx.check_hostname = False  # the certificate names api.allowed.test, not the address
    with ctx.wrap_socket(s) as t:
        t.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_head(t)[0] == 200


# -- live reload ----------------------------------------------------------------------------


def echo_once(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_a_reload_closes_tunnels_it_no_longer_allows_and_keeps_the_others(
    loaded: Gate, upstreams: Upstreams
) -> None:
    a_port, b_port = upstreams.echo[0].port, upstreams.echo[1].port
    a, status_a = open_tunnel(loaded, f"127.0.0.1:{a_port}")
    b, status_b = open_tunnel(loaded, f"127.0.0.1:{b_port}")
    with a, b:
        assert (status_a, status_b) == (200, 200)
        assert echo_once(a, b"ping-a") == b"ping-a"
        assert echo_once(b, b"ping-b") == b"ping-b"
        loaded.load(upstreams.policy(echo=(1,)))  # the rule for echo[0] is gone
        a.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert a.recv(100) == b""
        assert echo_once(b, b"still here") == b"still here"
        s, status = open_tunnel(loaded, f"127.0.0.1:{a_port}")
        s.close()
        assert status == 403
        assert (
            last(loaded, method="CONNECT", port=a_port, decision="deny", address="")["reason"]
            == "no rule allows this port"
        )
        closed = last(loaded, method="CONNECT", port=a_port, reason="closed by policy reload")
        assert closed["decision"] == "deny"
        assert (closed["bytes_up"], closed["bytes_down"]) == (6, 6)
        assert closed["address"] == "127.0.0.1"
        assert not any(r.get("port") == b_port for r in loaded.records)
    r = last(loaded, method="CONNECT", port=b_port)
    assert (r["decision"], r["reason"], r["bytes_up"]) == ("allow", "allowed", 16)
    loaded.said("1 open flows closed")


def test_a_reload_that_keeps_a_rule_keeps_its_tunnel(loaded: Gate, upstreams: Upstreams) -> None:
    port = upstreams.echo[0].port
    s, status = open_tunnel(loaded, f"127.0.0.1:{port}")
    with s:
        assert status == 200
        loaded.load(upstreams.policy(allow=[{"host": "other.test"}]))
        assert echo_once(s, b"untouched") == b"untouched"
    assert last(loaded, method="CONNECT", port=port)["decision"] == "allow"


def test_a_reload_cuts_an_http_response_in_flight(loaded: Gate, upstreams: Upstreams) -> None:
    upstreams.http.release.clear()
    port = upstreams.http.port
    with loaded.connect() as s:
        s.sendall(request_for(f"http://127.0.0.1:{port}/hold", f"127.0.0.1:{port}"))
        status, _, rest = read_head(s)
        assert status == 200
        while len(rest) < 5:
            rest += s.recv(100)
        policy = upstreams.policy()
        policy["allow"] = [r for r in policy["allow"] if r.get("host")]  # no cidr rules left
        loaded.load(policy)
        s.settimeout(10)
        try:
            while chunk := s.recv(100):
                rest += chunk
        except ConnectionResetError:
            pass
    upstreams.http.release.set()
    assert rest == b"12345"
    r = last(loaded, method="GET", reason="closed by policy reload")
    assert (r["decision"], r["port"]) == ("deny", port)


def test_a_reload_applies_to_the_next_request_at_once(loaded: Gate, upstreams: Upstreams) -> None:
    url = f"http://127.0.0.1:{upstreams.http.port}/echo"
    for _ in range(3):
        assert curl(loaded, "-o", "/dev/null", "-w", "%{http_code}", url).stdout == "200"
        loaded.load(no_cidr_policy(upstreams))
        assert curl(loaded, "-o", "/dev/null", "-w", "%{http_code}", url).stdout == "403"
        loaded.load(upstreams.policy())


# -- records, resources, lifecycle ----------------------------------------------------------


def test_every_record_has_the_documented_fields(loaded: Gate, upstreams: Upstreams) -> None:
    curl(loaded, f"http://127.0.0.1:{upstreams.http.port}/echo")
    s, _ = open_tunnel(loaded, "evil.test:443")
    s.close()
    wait_for(lambda: len(loaded.records) >= 2, 10, "two records")
    for r in loaded.records:
        assert set(r) == RECORD_KEYS
        assert (r["tenant"], r["cell"]) == ("acme", "researcher")
        assert r["decision"] in ("allow", "deny")
        assert datetime.fromisoformat(r["time"].replace("Z", "+00:00")).tzinfo is not None
        assert r["time"].endswith("Z")
        for key in ("port", "bytes_up", "bytes_down"):
            assert isinstance(r[key], int)
        assert isinstance(r["duration_ms"], float | int)
        assert r["duration_ms"] >= 0
    denied = last(loaded, host="evil.test")
    assert (denied["method"], denied["port"], denied["rule"]) == ("CONNECT", 443, "")


def test_no_descriptor_or_thread_leaks_after_many_connections(
    loaded: Gate, upstreams: Upstreams
) -> None:
    idle_threads = 1  # the event loop's thread: nothing else while no name is looked up
    wait_for(lambda: loaded.status("Threads") == idle_threads, 10, "an idle gate")
    baseline_sockets, baseline_others = loaded.fds("socket:"), loaded.fds() - loaded.fds("pipe:")
    http_port, echo_port = upstreams.http.port, upstreams.echo[0].port
    for i in range(40):
        s, status = open_tunnel(loaded, f"127.0.0.1:{echo_port}")
        with s:
            assert status == 200
            assert echo_once(s, b"x" * 100) == b"x" * 100
        s, status = open_tunnel(loaded, "evil.test:443")
        s.close()
        assert status == 403
        reply = exchange(loaded, request_for(f"http://127.0.0.1:{http_port}/echo",
                                             f"127.0.0.1:{http_port}"))  # fmt: skip
        assert reply.status == 200
        with loaded.connect() as s:  # connect and leave without a word
            pass
        with loaded.connect() as s:  # half a request head, then gone
            s.sendall(b"GET http://127.0.0.1/ HT")
        s, status = open_tunnel(loaded, f"{TLS_NAME}:{upstreams.https.port}")
        with s:  # half a ClientHello, then gone
            s.sendall(b"\x16\x03\x01\x00")
        if i % 10 == 0:
            s, status = open_tunnel(loaded, f"127.0.0.1:{echo_port}")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # abortive close (RST) mid-tunnel

    def settled() -> bool:
        # At most the baseline: on a loaded machine the baseline can still hold the socket
        # of an earlier connection that the gate closes a moment later.
        return bool(
            loaded.fds("socket:") <= baseline_sockets
            and loaded.fds() - loaded.fds("pipe:") <= baseline_others
            and loaded.status("Threads") == idle_threads
        )

    wait_for(settled, 20, f"sockets back to {baseline_sockets}, threads to {idle_threads}")
    assert loaded.fds("pipe:") <= 2 + 2 * 2, "stdout, stderr and at most 2 pooled pipes"


def test_the_idle_gate_stays_under_30_mb(loaded: Gate, upstreams: Upstreams) -> None:
    curl(loaded, f"http://127.0.0.1:{upstreams.http.port}/echo")
    curl(loaded, "--cacert", str(upstreams.ca), f"https://{TLS_NAME}:{upstreams.https.port}/echo")
    rss_kb = loaded.status("VmRSS")
    assert rss_kb < 30 * 1024, f"idle RSS {rss_kb} kB"
    maps = open(f"/proc/{loaded.pid}/maps").read()  # noqa: SIM115
    assert "libssl" not in maps, "the gate never terminates TLS: no OpenSSL in it"


def test_sigterm_stops_the_gate_cleanly(gate: Gate) -> None:
    start = time.monotonic()
    assert gate.stop() == 0
    assert time.monotonic() - start < 5
    gate.said("stopping")


def _localhost_is_a_local_file_answer() -> bool:
    try:
        hosts = open("/etc/hosts").read().split()  # noqa: SIM115
        nsswitch = open("/etc/nsswitch.conf").read()  # noqa: SIM115
    except OSError:
        return False
    line = next((ln for ln in nsswitch.splitlines() if ln.startswith("hosts:")), "")
    return "localhost" in hosts and line.split()[1:2] == ["files"]


@pytest.mark.skipif(
    not _localhost_is_a_local_file_answer(), reason="localhost must come from /etc/hosts"
)
def test_the_gate_resolves_a_name_itself_and_dials_what_it_checked(
    gate: Gate, upstreams: Upstreams
) -> None:
    """``localhost`` has no resolve entry: the gate's own lookup answers (from /etc/hosts)."""
    port = upstreams.echo[0].port
    gate.load({"allow": [{"host": "localhost", "ports": [port]}]})
    s, status = open_tunnel(gate, f"localhost:{port}")
    s.close()
    assert status == 403
    assert last(gate, host="localhost")["reason"] == "address not public"
    gate.load(
        {
            "allow": [
                {"host": "localhost", "ports": [port]},
                {"cidr": "127.0.0.0/8", "ports": [port]},
                {"cidr": "::1/128", "ports": [port]},
            ]
        }
    )
    s, status = open_tunnel(gate, f"localhost:{port}")
    with s:
        assert status == 200
        assert echo_once(s, b"resolved") == b"resolved"
    r = last(gate, host="localhost", decision="allow")
    assert r["address"] in ("127.0.0.1", "::1")


def test_many_tunnels_at_once(loaded: Gate, upstreams: Upstreams) -> None:
    idle_sockets = loaded.fds("socket:")
    tunnels = [open_tunnel(loaded, f"127.0.0.1:{upstreams.echo[i % 2].port}") for i in range(60)]
    try:
        assert [status for _, status in tunnels] == [200] * 60
        for i, (s, _) in enumerate(tunnels):
            s.sendall(b"%d;" % i)
        for i, (s, _) in enumerate(tunnels):
            want = b"%d;" % i
            got = b""
            while len(got) < len(want):
                got += s.recv(100)
            assert got == want
    finally:
        for s, _ in tunnels:
            s.close()
    # At most as many as before: a control connection open then may have closed since.
    wait_for(lambda: loaded.fds("socket:") <= idle_sockets, 30, "the tunnels to close")
