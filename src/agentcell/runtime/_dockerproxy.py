"""The docker proxy sidecar on the engine: present only when the agent may manage containers.

It sits on the cell's internal network at a fixed address (the agent's ``DOCKER_HOST``)
and is the only container of the cell that sees the engine's socket.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import docker
import docker.errors
from docker.models.containers import Container

from agentcell.errors import RuntimeDriverError
from agentcell.plan import CellKey, DesiredCell
from agentcell.policy import (
    DOCKER_PROXY_PORT,
    PROFILE_VERSION,
    DockerProxyBlueprint,
    docker_proxy_address,
    docker_proxy_body,
    docker_proxy_container,
)
from agentcell.runtime._labels import ensure_sidecar, find_role

__all__ = ["DockerProxy", "DockerProxyManager", "engine_socket"]

_IMAGE = "agentcell/runtime:latest"
_READY_DEADLINE = 10.0


def engine_socket() -> str | None:
    """The engine's unix socket on this host, from DOCKER_HOST (None if it is not one)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    url = urlparse(host)
    if url.scheme != "unix" or not os.path.exists(url.path):
        return None
    return url.path


@dataclass(frozen=True)
class DockerProxy:
    container_id: str
    url: str  # what the agent's DOCKER_HOST says
    created: bool


class DockerProxyManager:
    def __init__(
        self, client: docker.DockerClient, seccomp: str | None, seccomp_file: str | None
    ) -> None:
        self.client = client
        self.seccomp = seccomp
        self.seccomp_file = seccomp_file

    def ensure(self, want: DesiredCell, *, network: str) -> DockerProxy:
        """The cell's running docker proxy, created or replaced when its body changed."""
        socket_path = engine_socket()
        if socket_path is None:
            raise RuntimeDriverError(
                "docker access 'own' needs the engine's unix socket on this host "
                "(DOCKER_HOST unset or unix://); none was found"
            )
        key = want.key
        limits = want.agent.spec.docker.limits
        config = DockerProxyBlueprint(
            tenant=key[0],
            cell=key[1],
            image=_IMAGE,
            container=docker_proxy_container(*key),
            network=network,
            address=docker_proxy_address(want.subnet),
            engine_socket=socket_path,
            socket_gid=os.stat(socket_path).st_gid,
            seccomp_file=self.seccomp_file,
            child_user=want.agent.spec.user,
            containers=limits.containers,
            cpus=limits.cpus,
            memory=limits.memory,
        )
        image = self.client.images.get(_IMAGE).id
        body = docker_proxy_body(config, seccomp=self.seccomp, proxy_hash="")
        wanted = hashlib.sha256(
            json.dumps([body, image, PROFILE_VERSION], sort_keys=True).encode()
        ).hexdigest()[:16]
        container, created = ensure_sidecar(
            self.client,
            key,
            "dockerproxy",
            name=config.container,
            body_hash=wanted,
            body=lambda: docker_proxy_body(config, seccomp=self.seccomp, proxy_hash=wanted),
            networks=(network,),
        )
        self._wait_ready(config.address)
        return DockerProxy(
            container_id=str(container.id),
            url=f"tcp://{config.address}:{DOCKER_PROXY_PORT}",
            created=created,
        )

    def find(self, key: CellKey) -> Container | None:
        return find_role(self.client, key, "dockerproxy")

    @staticmethod
    def _wait_ready(address: str) -> None:
        deadline = time.monotonic() + _READY_DEADLINE
        last = ""
        while True:
            conn = http.client.HTTPConnection(address, DOCKER_PROXY_PORT, timeout=2)
            try:
                conn.request("GET", "/_ping")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException) as e:
                last = f"{e.__class__.__name__}: {e}"
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeDriverError(f"the docker proxy did not answer /_ping: {last}")
            time.sleep(0.02)
