"""The Docker driver: executes deploy/start/remove on a real engine, and observes it by labels."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
from docker.models.containers import Container

from agentcell.errors import DeployStepError, NotFoundError, RuntimeDriverError
from agentcell.plan import CellKey, DesiredCell, EngineObject, ObservedCell, ObservedContainer
from agentcell.policy import (
    LABEL_CELL,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    CellNames,
    Decision,
    cell_names,
    check_container,
    container_body,
    egress_network,
)
from agentcell.runtime._canary import run_canary
from agentcell.runtime._dockerproxy import DockerProxyManager
from agentcell.runtime._gate import GateManager
from agentcell.runtime._gc import GcOutcome, list_labelled, remove_objects
from agentcell.runtime._labels import cell_labels, remove_leftover

__all__ = ["CellContainers", "DeployOutcome", "DockerDriver", "SecretMounts"]

_STOP_TIMEOUT = 5
_RUNNING_DEADLINE = 15.0
_SETTLE_SECONDS = 0.5
"""Without a health check, a new agent must stay up this long to count as deployed."""


class SecretMounts(Protocol):
    """The host side of secret delivery (the control plane's): one directory per cell."""

    def directory(self, key: CellKey) -> str:
        """The cell's secrets directory on the host (whether or not it exists)."""
        ...

    def write(self, key: CellKey) -> str | None:
        """(Re)write the cell's secret files now; the directory, or None if it has none.

        Raises RuntimeDriverError when they cannot be written."""
        ...

    def remove(self, key: CellKey) -> None: ...


@dataclass(frozen=True)
class CellContainers:
    """What the engine holds of one cell, as ``agentcell get`` shows it."""

    agent: dict[str, Any] | None
    """The inspect output of the agent (the running one if several); None if it has none."""
    gate: str | None
    """The egress gate as "name (status)"; None if it has none."""
    dockerproxy: str | None
    """The docker proxy as "name (status)"; None if it has none."""


@dataclass
class DeployOutcome:
    """What a successful deploy left running."""

    container_id: str
    replaced: str | None = None
    created: list[str] = field(default_factory=list)
    policy_digest: str = ""


class DockerDriver:
    """One engine connection. Thread-safe as the docker SDK's client is."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        seccomp: str | None = None,
        seccomp_file: str | None = None,
        pool: str = "",
    ) -> None:
        self.seccomp = seccomp
        """The cells' seccomp profile as JSON text; None keeps the engine's default."""
        try:
            self.client = client or docker.from_env(timeout=60)
            self.client.ping()
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(
                f"no Docker Engine answers ({e}); start one (make demo does) or set DOCKER_HOST"
            ) from None
        self.gates = GateManager(self.client, seccomp, pool)
        self.dockerproxies = DockerProxyManager(self.client, seccomp, seccomp_file)
        self.secret_mounts: SecretMounts | None = None
        """Writes a cell's secret files; called right before every start of its agent."""

    def _write_secrets(self, key: CellKey) -> str | None:
        return self.secret_mounts.write(key) if self.secret_mounts is not None else None

    def secrets_dir(self, key: CellKey) -> str | None:
        """The one host directory the cell's agent may have bound (at /run/secrets)."""
        return self.secret_mounts.directory(key) if self.secret_mounts is not None else None

    # -- observing ---------------------------------------------------------------------------

    def observe(self) -> dict[CellKey, ObservedCell]:
        """Every cell the engine holds pieces of, keyed by (tenant, cell), found by labels."""
        parts: dict[CellKey, dict[str, Any]] = {}

        def slot(labels: dict[str, str]) -> dict[str, Any] | None:
            tenant, cell = labels.get(LABEL_TENANT), labels.get(LABEL_CELL)
            if not tenant or not cell:
                return None
            return parts.setdefault((tenant, cell), {"containers": []})

        api = self.client.api
        for c in api.containers(all=True, filters={"label": [LABEL_TENANT, LABEL_CELL]}):
            s = slot(c.get("Labels") or {})
            if s is not None:
                s["containers"].append(self._why_stopped(_observed_container(c)))
        for n in api.networks(filters={"label": [LABEL_TENANT, LABEL_CELL]}):
            s = slot(n.get("Labels") or {})
            if s is not None:
                s["network"] = n["Name"]
                configs = (n.get("IPAM") or {}).get("Config") or [{}]
                s["network_subnet"] = configs[0].get("Subnet")
        vols = api.volumes(filters={"label": [LABEL_TENANT, LABEL_CELL]}).get("Volumes") or []
        for v in vols:
            s = slot(v.get("Labels") or {})
            if s is not None:
                s["volume"] = v["Name"]
        return {
            key: ObservedCell(
                tenant=key[0],
                cell=key[1],
                containers=tuple(p["containers"]),
                network=p.get("network"),
                network_subnet=p.get("network_subnet"),
                volume=p.get("volume"),
            )
            for key, p in parts.items()
        }

    def _why_stopped(self, seen: ObservedContainer) -> ObservedContainer:
        """A stopped container with what the listing leaves out: OOM kill and exit code."""
        if seen.state not in ("exited", "dead"):
            return seen
        try:
            state = self.client.api.inspect_container(seen.id).get("State") or {}
        except docker.errors.NotFound:  # removed since the listing
            return seen
        return dataclasses.replace(
            seen,
            oom_killed=bool(state.get("OOMKilled")),
            exit_code=int(state.get("ExitCode") or seen.exit_code),
        )

    def used_subnets(self) -> list[str]:
        """Every IPv4 subnet any network of this engine uses (ours and everyone else's)."""
        out: list[str] = []
        for n in self.client.api.networks():
            for cfg in (n.get("IPAM") or {}).get("Config") or []:
                if cfg.get("Subnet"):
                    out.append(cfg["Subnet"])
        return out

    def agent_container(self, key: CellKey) -> Container:
        """The cell's agent container (the running one if several), or NotFoundError."""
        try:
            found = self.client.containers.list(
                all=True, filters={"label": cell_labels(key, "agent")}, ignore_removed=True
            )
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None
        if not found:
            raise NotFoundError(f"cell {key[0]}/{key[1]} has no agent container")
        found.sort(key=lambda c: c.status != "running")
        return found[0]

    def inspect_agent(self, key: CellKey) -> dict[str, Any] | None:
        """The engine's inspect output of the cell's agent; None if it has none."""
        try:
            return dict(self.agent_container(key).attrs)
        except (NotFoundError, docker.errors.NotFound):
            return None
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

    def cell_containers(self, key: CellKey) -> CellContainers:
        """The cell's agent, gate and docker proxy from one engine list (and one inspect of
        the agent): the same answers as ``inspect_agent``, ``gates.find`` and
        ``dockerproxies.find``, in two engine calls instead of up to six."""
        try:
            found = self.client.api.containers(all=True, filters={"label": cell_labels(key, None)})
            by_role: dict[str, list[dict[str, Any]]] = {}
            for c in found:  # the engine's order, newest first, as find_role sees it
                by_role.setdefault((c.get("Labels") or {}).get(LABEL_ROLE, ""), []).append(c)
            agent = None
            for c in sorted(by_role.get("agent", []), key=lambda c: c.get("State") != "running"):
                with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile: the next
                    agent = dict(self.client.api.inspect_container(c["Id"]))
                    break
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

        def shown(role: str) -> str | None:
            first = next(iter(by_role.get(role, [])), None)
            if first is None:
                return None
            name = next(iter(first.get("Names") or []), "").lstrip("/")
            return f"{name} ({first.get('State', '')})"

        return CellContainers(agent, shown("egress"), shown("dockerproxy"))

    def canary(self, key: CellKey, *, pool: str | None = None) -> list[Decision]:
        """One isolation canary run on the cell, from inside it (see ``runtime._canary``).

        Each check is a Decision; a denial is a check that failed. Runs in about the reach
        timeout (0.5 s, mostly waiting), so run cells concurrently.
        """
        return run_canary(
            self.client,
            key,
            strict_seccomp=bool(self.seccomp),
            pool=pool,
            secrets_dir=self.secrets_dir(key),
        )

    # -- acting ------------------------------------------------------------------------------

    def deploy(
        self,
        want: DesiredCell,
        step: Callable[[str], None],
        ready: Callable[[str], tuple[bool, str]] | None = None,
        *,
        allocate: Callable[[], str] | None = None,
        gate_token: str = "",
        fresh: bool = False,
        resume: bool = False,
    ) -> DeployOutcome:
        """Make the cell match ``want``; all or nothing.

        ``fresh`` (recovery's recreate rung) first removes the agent and its sidecars, so
        every container is new from the spec; the network and workspace stay. ``resume``
        starts a stopped agent that already matches ``want`` instead of replacing it.

        ``ready(ip)`` is one health probe; the new container must pass it (or, without
        one, stay up for a moment) before the previous container is removed. With an
        egress policy the gate comes first (``allocate`` gives the tenant's egress network
        its subnet; ``gate_token`` guards the gate's control port) and is loaded before the
        agent starts. A running agent that already matches ``want`` is kept. On failure
        everything this call created is removed, a replaced container is started again,
        and DeployStepError names the step.
        """
        agent = want.agent
        key = want.key
        ws = agent.spec.workspace.access != "none"
        names = cell_names(key[0], key[1], want.generation, workspace=ws)
        created: list[tuple[str, str]] = []
        previous: list[Container] = []
        restart_previous = False
        current = "check image"
        try:
            if fresh:
                current = "remove the containers being recreated"
                step(current)
                for role in ("agent", "egress", "dockerproxy"):
                    flt = {"label": cell_labels(key, role)}
                    for c in self.client.containers.list(
                        all=True, filters=flt, ignore_removed=True
                    ):
                        with contextlib.suppress(docker.errors.NotFound):
                            c.remove(force=True)
                current = "check image"
            step(current)
            try:
                self.client.images.get(agent.spec.image)
            except docker.errors.ImageNotFound:
                raise RuntimeDriverError(
                    f"image {agent.spec.image!r} is not present on this engine and no registry "
                    "is used; build it (agentcell images build) or load it (docker load)"
                ) from None

            current = "create network"
            step(current)
            network = self._find("networks", key)
            if network is None:
                network = self._create_network(names.network, key, want.subnet)
                created.append(("network", network))

            volume = None
            if ws:
                current = "create workspace volume"
                step(current)
                volume = self._find("volumes", key)
                if volume is None:
                    volume = self._create_volume(names.volume or "", key)
                    created.append(("volume", volume))
                self._own_volume(volume, agent.spec.user)
            names = CellNames(container=names.container, network=network, volume=volume)

            proxy = None
            digest = ""
            if want.policy:
                current = "create egress network"
                step(current)
                if allocate is None:
                    raise RuntimeDriverError("no subnet allocator for the egress network")
                egress_net, egress_subnet, made = self.gates.egress_network(key[0], allocate)
                if made:
                    created.append(("network", egress_net))
                current = "start egress gate"
                step(current)
                gate = self.gates.ensure(
                    want, network=network, egress=(egress_net, egress_subnet), token=gate_token
                )
                if gate.created:
                    created.append(("container", gate.container_id))
                current = "load egress policy"
                step(current)
                digest = self.gates.load_policy(gate.control, gate_token, want.policy)
                proxy = gate.proxy_url

            docker_host = None
            if agent.spec.docker.access == "own":
                current = "start docker proxy"
                step(current)
                dp = self.dockerproxies.ensure(want, network=network)
                if dp.created:
                    created.append(("container", dp.container_id))
                docker_host = dp.url

            previous = self.client.containers.list(
                all=True, filters={"label": cell_labels(key, "agent")}, ignore_removed=True
            )

            def start_until_ready(cid: str) -> None:
                nonlocal current
                current = "write secret files"
                step(current)
                self._write_secrets(key)
                current = "start container"
                step(current)
                self.client.api.start(cid)
                self._wait_running(cid)
                current = "wait until ready"
                step(current)
                self._wait_ready(cid, network, ready, self._ready_budget(want))

            keep = self._matching_agent(previous, want, network, stopped=resume)
            if keep is not None:
                if resume:
                    start_until_ready(keep)
                self._drop_unwanted_gate(want)
                return DeployOutcome(container_id=keep, policy_digest=digest)

            current = "create container"
            step(current)
            stale = remove_leftover(self.client, names.container, key)
            previous = [p for p in previous if p.id != stale]
            secrets_dir = None
            if agent.spec.secrets:
                current = "write secret files"
                step(current)
                secrets_dir = self._write_secrets(key)
                if secrets_dir is None:
                    raise RuntimeDriverError("this control plane cannot deliver secrets")
                current = "create container"
            body = container_body(
                agent,
                names=names,
                spec_hash=want.spec_hash,
                generation=want.generation,
                seccomp=self.seccomp,
                proxy=proxy,
                docker_host=docker_host,
                secrets_dir=secrets_dir,
            )
            cid = self.client.api.create_container_from_config(body, name=names.container)["Id"]
            created.append(("container", cid))

            current = "verify hardening"
            step(current)
            attrs = self.client.api.inspect_container(cid)
            checks = check_container(
                attrs,
                network=network,
                strict_seccomp=bool(self.seccomp),
                secrets_dir=self.secrets_dir(key),
            )
            bad = [d.reason for d in checks if not d.allow]
            if bad:
                raise RuntimeDriverError(
                    "the engine did not apply the hardening: " + "; ".join(bad)
                )

            if previous:
                current = "stop previous container"
                step(current)
                for p in previous:
                    if p.status == "running":
                        restart_previous = True
                        p.stop(timeout=_STOP_TIMEOUT)

            start_until_ready(cid)

            if previous:
                current = "remove previous container"
                step(current)
                for p in previous:
                    with contextlib.suppress(docker.errors.NotFound):
                        p.remove(force=True)
            self._drop_unwanted_gate(want)
            return DeployOutcome(
                container_id=cid,
                replaced=previous[0].id if previous else None,
                created=[c[1] for c in created],
                policy_digest=digest,
            )
        except (docker.errors.DockerException, RuntimeDriverError, OSError) as e:
            self._rollback(created, previous if restart_previous else [])
            raise DeployStepError(current, _explain(e)) from None

    def _matching_agent(
        self, candidates: list[Container], want: DesiredCell, network: str, *, stopped: bool
    ) -> str | None:
        """The id of a running (or, if ``stopped``, any) agent that already is what ``want``
        asks, on this network."""
        net_id = self.client.api.inspect_network(network)["Id"]
        for c in sorted(candidates, key=lambda c: c.status != "running"):
            nets = c.attrs.get("NetworkSettings", {}).get("Networks", {})
            if (
                (c.status == "running" or stopped)
                and c.labels.get(LABEL_SPEC_HASH) == want.spec_hash
                and c.labels.get(LABEL_GENERATION) == str(want.generation)
                and (nets.get(network) or {}).get("NetworkID") == net_id
            ):
                return str(c.id)
        return None

    def _drop_unwanted_gate(self, want: DesiredCell) -> None:
        if want.agent.spec.docker.access != "own":
            self.dockerproxies.remove(want.key)
        if want.policy:
            return
        gate = self.gates.find(want.key)
        if gate is not None:
            with contextlib.suppress(docker.errors.NotFound):
                gate.remove(force=True)
            self.gates.remove_egress_network_if_unused(want.key[0])

    def load_policy(self, key: CellKey, token: str, policy: str) -> str:
        """Load ``policy`` into the cell's running gate; returns its digest."""
        try:
            return self.gates.load_policy(self.gates.control_address(key), token, policy)
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

    def gate_logs(self, key: CellKey, *, since: int) -> Iterator[bytes]:
        """The gate's decision records (its stdout), following, from ``since`` (unix time)."""
        return self.sidecar_logs(key, "egress", since=since)

    def sidecar_logs(self, key: CellKey, role: str, *, since: int) -> Iterator[bytes]:
        """A sidecar's decision records (its stdout: ``egress`` or ``dockerproxy``), following,
        from ``since`` (unix time), each line prefixed with the engine's write time."""
        gate = self.gates.find(key) if role == "egress" else self.dockerproxies.find(key)
        if gate is None:
            raise NotFoundError(f"cell {key[0]}/{key[1]} has no {role} sidecar")
        extra = {"since": since} if since > 0 else {}
        out: Iterator[bytes] = gate.logs(
            stream=True, follow=True, stdout=True, stderr=False, timestamps=True, **extra
        )
        return out

    def restart(self, key: CellKey) -> None:
        """Start the agent container again (stopping it if it runs): recovery's first rung,
        and a requested restart. Its secret files are rewritten while it is stopped."""
        c = self.agent_container(key)
        try:
            if c.status == "paused":  # frozen out of band
                c.unpause()
            if c.status in ("running", "paused", "restarting"):
                c.stop(timeout=_STOP_TIMEOUT)
            self._write_secrets(key)
            c.start()
            self._wait_running(c.id)
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

    def remove_role(self, key: CellKey, role: str) -> list[str]:
        """Remove the cell's containers of ``role`` (running, paused or hung); returns names."""
        removed = []
        try:
            for c in self.client.containers.list(
                all=True, filters={"label": cell_labels(key, role)}, ignore_removed=True
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
                    removed.append(str(c.name))
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None
        return removed

    def pause(self, key: CellKey) -> list[str]:
        """The kill switch: SIGKILL the agent at once, then its sidecars and children.

        Containers, network and workspace stay, so the cell can resume. Returns what stopped.
        """
        stopped: list[str] = []
        order = ("agent", "egress", "dockerproxy", "child")
        try:
            for role in order:
                flt = {"label": cell_labels(key, role), "status": "running"}
                for c in self.client.containers.list(filters=flt, ignore_removed=True):
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        c.kill()
                        stopped.append(f"{role} {c.name}")
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None
        return stopped

    def remove(self, key: CellKey, *, keep_workspace: bool = False) -> list[str]:
        """Remove every engine object of the cell (the workspace unless kept). Idempotent."""
        removed = self._remove_cell_objects(key, keep_workspace=keep_workspace)
        if self.secret_mounts is not None:
            self.secret_mounts.remove(key)
        if self.gates.remove_egress_network_if_unused(key[0]):
            removed.append(f"network {egress_network(key[0])}")
        return removed

    def _remove_cell_objects(self, key: CellKey, *, keep_workspace: bool) -> list[str]:
        removed: list[str] = []
        flt = {"label": cell_labels(key, None)}
        for c in self.client.containers.list(all=True, filters=flt, ignore_removed=True):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
                removed.append(f"container {c.name}")
        for n in self.client.networks.list(filters=flt):
            with contextlib.suppress(docker.errors.NotFound):
                n.remove()
                removed.append(f"network {n.name}")
        if not keep_workspace:
            for v in self.client.volumes.list(filters=flt):
                with contextlib.suppress(docker.errors.NotFound):
                    v.remove(force=True)
                    removed.append(f"volume {v.name}")
        return removed

    def logs(self, key: CellKey, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        """The agent's output. The container is found before this returns (NotFoundError
        then, not in the middle of a response that has already said 200)."""
        c = self.agent_container(key)
        try:
            out = c.logs(
                stream=True,
                follow=follow,
                tail=tail if tail is not None else "all",
                timestamps=False,
            )
        except docker.errors.NotFound:
            raise NotFoundError(f"cell {key[0]}/{key[1]} has no agent container") from None
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None
        return iter(out)

    def exec(
        self, key: CellKey, command: list[str], *, user: str
    ) -> tuple[str, Iterator[tuple[int, bytes]]]:
        """Start ``command`` in the agent container as ``user``; yields (fd, chunk)."""
        c = self.agent_container(key)
        if c.status != "running":
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} is not running ({c.status})")
        api = self.client.api
        exec_id = api.exec_create(c.id, command, user=user, stdout=True, stderr=True)["Id"]

        def chunks() -> Iterator[tuple[int, bytes]]:
            for out, err in api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    yield 1, out
                if err:
                    yield 2, err

        return exec_id, chunks()

    def exec_exit_code(self, exec_id: str) -> int:
        code = self.client.api.exec_inspect(exec_id).get("ExitCode")
        return int(code) if code is not None else -1

    def events(self, until: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Engine events about containers, networks and volumes, until ``until()`` is true."""
        stream = self.client.events(
            decode=True, filters={"type": ["container", "network", "volume"]}
        )
        try:
            for ev in stream:
                if until():
                    return
                yield ev
        finally:
            stream.close()

    # -- orphans -----------------------------------------------------------------------------

    def labelled_objects(self) -> list[EngineObject]:
        """Every container, network and volume carrying an ``agentcell.tenant`` label."""
        try:
            return list_labelled(self.client)
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

    def remove_orphans(
        self, objects: Iterable[EngineObject], confirm: Callable[[EngineObject], str | None]
    ) -> GcOutcome:
        """Remove ``objects`` (containers, networks, volumes), each once ``confirm`` agrees.

        A tenant-wide object (no cell label: the egress network) is confirmed and removed
        under the tenant's lock, which a deploy holds while it finds or creates that network.
        """

        def lock(obj: EngineObject) -> AbstractContextManager[object]:
            if obj.cell:
                return contextlib.nullcontext()
            return self.gates._tenant_lock(obj.tenant)

        return remove_objects(self.client, objects, confirm=confirm, lock=lock)

    # -- helpers -----------------------------------------------------------------------------

    def _find(self, kind: str, key: CellKey) -> str | None:
        flt = {"label": cell_labels(key, None)}
        if kind == "networks":
            nets = self.client.api.networks(filters=flt)
            return str(nets[0]["Name"]) if nets else None
        vols = self.client.api.volumes(filters=flt).get("Volumes") or []
        return str(vols[0]["Name"]) if vols else None

    def _create_network(self, name: str, key: CellKey, subnet: str) -> str:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        net = self.client.networks.create(
            name,
            driver="bridge",
            internal=True,
            enable_ipv6=False,
            ipam=ipam,
            labels={LABEL_TENANT: key[0], LABEL_CELL: key[1], LABEL_ROLE: "network"},
            options={"com.docker.network.bridge.enable_icc": "true"},
            check_duplicate=True,
        )
        return str(net.name)

    def _create_volume(self, name: str, key: CellKey) -> str:
        vol = self.client.volumes.create(
            name=name,
            driver="local",
            labels={LABEL_TENANT: key[0], LABEL_CELL: key[1], LABEL_ROLE: "workspace"},
        )
        return str(vol.name)

    def _own_volume(self, name: str, user: str) -> None:
        """Give the workspace's top directory to the agent's user (also after a user change)."""
        uid, gid = (int(x) for x in user.split(":"))
        mountpoint = self.client.api.inspect_volume(name).get("Mountpoint", "")
        if not os.path.isdir(mountpoint):
            raise RuntimeDriverError(
                f"cannot prepare workspace {name}: its directory {mountpoint!r} is not on this "
                "host; run agentcell serve on the engine's host"
            )
        try:
            st = os.stat(mountpoint)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(mountpoint, uid, gid)
            os.chmod(mountpoint, 0o750)  # noqa: S103 (owner rwx, group rx; no others)
        except PermissionError:
            raise RuntimeDriverError(
                f"cannot give workspace {name} to uid {uid}: agentcell serve needs root on the "
                "engine's host to set volume ownership"
            ) from None

    def _wait_running(self, cid: str) -> None:
        deadline = time.monotonic() + _RUNNING_DEADLINE
        api = self.client.api
        while True:
            state = api.inspect_container(cid)["State"]
            if state.get("Running"):
                return
            if state.get("Status") in ("exited", "dead"):
                tail = api.logs(cid, tail=5).decode(errors="replace").strip()
                oom = " (OOM-killed)" if state.get("OOMKilled") else ""
                raise RuntimeDriverError(
                    f"the agent exited at once with code {state.get('ExitCode')}{oom}"
                    + (f"; its last output: {tail}" if tail else "")
                )
            if time.monotonic() > deadline:
                raise RuntimeDriverError(f"container not running after {_RUNNING_DEADLINE:g}s")
            time.sleep(0.02)

    @staticmethod
    def _ready_budget(want: DesiredCell) -> float:
        health = want.agent.spec.health
        if health is None:
            return _SETTLE_SECONDS
        return min(health.start_period + health.interval * health.retries, 300.0)

    def _wait_ready(
        self,
        cid: str,
        network: str,
        ready: Callable[[str], tuple[bool, str]] | None,
        budget: float,
    ) -> None:
        """Until the health probe passes (or, without one, the agent stays up a moment)."""
        api = self.client.api
        started = time.monotonic()
        what = "no probe answered yet"
        while True:
            attrs = api.inspect_container(cid)
            state = attrs["State"]
            if not state.get("Running"):
                tail = api.logs(cid, tail=5).decode(errors="replace").strip()
                oom = " (OOM-killed)" if state.get("OOMKilled") else ""
                raise RuntimeDriverError(
                    f"the agent exited at once with code {state.get('ExitCode')}{oom}"
                    + (f"; its last output: {tail}" if tail else "")
                )
            elapsed = time.monotonic() - started
            if ready is None:
                if elapsed >= budget:
                    return
            else:
                ip = attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress", "")
                ok, what = ready(ip)
                if ok:
                    return
                if elapsed >= budget:
                    raise RuntimeDriverError(
                        f"the health check did not pass within {budget:g}s: {what}"
                    )
            time.sleep(0.02)

    def _rollback(self, created: list[tuple[str, str]], restart: list[Container]) -> None:
        for kind, ident in reversed(created):
            with contextlib.suppress(docker.errors.DockerException):
                if kind == "container":
                    self.client.api.remove_container(ident, force=True)
                elif kind == "network":
                    self.client.networks.get(ident).remove()
                elif kind == "volume":
                    self.client.volumes.get(ident).remove(force=True)
        for p in restart:
            with contextlib.suppress(docker.errors.DockerException):
                p.start()


def _observed_container(c: dict[str, Any]) -> ObservedContainer:
    labels = c.get("Labels") or {}
    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
    addresses = tuple(
        (str(name), str(n["IPAddress"])) for name, n in networks.items() if n.get("IPAddress")
    )
    ip = addresses[0][1] if addresses else ""
    status = str(c.get("Status") or "")
    exit_code = 0
    if status.startswith("Exited ("):
        with contextlib.suppress(ValueError):
            exit_code = int(status[len("Exited (") :].split(")", maxsplit=1)[0])
    try:
        generation = int(labels.get(LABEL_GENERATION, "0"))
    except ValueError:
        generation = 0
    return ObservedContainer(
        id=c["Id"],
        name=(c.get("Names") or ["/?"])[0].lstrip("/"),
        role=labels.get(LABEL_ROLE, ""),
        state=str(c.get("State") or ""),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        generation=generation,
        exit_code=exit_code,
        ip=ip,
        addresses=addresses,
    )


def _explain(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return str(e)
