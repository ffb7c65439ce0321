"""The egress decision, its host normalisation and its policy loader.

``DECISIONS`` mirrors the decision order of ``agentcell.policy._egress`` step by step
(row ids start with the step's number) and covers every case of ATTACKS.md part B the
decision function answers for: B1 literal addresses in every spelling, B2 names that
resolve inside, B4 host normalisation, B5 ports, B6 the gate itself. Then tables for
``normalise_host`` and the loader, then hypothesis properties.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.policy import (
    ADDRESS_CLASSES,
    REASONS,
    AddressClass,
    EgressDecision,
    EgressPolicy,
    IPAddress,
    IPNetwork,
    PolicyError,
    classify,
    decide_egress,
    normalise_host,
    unwrap,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network

POLICY = EgressPolicy.from_json(
    {
        "allow": [
            {"host": "allowed.test", "ports": [443]},
            {"host": "*.allowed.test"},
            {"host": "bücher.example"},
            {"host": "internal.test", "ports": [443, 8080]},
            {"cidr": "10.9.0.0/16", "ports": [8080]},
            {"cidr": "fd00:9::/64", "ports": [8080]},
        ],
        "deny": [
            {"host": "blocked.allowed.test"},
            {"host": "*.evil.allowed.test"},
            {"host": "legacy.allowed.test", "ports": [80]},
            {"cidr": "10.9.9.0/24", "ports": [8080]},
            {"cidr": "1.2.3.0/24", "ports": [80, 443]},
        ],
        "resolve": {"STATIC.allowed.test.": ["1.1.1.1"], "inside.allowed.test": ["10.0.0.1"]},
    }
)
A_EXACT = "allow[0] host allowed.test ports 443"
A_WILD = "allow[1] host *.allowed.test ports 80,443"
A_IDN = "allow[2] host xn--bcher-kva.example ports 80,443"
A_INTERNAL = "allow[3] host internal.test ports 443,8080"
A_CIDR = "allow[4] cidr 10.9.0.0/16 ports 8080"
A_CIDR6 = "allow[5] cidr fd00:9::/64 ports 8080"
D_BLOCKED = "deny[0] host blocked.allowed.test ports all"
D_EVIL = "deny[1] host *.evil.allowed.test ports all"
D_LEGACY = "deny[2] host legacy.allowed.test ports 80"
D_CIDR = "deny[3] cidr 10.9.9.0/24 ports 8080"
D_PUBLIC = "deny[4] cidr 1.2.3.0/24 ports 80,443"

WILD_ONLY = EgressPolicy.from_json({"allow": [{"host": "*.allowed.test"}]})
W_WILD = "allow[0] host *.allowed.test ports 80,443"
DENY_ONLY = EgressPolicy.from_json({"deny": [{"host": "evil.test"}]})
OWN = (net("10.9.0.5/32"),)  # the gate's own address, inside the allowed 10.9.0.0/16
CELLS = (net("10.9.0.0/24"), net("10.9.8.0/24"))  # the subnet pool: the gate's and others'


def spell(address: IPAddress) -> str:
    """How a request names a literal address: IPv6 in brackets."""
    return f"[{address}]" if address.version == 6 else str(address)


def denied(reason: str, host: str = "", rule: str = "") -> EgressDecision:
    return EgressDecision(False, reason, rule, host)


def later(rule: str, host: str) -> EgressDecision:
    return EgressDecision(True, "needs resolution", rule, host, needs_resolution=True)


def allowed(rule: str, host: str, address: str) -> EgressDecision:
    return EgressDecision(True, "allowed", rule, host, ip(address))


def row(
    name: str,
    host: str,
    port: int,
    expected: EgressDecision,
    addresses: Sequence[str] | None = None,
    policy: EgressPolicy = POLICY,
) -> Any:
    answer = None if addresses is None else [ip(a) for a in addresses]
    return pytest.param(policy, host, port, answer, expected, id=name)


def literal_denied(spelling: str, address: str, note: str = "") -> Any:
    return row(
        f"3 {spelling}{note} is denied without a cidr rule",
        spelling,
        443,
        denied("no rule allows this host", address),
    )


NOT_PUBLIC = "address not public"

DECISIONS = [
    # 1. normalise the host; check the port; an empty policy allows nothing
    row(
        "1 ALLOWED.TEST. normalises to allowed.test",
        "ALLOWED.TEST.",
        443,
        later(A_EXACT, "allowed.test"),
    ),
    row(
        "1 an IDN host matches its punycode rule (written in Unicode in the policy)",
        "xn--bcher-kva.example",
        443,
        later(A_IDN, "xn--bcher-kva.example"),
    ),
    row(
        "1 a Unicode host in any case matches the same rule",
        "BÜCHER.example",
        80,
        later(A_IDN, "xn--bcher-kva.example"),
    ),
    row(
        "1 allowed.test@evil.test is refused as userinfo",
        "allowed.test@evil.test",
        443,
        denied("invalid host: host has userinfo"),
    ),
    row(
        "1 user:secret@allowed.test is refused as userinfo",
        "user:secret@allowed.test",
        443,
        denied("invalid host: host has userinfo"),
    ),
    row(
        "1 a fullwidth @ that NFKC turns into @ is refused",
        "allowed.test\ufe6bevil.test",
        443,
        denied("invalid host: host has an invalid character"),
    ),
    row(
        "1 percent-encoding in the host is refused",
        "allowed%2etest",
        443,
        denied("invalid host: host has percent-encoding"),
    ),
    row(
        "1 an IPv6 zone id is refused",
        "[fe80::1%25eth0]",
        443,
        denied("invalid host: host has a zone id"),
    ),
    row(
        "1 a line break in the host is refused",
        "allowed.test\r\nX: y",
        443,
        denied("invalid host: host has an invalid character"),
    ),
    row("1 an empty host is refused", "", 443, denied("invalid host: host is empty")),
    row(
        "1 a host carrying a port is refused",
        "allowed.test:443",
        443,
        denied("invalid host: host has an invalid character"),
    ),
    row(
        "1 a name ending in a number is no name and no address",
        "allowed.test.1",
        443,
        denied("invalid host: host has an invalid IPv4 literal"),
    ),
    row(
        "1 a 64-character label is refused",
        "a" * 64 + ".allowed.test",
        443,
        denied("invalid host: host label too long"),
    ),
    row("1 port 0 is invalid", "allowed.test", 0, denied("invalid port", "allowed.test")),
    row("1 port 65536 is invalid", "allowed.test", 65536, denied("invalid port", "allowed.test")),
    row(
        "1 a negative port is invalid", "allowed.test", -443, denied("invalid port", "allowed.test")
    ),
    row(
        "1 an empty policy allows nothing",
        "allowed.test",
        443,
        denied("no policy", "allowed.test"),
        policy=EgressPolicy(),
    ),
    # 2. deny rules win over everything
    row(
        "2 a deny rule wins over an allow rule for the same host",
        "blocked.allowed.test",
        443,
        denied("denied by rule", "blocked.allowed.test", D_BLOCKED),
    ),
    row(
        "2 a deny rule matches the host in any spelling",
        "Blocked.Allowed.Test.",
        80,
        denied("denied by rule", "blocked.allowed.test", D_BLOCKED),
    ),
    row(
        "2 a wildcard deny rule covers every subdomain",
        "a.b.evil.allowed.test",
        443,
        denied("denied by rule", "a.b.evil.allowed.test", D_EVIL),
    ),
    row(
        "2 a wildcard deny rule does not cover its own suffix",
        "evil.allowed.test",
        443,
        later(A_WILD, "evil.allowed.test"),
    ),
    row(
        "2 a deny rule applies on its ports",
        "legacy.allowed.test",
        80,
        denied("denied by rule", "legacy.allowed.test", D_LEGACY),
    ),
    row(
        "2 a deny rule does not apply on other ports",
        "legacy.allowed.test",
        443,
        later(A_WILD, "legacy.allowed.test"),
    ),
    row(
        "2 a deny CIDR wins over an allow CIDR for a literal",
        "10.9.9.9",
        8080,
        denied("denied by rule", "10.9.9.9", D_CIDR),
    ),
    row(
        "2 a deny CIDR covers the mapped spelling of a literal",
        "[::ffff:10.9.9.9]",
        8080,
        denied("denied by rule", "::ffff:a09:909", D_CIDR),
    ),
    row(
        "2 a deny CIDR covers the legacy spelling of a literal",
        "10.9.2313",
        8080,
        denied("denied by rule", "10.9.9.9", D_CIDR),
    ),
    row(
        "2 a policy of only deny rules allows nothing else",
        "allowed.test",
        443,
        denied("no rule allows this host", "allowed.test"),
        policy=DENY_ONLY,
    ),
    # 3. allow rules by name and port; a literal only by a cidr rule
    row(
        "3 *.allowed.test matches a subdomain",
        "a.allowed.test",
        443,
        later(W_WILD, "a.allowed.test"),
        policy=WILD_ONLY,
    ),
    row(
        "3 *.allowed.test matches a deeper subdomain",
        "x.y.allowed.test",
        80,
        later(W_WILD, "x.y.allowed.test"),
        policy=WILD_ONLY,
    ),
    row(
        "3 *.allowed.test does not match allowed.test",
        "allowed.test",
        443,
        denied("no rule allows this host", "allowed.test"),
        policy=WILD_ONLY,
    ),
    row(
        "3 evil-allowed.test does not match *.allowed.test",
        "evil-allowed.test",
        443,
        denied("no rule allows this host", "evil-allowed.test"),
        policy=WILD_ONLY,
    ),
    row(
        "3 allowed.test.evil.test is not allowed.test",
        "allowed.test.evil.test",
        443,
        denied("no rule allows this host", "allowed.test.evil.test"),
    ),
    row(
        "3 notallowed.test is not allowed.test",
        "notallowed.test",
        443,
        denied("no rule allows this host", "notallowed.test"),
    ),
    row(
        "3 port 22 denied when only 443 allowed",
        "allowed.test",
        22,
        denied("no rule allows this port", "allowed.test"),
    ),
    row(
        "3 port 80 denied when only 443 allowed for the exact name",
        "allowed.test",
        80,
        denied("no rule allows this port", "allowed.test"),
    ),
    row(
        "3 a later rule allows the port an earlier one does not",
        "internal.test",
        8080,
        later(A_INTERNAL, "internal.test"),
    ),
    literal_denied("127.0.0.1", "127.0.0.1"),
    literal_denied("127.1", "127.0.0.1"),
    literal_denied("2130706433", "127.0.0.1"),
    literal_denied("0x7f000001", "127.0.0.1"),
    literal_denied("0177.0.0.1", "127.0.0.1"),
    literal_denied("0x7f.1", "127.0.0.1"),
    literal_denied("１２７.０.０.１", "127.0.0.1", " (fullwidth digits)"),
    literal_denied("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    literal_denied("[::1]", "::1"),
    literal_denied("0.0.0.0", "0.0.0.0"),
    literal_denied("[::]", "::", " (unspecified)"),
    literal_denied("169.254.169.254", "169.254.169.254", " (metadata)"),
    literal_denied("0xa9fea9fe", "169.254.169.254", " (the metadata address)"),
    literal_denied("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", " (NAT64 metadata)"),
    literal_denied("[2002:a9fe:a9fe::1]", "2002:a9fe:a9fe::1", " (6to4 metadata)"),
    literal_denied("[2001:0:1:2:3:4:5601:5601]", "2001:0:1:2:3:4:5601:5601", " (Teredo metadata)"),
    literal_denied("100.64.0.1", "100.64.0.1", " (CGNAT)"),
    literal_denied("10.1.2.3", "10.1.2.3"),
    literal_denied("1.1.1.1", "1.1.1.1", " (public)"),
    row(
        "3 10.9.1.2 allowed when a cidr allow covers it and the port",
        "10.9.1.2",
        8080,
        allowed(A_CIDR, "10.9.1.2", "10.9.1.2"),
    ),
    row(
        "3 10.9.1.2 denied on a port the cidr rule does not list",
        "10.9.1.2",
        443,
        denied("no rule allows this port", "10.9.1.2"),
    ),
    row(
        "3 the mapped spelling of a covered address is covered",
        "[::ffff:10.9.1.2]",
        8080,
        allowed(A_CIDR, "::ffff:a09:102", "::ffff:a09:102"),
    ),
    row(
        "3 an IPv6 literal in a covered network is allowed",
        "[fd00:9::10]",
        8080,
        allowed(A_CIDR6, "fd00:9::10", "fd00:9::10"),
    ),
    row(
        "3 a host rule never allows a literal address",
        "93.184.215.14",
        443,
        denied("no rule allows this host", "93.184.215.14"),
    ),
    # 4. resolve: the policy's answer, else the caller resolves and asks again
    row(
        "4 an allowed name needs resolution when the policy has no answer",
        "www.allowed.test",
        443,
        later(A_WILD, "www.allowed.test"),
    ),
    row(
        "4 resolve entries answer without asking the caller",
        "static.allowed.test",
        443,
        allowed(A_WILD, "static.allowed.test", "1.1.1.1"),
    ),
    row(
        "4 resolve entries win over the caller's answer",
        "static.allowed.test",
        443,
        allowed(A_WILD, "static.allowed.test", "1.1.1.1"),
        addresses=["8.8.8.8"],
    ),
    row(
        "4 a resolve entry is still checked: one inside is denied",
        "inside.allowed.test",
        443,
        denied(NOT_PUBLIC, "inside.allowed.test"),
    ),
    row(
        "4 no answer -> no addresses",
        "www.allowed.test",
        443,
        denied("no addresses", "www.allowed.test"),
        addresses=[],
    ),
    row(
        "4 a literal request never needs resolution, and ignores an answer",
        "10.9.1.2",
        8080,
        allowed(A_CIDR, "10.9.1.2", "10.9.1.2"),
        addresses=["8.8.8.8"],
    ),
    # 5. classify every address of the answer
    row(
        "5 a name resolving to a public address is allowed",
        "www.allowed.test",
        443,
        allowed(A_WILD, "www.allowed.test", "8.8.8.8"),
        addresses=["8.8.8.8"],
    ),
    row(
        "5 a name resolving to a public IPv6 address is allowed",
        "www.allowed.test",
        443,
        allowed(A_WILD, "www.allowed.test", "2606:4700::1111"),
        addresses=["2606:4700::1111"],
    ),
    row(
        "5 a name resolving to the mapped spelling of a public address is allowed",
        "www.allowed.test",
        443,
        allowed(A_WILD, "www.allowed.test", "::ffff:808:808"),
        addresses=["::ffff:8.8.8.8"],
    ),
    *(
        row(
            f"5 a name resolving to {spelling} is denied",
            "www.allowed.test",
            443,
            denied(NOT_PUBLIC, "www.allowed.test"),
            addresses=[address],
        )
        for spelling, address in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("0.0.0.0", "0.0.0.0"),
            ("10.1.2.3", "10.1.2.3"),
            ("192.168.1.1", "192.168.1.1"),
            ("fd00::1 (unique local)", "fd00::1"),
            ("169.254.169.254 (metadata)", "169.254.169.254"),
            ("fe80::1 (link-local)", "fe80::1"),
            ("100.64.0.1 (CGNAT)", "100.64.0.1"),
            ("224.0.0.1 (multicast)", "224.0.0.1"),
            ("192.0.2.1 (documentation)", "192.0.2.1"),
            ("255.255.255.255 (broadcast)", "255.255.255.255"),
            ("::ffff:127.0.0.1 (mapped loopback)", "::ffff:127.0.0.1"),
            ("64:ff9b::a9fe:a9fe (NAT64 metadata)", "64:ff9b::a9fe:a9fe"),
            ("64:ff9b:1::a00:1 (local-use NAT64 of 10.0.0.1)", "64:ff9b:1::a00:1"),
            ("2002:a9fe:a9fe::1 (6to4 metadata)", "2002:a9fe:a9fe::1"),
            ("2001:0:1:2:3:4:5601:5601 (Teredo metadata)", "2001:0:1:2:3:4:5601:5601"),
            (
                "2001:0:1:2:3:4:f7f7:f7f7 (Teredo, even of a public address)",
                "2001:0:1:2:3:4:f7f7:f7f7",
            ),
            ("::10.0.0.1 (IPv4-compatible)", "::10.0.0.1"),
        ]
    ),
    row(
        "5 a name resolving to a mix of public and private addresses is denied",
        "www.allowed.test",
        443,
        denied(NOT_PUBLIC, "www.allowed.test"),
        addresses=["8.8.8.8", "10.0.0.1"],
    ),
    row(
        "5 ... whichever comes first",
        "www.allowed.test",
        443,
        denied(NOT_PUBLIC, "www.allowed.test"),
        addresses=["10.0.0.1", "8.8.8.8"],
    ),
    row(
        "5 a name resolving into a cidr allow rule's network is allowed on its port",
        "internal.test",
        8080,
        allowed(A_INTERNAL, "internal.test", "10.9.1.2"),
        addresses=["10.9.1.2"],
    ),
    row(
        "5 ... and denied on a port the cidr rule does not list",
        "internal.test",
        443,
        denied(NOT_PUBLIC, "internal.test"),
        addresses=["10.9.1.2"],
    ),
    row(
        "5 ... and denied when one address falls outside the cidr rule",
        "internal.test",
        8080,
        denied(NOT_PUBLIC, "internal.test"),
        addresses=["10.9.1.2", "10.10.0.1"],
    ),
    row(
        "5 the gate's own address is denied even under a cidr allow (literal)",
        "10.9.0.5",
        8080,
        denied("address is the gate itself", "10.9.0.5"),
    ),
    row(
        "5 the gate's own address is denied in its mapped spelling",
        "[::ffff:10.9.0.5]",
        8080,
        denied("address is the gate itself", "::ffff:a09:5"),
    ),
    row(
        "5 a name resolving to the gate's own address is denied",
        "internal.test",
        8080,
        denied("address is the gate itself", "internal.test"),
        addresses=["10.9.1.2", "10.9.0.5"],
    ),
    row(
        "5 the gate itself wins over a deny CIDR",
        "internal.test",
        8080,
        denied("address is the gate itself", "internal.test"),
        addresses=["10.9.9.9", "10.9.0.5"],
    ),
    row(
        "5 another cell's address is denied even under a cidr allow (literal)",
        "10.9.8.7",
        8080,
        denied("address is another cell's", "10.9.8.7"),
    ),
    row(
        "5 another cell's address is denied in its mapped spelling",
        "[::ffff:10.9.8.7]",
        8080,
        denied("address is another cell's", "::ffff:a09:807"),
    ),
    row(
        "5 a name resolving to another cell's address (among others) is denied",
        "internal.test",
        8080,
        denied("address is another cell's", "internal.test"),
        addresses=["10.9.1.2", "10.9.8.7"],
    ),
    row(
        "5 another cell's address is denied before a deny CIDR is asked",
        "internal.test",
        8080,
        denied("address is another cell's", "internal.test"),
        addresses=["10.9.9.9", "10.9.8.7"],
    ),
    row(
        "5 another cell's address is denied before the public check",
        "www.allowed.test",
        443,
        denied("address is another cell's", "www.allowed.test"),
        addresses=["8.8.8.8", "10.9.8.7"],
    ),
    row(
        "5 the gate itself wins over another cell's (the pool holds the gate's own network)",
        "internal.test",
        8080,
        denied("address is the gate itself", "internal.test"),
        addresses=["10.9.8.7", "10.9.0.5"],
    ),
    row(
        "5 a deny CIDR covering any resolved address denies the name",
        "www.allowed.test",
        443,
        denied("address denied by rule", "www.allowed.test", D_PUBLIC),
        addresses=["8.8.8.8", "1.2.3.4"],
    ),
    row(
        "5 a deny CIDR covers the NAT64 spelling of a resolved address",
        "www.allowed.test",
        443,
        denied("address denied by rule", "www.allowed.test", D_PUBLIC),
        addresses=["64:ff9b::102:304"],
    ),
    row(
        "5 a deny CIDR wins over the cidr allow rule for a resolved address",
        "internal.test",
        8080,
        denied("address denied by rule", "internal.test", D_CIDR),
        addresses=["10.9.9.9"],
    ),
    row(
        "2 a deny rule without ports denies every port",
        "blocked.allowed.test",
        8443,
        denied("denied by rule", "blocked.allowed.test", D_BLOCKED),
    ),
    row(
        "5 a deny CIDR applies only on its ports",
        "www.allowed.test",
        80,
        denied("address denied by rule", "www.allowed.test", D_PUBLIC),
        addresses=["1.2.3.4"],
    ),
    # 6. allow, naming the rule and the one address to dial
    row(
        "6 the first checked address is the one to dial",
        "www.allowed.test",
        443,
        allowed(A_WILD, "www.allowed.test", "8.8.8.8"),
        addresses=["8.8.8.8", "1.1.1.1", "2606:4700::1111"],
    ),
    row(
        "6 ... an IPv6 address too",
        "www.allowed.test",
        443,
        allowed(A_WILD, "www.allowed.test", "2606:4700::1111"),
        addresses=["2606:4700::1111", "8.8.8.8"],
    ),
]


@pytest.mark.parametrize(("policy", "host", "port", "addresses", "expected"), DECISIONS)
def test_decide_egress(
    policy: EgressPolicy,
    host: str,
    port: int,
    addresses: list[IPAddress] | None,
    expected: EgressDecision,
) -> None:
    decision = decide_egress(policy, host, port, addresses, own=OWN, cells=CELLS)
    assert decision == expected
    assert decision.reason in REASONS


def test_an_allowed_decision_is_truthy_and_a_denied_one_falsy() -> None:
    assert decide_egress(POLICY, "static.allowed.test", 443)
    assert not decide_egress(POLICY, "evil.test", 443)


# --- normalise_host ---------------------------------------------------------------------------

GOOD: list[tuple[str, str, str | IPAddress]] = [
    ("lowercase", "Allowed.TEST", "allowed.test"),
    ("one trailing dot dropped", "allowed.test.", "allowed.test"),
    ("a single label", "localhost", "localhost"),
    ("digits, hyphens and underscores in labels", "a-1_b.x9.test", "a-1_b.x9.test"),
    ("a label starting with 0x that is no number", "0xg.test", "0xg.test"),
    ("IDN to punycode", "bücher.example", "xn--bcher-kva.example"),
    ("IDN upper case folds first", "BÜCHER.EXAMPLE", "xn--bcher-kva.example"),
    ("punycode stays as it is", "XN--BCHER-KVA.example", "xn--bcher-kva.example"),
    ("ideographic full stops separate labels", "allowed\u3002test", "allowed.test"),
    ("fullwidth letters fold to ASCII", "ａｌｌｏｗｅｄ.test", "allowed.test"),
    ("a soft hyphen is mapped to nothing", "allo\u00adwed.test", "allowed.test"),
    ("a 63-character label is fine", "a" * 63 + ".test", "a" * 63 + ".test"),
    (
        "253 characters are fine",
        ".".join(["a" * 63] * 3 + ["b" * 61]),
        ".".join(["a" * 63] * 3 + ["b" * 61]),
    ),
    ("dotted quad", "127.0.0.1", ip("127.0.0.1")),
    ("dotted quad with a trailing dot", "127.0.0.1.", ip("127.0.0.1")),
    ("a.b: 24-bit last part", "127.1", ip("127.0.0.1")),
    ("a.b.c: 16-bit last part", "127.0.1", ip("127.0.0.1")),
    ("one 32-bit decimal number", "2130706433", ip("127.0.0.1")),
    ("one 32-bit hex number", "0x7f000001", ip("127.0.0.1")),
    ("upper-case hex", "0X7F000001", ip("127.0.0.1")),
    ("octal parts", "0177.0.0.01", ip("127.0.0.1")),
    ("hex and decimal mixed", "0x7f.1", ip("127.0.0.1")),
    ("a bare 0x is zero", "0x.0x.0x.0x", ip("0.0.0.0")),
    ("the largest number", "4294967295", ip("255.255.255.255")),
    ("fullwidth digits", "１６９.２５４.１６９.２５４", ip("169.254.169.254")),
    ("bracketed IPv6", "[::1]", ip("::1")),
    ("bare IPv6", "::1", ip("::1")),
    ("bracketed mapped IPv6", "[::FFFF:127.0.0.1]", ip("::ffff:127.0.0.1")),
]


@pytest.mark.parametrize(("raw", "expected"), [r[1:] for r in GOOD], ids=[r[0] for r in GOOD])
def test_normalise_host_good(raw: str, expected: str | IPAddress) -> None:
    assert normalise_host(raw) == expected


BAD: list[tuple[str, str, str]] = [
    ("empty", "", "host is empty"),
    ("a lone dot", ".", "host is empty"),
    ("userinfo", "user@allowed.test", "host has userinfo"),
    ("percent-encoding", "allowed%2Etest", "host has percent-encoding"),
    ("a zone id", "fe80::1%eth0", "host has a zone id"),
    ("a bracketed, encoded zone id", "[fe80::1%25eth0]", "host has a zone id"),
    ("a space", "allowed test", "host has an invalid character"),
    ("a tab", "allowed.test\t", "host has an invalid character"),
    ("a NUL", "allowed.test\x00.evil.test", "host has an invalid character"),
    ("a slash", "allowed.test/evil", "host has an invalid character"),
    ("a backslash", "evil.test\\allowed.test", "host has an invalid character"),
    ("a wildcard", "*.allowed.test", "host has an invalid character"),
    ("a port", "allowed.test:443", "host has an invalid character"),
    (
        "a fullwidth solidus NFKC turns into /",
        "allowed.test\uff0fevil",
        "host has an invalid character",
    ),
    ("a one-dot leader NFKC turns into .", "allowed\u2024test", "host has an invalid character"),
    ("an empty label", "allowed..test", "host has an empty label"),
    ("a leading dot", ".allowed.test", "host has an empty label"),
    ("two trailing dots", "allowed.test..", "host has an empty label"),
    ("a 64-character label", "a" * 64 + ".test", "host label too long"),
    ("254 characters", ".".join(["a" * 63] * 3 + ["b" * 62]), "host too long"),
    ("a huge host", "a." * 5000, "host too long"),
    ("an IDN label that is too long", "ü" * 60, "host has an invalid international label"),
    (
        "an ideographic space NFKC turns into a space",
        "allowed\u3000test",
        "host has an invalid character",
    ),
    ("a private-use character", "\ue000.test", "host has an invalid international label"),
    (
        "mixed right-to-left and left-to-right",
        "\u05d0a.test",
        "host has an invalid international label",
    ),
    ("five numeric parts", "1.2.3.4.5", "host has an invalid IPv4 literal"),
    ("a part over 255", "256.0.0.1", "host has an invalid IPv4 literal"),
    ("a last part too big for a.b", "1.16777216", "host has an invalid IPv4 literal"),
    ("a number over 32 bits", "4294967296", "host has an invalid IPv4 literal"),
    ("an 8 in an octal part", "08.0.0.1", "host has an invalid IPv4 literal"),
    ("a name ending in a number", "allowed.test.123", "host has an invalid IPv4 literal"),
    ("a name ending in a hex number", "allowed.0x1", "host has an invalid IPv4 literal"),
    ("an unclosed bracket", "[::1", "host has an invalid IPv6 literal"),
    ("a bracketed IPv4 address", "[127.0.0.1]", "host has an invalid IPv6 literal"),
    ("a bracketed address with a port", "[::1]:443", "host has an invalid IPv6 literal"),
    ("a bad IPv6 address", "[::g]", "host has an invalid IPv6 literal"),
    ("mapped IPv6 with a leading zero", "[::ffff:127.0.0.01]", "host has an invalid IPv6 literal"),
]


@pytest.mark.parametrize(("raw", "phrase"), [r[1:] for r in BAD], ids=[r[0] for r in BAD])
def test_normalise_host_bad(raw: str, phrase: str) -> None:
    with pytest.raises(ValueError, match="^" + phrase + "$") as e:
        normalise_host(raw)
    assert f"invalid host: {e.value}" in REASONS


# --- the wire form ----------------------------------------------------------------------------


def test_rules_are_named_by_position_and_content() -> None:
    p = EgressPolicy.from_json(
        {
            "allow": [
                {"host": "API.example.com."},
                {"host": "*.GitHub.com", "ports": [443, 80, 443]},
                {"cidr": "198.51.100.0/24", "ports": [8080]},
            ],
            "deny": [{"cidr": "2001:DB8::/32", "ports": [22]}],
        }
    )
    assert [r.name for r in p.allow] == [
        "allow[0] host api.example.com ports 80,443",
        "allow[1] host *.github.com ports 80,443",
        "allow[2] cidr 198.51.100.0/24 ports 8080",
    ]
    assert [r.name for r in p.deny] == ["deny[0] cidr 2001:db8::/32 ports 22"]


def test_to_json_is_the_canonical_wire_form() -> None:
    p = EgressPolicy.from_json(
        {
            "allow": [{"host": "*.Allowed.test"}, {"cidr": "10.0.0.0/255.0.0.0", "ports": [8080]}],
            "resolve": {"API.allowed.test.": ["198.51.100.10", "2001:DB8::1"]},
        }
    )
    assert p.to_json() == {
        "allow": [
            {"host": "*.allowed.test", "ports": [80, 443]},
            {"cidr": "10.0.0.0/8", "ports": [8080]},
        ],
        "deny": [],
        "resolve": {"api.allowed.test": ["198.51.100.10", "2001:db8::1"]},
    }
    assert EgressPolicy.from_json(p.to_json()) == p


def test_digest_is_16_hex_and_tells_policies_apart() -> None:
    one = EgressPolicy.from_json({"allow": [{"host": "a.test"}]})
    same = EgressPolicy.from_json({"allow": [{"host": "A.test.", "ports": [443, 80]}]})
    other = EgressPolicy.from_json({"allow": [{"host": "a.test", "ports": [443]}]})
    assert len(one.digest()) == 16
    assert int(one.digest(), 16) >= 0
    assert one.digest() == same.digest()
    assert one.digest() != other.digest()
    assert EgressPolicy().digest() != one.digest()


def test_an_empty_document_is_the_empty_policy() -> None:
    assert EgressPolicy.from_json({}) == EgressPolicy()
    assert EgressPolicy().to_json() == {"allow": [], "deny": [], "resolve": {}}


LOAD_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", [], "policy: expected an object with allow, deny and resolve"),
    (
        "an unknown field",
        {"alow": []},
        "policy: unknown field 'alow' (expected allow, deny, resolve)",
    ),
    ("allow not a list", {"allow": {"host": "a.test"}}, "allow: expected a list of rules"),
    (
        "a rule not an object",
        {"deny": ["a.test"]},
        "deny[0]: expected an object with host or cidr, and ports",
    ),
    (
        "an unknown rule field",
        {"allow": [{"host": "a.test", "port": 443}]},
        "allow[0]: unknown field 'port' (expected host, cidr, ports)",
    ),
    (
        "neither host nor cidr",
        {"allow": [{"ports": [443]}]},
        "allow[0]: give exactly one of host or cidr",
    ),
    (
        "both host and cidr",
        {"allow": [{"host": "a.test", "cidr": "10.0.0.0/8"}]},
        "allow[0]: give exactly one of host or cidr",
    ),
    (
        "a host with userinfo",
        {"allow": [{"host": "a.test"}, {"host": "u@a.test"}]},
        "allow[1].host: host has userinfo",
    ),
    (
        "a literal IP as host",
        {"allow": [{"host": "10.0.0.1"}]},
        "allow[0].host: '10.0.0.1' is an address; use cidr",
    ),
    (
        "a legacy-spelled IP as host",
        {"allow": [{"host": "127.1"}]},
        "allow[0].host: '127.1' is an address; use cidr",
    ),
    (
        "a wildcard not first",
        {"allow": [{"host": "a.*.test"}]},
        "allow[0].host: host has an invalid character",
    ),
    ("a bare wildcard", {"allow": [{"host": "*"}]}, "allow[0].host: host has an invalid character"),
    (
        "two wildcards",
        {"allow": [{"host": "*.*.test"}]},
        "allow[0].host: host has an invalid character",
    ),
    ("a wildcard of nothing", {"allow": [{"host": "*."}]}, "allow[0].host: host is empty"),
    (
        "a host not a string",
        {"allow": [{"host": 7}]},
        "allow[0].host: expected a host name such as api.example.com or *.example.com",
    ),
    (
        "a CIDR with host bits",
        {"allow": [{"host": "a.test"}, {"cidr": "10.0.0.1/8"}]},
        "allow[1].cidr: not a network: 10.0.0.1/8 has host bits set",
    ),
    (
        "a CIDR that is no network",
        {"deny": [{"cidr": "evil.test"}]},
        "deny[0].cidr: not a network: 'evil.test' does not appear to be an IPv4 or IPv6 network",
    ),
    (
        "a CIDR with a zone",
        {"deny": [{"cidr": "fe80::%eth0/64"}]},
        "deny[0].cidr: not a network: 'fe80::%eth0/64'",
    ),
    (
        "a CIDR not a string",
        {"deny": [{"cidr": 167772160}]},
        "deny[0].cidr: not a network: 167772160",
    ),
    (
        "ports not a list",
        {"allow": [{"host": "a.test", "ports": 443}]},
        "allow[0].ports: expected a list of ports",
    ),
    (
        "no ports",
        {"allow": [{"host": "a.test", "ports": []}]},
        "allow[0].ports: no ports: give at least one, or leave ports out for 80 and 443",
    ),
    (
        "port 0",
        {"allow": [{"host": "a.test", "ports": [443, 0]}]},
        "allow[0].ports[1]: not a port number 1-65535: 0",
    ),
    (
        "port 65536",
        {"allow": [{"host": "a.test", "ports": [65536]}]},
        "allow[0].ports[0]: not a port number 1-65535: 65536",
    ),
    (
        "a port as text",
        {"allow": [{"host": "a.test", "ports": ["443"]}]},
        "allow[0].ports[0]: not a port number 1-65535: '443'",
    ),
    (
        "a port as a boolean",
        {"allow": [{"host": "a.test", "ports": [True]}]},
        "allow[0].ports[0]: not a port number 1-65535: True",
    ),
    (
        "a port as a float",
        {"allow": [{"host": "a.test", "ports": [443.0]}]},
        "allow[0].ports[0]: not a port number 1-65535: 443.0",
    ),
    ("resolve not an object", {"resolve": []}, "resolve: expected an object of name: [addresses]"),
    (
        "a resolve name with userinfo",
        {"resolve": {"u@a.test": ["1.1.1.1"]}},
        "resolve['u@a.test']: host has userinfo",
    ),
    (
        "a resolve name that is an address",
        {"resolve": {"1.1.1.1": ["1.1.1.1"]}},
        "resolve['1.1.1.1']: an address needs no resolve entry",
    ),
    (
        "a resolve name given twice in two spellings",
        {"resolve": {"a.test": ["1.1.1.1"], "A.TEST.": ["8.8.8.8"]}},
        "resolve['A.TEST.']: a.test is given twice",
    ),
    (
        "a resolve answer not a list",
        {"resolve": {"a.test": "1.1.1.1"}},
        "resolve['a.test']: expected a list of addresses",
    ),
    ("an empty resolve answer", {"resolve": {"a.test": []}}, "resolve['a.test']: no addresses"),
    (
        "a resolve answer that is no address",
        {"resolve": {"a.test": ["1.1.1.1", "127.1"]}},
        "resolve['a.test'][1]: not an IP address: "
        "'127.1' does not appear to be an IPv4 or IPv6 address",
    ),
    (
        "a resolve answer with a zone",
        {"resolve": {"a.test": ["fe80::1%eth0"]}},
        "resolve['a.test'][0]: not an IP address: 'fe80::1%eth0'",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [r[1:] for r in LOAD_ERRORS], ids=[r[0] for r in LOAD_ERRORS]
)
def test_from_json_errors_name_the_path(data: Any, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        EgressPolicy.from_json(data)
    assert str(e.value) == message


# --- properties -------------------------------------------------------------------------------

LABELS = st.sampled_from(
    ["a", "b", "allowed", "test", "xn--bcher-kva", "Ü", "ｂ", "0x1f", "08", "1", "255"]
)
HOSTISH = st.one_of(
    st.text(),
    st.lists(LABELS, min_size=1, max_size=5).map(".".join),
    st.lists(LABELS, min_size=1, max_size=5).map(lambda labels: ".".join(labels) + "."),
    st.ip_addresses().map(spell),
    st.text(alphabet="0123456789abcdefx.:[]%@", max_size=30),
)


@given(HOSTISH)
def test_normalisation_is_idempotent_and_refuses_only_with_a_reason(raw: str) -> None:
    try:
        host = normalise_host(raw)
    except ValueError as e:
        error: ValueError | None = e
    else:
        error = None
    if error is not None:
        assert type(error) is ValueError
        assert f"invalid host: {error}" in REASONS
        return
    assert normalise_host(str(host)) == host


EVERYTHING = EgressPolicy.from_json(
    {"allow": [{"cidr": "0.0.0.0/0", "ports": [80]}, {"cidr": "::/0", "ports": [80]}]}
)


@given(
    st.sampled_from(["10.213.0.0/16", "172.30.0.0/20", "fd00:ac::/64"]).map(net),
    st.integers(min_value=0),
    st.booleans(),
)
def test_no_address_of_the_pool_passes_even_a_policy_allowing_everything(
    pool: IPNetwork, offset: int, mapped: bool
) -> None:
    """Whatever a tenant's policy allows, its gate never dials into the subnet pool."""
    address = pool[offset % pool.num_addresses]
    own = (net(f"{pool[1]}/{pool.max_prefixlen}"),)  # the gate's own: inside the pool
    if mapped and address.version == 4:
        address = ipaddress.IPv6Address(f"::ffff:{address}")
    d = decide_egress(EVERYTHING, spell(address), 80, own=own, cells=(pool,))
    assert not d.allow
    self_ = unwrap(address) == pool[1] or address == pool[1]
    assert d.reason == ("address is the gate itself" if self_ else "address is another cell's")


