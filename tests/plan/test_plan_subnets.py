"""Per-cell subnets from a pool: first free, never overlapping anything in use."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.errors import ConflictError
from agentcell.plan import allocate_subnet, parse_pool

POOL = "10.213.0.0/16"

ROWS: list[tuple[str, str, int, list[str], str]] = [
    ("an empty pool gives its first subnet", POOL, 24, [], "10.213.0.0/24"),
    ("a used subnet is skipped", POOL, 24, ["10.213.0.0/24"], "10.213.1.0/24"),
    ("the first gap is filled", POOL, 24, ["10.213.0.0/24", "10.213.2.0/24"], "10.213.1.0/24"),
    (
        "the order of used subnets does not matter",
        POOL,
        24,
        ["10.213.1.0/24", "10.213.0.0/24"],
        "10.213.2.0/24",
    ),
    (
        "a smaller used subnet blocks the subnet around it",
        POOL,
        24,
        ["10.213.0.128/25"],
        "10.213.1.0/24",
    ),
    ("a used single address blocks its subnet", POOL, 24, ["10.213.0.7/32"], "10.213.1.0/24"),
    (
        "a larger used subnet blocks every subnet inside it",
        POOL,
        24,
        ["10.213.0.0/22"],
        "10.213.4.0/24",
    ),
    (
        "a used /16 covering the first half of a /15 pool",
        "10.212.0.0/15",
        24,
        ["10.212.0.0/16"],
        "10.213.0.0/24",
    ),
    (
        "used subnets outside the pool are ignored",
        POOL,
        24,
        ["172.17.0.0/16", "10.214.0.0/24", "10.0.0.0/16"],
        "10.213.0.0/24",
    ),
    ("IPv6 subnets in use are ignored", POOL, 24, ["fd00::/64", "::/0"], "10.213.0.0/24"),
    (
        "a used subnet with host bits set counts as its network",
        POOL,
        24,
        ["10.213.0.1/24"],
        "10.213.1.0/24",
    ),
    ("/29 cells", POOL, 29, ["10.213.0.0/29"], "10.213.0.8/29"),
    ("a pool of one cell", "10.213.0.0/24", 24, [], "10.213.0.0/24"),
]


@pytest.mark.parametrize(
    ("pool", "prefix", "used", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_allocate_subnet(pool: str, prefix: int, used: list[str], expected: str) -> None:
    assert allocate_subnet(pool, prefix, used) == expected


@pytest.mark.parametrize(
    ("pool", "prefix", "used", "count"),
    [
        ("10.213.0.0/24", 24, ["10.213.0.0/24"], 1),
        ("10.213.0.0/22", 24, [f"10.213.{i}.0/24" for i in range(4)], 4),
        (POOL, 24, ["10.0.0.0/8"], 256),
        (POOL, 26, ["0.0.0.0/0"], 1024),
    ],
    ids=[
        "a pool of one, used",
        "every subnet used",
        "a used /8 covering the pool",
        "a default route",
    ],
)
def test_an_exhausted_pool_says_so(pool: str, prefix: int, used: list[str], count: int) -> None:
    with pytest.raises(ConflictError) as caught:
        allocate_subnet(pool, prefix, used)
    assert str(caught.value) == (
        f"subnet pool {pool} is exhausted: all {count} /{prefix} subnets are in use; "
        "remove cells or configure a larger pool (--subnet-pool)"
    )


@pytest.mark.parametrize(
    ("pool", "prefix", "message"),
    [
        (
            "10.213.0.1/16",
            24,
            "subnet pool '10.213.0.1/16' is not an IPv4 CIDR such as 10.213.0.0/16: "
            "10.213.0.1/16 has host bits set",
        ),
        (
            "not-a-pool",
            24,
            "subnet pool 'not-a-pool' is not an IPv4 CIDR such as 10.213.0.0/16: "
            "'not-a-pool' does not appear to be an IPv4 or IPv6 network",
        ),
        ("fd00::/48", 64, "subnet pool 'fd00::/48' must be IPv4"),
        (POOL, 15, "cell subnet size /15 must lie between the pool's /16 and /29"),
        (POOL, 30, "cell subnet size /30 must lie between the pool's /16 and /29"),
        ("10.213.0.0/30", 29, "cell subnet size /29 must lie between the pool's /30 and /29"),
    ],
    ids=[
        "host bits set",
        "not a network",
        "IPv6",
        "cells larger than the pool",
        "cells smaller than /29",
        "a pool smaller than one /29",
    ],
)
def test_a_bad_pool_or_prefix_is_refused(pool: str, prefix: int, message: str) -> None:
    with pytest.raises(ConflictError) as caught:
        parse_pool(pool, prefix)
    assert str(caught.value) == message
    with pytest.raises(ConflictError):
        allocate_subnet(pool, prefix, [])


def test_parse_pool_returns_the_network() -> None:
    assert parse_pool(POOL, 24) == ipaddress.IPv4Network(POOL)
    assert parse_pool(POOL, 16) == ipaddress.IPv4Network(POOL)
    assert parse_pool(POOL, 29) == ipaddress.IPv4Network(POOL)


def test_used_may_be_any_iterable() -> None:
    assert allocate_subnet(POOL, 24, iter(["10.213.0.0/24"])) == "10.213.1.0/24"


def test_allocating_one_after_another_fills_the_pool_in_order() -> None:
    used: list[str] = []
    for _ in range(4):
        used.append(allocate_subnet("10.213.0.0/22", 24, used))
    assert used == [f"10.213.{i}.0/24" for i in range(4)]
    with pytest.raises(ConflictError):
        allocate_subnet("10.213.0.0/22", 24, used)


USED = st.builds(
    lambda addr, prefix: str(
        ipaddress.ip_network(f"{ipaddress.IPv4Address(addr)}/{prefix}", strict=False)
    ),
    st.integers(
        min_value=int(ipaddress.IPv4Address("10.208.0.0")),
        max_value=int(ipaddress.IPv4Address("10.223.255.255")),
    ),
    st.integers(min_value=12, max_value=32),
)


@given(used=st.lists(USED, max_size=12), prefix=st.integers(min_value=20, max_value=29))
def test_the_subnet_lies_in_the_pool_and_overlaps_nothing_in_use(
    used: list[str], prefix: int
) -> None:
    pool = ipaddress.IPv4Network("10.213.0.0/20")
    try:
        got = ipaddress.IPv4Network(allocate_subnet(str(pool), prefix, used))
    except ConflictError:
        candidates = pool.subnets(new_prefix=prefix)
        assert all(any(c.overlaps(ipaddress.ip_network(u)) for u in used) for c in candidates)
        return
    assert got.prefixlen == prefix
    assert got.subnet_of(pool)
    assert not any(got.overlaps(ipaddress.ip_network(u)) for u in used)
    # and it is the first such subnet
    for earlier in pool.subnets(new_prefix=prefix):
        if earlier == got:
            break
        assert any(earlier.overlaps(ipaddress.ip_network(u)) for u in used)
