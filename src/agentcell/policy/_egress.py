"""The egress decision: may this cell reach HOST:PORT, and at which address?

Pure: no sockets, no DNS. The gate asks, resolves when told to, and asks again.

Decision order (the one place it is written; ``tests/policy/test_policy_egress.py``
mirrors it row by row). The reason each step gives is in quotes; ``REASONS`` lists them.

1. Normalise the host: case-fold, drop one trailing dot, IDN to punycode; refuse
   userinfo, percent-encoding, whitespace, empty or over-long labels and any other
   character outside a hostname. An IP literal in any spelling (``127.1``,
   ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) becomes its address
   ("invalid host: <phrase>"). The port must be 1-65535 ("invalid port"); an empty
   policy allows nothing ("no policy").
2. Deny rules (by name, or by CIDR for a literal) win over everything ("denied by rule").
3. Allow rules by name (exact, or ``*.suffix`` for strict subdomains) and port; a
   literal address is allowed only by a ``cidr`` rule covering it and the port
   ("no rule allows this host", "no rule allows this port").
4. Resolve: a ``resolve`` entry of the policy answers; otherwise the caller must
   resolve the name and ask again with the addresses (``needs_resolution``: "needs
   resolution"). A literal needs no resolution. An empty answer is "no addresses".
5. Classify every address (mapped, NAT64, 6to4, Teredo and compatible forms are
   unwrapped first). The gate's own addresses and networks are always denied ("address
   is the gate itself"), and so is the rest of the subnet pool, where only other cells
   and their gates live ("address is another cell's"): the network keeps them apart,
   and the gate never tries. So is a deny-rule CIDR covering any address ("address
   denied by rule"). An address outside global unicast is allowed only when an explicit
   ``cidr`` allow rule covers it and the port ("address not public"). If any address of
   the answer is refused, the whole request is denied.
6. Allow, naming the rule and the one address to dial: the gate dials exactly it
   ("allowed"; the first address of the answer).

Rules match on their ports. An allow rule without ports means 80 and 443; a deny rule
without ports means every port (a deny that a port number could slip past is no deny).
A rule covers an address when its CIDR holds the address as given or its unwrapped
IPv4 form.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

__all__ = [
    "ADDRESS_CLASSES",
    "REASONS",
    "AddressClass",
    "EgressDecision",
    "EgressPolicy",
    "EgressRule",
    "IPAddress",
    "IPNetwork",
    "PolicyError",
    "classify",
    "decide_egress",
    "normalise_host",
    "unwrap",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_PHRASES = (
    "host is empty",
    "host too long",
    "host label too long",
    "host has an empty label",
    "host has userinfo",
    "host has percent-encoding",
    "host has a zone id",
    "host has an invalid character",
    "host has an invalid international label",
    "host has an invalid IPv4 literal",
    "host has an invalid IPv6 literal",
)

REASONS: tuple[str, ...] = (
    "allowed",
    "needs resolution",
    *(f"invalid host: {phrase}" for phrase in _HOST_PHRASES),
    "invalid port",
    "no policy",
    "denied by rule",
    "no rule allows this host",
    "no rule allows this port",
    "no addresses",
    "address is the gate itself",
    "address is another cell's",
    "address denied by rule",
    "address not public",
)
"""Every reason ``decide_egress`` gives: the log vocabulary and the test vocabulary."""


class PolicyError(ValueError):
    """A policy document that cannot be loaded; the message says what and where."""


class AddressClass(StrEnum):
    """What an address is, after unwrapping embedded IPv4 forms."""

    GLOBAL = "global"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"  # includes 169.254.169.254, the metadata address
    CGNAT = "cgnat"  # 100.64.0.0/10
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"  # documentation, benchmarking, 240/4, broadcast, ...
    SELF = "self"  # the gate's own addresses and the cell's own networks
    CELL = "cell"  # the rest of the subnet pool: other cells' networks and gates


def _rows(*rows: tuple[str, AddressClass]) -> tuple[tuple[IPNetwork, AddressClass], ...]:
    return tuple((ipaddress.ip_network(net), cls) for net, cls in rows)


_C = AddressClass
ADDRESS_CLASSES = _rows(
    ("127.0.0.0/8", _C.LOOPBACK),
    ("0.0.0.0/32", _C.UNSPECIFIED),
    ("169.254.0.0/16", _C.LINK_LOCAL),
    ("100.64.0.0/10", _C.CGNAT),
    ("10.0.0.0/8", _C.PRIVATE),
    ("172.16.0.0/12", _C.PRIVATE),
    ("192.168.0.0/16", _C.PRIVATE),
    ("224.0.0.0/4", _C.MULTICAST),
    ("0.0.0.0/8", _C.RESERVED),  # "this network"
    ("192.0.0.0/24", _C.RESERVED),  # IETF protocol assignments
    ("192.0.2.0/24", _C.RESERVED),  # documentation (TEST-NET-1)
    ("192.88.99.0/24", _C.RESERVED),  # 6to4 relay anycast (deprecated)
    ("198.18.0.0/15", _C.RESERVED),  # benchmarking
    ("198.51.100.0/24", _C.RESERVED),  # documentation (TEST-NET-2)
    ("203.0.113.0/24", _C.RESERVED),  # documentation (TEST-NET-3)
    ("255.255.255.255/32", _C.RESERVED),  # limited broadcast
    ("240.0.0.0/4", _C.RESERVED),  # future use
    ("0.0.0.0/0", _C.GLOBAL),
    ("::1/128", _C.LOOPBACK),
    ("::/128", _C.UNSPECIFIED),
    ("fe80::/10", _C.LINK_LOCAL),
    ("fc00::/7", _C.PRIVATE),  # unique local
    ("fec0::/10", _C.PRIVATE),  # site-local (deprecated)
    ("ff00::/8", _C.MULTICAST),
    ("64:ff9b:1::/48", _C.RESERVED),  # local-use NAT64: translates into a private domain
    ("100::/64", _C.RESERVED),  # discard
    ("2001::/23", _C.RESERVED),  # IETF protocol assignments: Teredo, benchmarking, ORCHID
    ("2001:db8::/32", _C.RESERVED),  # documentation
    ("3fff::/20", _C.RESERVED),  # documentation
    ("::ffff:0:0/96", _C.GLOBAL),  # IPv4-mapped: the embedded address decided first
    ("64:ff9b::/96", _C.GLOBAL),  # NAT64: the embedded address decided first
    ("2000::/3", _C.GLOBAL),  # global unicast, 6to4 included
)
"""The address table, checked in order; an IPv6 address no row holds is RESERVED."""

_MAX_RAW = 1024
_DOTS = re.compile("[\u3002\uff0e\uff61]")  # the dots IDNA treats as label separators
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_DEC = frozenset("0123456789")
_OCT = frozenset("01234567")
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class EgressRule:
    """One allow or deny rule, normalised. ``name`` is how decisions cite it."""

    name: str  # e.g. "allow[2] host *.github.com ports 80,443"
    host: str | None = None  # normalised; "*.example.com" for strict subdomains
    cidr: IPNetwork | None = None
    ports: frozenset[int] = frozenset({80, 443})  # empty: every port (deny rules only)

    def has_port(self, port: int) -> bool:
        return not self.ports or port in self.ports


@dataclass(frozen=True)
class EgressPolicy:
    """A compiled policy: what the gate enforces. Empty means no egress at all."""

    allow: tuple[EgressRule, ...] = ()
    deny: tuple[EgressRule, ...] = ()
    resolve: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> EgressPolicy:
        """Load the wire form (see ``to_json``); PolicyError says what is wrong."""
        if not isinstance(data, Mapping):
            _fail("policy", "expected an object with allow, deny and resolve")
        _known_fields("policy", data, ("allow", "deny", "resolve"))
        return cls(
            allow=_load_rules(data, "allow"),
            deny=_load_rules(data, "deny"),
            resolve=_load_resolve(data.get("resolve", {})),
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form: {"allow": [{"host"|"cidr", "ports"}...], "deny": [...], "resolve": {}}."""
        return {
            "allow": [_rule_json(r) for r in self.allow],
            "deny": [_rule_json(r) for r in self.deny],
            "resolve": {name: [str(a) for a in addrs] for name, addrs in self.resolve.items()},
        }

    def digest(self) -> str:
        """A short stable hash of the wire form, to tell policies apart."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EgressDecision:
    """The answer. ``reason`` is a fixed phrase; ``rule`` the cited rule's name or ""."""

    allow: bool
    reason: str
    rule: str = ""
    host: str = ""  # the normalised host (or the address, for a literal)
    address: IPAddress | None = None  # set when allowed: the one address to dial
    needs_resolution: bool = False  # allowed so far; resolve ``host`` and ask again

    def __bool__(self) -> bool:
        return self.allow


