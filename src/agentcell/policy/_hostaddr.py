"""A host's own addresses, read from the kernel's text tables: pure parsing, no IO.

The gate (which of its addresses to listen on), the attack battery and the isolation
canary (which host addresses a cell must not reach) all read the same two files.
"""

from __future__ import annotations

import ipaddress

__all__ = ["fib_trie_addresses", "if_inet6_addresses"]


def fib_trie_addresses(text: str) -> list[ipaddress.IPv4Address]:
    """The host's IPv4 addresses: the ``/32 host LOCAL`` leaves of ``/proc/net/fib_trie``,
    once each, in the order listed."""
    found: list[ipaddress.IPv4Address] = []
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last is not None:
            try:
                address = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if address not in found:
                found.append(address)
    return found


def if_inet6_addresses(text: str, *, global_scope: bool = False) -> list[ipaddress.IPv6Address]:
    """The host's IPv6 addresses from ``/proc/net/if_inet6`` (32 hex digits a row), once
    each; with ``global_scope``, only rows of scope 00 (no loopback, no link-local)."""
    found: list[ipaddress.IPv6Address] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        if global_scope and (len(fields) < 4 or fields[3] != "00"):
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
        except ValueError:
            continue
        if address not in found:
            found.append(address)
    return found