PORTS = st.one_of(st.sampled_from([22, 80, 443, 8080]), st.integers())
ADDRESSES = st.lists(st.ip_addresses(), max_size=4)


@given(st.text(), PORTS, st.one_of(st.none(), ADDRESSES))
def test_decide_egress_never_raises(
    host: str, port: int, addresses: list[IPAddress] | None
) -> None:
    d = decide_egress(POLICY, host, port, addresses, own=OWN, cells=CELLS)
    assert d.reason in REASONS
    assert d.allow == (d.reason in ("allowed", "needs resolution"))
    assert (d.address is not None) == (d.reason == "allowed")


# Addresses outside global unicast, bare and in every embedding of an IPv4 address.
NON_GLOBAL_V4 = [n for n, c in ADDRESS_CLASSES if n.version == 4 and c is not AddressClass.GLOBAL]
NON_GLOBAL_V6 = [n for n, c in ADDRESS_CLASSES if n.version == 6 and c is not AddressClass.GLOBAL]


def _embed(v4: ipaddress.IPv4Address, how: str, noise: int) -> IPAddress:
    value = int(v4)
    return ipaddress.IPv6Address(
        {
            "mapped": 0xFFFF << 32 | value,
            "compatible": value,
            "nat64": 0x64FF9B << 96 | value,
            "nat64-local": 0x64FF9B0001 << 80 | (noise & 0xFFFF_FFFF_FFFF) << 32 | value,
            "6to4": 0x2002 << 112 | value << 80 | noise & (1 << 80) - 1,
            "teredo": 0x20010000 << 96 | (noise & (1 << 64) - 1) << 32 | value ^ 0xFFFFFFFF,
        }[how]
    )