def normalise_host(raw: str) -> str | IPAddress:
    """The canonical host, or the address of an IP literal; ValueError(reason) if invalid."""
    if len(raw) > _MAX_RAW:
        raise ValueError("host too long")
    if "@" in raw:
        raise ValueError("host has userinfo")
    if "%" in raw:
        raise ValueError("host has a zone id" if ":" in raw else "host has percent-encoding")
    if raw.startswith("[") or ":" in raw:
        return _ipv6_literal(raw)
    text = _DOTS.sub(".", raw).lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("host is empty")
    labels = [_ascii_label(label) for label in text.split(".")]
    for label in labels:
        if len(label) > 63:
            raise ValueError("host label too long")
        if not _NAME_CHARS.issuperset(label):
            raise ValueError("host has an invalid character")
    if _is_number(labels[-1]):  # as browsers do: a host ending in a number is IPv4
        return _ipv4_literal(labels)
    name = ".".join(labels)
    if len(name) > 253:
        raise ValueError("host too long")
    return name


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address embedded in a mapped, compatible, NAT64, 6to4 or Teredo form."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    value = int(address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d, not :: or ::1
        return ipaddress.IPv4Address(value)
    if value >> 32 == 0x64FF9B << 64 or value >> 80 == 0x64FF9B0001:  # NAT64, RFC 6052/8215
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return address


