"""The reconciler hands out subnets: cells get small ones, a tenant's egress network a
roomy one, and nothing handed out is handed out again before it is stored."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from agentcell.control import Store
from agentcell.control._auth import GateTokens
from agentcell.control._reconciler import Reconciler, ReconcilerConfig


class EngineWithNetworks:
    """Just what allocation asks of the driver: the subnets the engine's networks use."""

    def __init__(self, used: list[str]) -> None:
        self.used = used

    def used_subnets(self) -> list[str]:
        return list(self.used)


@pytest.fixture
def reconciler(tmp_path: Path) -> Iterator[Reconciler]:
    store = Store(tmp_path / "agentcell.db")
    driver = EngineWithNetworks(["10.213.0.0/27", "172.17.0.0/16"])
    rec = Reconciler(
        store,
        cast(Any, driver),
        cast(Any, None),
        ReconcilerConfig(subnet_pool="10.213.0.0/16", subnet_prefix=27),
        GateTokens(tmp_path),
    )
    yield rec
    store.close()


def test_a_cell_gets_the_first_free_small_subnet(reconciler: Reconciler) -> None:
    assert reconciler.allocate_subnet() == "10.213.0.32/27"


def test_an_egress_network_has_room_for_a_gate_per_cell(reconciler: Reconciler) -> None:
    subnet = ipaddress.ip_network(reconciler.allocate_egress_subnet())
    assert subnet.prefixlen == 24 and subnet.num_addresses - 3 >= 250
    assert not subnet.overlaps(ipaddress.ip_network("10.213.0.0/27"))


def test_concurrent_allocations_never_share_a_subnet(reconciler: Reconciler) -> None:
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: reconciler.allocate_subnet(), range(64)))
    got.append(reconciler.allocate_egress_subnet())
    nets = [ipaddress.ip_network(s) for s in got]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :]), sorted(got)
