"""Quotas at create, counted from the engine, with creates serialised (real engine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_dockerproxy_support import IMAGE, World, docker, live_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    yield from live_world()


def _children(world: World, cell: str) -> list[str]:
    label = f"label=agentcell.cell={cell}"
    tenant = f"label=agentcell.tenant={world.tenant}"
    return str(docker("ps", "-aq", "--filter", tenant, "--filter", label)).split()


def test_container_count_quota(world: World) -> None:
    proxy = world.proxy("count", AGENTCELL_LIMIT_CONTAINERS="2")
    for _ in range(2):
        rc, out = proxy.docker("run", "-d", IMAGE)
        assert rc == 0, out
    rc, out = proxy.docker("run", "-d", IMAGE)
    assert rc != 0 and "quota exceeded: containers" in out, out
    assert len(_children(world, "count")) == 2
    # Removing one frees its place.
    first = _children(world, "count")[0]
    assert proxy.docker("rm", "-f", first)[0] == 0
    rc, out = proxy.docker("run", "-d", IMAGE)
    assert rc == 0, out


def test_concurrent_creates_cannot_both_fit(world: World) -> None:
    proxy = world.proxy("race", AGENTCELL_LIMIT_CONTAINERS="2")
    body = json.dumps({"Image": IMAGE}).encode()
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: proxy.request("POST", "/containers/create", body), range(8))
        )
    statuses = sorted(r.status for r in replies)
    assert statuses == [201, 201] + [403] * 6, replies
    assert len(_children(world, "race")) == 2


def test_memory_and_cpu_quota(world: World) -> None:
    proxy = world.proxy(
        "mem",
        AGENTCELL_LIMIT_MEMORY="512m",
        AGENTCELL_LIMIT_CPUS="1.5",
        AGENTCELL_LIMIT_CONTAINERS="5",
    )
    rc, out = proxy.docker("create", "--memory", "400m", "--cpus", "1", IMAGE)
    assert rc == 0, out
    rc, out = proxy.docker("create", "--memory", "400m", IMAGE)
    assert rc != 0 and "quota exceeded: memory" in out, out
    rc, out = proxy.docker("create", "--memory", "64m", "--cpus", "1", IMAGE)
    assert rc != 0 and "quota exceeded: cpus" in out, out
    rc, out = proxy.docker("create", "--memory", "64m", "--cpus", "0.5", IMAGE)
    assert rc == 0, out