def classify(
    address: IPAddress, *, own: Sequence[IPNetwork] = (), cells: Sequence[IPNetwork] = ()
) -> AddressClass:
    """The class of ``address`` (unwrapped first); ``own`` networks classify as SELF, then
    ``cells`` (the subnet pool) as CELL."""
    forms = (unwrap(address), address)
    if any(form in net for net in own for form in forms):
        return AddressClass.SELF
    if any(form in net for net in cells for form in forms):
        return AddressClass.CELL
    for form in forms:
        cls = next((c for net, c in ADDRESS_CLASSES if form in net), AddressClass.RESERVED)
        if cls is not AddressClass.GLOBAL:
            return cls
    return AddressClass.GLOBAL


def decide_egress(  # noqa: C901 (the precedence order, written once)
    policy: EgressPolicy,
    host: str,
    port: int,
    addresses: Sequence[IPAddress] | None = None,
    *,
    own: Sequence[IPNetwork] = (),
    cells: Sequence[IPNetwork] = (),
) -> EgressDecision:
    """Decide one request; see the module docstring for the order."""
    try:
        target = normalise_host(host)
    except ValueError as e:
        return EgressDecision(False, f"invalid host: {e}")
    shown = str(target)
    if isinstance(port, bool) or not 1 <= port <= 65535:
        return EgressDecision(False, "invalid port", host=shown)
    if not (policy.allow or policy.deny or policy.resolve):
        return EgressDecision(False, "no policy", host=shown)

    for rule in policy.deny:
        if rule.has_port(port) and _matches(rule, target):
            return EgressDecision(False, "denied by rule", rule.name, shown)

    named = [rule for rule in policy.allow if _matches(rule, target)]
    if not named:
        return EgressDecision(False, "no rule allows this host", host=shown)
    allowing = next((rule for rule in named if rule.has_port(port)), None)
    if allowing is None:
        return EgressDecision(False, "no rule allows this port", host=shown)

    if isinstance(target, str):
        answer = policy.resolve.get(target)
        if answer is None:
            if addresses is None:
                return EgressDecision(
                    True, "needs resolution", allowing.name, shown, needs_resolution=True
                )
            answer = tuple(addresses)
    else:
        answer = (target,)
    if not answer:
        return EgressDecision(False, "no addresses", host=shown)

    classes = [classify(a, own=own, cells=cells) for a in answer]
    if AddressClass.SELF in classes:
        return EgressDecision(False, "address is the gate itself", host=shown)
    if AddressClass.CELL in classes:
        return EgressDecision(False, "address is another cell's", host=shown)
    for a in answer:
        for rule in policy.deny:
            if rule.has_port(port) and _covers(rule, a):
                return EgressDecision(False, "address denied by rule", rule.name, shown)
    for a, cls in zip(answer, classes, strict=True):
        if cls is not AddressClass.GLOBAL and not any(
            rule.has_port(port) and _covers(rule, a) for rule in policy.allow
        ):
            return EgressDecision(False, "address not public", host=shown)
    return EgressDecision(True, "allowed", allowing.name, shown, answer[0])


# --- host spellings -------------------------------------------------------------------------


def _ipv6_literal(raw: str) -> ipaddress.IPv6Address:
    bracketed = raw.startswith("[") and raw.endswith("]")
    try:
        return ipaddress.IPv6Address(raw[1:-1] if bracketed else raw)
    except ValueError:
        pass
    if raw.startswith("["):
        raise ValueError("host has an invalid IPv6 literal")
    raise ValueError("host has an invalid character")


def _ascii_label(label: str) -> str:
    if not label:
        raise ValueError("host has an empty label")
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("host has an invalid international label") from None


def _is_number(label: str) -> bool:
    if label.startswith("0x"):
        return _HEX.issuperset(label[2:])
    return _DEC.issuperset(label)


def _ipv4_number(label: str) -> int:
    """One part of an inet_aton spelling: 0x hex, 0-leading octal, or decimal."""
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        if not _OCT.issuperset(label):
            raise ValueError("host has an invalid IPv4 literal")
        return int(label, 8)
    return int(label)


