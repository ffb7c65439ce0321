"""The Docker driver: executes deploy/start/remove on a real engine, and observes it by labels."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from agentcell.errors import NotFoundError, RuntimeDriverError
from agentcell.plan import (
    CellKey,
    DeployStep,
    EngineObject,
    ObservedCell,
    ObservedContainer,
    StepKind,
)
from agentcell.policy import (
    LABEL_CELL,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    CellNames,
    Decision,
    check_container,
    container_body,
    egress_network,
)
from agentcell.runtime._backend import CellContainers, DeployRun, Made, SecretMounts
from agentcell.runtime._canary import run_canary
from agentcell.runtime._dockerproxy import DockerProxyManager
from agentcell.runtime._gate import GateManager
from agentcell.runtime._gc import GcOutcome, list_labelled, remove_objects
from agentcell.runtime._labels import cell_labels
from agentcell.runtime.battery import CheckResult, run_battery_a

__all__ = ["DockerDriver"]

_STOP_TIMEOUT = 5
_RUNNING_DEADLINE = 15.0


class DockerDriver:
    """One engine connection. Thread-safe as the docker SDK's client is."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        seccomp: str | None = None,
        seccomp_file: str | None = None,
        pool: str = "",
        secret_mounts: SecretMounts | None = None,
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
        self.secret_mounts = secret_mounts
        """Writes a cell's secret files; called right before every start of its agent."""
        self._steps: dict[StepKind, Callable[[DeployStep, DeployRun], None]] = {
            StepKind.REMOVE_RECREATED: self._remove_containers,
            StepKind.CHECK_IMAGE: self._check_image,
            StepKind.CREATE_NETWORK: self._network,
            StepKind.CREATE_WORKSPACE: self._workspace,
            StepKind.CREATE_EGRESS_NETWORK: self._egress_network,
            StepKind.START_GATE: self._start_gate,
            StepKind.LOAD_POLICY: self._load_policy,
            StepKind.START_DOCKER_PROXY: self._start_docker_proxy,
            StepKind.WRITE_SECRETS: self._write_secret_files,
            StepKind.REMOVE_LEFTOVER: self._remove_containers,
            StepKind.CREATE_AGENT: self._create_agent,
            StepKind.VERIFY_HARDENING: self._verify_hardening,
            StepKind.STOP_PREVIOUS: self._stop_previous,
            StepKind.START_AGENT: self._start_agent,
            StepKind.WAIT_READY: self._wait_until_ready,
            StepKind.REMOVE_PREVIOUS: self._remove_containers,
            StepKind.REMOVE_DOCKER_PROXY: self._remove_containers,
            StepKind.REMOVE_GATE: self._remove_gate,
        }
        """How each kind of deploy step is carried out."""

    def _write_secrets(self, key: CellKey) -> str | None:
        return self.secret_mounts.write(key) if self.secret_mounts is not None else None

    def secrets_dir(self, key: CellKey) -> str | None:
        """The one host directory the cell's agent may have bound (at /run/secrets)."""
        return self.secret_mounts.directory(key) if self.secret_mounts is not None else None

    # -- observing ---------------------------------------------------------------------------

    def observe(self) -> dict[CellKey, ObservedCell]:
        """Every cell the engine holds pieces of, keyed by (tenant, cell), found by labels."""
        return self._observe({"label": [LABEL_TENANT, LABEL_CELL]})

    def _observe(self, filters: dict[str, Any]) -> dict[CellKey, ObservedCell]:
        parts: dict[CellKey, dict[str, Any]] = {}

        def slot(labels: dict[str, str]) -> dict[str, Any] | None:
            tenant, cell = labels.get(LABEL_TENANT), labels.get(LABEL_CELL)
            if not tenant or not cell:
                return None
            return parts.setdefault((tenant, cell), {"containers": []})

        api = self.client.api
        for c in api.containers(all=True, filters=filters):
            s = slot(c.get("Labels") or {})
            if s is not None:
                s["containers"].append(self._why_stopped(_observed_container(c)))
        for n in api.networks(filters=filters):
            s = slot(n.get("Labels") or {})
            if s is not None:
                s["network"] = n["Name"]
                s["network_id"] = n["Id"]
                configs = (n.get("IPAM") or {}).get("Config") or [{}]
                s["network_subnet"] = configs[0].get("Subnet")
        vols = api.volumes(filters=filters).get("Volumes") or []
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
                network_id=p.get("network_id"),
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

    def verify(
        self,
        key: CellKey,
        *,
        user: str,
        workspace: str | None,
        pids_limit: int,
        memory_bytes: int,
        extra_targets: Sequence[tuple[str, int]],
        secrets: str | None,
    ) -> list[CheckResult]:
        """Battery part A inside the running agent container (see ``runtime.battery``)."""
        container = self.agent_container(key)
        if container.status != "running":
            raise RuntimeDriverError(f"cell {key[0]}/{key[1]} is not running ({container.status})")
        return run_battery_a(
            container,
            user=user,
            workspace=workspace,
            pids_limit=pids_limit,
            memory_bytes=memory_bytes,
            extra_targets=extra_targets,
            secrets=secrets,
        )

    # -- deploying: one step at a time -----------------------------------------------------

    def observe_cell(self, key: CellKey) -> ObservedCell:
        """One cell, as ``observe`` shows it (empty if the engine holds nothing of it)."""
        try:
            found = self._observe({"label": cell_labels(key, None)})
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None
        return found.get(key) or ObservedCell(tenant=key[0], cell=key[1])

    def execute(self, step: DeployStep, run: DeployRun) -> None:
        """Carry out one deploy step (see ``plan._deploy``); engine errors are explained."""
        try:
            self._steps[step.kind](step, run)
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

    def undo(self, made: Made) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            if made.kind == "container":
                self.client.api.remove_container(made.ident, force=True)
            elif made.kind == "network":
                self.client.api.remove_network(made.ident)
            else:
                self.client.api.remove_volume(made.ident, force=True)

    def start_again(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.start(container_id)

    def _remove_containers(self, step: DeployStep, run: DeployRun) -> None:
        for cid in step.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(cid, force=True)

    def _check_image(self, step: DeployStep, run: DeployRun) -> None:
        try:
            self.client.images.get(step.name)
        except docker.errors.ImageNotFound:
            raise RuntimeDriverError(
                f"image {step.name!r} is not present on this engine and no registry "
                "is used; build it (agentcell images build) or load it (docker load)"
            ) from None

    def _network(self, step: DeployStep, run: DeployRun) -> None:
        run.network = step.name
        if step.create:
            self._create_network(step.name, run.want.key, run.want.subnet)
            run.made.append(Made("network", step.name))

    def _workspace(self, step: DeployStep, run: DeployRun) -> None:
        run.volume = step.name
        if step.create:
            self._create_volume(step.name, run.want.key)
            run.made.append(Made("volume", step.name))
        self._own_volume(step.name, run.want.agent.spec.user)

    def _egress_network(self, step: DeployStep, run: DeployRun) -> None:
        if run.allocate is None:
            raise RuntimeDriverError("no subnet allocator for the egress network")
        name, subnet, made = self.gates.egress_network(run.want.key[0], run.allocate)
        run.egress = (name, subnet)
        if made:
            run.made.append(Made("network", name))

    def _start_gate(self, step: DeployStep, run: DeployRun) -> None:
        assert run.egress is not None, "the egress network comes first"
        gate = self.gates.ensure(
            run.want, network=run.network, egress=run.egress, token=run.gate_token
        )
        if gate.created:
            run.made.append(Made("container", gate.container_id))
        run.gate, run.proxy = gate.control, gate.proxy_url

    def _load_policy(self, step: DeployStep, run: DeployRun) -> None:
        assert run.gate is not None, "the gate comes first"
        run.policy_digest = self.gates.load_policy(run.gate, run.gate_token, run.want.policy)

    def _start_docker_proxy(self, step: DeployStep, run: DeployRun) -> None:
        proxy = self.dockerproxies.ensure(run.want, network=run.network)
        if proxy.created:
            run.made.append(Made("container", proxy.container_id))
        run.docker_host = proxy.url

    def _write_secret_files(self, step: DeployStep, run: DeployRun) -> None:
        run.secrets_dir = self._write_secrets(run.want.key)
        if run.want.agent.spec.secrets and run.secrets_dir is None:
            raise RuntimeDriverError("this control plane cannot deliver secrets")

    def _create_agent(self, step: DeployStep, run: DeployRun) -> None:
        want = run.want
        body = container_body(
            want.agent,
            names=CellNames(container=step.name, network=run.network, volume=run.volume),
            spec_hash=want.spec_hash,
            generation=want.generation,
            seccomp=self.seccomp,
            proxy=run.proxy,
            docker_host=run.docker_host,
            secrets_dir=run.secrets_dir,
        )
        try:
            created = self.client.api.create_container_from_config(body, name=step.name)
        except docker.errors.APIError as e:
            if e.status_code == 409:  # not this cell's, or the plan would have removed it
                raise RuntimeDriverError(
                    f"a container named {step.name} exists and is not this cell's; "
                    "rename or remove it"
                ) from None
            raise
        run.agent = str(created["Id"])
        run.made.append(Made("container", run.agent))

    def _verify_hardening(self, step: DeployStep, run: DeployRun) -> None:
        attrs = self.client.api.inspect_container(run.agent)
        checks = check_container(
            attrs,
            network=run.network,
            strict_seccomp=bool(self.seccomp),
            secrets_dir=self.secrets_dir(run.want.key),
        )
        bad = [d.reason for d in checks if not d.allow]
        if bad:
            raise RuntimeDriverError("the engine did not apply the hardening: " + "; ".join(bad))

    def _stop_previous(self, step: DeployStep, run: DeployRun) -> None:
        for cid in step.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.stop(cid, timeout=_STOP_TIMEOUT)
                run.stopped.append(cid)

    def _start_agent(self, step: DeployStep, run: DeployRun) -> None:
        cid = step.containers[0] if step.containers else run.agent
        self.client.api.start(cid)
        self._wait_running(cid)

    def _wait_until_ready(self, step: DeployStep, run: DeployRun) -> None:
        cid = step.containers[0] if step.containers else run.agent
        self._wait_ready(cid, run.network, run.ready, step.seconds)

    def _remove_gate(self, step: DeployStep, run: DeployRun) -> None:
        self._remove_containers(step, run)
        self.gates.remove_egress_network_if_unused(run.want.key[0])

    # -- single actions --------------------------------------------------------------------

    def load_policy(self, key: CellKey, token: str, policy: str) -> str:
        """Load ``policy`` into the cell's running gate; returns its digest."""
        try:
            return self.gates.load_policy(self.gates.control_address(key), token, policy)
        except docker.errors.DockerException as e:
            raise RuntimeDriverError(_explain(e)) from None

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
        network_ids=tuple(str(n["NetworkID"]) for n in networks.values() if n.get("NetworkID")),
    )


def _explain(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return str(e)
