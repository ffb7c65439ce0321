"""The canary's host-side readers, on texts captured from this kind of host."""

from __future__ import annotations

import errno

import pytest

from agentcell.policy import ProbeOutcome
from agentcell.runtime._canary import _outcome, host_addresses, parse_fib_trie, parse_if_inet6

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 4
     +-- 0.0.0.0/4 2 0 2
        |-- 0.0.0.0
           /0 universe UNICAST
        +-- 10.216.0.0/26 3 0 4
           +-- 10.216.0.0/31 1 0 0
              |-- 10.216.0.0
                 /27 link UNICAST
              |-- 10.216.0.1
                 /32 host LOCAL
           |-- 10.216.0.31
              /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 4
           |-- 192.0.2.2
              /24 link UNICAST
              /32 host LOCAL
"""

IF_INET6 = """\
fe80000000000000004281fffebb5b3a 05 40 20 80  docker0
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
nonsense
"""


def test_fib_trie_gives_the_local_addresses_only() -> None:
    assert parse_fib_trie(FIB_TRIE) == ["10.216.0.1", "127.0.0.1", "192.0.2.2", "192.0.2.2"]


def test_if_inet6_gives_the_global_addresses_only() -> None:
    assert parse_if_inet6(IF_INET6) == ["fd00::2"]


def test_host_addresses_are_unique_and_never_loopback() -> None:
    found = host_addresses()
    assert len(found) == len(set(found))
    assert "127.0.0.1" not in found and "::1" not in found


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, ProbeOutcome.CONNECTED),
        (errno.ECONNREFUSED, ProbeOutcome.REFUSED),
        (errno.ETIMEDOUT, ProbeOutcome.TIMEOUT),
        (errno.EHOSTUNREACH, ProbeOutcome.UNREACHABLE),
        (errno.ENETUNREACH, ProbeOutcome.UNREACHABLE),
        (errno.EADDRNOTAVAIL, ProbeOutcome.UNREACHABLE),
        (errno.EAFNOSUPPORT, ProbeOutcome.UNREACHABLE),
        (errno.EMFILE, ProbeOutcome.ERROR),
        (errno.EPERM, ProbeOutcome.ERROR),
    ],
)
def test_connect_errors_map_to_outcomes(code: int, outcome: ProbeOutcome) -> None:
    assert _outcome(code) is outcome
