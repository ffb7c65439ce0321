"""The egress decision: may this cell reach HOST:PORT, and at which address?

Pure: no sockets, no DNS. The gate asks, resolves when told to, and asks again.

Decision order (the one place it is written; ``tests/policy/test_policy_egress.py``
mirrors it row by row):

1. Normalise the host: case-fold, drop one trailing dot, IDN to punycode; refuse
   userinfo, percent-encoding, whitespace, empty or over-long labels and any other
   character outside a hostname. An IP literal in any spelling (``127.1``,
   ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``) becomes its address.
2. Deny rules (by name, or by CIDR for a literal) win over everything.
3. Allow rules by name (exact, or ``*.suffix`` for strict subdomains) and port; a
   literal address is allowed only by a ``cidr`` rule covering it and the port.
4. Resolve: a ``resolve`` entry of the policy answers; otherwise the caller must
   resolve the name and ask again with the addresses (``needs_resolution``).
5. Classify every address (mapped, NAT64, 6to4, Teredo and compatible forms are
   unwrapped first). The gate's own addresses and networks are always denied; so is
   a deny-rule CIDR covering any address. An address outside global unicast is
   allowed only when an explicit ``cidr`` allow rule covers it and the port. If any
   address of the answer is refused, the whole request is denied.
6. Allow, naming the rule and the one address to dial: the gate dials exactly it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
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


@dataclass(frozen=True)
class EgressRule:
    """One allow or deny rule, normalised. ``name`` is how decisions cite it."""

    name: str  # e.g. "allow[2] host *.github.com ports 80,443"
    host: str | None = None  # normalised; "*.example.com" for strict subdomains
    cidr: IPNetwork | None = None
    ports: frozenset[int] = frozenset({80, 443})


@dataclass(frozen=True)
class EgressPolicy:
    """A compiled policy: what the gate enforces. Empty means no egress at all."""

    allow: tuple[EgressRule, ...] = ()
    deny: tuple[EgressRule, ...] = ()
    resolve: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> EgressPolicy:
        """Load the wire form (see ``to_json``); PolicyError says what is wrong."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The wire form: {"allow": [{"host"|"cidr", "ports"}...], "deny": [...], "resolve": {}}."""
        raise NotImplementedError

    def digest(self) -> str:
        """A short stable hash of the wire form, to tell policies apart."""
        raise NotImplementedError


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
    raise NotImplementedError


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address embedded in a mapped, compatible, NAT64, 6to4 or Teredo form."""
    raise NotImplementedError


def classify(address: IPAddress, *, own: Sequence[IPNetwork] = ()) -> AddressClass:
    """The class of ``address`` (unwrapped first); ``own`` networks classify as SELF."""
    raise NotImplementedError


def decide_egress(
    policy: EgressPolicy,
    host: str,
    port: int,
    addresses: Sequence[IPAddress] | None = None,
    *,
    own: Sequence[IPNetwork] = (),
) -> EgressDecision:
    """Decide one request; see the module docstring for the order."""
    raise NotImplementedError
