"""A control plane over the in-memory fake engine, and an admin client of its API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from agentcell.api import create_app
from agentcell.control import ControlPlane
from apifake import FakeDriver, control_plane


@pytest.fixture(scope="module")
def fake_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Seeded (``apifake.SEED``), never started: nothing is deployed."""
    with control_plane(tmp_path_factory.mktemp("plane"), FakeDriver()) as p:
        yield p


@pytest.fixture
def admin_client(fake_plane: ControlPlane) -> Iterator[TestClient]:
    """The app in-process, sending the admin token unless a request says otherwise."""
    with TestClient(
        create_app(fake_plane), headers={"Authorization": f"Bearer {fake_plane.token}"}
    ) as c:
        yield c
