"""A host's own addresses from the kernel's tables, as the gate, the battery and the canary
read them."""

from __future__ import annotations

import ipaddress

from agentcell.policy import fib_trie_addresses, if_inet6_addresses

ip = ipaddress.ip_address

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


def test_fib_trie_gives_the_local_addresses_once_each() -> None:
    assert fib_trie_addresses(FIB_TRIE) == [ip("10.216.0.1"), ip("127.0.0.1"), ip("192.0.2.2")]


def test_if_inet6_gives_the_global_addresses_only_when_asked() -> None:
    assert if_inet6_addresses(IF_INET6, global_scope=True) == [ip("fd00::2")]
    assert if_inet6_addresses(IF_INET6) == [
        ip("fe80::42:81ff:febb:5b3a"),
        ip("fd00::2"),
        ip("fe80::fc:ff:fe00:1"),
        ip("::1"),
    ]
