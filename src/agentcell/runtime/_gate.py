"""The egress gate sidecar on the engine: its tenant network, its container, its policy.

A cell with egress gets a gate container on two networks: the cell's internal network
(a fixed address there is the agent's proxy) and the tenant's egress network, the only
network with a route out. The control plane loads the policy through the gate's control
port on the egress network; a gate starts with no policy and denies everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import docker
import docker.errors

from agentcell.errors import RuntimeDriverError
from agentcell.plan import CellKey, DesiredCell
from agentcell.policy import (
    GATE_CONTROL_PORT,
    GATE_PROXY_PORT,
    LABEL_ROLE,
    LABEL_TENANT,
    PROFILE_VERSION,
    GateBlueprint,
    egress_network,
    gate_address,
    gate_body,
    gate_container,
    is_egress_network,
)
from agentcell.runtime._labels import ensure_sidecar, find_role

__all__ = ["GATE_IMAGE", "Gate", "GateManager"]

GATE_IMAGE = "agentcell/runtime:latest"
_CONTROL_DEADLINE = 10.0


@dataclass(frozen=True)
class Gate:
    """A running gate: where the agent finds it and where the control plane does."""

    container_id: str
    proxy_url: str
    control: tuple[str, int]
    created: bool


class GateManager:
    """Creates, finds and feeds gates. One per driver; thread-safe."""

    def __init__(self, client: docker.DockerClient, seccomp: str | None, pool: str = "") -> None:
        self.client = client
        self.seccomp = seccomp
        self.pool = pool
        """The subnet pool (CIDR) every cell network comes from; gates never dial into it."""
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- the tenant's egress network -----------------------------------------------------------

    def egress_network(self, tenant: str, allocate: Callable[[], str]) -> tuple[str, str, bool]:
        """(name, subnet, created) of the tenant's egress network, creating it if missing."""
        with self._tenant_lock(tenant):
            found = self.client.api.networks(
                filters={"label": [f"{LABEL_TENANT}={tenant}", f"{LABEL_ROLE}=egress-network"]}
            )
            if found:
                subnet = ((found[0].get("IPAM") or {}).get("Config") or [{}])[0].get("Subnet")
                return str(found[0]["Name"]), str(subnet), False
            subnet = allocate()
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
            net = self.client.networks.create(
                egress_network(tenant),
                driver="bridge",
                internal=False,
                ipam=ipam,
                labels={LABEL_TENANT: tenant, LABEL_ROLE: "egress-network"},
                # Gates of one tenant have no business with each other.
                options={"com.docker.network.bridge.enable_icc": "false"},
                check_duplicate=True,
            )
            return str(net.name), subnet, True

    def remove_egress_network_if_unused(self, tenant: str) -> bool:
        with self._tenant_lock(tenant):
            for n in self.client.networks.list(
                filters={"label": [f"{LABEL_TENANT}={tenant}", f"{LABEL_ROLE}=egress-network"]}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    n.reload()
                    if not n.attrs.get("Containers"):
                        n.remove()
                        return True
        return False

    # -- the gate container --------------------------------------------------------------------

    def ensure(
        self,
        want: DesiredCell,
        *,
        network: str,
        egress: tuple[str, str],
        token: str,
    ) -> Gate:
        """The cell's running gate, created or replaced when its configuration changed."""
        key = want.key
        egress_net, egress_subnet = egress
        config = GateBlueprint(
            tenant=key[0],
            cell=key[1],
            image=GATE_IMAGE,
            container=gate_container(*key),
            network=network,
            address=gate_address(want.subnet),
            egress_subnet=egress_subnet,
            cell_subnet=want.subnet,
            token=token,
            pool=self.pool,
        )
        wanted_hash = self._hash(config)
        try:
            self.client.images.get(GATE_IMAGE)
        except docker.errors.ImageNotFound:
            raise RuntimeDriverError(
                f"the gate image {GATE_IMAGE} is missing; build it: agentcell images build"
            ) from None
        container, created = ensure_sidecar(
            self.client,
            key,
            "egress",
            name=config.container,
            body_hash=wanted_hash,
            body=lambda: gate_body(config, seccomp=self.seccomp, gate_hash=wanted_hash),
            networks=(network, egress_net),
            after_create=lambda cid: self.client.api.connect_container_to_network(cid, egress_net),
        )
        container.reload()
        nets = container.attrs["NetworkSettings"]["Networks"]
        control_ip = (nets.get(egress_net) or {}).get("IPAddress", "")
        if not control_ip:
            raise RuntimeDriverError(f"gate {config.container} has no address on {egress_net}")
        return Gate(
            container_id=container.id,
            proxy_url=f"http://{config.address}:{GATE_PROXY_PORT}",
            control=(control_ip, GATE_CONTROL_PORT),
            created=created,
        )

    def find(self, key: CellKey) -> docker.models.containers.Container | None:
        return find_role(self.client, key, "egress")

    def control_address(self, key: CellKey) -> tuple[str, int]:
        """Where the running gate's control port listens, or RuntimeDriverError."""
        c = self.find(key)
        if c is None or c.status != "running":
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} has no running egress gate")
        for name, net in c.attrs["NetworkSettings"]["Networks"].items():
            if is_egress_network(key[0], name) and net.get("IPAddress"):
                return str(net["IPAddress"]), GATE_CONTROL_PORT
        raise RuntimeDriverError(f"the gate of {key[0]}/{key[1]} is not on an egress network")

    # -- the policy ----------------------------------------------------------------------------

    @staticmethod
    def load_policy(control: tuple[str, int], token: str, policy: str) -> str:
        """PUT the policy; returns the digest the gate reports. Retries until the port answers."""
        deadline = time.monotonic() + _CONTROL_DEADLINE
        last = ""
        while True:
            conn = http.client.HTTPConnection(*control, timeout=5)
            try:
                conn.request(
                    "PUT",
                    "/v1/policy",
                    body=policy.encode(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                if resp.status == 200:
                    return str(json.loads(body).get("digest", ""))
                raise RuntimeDriverError(f"the gate refused the policy ({resp.status}): {body}")
            except (OSError, http.client.HTTPException) as e:
                last = f"{e.__class__.__name__}: {e}"
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeDriverError(f"the gate's control port did not answer: {last}")
            time.sleep(0.02)

    # -- helpers -------------------------------------------------------------------------------

    def _hash(self, config: GateBlueprint) -> str:
        """Changes whenever the gate would be made differently: body, image or profile."""
        image = self.client.images.get(config.image).id if self._has(config.image) else ""
        body = gate_body(config, seccomp=self.seccomp, gate_hash="")
        blob = json.dumps([body, image, PROFILE_VERSION], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _has(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _tenant_lock(self, tenant: str) -> threading.Lock:
        with self._locks_lock:
            return self._tenant_locks.setdefault(tenant, threading.Lock())
