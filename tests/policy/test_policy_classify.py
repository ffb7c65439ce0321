"""Address classification: ``unwrap`` and ``classify``, one row per range of the table.

Each range row gives addresses just inside it (its edges) and just outside it, with
the class each of those has; a last check proves every row of ``ADDRESS_CLASSES`` has
a row here, so the table and its test cannot drift apart.
"""

from __future__ import annotations

import ipaddress

import pytest

from agentcell.policy import ADDRESS_CLASSES, AddressClass, classify, unwrap

G = AddressClass.GLOBAL
LOOP = AddressClass.LOOPBACK
PRIV = AddressClass.PRIVATE
LINK = AddressClass.LINK_LOCAL
CGNAT = AddressClass.CGNAT
MULTI = AddressClass.MULTICAST
UNSPEC = AddressClass.UNSPECIFIED
RES = AddressClass.RESERVED
SELF = AddressClass.SELF

ip = ipaddress.ip_address

# --- unwrap ------------------------------------------------------------------------------------

UNWRAP: list[tuple[str, str, str]] = [
    ("an IPv4 address is itself", "10.1.2.3", "10.1.2.3"),
    ("IPv4-mapped ::ffff:a.b.c.d", "::ffff:127.0.0.1", "127.0.0.1"),
    ("IPv4-mapped 0.0.0.0", "::ffff:0.0.0.0", "0.0.0.0"),
    ("IPv4-compatible ::a.b.c.d", "::169.254.169.254", "169.254.169.254"),
    ("IPv4-compatible ::2 is 0.0.0.2", "::2", "0.0.0.2"),
    ("the unspecified address :: is not IPv4-compatible", "::", "::"),
    ("the loopback ::1 is not IPv4-compatible", "::1", "::1"),
    ("::1:0:0 is neither compatible nor mapped", "::1:0:0", "::1:0:0"),
    ("NAT64 well-known prefix 64:ff9b::/96", "64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ("NAT64 local-use 64:ff9b:1::/48, last 32 bits", "64:ff9b:1::a00:1", "10.0.0.1"),
    (
        "NAT64 local-use with the middle bits set, last 32 bits",
        "64:ff9b:1:ffff:ffff:ffff:7f00:1",
        "127.0.0.1",
    ),
    (
        "64:ff9b:0:0:0:1::/96 is outside the NAT64 /96",
        "64:ff9b::1:a9fe:a9fe",
        "64:ff9b::1:a9fe:a9fe",
    ),
    ("6to4 2002::/16, bits 16-48", "2002:a9fe:a9fe::1", "169.254.169.254"),
    ("6to4 with a subnet and interface id", "2002:7f00:1:ffff:1:2:3:4", "127.0.0.1"),
    (
        "Teredo 2001::/32, client address inverted",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "192.0.2.45",
    ),
    ("Teredo hiding 10.0.0.1", "2001:0:1:2:3:4:f5ff:fffe", "10.0.0.1"),
    ("2001:1::/32 is not Teredo", "2001:1::1", "2001:1::1"),
    ("a global IPv6 address is itself", "2606:4700::1111", "2606:4700::1111"),
    ("a link-local IPv6 address is itself", "fe80::1", "fe80::1"),
]


@pytest.mark.parametrize(
    ("address", "expected"), [r[1:] for r in UNWRAP], ids=[r[0] for r in UNWRAP]
)
def test_unwrap(address: str, expected: str) -> None:
    assert unwrap(ip(address)) == ip(expected)


# --- classify: one row per range of ADDRESS_CLASSES ---------------------------------------------


def ones(prefix: str) -> str:
    """The last address starting with ``prefix``: its remaining groups all ffff."""
    groups = prefix.split(":")
    return ":".join(groups + ["ffff"] * (8 - len(groups)))


RANGES: list[tuple[str, str, AddressClass, list[str], dict[str, AddressClass]]] = [
    # (id, network, class, inside, {just outside: its class})
    (
        "127.0.0.0/8 loopback",
        "127.0.0.0/8",
        LOOP,
        ["127.0.0.0", "127.0.0.1", "127.255.255.255"],
        {"126.255.255.255": G, "128.0.0.0": G},
    ),
    ("0.0.0.0/32 unspecified", "0.0.0.0/32", UNSPEC, ["0.0.0.0"], {"0.0.0.1": RES}),
    (
        "169.254.0.0/16 link-local, the metadata address included",
        "169.254.0.0/16",
        LINK,
        ["169.254.0.0", "169.254.169.254", "169.254.255.255"],
        {"169.253.255.255": G, "169.255.0.0": G},
    ),
    (
        "100.64.0.0/10 CGNAT",
        "100.64.0.0/10",
        CGNAT,
        ["100.64.0.0", "100.64.0.1", "100.127.255.255"],
        {"100.63.255.255": G, "100.128.0.0": G},
    ),
    (
        "10.0.0.0/8 private",
        "10.0.0.0/8",
        PRIV,
        ["10.0.0.0", "10.255.255.255"],
        {"9.255.255.255": G, "11.0.0.0": G},
    ),
    (
        "172.16.0.0/12 private",
        "172.16.0.0/12",
        PRIV,
        ["172.16.0.0", "172.31.255.255"],
        {"172.15.255.255": G, "172.32.0.0": G},
    ),
    (
        "192.168.0.0/16 private",
        "192.168.0.0/16",
        PRIV,
        ["192.168.0.0", "192.168.255.255"],
        {"192.167.255.255": G, "192.169.0.0": G},
    ),
    (
        "224.0.0.0/4 multicast",
        "224.0.0.0/4",
        MULTI,
        ["224.0.0.0", "239.255.255.255"],
        {"223.255.255.255": G, "240.0.0.0": RES},
    ),
    (
        "0.0.0.0/8 this network, reserved",
        "0.0.0.0/8",
        RES,
        ["0.0.0.1", "0.255.255.255"],
        {"0.0.0.0": UNSPEC, "1.0.0.0": G},
    ),
    (
        "192.0.0.0/24 IETF protocol assignments, reserved",
        "192.0.0.0/24",
        RES,
        ["192.0.0.0", "192.0.0.255"],
        {"191.255.255.255": G, "192.0.1.0": G},
    ),
    (
        "192.0.2.0/24 documentation, reserved",
        "192.0.2.0/24",
        RES,
        ["192.0.2.0", "192.0.2.255"],
        {"192.0.1.255": G, "192.0.3.0": G},
    ),
    (
        "192.88.99.0/24 6to4 relay anycast, reserved",
        "192.88.99.0/24",
        RES,
        ["192.88.99.0", "192.88.99.255"],
        {"192.88.98.255": G, "192.88.100.0": G},
    ),
    (
        "198.18.0.0/15 benchmarking, reserved",
        "198.18.0.0/15",
        RES,
        ["198.18.0.0", "198.19.255.255"],
        {"198.17.255.255": G, "198.20.0.0": G},
    ),
    (
        "198.51.100.0/24 documentation, reserved",
        "198.51.100.0/24",
        RES,
        ["198.51.100.0", "198.51.100.255"],
        {"198.51.99.255": G, "198.51.101.0": G},
    ),
    (
        "203.0.113.0/24 documentation, reserved",
        "203.0.113.0/24",
        RES,
        ["203.0.113.0", "203.0.113.255"],
        {"203.0.112.255": G, "203.0.114.0": G},
    ),
    (
        "255.255.255.255 limited broadcast, reserved",
        "255.255.255.255/32",
        RES,
        ["255.255.255.255"],
        {"255.255.255.254": RES},
    ),
    (
        "240.0.0.0/4 future use, reserved",
        "240.0.0.0/4",
        RES,
        ["240.0.0.0", "255.255.255.254"],
        {"239.255.255.255": MULTI},
    ),
    (
        "every other IPv4 address is global",
        "0.0.0.0/0",
        G,
        ["1.0.0.0", "1.1.1.1", "8.8.8.8", "223.255.255.255"],
        {},
    ),
    ("::1 loopback", "::1/128", LOOP, ["::1"], {"::": UNSPEC, "::2": RES}),
    (":: unspecified", "::/128", UNSPEC, ["::"], {"::1": LOOP}),
    (
        "fe80::/10 link-local",
        "fe80::/10",
        LINK,
        ["fe80::", "fe80::1", ones("febf")],
        {ones("fe7f"): RES, "fec0::": PRIV},
    ),
    (
        "fc00::/7 unique local, private",
        "fc00::/7",
        PRIV,
        ["fc00::", "fd00::1", ones("fdff")],
        {ones("fbff"): RES, "fe00::": RES},
    ),
    (
        "fec0::/10 site-local, private",
        "fec0::/10",
        PRIV,
        ["fec0::", ones("feff")],
        {ones("febf"): LINK, "ff00::": MULTI},
    ),
    (
        "ff00::/8 multicast",
        "ff00::/8",
        MULTI,
        ["ff00::", "ff02::1", ones("ffff")],
        {ones("feff"): PRIV},
    ),
    (
        "64:ff9b:1::/48 local-use NAT64 is reserved even around a global address",
        "64:ff9b:1::/48",
        RES,
        ["64:ff9b:1::101:101", "64:ff9b:1:ffff:ffff:ffff:808:808"],
        {"64:ff9b:0:ffff:ffff:ffff:808:808": RES, "64:ff9b:2::808:808": RES},
    ),
    (
        "100::/64 discard, reserved",
        "100::/64",
        RES,
        ["100::", "100::ffff:ffff:ffff:ffff"],
        {ones("ff"): RES, "100:0:0:1::": RES},
    ),
    (
        "2001::/23 IETF protocol assignments (Teredo, ORCHID, ...), reserved",
        "2001::/23",
        RES,
        ["2001::", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", ones("2001:1ff")],
        {ones("2000"): G, "2001:200::": G},
    ),
    (
        "2001:db8::/32 documentation, reserved",
        "2001:db8::/32",
        RES,
        ["2001:db8::", ones("2001:db8")],
        {ones("2001:db7"): G, "2001:db9::": G},
    ),
    (
        "3fff::/20 documentation, reserved",
        "3fff::/20",
        RES,
        ["3fff::", ones("3fff:fff")],
        {ones("3ffe"): G, "3fff:1000::": G},
    ),
    (
        "::ffff:0:0/96 IPv4-mapped is global around a global address",
        "::ffff:0:0/96",
        G,
        ["::ffff:1.0.0.0", "::ffff:8.8.8.8", "::ffff:223.255.255.255"],
        {"::fffe:ffff:ffff": RES, "::1:0:0:0": RES},
    ),
    (
        "64:ff9b::/96 NAT64 is global around a global address",
        "64:ff9b::/96",
        G,
        ["64:ff9b::101:101", "64:ff9b::dfff:ffff"],
        {ones("64:ff9a"): RES, "64:ff9b::1:0:0": RES},
    ),
    (
        "2000::/3 global unicast",
        "2000::/3",
        G,
        ["2000::", "2606:4700::1111", ones("3fff")],
        {ones("1fff"): RES, "4000::": RES},
    ),
]


def _checks() -> list[object]:
    out: list[object] = []
    for name, _net, cls, inside, outside in RANGES:
        out += [pytest.param(a, cls, id=f"{name}: {a} inside") for a in inside]
        out += [pytest.param(a, c, id=f"{name}: {a} outside") for a, c in outside.items()]
    return out


@pytest.mark.parametrize(("address", "expected"), _checks())
def test_classify_range_edges(address: str, expected: AddressClass) -> None:
    assert classify(ip(address)) is expected


def test_every_table_row_has_a_test_row() -> None:
    tested = [(ipaddress.ip_network(net), cls) for _, net, cls, _, _ in RANGES]
    assert tested == list(ADDRESS_CLASSES)


# --- classify: embedded forms, addresses outside every row, and the gate's own -----------------

OWN = (ipaddress.ip_network("10.9.0.5/32"), ipaddress.ip_network("fd00:9::/64"))

EMBEDDED: list[tuple[str, str, AddressClass]] = [
    ("mapped loopback is loopback", "::ffff:127.0.0.1", LOOP),
    ("mapped metadata address is link-local", "::ffff:169.254.169.254", LINK),
    ("mapped 0.0.0.0 is unspecified", "::ffff:0.0.0.0", UNSPEC),
    ("compatible 10.0.0.1 is private", "::10.0.0.1", PRIV),
    ("compatible global address is reserved (deprecated form)", "::8.8.8.8", RES),
    ("NAT64 metadata address is link-local", "64:ff9b::a9fe:a9fe", LINK),
    ("NAT64 CGNAT address is CGNAT", "64:ff9b::6440:1", CGNAT),
    ("NAT64 documentation address is reserved", "64:ff9b::c000:22d", RES),
    ("local-use NAT64 loopback is loopback", "64:ff9b:1::7f00:1", LOOP),
    ("6to4 of 10.0.0.1 is private", "2002:a00:1::1", PRIV),
    ("6to4 of 169.254.169.254 is link-local", "2002:a9fe:a9fe::", LINK),
    ("6to4 of a global address is global", "2002:808:808::1", G),
    ("6to4 of multicast is multicast", "2002:e000:1::1", MULTI),
    ("Teredo hiding 192.168.1.1 is private", "2001:0:1:2:3:4:3f57:fefe", PRIV),
    ("Teredo hiding 169.254.169.254 is link-local", "2001:0:1:2:3:4:5601:5601", LINK),
    ("an IPv6 address outside every row: 4000::1", "4000::1", RES),
    ("an IPv6 address outside every row: 5f00::1 (SRv6)", "5f00::1", RES),
    ("an IPv6 address outside every row: ::1:0:0:1", "::1:0:0:1", RES),
]


@pytest.mark.parametrize(
    ("address", "expected"), [r[1:] for r in EMBEDDED], ids=[r[0] for r in EMBEDDED]
)
def test_classify_embedded(address: str, expected: AddressClass) -> None:
    assert classify(ip(address)) is expected


SELF_ROWS: list[tuple[str, str, AddressClass]] = [
    ("the gate's own IPv4 address is self", "10.9.0.5", SELF),
    ("its neighbour is only private", "10.9.0.6", PRIV),
    ("the mapped spelling of the gate's address is self", "::ffff:10.9.0.5", SELF),
    ("the NAT64 spelling of the gate's address is self", "64:ff9b::a09:5", SELF),
    ("the 6to4 spelling of the gate's address is self", "2002:a09:5::1", SELF),
    ("an address in the gate's own IPv6 network is self", "fd00:9::1234", SELF),
    ("outside the gate's IPv6 network is only private", "fd00:a::1", PRIV),
    ("a global address is not self", "8.8.8.8", G),
]


@pytest.mark.parametrize(
    ("address", "expected"), [r[1:] for r in SELF_ROWS], ids=[r[0] for r in SELF_ROWS]
)
def test_classify_own(address: str, expected: AddressClass) -> None:
    assert classify(ip(address), own=OWN) is expected


def test_own_loopback_is_self_before_loopback() -> None:
    assert classify(ip("127.0.0.1"), own=[ipaddress.ip_network("127.0.0.0/8")]) is SELF