V4_INSIDE = st.sampled_from(NON_GLOBAL_V4).flatmap(lambda n: st.ip_addresses(network=n))
ANY_ADDRESS = st.one_of(
    st.ip_addresses(),
    V4_INSIDE,
    st.sampled_from(NON_GLOBAL_V6).flatmap(lambda n: st.ip_addresses(network=n)),
    st.builds(
        _embed,
        st.one_of(V4_INSIDE, st.ip_addresses(v=4)),
        st.sampled_from(["mapped", "compatible", "nat64", "nat64-local", "6to4", "teredo"]),
        st.integers(min_value=0, max_value=2**80 - 1),
    ),
)
NAMES = ["a.test", "b.test", "x.a.test", "y.x.a.test", "c.test"]
RULE_HOSTS = st.sampled_from(["a.test", "*.a.test", "b.test", "*.test", "c.test"])
HOST_RULE = st.fixed_dictionaries(
    {"host": RULE_HOSTS}, optional={"ports": st.lists(st.sampled_from([80, 443, 8080]), min_size=1)}
)


def _is_public(address: IPAddress) -> bool:
    """The standard library's view, independent of ADDRESS_CLASSES."""
    inner = unwrap(address)
    return inner.is_global and not inner.is_multicast


MIXED = st.one_of(ANY_ADDRESS, st.ip_addresses(v=4), st.ip_addresses(network="2000::/3"))


