"""Reading cells through the control plane: the bulk reads answer what one-by-one reads did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agentcell.api import create_app
from agentcell.control import ControlPlane
from agentcell.plan import Attempt
from apifake import FakeDriver, control_plane


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    with control_plane(tmp_path, FakeDriver()) as p:
        p.store.set_status(("t1", "t1-cell"), state="running", ip="10.216.0.2", rung=1)
        p.store.set_status(("t2", "t2-marker-cell"), state="failed", breach="reached the host")
        p.store.set_status(("t1", "t1-docker"), attempts=(Attempt(5.0, "restart"),))
        yield p


def one_by_one(plane: ControlPlane, tenant: str | None = None) -> list[dict[str, object]]:
    """The list as it was built before the bulk read: one status query per cell."""
    return [
        plane._summary(want, plane.store.status(key))
        for key, want in sorted(plane.store.desired().items())
        if tenant is None or key[0] == tenant
    ]


@pytest.mark.parametrize("tenant", [None, "t1", "t2", "nobody"])
def test_the_list_is_what_one_status_read_per_cell_gave(
    plane: ControlPlane, tenant: str | None
) -> None:
    assert plane.cells(tenant) == one_by_one(plane, tenant)


def test_a_cell_without_status_is_listed_as_pending(plane: ControlPlane) -> None:
    other = next(c for c in plane.cells("t2") if c["name"] == "t2-marker-other")
    assert (other["tenant"], other["state"], other["version"]) == ("t2", "pending", 0)
    assert other["reason"] == "waiting for the reconciler"


def test_the_api_sends_the_list_and_the_tenants_as_the_plane_gives_them(
    plane: ControlPlane,
) -> None:
    admin = {"Authorization": f"Bearer {plane.token}"}
    with TestClient(create_app(plane)) as client:
        cells = client.get("/v1/cells", headers=admin)
        mine = client.get("/v1/cells", params={"tenant": "t1"}, headers=admin)
        tenants = client.get("/v1/tenants", headers=admin)
    assert cells.headers["content-type"] == "application/json"
    assert cells.json() == plane.cells()
    assert [c["name"] for c in mine.json()] == ["t1-cell", "t1-docker"]
    assert tenants.json() == [
        t.model_dump(mode="json", by_alias=True) for t in plane.store.tenants()
    ]
    assert [t["metadata"]["name"] for t in tenants.json()] == ["t1", "t2"]


def test_one_cell_shows_its_stored_status_and_what_the_engine_holds(plane: ControlPlane) -> None:
    got = plane.cell(("t1", "t1-cell"))
    assert (got["state"], got["ip"], got["recovery"]["rung"]) == ("running", "10.216.0.2", 1)
    assert got["egress"]["gate"] == "missing"  # the fake engine holds no containers
    assert "container" not in got
    assert plane.cell(("t1", "t1-docker"))["docker"]["proxy"] == "missing"


def test_a_restart_of_a_failed_cell_says_what_would_retry_it(plane: ControlPlane) -> None:
    from agentcell.errors import ConflictError

    with pytest.raises(ConflictError, match=r"has failed \(.*\); a restart does not retry it"):
        plane.restart(("t2", "t2-marker-cell"), "test")
    assert plane.store.desired()[("t2", "t2-marker-cell")].restart_request == 0
    assert plane.restart(("t1", "t1-cell"), "test") == 1
