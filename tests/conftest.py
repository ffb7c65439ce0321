"""Shared fixtures. Integration fixtures talk to the real Docker Engine and real processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    import docker

from livecell import DEMO_IMAGE, Server, free_port, remove_labelled

# The machines are shared and noisy: a property holds or not, however long one example takes.
settings.register_profile("agentcell", deadline=None)
settings.load_profile("agentcell")


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    import docker

    client = docker.from_env(timeout=120)
    client.ping()
    client.images.get(DEMO_IMAGE)  # built by `make test` (agentcell images build)
    return client


def _cleanup_tenant(client: docker.DockerClient, tenant: str) -> None:
    remove_labelled(client, f"agentcell.tenant={tenant}")


_TENANTS: list[str] = []


@pytest.fixture
def tenant(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique tenant name; everything labelled with it is removed afterwards."""
    name = f"t{secrets.token_hex(4)}"
    _TENANTS.append(name)
    yield name
    _cleanup_tenant(docker_client, name)


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fails the run if any test tenant still has engine objects at the end."""
    yield
    if not _TENANTS:
        return
    import docker

    client = docker.from_env()
    left = [
        c.name
        for c in client.containers.list(
            all=True, filters={"label": "agentcell.tenant"}, ignore_removed=True
        )
        if c.labels.get("agentcell.tenant") in _TENANTS
    ]
    for name in set(_TENANTS):
        _cleanup_tenant(client, name)
    if left:
        pytest.fail(f"tests left containers behind: {left}")


@pytest.fixture
def server(tmp_path: Path, docker_client: docker.DockerClient, tenant: str) -> Iterator[Server]:
    """Stops before the tenant's objects are removed, so it cannot recreate them."""
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}", state_dir=tmp_path / "state", port=port)
    srv.state_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()