@given(
    allow=st.lists(HOST_RULE, max_size=3),
    allow_host=st.booleans(),
    resolve=st.dictionaries(st.sampled_from(NAMES), st.lists(MIXED, min_size=1, max_size=2)),
    host=st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), ANY_ADDRESS.map(spell)),
    port=st.sampled_from([80, 443, 8080]),
    addresses=st.one_of(st.none(), st.lists(MIXED, max_size=2)),
)
def test_nothing_outside_global_unicast_passes_host_rules(
    allow: list[dict[str, Any]],
    allow_host: bool,
    resolve: dict[str, list[IPAddress]],
    host: str,
    port: int,
    addresses: list[IPAddress] | None,
) -> None:
    is_name = isinstance(normalise_host(host), str)
    if allow_host and is_name:
        allow = [*allow, {"host": host, "ports": [port]}]
    policy = EgressPolicy.from_json(
        {"allow": allow, "resolve": {k: [str(a) for a in v] for k, v in resolve.items()}}
    )
    d = decide_egress(policy, host, port, addresses)
    if not d.allow or d.needs_resolution:
        return
    assert is_name, "a literal passed without a cidr rule"
    answer = policy.resolve.get(d.host, tuple(addresses or ()))
    assert d.address == answer[0]
    for a in answer:
        assert classify(a) is AddressClass.GLOBAL
        assert _is_public(a), f"{a} passed as global unicast"