def _ipv4_literal(labels: list[str]) -> ipaddress.IPv4Address:
    """``a.b.c.d``, ``a.b.c`` (c 16 bits), ``a.b`` (b 24 bits) or ``a`` (32 bits)."""
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        raise ValueError("host has an invalid IPv4 literal")
    *head, last = [_ipv4_number(label) for label in labels]
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        raise ValueError("host has an invalid IPv4 literal")
    return ipaddress.IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


# --- matching -------------------------------------------------------------------------------


def _matches(rule: EgressRule, target: str | IPAddress) -> bool:
    """A host rule matches a name; a CIDR rule matches a literal address."""
    if isinstance(target, str):
        if rule.host is None:
            return False
        if rule.host.startswith("*."):
            return target.endswith(rule.host[1:])
        return target == rule.host
    return _covers(rule, target)


def _covers(rule: EgressRule, address: IPAddress) -> bool:
    return rule.cidr is not None and (address in rule.cidr or unwrap(address) in rule.cidr)


# --- the wire form --------------------------------------------------------------------------


def _fail(path: str, message: str) -> NoReturn:
    raise PolicyError(f"{path}: {message}")


def _known_fields(path: str, data: Mapping[Any, Any], known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            _fail(path, f"unknown field {key!r} (expected {', '.join(known)})")


def _list(value: Any, path: str, what: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        _fail(path, f"expected a list of {what}")
    return value


def _load_rules(data: Mapping[Any, Any], key: str) -> tuple[EgressRule, ...]:
    items = _list(data.get(key, []), key, "rules")
    return tuple(_load_rule(item, f"{key}[{i}]") for i, item in enumerate(items))


def _load_rule(item: Any, path: str) -> EgressRule:
    if not isinstance(item, Mapping):
        _fail(path, "expected an object with host or cidr, and ports")
    _known_fields(path, item, ("host", "cidr", "ports"))
    host, cidr = item.get("host"), item.get("cidr")
    if (host is None) == (cidr is None):
        _fail(path, "give exactly one of host or cidr")
    deny = path.startswith("deny")
    if deny and item.get("ports") is None:
        ports: frozenset[int] = frozenset()
    else:
        ports = _load_ports(item.get("ports", [80, 443]), f"{path}.ports")
    listed = ",".join(map(str, sorted(ports))) if ports else "all"
    if host is not None:
        name = _load_rule_host(host, f"{path}.host")
        return EgressRule(f"{path} host {name} ports {listed}", host=name, ports=ports)
    net = _load_cidr(cidr, f"{path}.cidr")
    return EgressRule(f"{path} cidr {net} ports {listed}", cidr=net, ports=ports)


def _load_rule_host(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "expected a host name such as api.example.com or *.example.com")
    wildcard = value.startswith("*.")
    try:
        name = normalise_host(value[2:] if wildcard else value)
    except ValueError as e:
        _fail(path, str(e))
    if not isinstance(name, str):
        _fail(path, f"{value!r} is an address; use cidr")
    return f"*.{name}" if wildcard else name


def _load_cidr(value: Any, path: str) -> IPNetwork:
    if not isinstance(value, str) or "%" in value:
        _fail(path, f"not a network: {value!r}")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        _fail(path, f"not a network: {e}")


def _load_ports(value: Any, path: str) -> frozenset[int]:
    ports = _list(value, path, "ports")
    if not ports:
        _fail(path, "no ports: give at least one, or leave ports out for 80 and 443")
    for i, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            _fail(f"{path}[{i}]", f"not a port number 1-65535: {port!r}")
    return frozenset(ports)


def _load_resolve(value: Any) -> dict[str, tuple[IPAddress, ...]]:
    if not isinstance(value, Mapping):
        _fail("resolve", "expected an object of name: [addresses]")
    out: dict[str, tuple[IPAddress, ...]] = {}
    for key, addrs in value.items():
        path = f"resolve[{key!r}]"
        if not isinstance(key, str):
            _fail(path, "expected a host name")
        try:
            name = normalise_host(key)
        except ValueError as e:
            _fail(path, str(e))
        if not isinstance(name, str):
            _fail(path, "an address needs no resolve entry")
        if name in out:
            _fail(path, f"{name} is given twice")
        items = _list(addrs, path, "addresses")
        if not items:
            _fail(path, "no addresses")
        out[name] = tuple(_load_address(a, f"{path}[{i}]") for i, a in enumerate(items))
    return out


def _load_address(value: Any, path: str) -> IPAddress:
    if not isinstance(value, str) or "%" in value:
        _fail(path, f"not an IP address: {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as e:
        _fail(path, f"not an IP address: {e}")


def _rule_json(rule: EgressRule) -> dict[str, Any]:
    target = {"host": rule.host} if rule.host is not None else {"cidr": str(rule.cidr)}
    return {**target, "ports": sorted(rule.ports)} if rule.ports else target