@given(
    allow=st.lists(HOST_RULE, max_size=3),
    cidrs=st.lists(st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/8"]), max_size=2),
    name=st.sampled_from(NAMES),
    wildcard=st.booleans(),
    port=st.sampled_from([80, 443, 8080]),
    addresses=st.one_of(st.none(), st.lists(ANY_ADDRESS, max_size=3)),
)
def test_a_deny_rule_covering_the_host_always_wins(
    allow: list[dict[str, Any]],
    cidrs: list[str],
    name: str,
    wildcard: bool,
    port: int,
    addresses: list[IPAddress] | None,
) -> None:
    denied_host = "*." + name.split(".", 1)[1] if wildcard else name
    policy = EgressPolicy.from_json(
        {
            "allow": [
                *allow,
                {"host": name, "ports": [port]},
                *({"cidr": c, "ports": [port]} for c in cidrs),
            ],
            "deny": [{"host": denied_host, "ports": [port]}],
        }
    )
    assert decide_egress(policy, name, port, addresses).reason == "denied by rule"


@given(
    answer=st.lists(ANY_ADDRESS, min_size=1, max_size=4),
    pick=st.integers(min_value=0),
    unwrapped=st.booleans(),
    literal=st.booleans(),
    port=st.sampled_from([80, 443, 8080]),
)
def test_a_deny_cidr_covering_an_address_always_wins(
    answer: list[IPAddress], pick: int, unwrapped: bool, literal: bool, port: int
) -> None:
    target = answer[pick % len(answer)]
    covered = unwrap(target) if unwrapped else target
    policy = EgressPolicy.from_json(
        {
            "allow": [
                {"host": "a.test", "ports": [port]},
                {"cidr": "0.0.0.0/0", "ports": [port]},
                {"cidr": "::/0", "ports": [port]},
            ],
            "deny": [{"cidr": str(net(covered)), "ports": [port]}],
        }
    )
    if literal:
        assert decide_egress(policy, spell(target), port).reason == "denied by rule"
    else:
        assert decide_egress(policy, "a.test", port, answer).reason == "address denied by rule"


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
RULEISH = st.dictionaries(
    st.sampled_from(["host", "cidr", "ports", "other"]),
    st.one_of(
        JSONISH,
        HOSTISH,
        st.sampled_from(["*.a.test", "10.0.0.0/8", "fe80::/10", "10.0.0.1/8", "::/0"]),
        st.lists(st.one_of(st.integers(-1, 70000), JSONISH), max_size=3),
    ),
)
POLICYISH = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {},
        optional={
            "allow": st.one_of(JSONISH, st.lists(RULEISH, max_size=3)),
            "deny": st.one_of(JSONISH, st.lists(RULEISH, max_size=3)),
            "resolve": st.one_of(
                JSONISH,
                st.dictionaries(
                    HOSTISH,
                    st.one_of(
                        JSONISH,
                        st.lists(st.one_of(st.ip_addresses().map(str), st.text()), max_size=3),
                    ),
                    max_size=3,
                ),
            ),
        },
    ),
)


@given(POLICYISH)
def test_from_json_raises_only_policy_error_and_round_trips(data: Any) -> None:
    try:
        policy = EgressPolicy.from_json(data)
    except PolicyError:
        return
    wire = policy.to_json()
    assert json.loads(json.dumps(wire)) == wire
    again = EgressPolicy.from_json(wire)
    assert again == policy
    assert again.to_json() == wire
    assert again.digest() == policy.digest()


VALID = st.fixed_dictionaries(
    {},
    optional={
        "allow": st.lists(
            st.one_of(
                HOST_RULE,
                st.fixed_dictionaries(
                    {"cidr": st.ip_addresses().map(lambda a: str(net(a)))},
                    optional={"ports": st.lists(st.integers(1, 65535), min_size=1, max_size=3)},
                ),
            ),
            max_size=4,
        ),
        "deny": st.lists(HOST_RULE, max_size=2),
        "resolve": st.dictionaries(
            st.sampled_from(NAMES), st.lists(ANY_ADDRESS.map(str), min_size=1, max_size=3)
        ),
    },
)


@given(VALID)
def test_valid_policies_load_and_round_trip(data: dict[str, Any]) -> None:
    policy = EgressPolicy.from_json(data)
    assert EgressPolicy.from_json(policy.to_json()) == policy
    assert len(policy.allow) == len(data.get("allow", []))
