"""The hardening profile: a pure function from an agent spec to an Engine API create body.

Also the reverse check: given what the engine reports for a container (``docker inspect``),
list every hardening property that does not hold. The control plane uses it before it
adopts a container, ``status`` shows it, and the tests assert it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentcell.policy._decision import Decision
from agentcell.policy._names import CellNames
from agentcell.policy._seccomp import DENIED_SYSCALLS, profile_allows
from agentcell.policy._sidecar_env import docker_proxy_env, gate_env

if TYPE_CHECKING:  # only the type: the gate imports policy without pydantic
    from agentcell.spec import Agent

__all__ = [
    "DOCKER_PROXY_PORT",
    "DOCKER_PROXY_USER",
    "ENGINE_SOCKET_PATH",
    "GATE_CONTROL_PORT",
    "GATE_PROXY_PORT",
    "GATE_USER",
    "LABEL_CELL",
    "LABEL_GATE_HASH",
    "LABEL_GENERATION",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "LABEL_TENANT",
    "PROFILE_VERSION",
    "RUN_TMPFS_SIZE",
    "SECRETS_PATH",
    "TMP_TMPFS_SIZE",
    "WORKSPACE_PATH",
    "DockerProxyBlueprint",
    "GateBlueprint",
    "check_container",
    "container_body",
    "docker_proxy_address",
    "docker_proxy_body",
    "gate_address",
    "gate_body",
    "secrets_mount_ok",
]

LABEL_TENANT = "agentcell.tenant"
LABEL_CELL = "agentcell.cell"
LABEL_ROLE = "agentcell.role"
LABEL_SPEC_HASH = "agentcell.spec-hash"
LABEL_GENERATION = "agentcell.generation"
LABEL_GATE_HASH = "agentcell.gate-hash"

GATE_USER = "10002:10002"
GATE_PROXY_PORT = 3128
GATE_CONTROL_PORT = 3129

PROFILE_VERSION = "2"
"""Bumped whenever ``container_body`` changes, so running cells are replaced on upgrade."""
WORKSPACE_PATH = "/workspace"
SECRETS_PATH = "/run/secrets"
"""Where an agent finds its secrets: the one host directory it gets, bound read-only."""
TMP_TMPFS_SIZE = 64 * 1024**2
RUN_TMPFS_SIZE = 16 * 1024**2
_LOG_OPTS = {"max-size": "10m", "max-file": "3"}


def container_body(
    agent: Agent,
    *,
    names: CellNames,
    spec_hash: str,
    generation: int,
    seccomp: str | None = None,
    proxy: str | None = None,
    docker_host: str | None = None,
    secrets_dir: str | None = None,
) -> dict[str, Any]:
    """The Engine API ``POST /containers/create`` body of a cell's agent container.

    ``seccomp`` is a profile as JSON text (see ``stricter_seccomp``); None keeps the
    engine's default profile. Never unconfined. ``proxy`` is the egress gate's URL;
    ``docker_host`` the docker proxy's, when the agent may manage containers.
    ``secrets_dir`` is the cell's secrets directory on the host (on tmpfs), bound
    read-only at ``SECRETS_PATH`` when the agent lists secrets; never passed otherwise.
    """
    spec = agent.spec
    labels = {
        LABEL_TENANT: agent.tenant,
        LABEL_CELL: agent.name,
        LABEL_ROLE: "agent",
        LABEL_SPEC_HASH: spec_hash,
        LABEL_GENERATION: str(generation),
    }
    env = {**spec.env, "AGENTCELL_TENANT": agent.tenant, "AGENTCELL_CELL": agent.name}
    if proxy is not None:
        for var in ("HTTP_PROXY", "HTTPS_PROXY"):
            env[var] = env[var.lower()] = proxy
        env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host
        # The docker proxy is on the cell network: never send the CLI through the gate.
        if proxy is not None:
            host = docker_host.removeprefix("tcp://").rpartition(":")[0]
            env["NO_PROXY"] = env["no_proxy"] = f"{env['NO_PROXY']},{host}"
    mounts: list[dict[str, Any]] = []
    if names.volume is not None and spec.workspace.access != "none":
        mounts.append(
            {
                "Type": "volume",
                "Source": names.volume,
                "Target": WORKSPACE_PATH,
                "ReadOnly": spec.workspace.access == "ro",
                # No copy-up from the image: it would hand the volume to the image's owner.
                "VolumeOptions": {"NoCopy": True},
            }
        )
    if secrets_dir is not None and spec.secrets:
        mounts.append(
            {
                "Type": "bind",
                "Source": secrets_dir,
                "Target": SECRETS_PATH,
                "ReadOnly": True,
                "BindOptions": {"Propagation": "rprivate"},
            }
        )
    body = _hardened(
        image=spec.image,
        user=spec.user,
        env=env,
        labels=labels,
        hostname=agent.name,
        network=names.network,
        pids=spec.resources.pids,
        memory=spec.resources.memory,
        cpus=spec.resources.cpus,
        seccomp=seccomp,
    )
    body["HostConfig"]["Mounts"] = mounts
    has_workspace = any(m["Target"] == WORKSPACE_PATH for m in mounts)
    body["WorkingDir"] = WORKSPACE_PATH if has_workspace else ""
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
        body["Entrypoint"] = []
    return body


@dataclass(frozen=True)
class GateBlueprint:
    """Everything a cell's egress gate container is made from (the host side; the gate
    itself reads ``gate.egress``'s ``GateConfig``, through ``_sidecar_env``)."""

    tenant: str
    cell: str
    image: str
    container: str
    network: str  # the cell's internal network
    address: str  # the gate's fixed address on it
    egress_subnet: str  # the tenant's egress network, where the control port listens
    cell_subnet: str
    token: str
    pool: str = ""  # the subnet pool every cell's networks come from: never a destination


def gate_address(subnet: str) -> str:
    """The gate's fixed address: the last usable one of the cell subnet."""
    net = ipaddress.ip_network(subnet)
    return str(net.broadcast_address - 1)


def gate_body(gate: GateBlueprint, *, seccomp: str | None, gate_hash: str) -> dict[str, Any]:
    """The create body of a cell's egress gate: hardened like the agent, only smaller."""
    env = gate_env(
        tenant=gate.tenant,
        cell=gate.cell,
        proxy_listen=f"{gate.address}:{GATE_PROXY_PORT}",
        control_listen=f"subnet:{gate.egress_subnet}:{GATE_CONTROL_PORT}",
        token=gate.token,
        own_networks=(gate.cell_subnet, gate.egress_subnet),
        cell_networks=(gate.pool,) if gate.pool else (),
    )
    labels = {
        LABEL_TENANT: gate.tenant,
        LABEL_CELL: gate.cell,
        LABEL_ROLE: "egress",
        LABEL_GATE_HASH: gate_hash,
    }
    body = _hardened(
        image=gate.image,
        user=GATE_USER,
        env=env,
        labels=labels,
        hostname="egress",
        network=gate.network,
        pids=1024,  # two relay threads per tunnel: room for ~500 tunnels
        memory=128 * 1024**2,
        cpus=1.0,
        seccomp=seccomp,
    )
    body["Cmd"] = ["-m", "agentcell.gate.egress"]
    body["NetworkingConfig"]["EndpointsConfig"][gate.network] = {
        "IPAMConfig": {"IPv4Address": gate.address}
    }
    return body


@dataclass(frozen=True)
class DockerProxyBlueprint:
    """Everything a cell's docker proxy container is made from."""

    tenant: str
    cell: str
    image: str
    container: str
    network: str  # the cell's internal network: the proxy's only one, and its children's
    address: str  # the proxy's fixed address on it
    engine_socket: str  # on the host; mounted alone, at ENGINE_SOCKET_PATH
    socket_gid: int  # the group that may use it: the proxy's only extra right
    seccomp_file: str | None  # on the host: the cell's profile, for the children
    child_user: str
    containers: int
    cpus: float
    memory: int


DOCKER_PROXY_USER = "10003:10003"
DOCKER_PROXY_PORT = 2375
ENGINE_SOCKET_PATH = "/run/agentcell/engine.sock"
_SECCOMP_PATH = "/etc/agentcell/seccomp.json"


def docker_proxy_address(subnet: str) -> str:
    """The docker proxy's fixed address: just below the gate's."""
    net = ipaddress.ip_network(subnet)
    return str(net.broadcast_address - 2)


def docker_proxy_body(
    proxy: DockerProxyBlueprint, *, seccomp: str | None, proxy_hash: str
) -> dict[str, Any]:
    """The create body of a cell's docker proxy: hardened, with one extra: the socket.

    The engine's socket is the only host path it sees (and the profile it hands its
    children, read-only); it runs as its own non-root user with the socket's group.
    """
    env = docker_proxy_env(
        tenant=proxy.tenant,
        cell=proxy.cell,
        network=proxy.network,
        proxy_listen=f"{proxy.address}:{DOCKER_PROXY_PORT}",
        engine_socket=ENGINE_SOCKET_PATH,
        child_user=proxy.child_user,
        containers=proxy.containers,
        cpus=proxy.cpus,
        memory=proxy.memory,
        seccomp=_SECCOMP_PATH if proxy.seccomp_file is not None else None,
    )
    mounts: list[dict[str, Any]] = [
        {"Type": "bind", "Source": proxy.engine_socket, "Target": ENGINE_SOCKET_PATH}
    ]
    if proxy.seccomp_file is not None:
        mounts.append(
            {
                "Type": "bind",
                "Source": proxy.seccomp_file,
                "Target": _SECCOMP_PATH,
                "ReadOnly": True,
            }
        )
    labels = {
        LABEL_TENANT: proxy.tenant,
        LABEL_CELL: proxy.cell,
        LABEL_ROLE: "dockerproxy",
        LABEL_GATE_HASH: proxy_hash,
    }
    body = _hardened(
        image=proxy.image,
        user=DOCKER_PROXY_USER,
        env=env,
        labels=labels,
        hostname="dockerproxy",
        network=proxy.network,
        pids=256,
        memory=128 * 1024**2,
        cpus=1.0,
        seccomp=seccomp,
    )
    body["HostConfig"]["Mounts"] = mounts
    body["HostConfig"]["GroupAdd"] = [str(proxy.socket_gid)]
    body["Cmd"] = ["-m", "agentcell.gate.dockerproxy"]
    body["NetworkingConfig"]["EndpointsConfig"][proxy.network] = {
        "IPAMConfig": {"IPv4Address": proxy.address}
    }
    return body


def _hardened(
    *,
    image: str,
    user: str,
    env: Mapping[str, str],
    labels: Mapping[str, str],
    hostname: str,
    network: str,
    pids: int,
    memory: int,
    cpus: float,
    seccomp: str | None,
) -> dict[str, Any]:
    """The create body every container of a cell shares: the hardening itself."""
    uid, gid = user.split(":")
    host_config: dict[str, Any] = {
        "ReadonlyRootfs": True,
        "Tmpfs": {
            "/tmp": f"rw,noexec,nosuid,nodev,size={TMP_TMPFS_SIZE},mode=1777",
            "/run": f"rw,noexec,nosuid,nodev,size={RUN_TMPFS_SIZE},mode=0755,uid={uid},gid={gid}",
        },
        "Mounts": [],
        "Binds": [],
        "CapDrop": ["ALL"],
        "CapAdd": [],
        "SecurityOpt": ["no-new-privileges:true"]
        + ([f"seccomp={seccomp}"] if seccomp is not None else []),
        "Privileged": False,
        "PidsLimit": pids,
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": round(cpus * 1e9),
        "Init": True,
        "NetworkMode": network,
        "PortBindings": {},
        "PublishAllPorts": False,
        "IpcMode": "private",
        "CgroupnsMode": "private",
        "Devices": [],
        "RestartPolicy": {"Name": "no"},
        "LogConfig": {"Type": "json-file", "Config": dict(_LOG_OPTS)},
    }
    return {
        "Image": image,
        "User": user,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": dict(labels),
        "Hostname": hostname,
        "WorkingDir": "",
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {network: {}}},
        "AttachStdin": False,
        "OpenStdin": False,
        "Tty": False,
        "StopTimeout": 5,
    }


def check_container(
    attrs: Mapping[str, Any],
    *,
    network: str,
    strict_seccomp: bool = False,
    secrets_dir: str | None = None,
) -> list[Decision]:
    """Every hardening property of an inspected container, each allowed or denied with a reason.

    ``attrs`` is the engine's ``GET /containers/{id}/json``; ``network`` the cell's network
    name; ``strict_seccomp`` whether the cell's profile must refuse ptrace. ``secrets_dir``
    is the cell's secrets directory on the host: the one host path that may be mounted,
    and only read-only at ``SECRETS_PATH`` (see ``secrets_mount_ok``).
    """
    hc: Mapping[str, Any] = attrs.get("HostConfig") or {}
    cfg: Mapping[str, Any] = attrs.get("Config") or {}
    nets: Mapping[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    user = str(cfg.get("User") or "")
    ids = user.split(":")
    security = [_normal_opt(str(s)) for s in hc.get("SecurityOpt") or []]
    mounts = attrs.get("Mounts") or []

    def check(ok: bool, good: str, bad: str) -> Decision:
        return Decision(ok, good if ok else bad, rule=good)

    profiles = [s.partition("=")[2] for s in security if s.startswith("seccomp=")]
    extra = []
    if strict_seccomp:
        refuses = bool(profiles) and not any(
            profile_allows(p, name) for p in profiles for name in DENIED_SYSCALLS
        )
        extra.append(check(refuses, "seccomp refuses ptrace", "seccomp allows ptrace"))
    return [
        *extra,
        check(
            bool(user) and all(p.isdigit() and int(p) != 0 for p in ids),
            "runs as a non-root user",
            "runs as root or an unnamed user",
        ),
        check(
            bool(hc.get("ReadonlyRootfs")),
            "root filesystem is read-only",
            "root filesystem is writable",
        ),
        check(
            hc.get("CapDrop") == ["ALL"] and not hc.get("CapAdd"),
            "all capabilities dropped",
            "capabilities are not all dropped",
        ),
        check(
            any(s in ("no-new-privileges", "no-new-privileges=true") for s in security),
            "no-new-privileges is set",
            "no-new-privileges is missing",
        ),
        check(
            # systempaths=unconfined reaches the engine as empty Masked/ReadonlyPaths.
            not any(_unconfined(s) for s in security)
            and hc.get("MaskedPaths") != []
            and hc.get("ReadonlyPaths") != [],
            "seccomp and LSM profiles confined",
            "a security profile is unconfined",
        ),
        check(not hc.get("Privileged"), "not privileged", "privileged"),
        check((hc.get("PidsLimit") or 0) > 0, "pids limited", "pids unlimited"),
        check(
            (hc.get("Memory") or 0) > 0 and hc.get("MemorySwap") == hc.get("Memory"),
            "memory limited, no swap beyond it",
            "memory unlimited or swap allowed",
        ),
        check((hc.get("NanoCpus") or 0) > 0, "CPU limited", "CPU unlimited"),
        check(bool(hc.get("Init")), "init process reaps children", "no init process"),
        check(
            hc.get("NetworkMode") == network and list(nets) == [network],
            "attached only to the cell network",
            "attached to a network other than the cell's",
        ),
        check(
            hc.get("PidMode", "") == ""
            and hc.get("IpcMode") in ("private", "none")
            and hc.get("UTSMode", "") == ""
            and hc.get("UsernsMode", "") == ""
            and hc.get("CgroupnsMode", "private") == "private",
            "no host namespaces",
            "shares a host namespace",
        ),
        check(
            not hc.get("Binds")
            and all(m.get("Type") in ("volume", "tmpfs", "bind") for m in mounts)
            and all(secrets_mount_ok(m, secrets_dir) for m in mounts if m.get("Type") == "bind")
            and sum(1 for m in mounts if m.get("Type") == "bind") <= 1,
            "no host mounts",
            "a host path is mounted",
        ),
        check(
            not any("docker.sock" in str(m.get("Source", "")) for m in mounts),
            "no Docker socket",
            "the Docker socket is mounted",
        ),
        check(
            not hc.get("PortBindings") and not hc.get("PublishAllPorts"),
            "no published ports",
            "ports are published on the host",
        ),
        check(
            not hc.get("Devices")
            and not hc.get("DeviceRequests")
            and not hc.get("DeviceCgroupRules"),
            "no devices",
            "host devices are passed in",
        ),
        check(
            not hc.get("Sysctls") and not hc.get("CgroupParent"),
            "no sysctls or cgroup parent",
            "sysctls or a cgroup parent are set",
        ),
    ]


def secrets_mount_ok(mount: Mapping[str, Any], secrets_dir: str | None) -> bool:
    """True if ``mount`` (one entry of inspect's ``Mounts``) is the cell's secrets bind:
    type bind, source exactly ``secrets_dir``, destination exactly ``SECRETS_PATH``,
    read-only, no propagation to or from the host. Anything else is refused."""
    return (
        secrets_dir is not None
        and secrets_dir.startswith("/")
        and mount.get("Type") == "bind"
        and mount.get("Source") == secrets_dir
        and mount.get("Destination") == SECRETS_PATH
        and mount.get("RW") is False
        and mount.get("Propagation", "rprivate") in ("", "private", "rprivate")
    )


def _normal_opt(opt: str) -> str:
    """One spelling per security option: ``key=value`` (the engine also takes ``key:value``)."""
    if opt == "disable":
        return "label=disable"
    if "=" not in opt and ":" in opt:
        return opt.replace(":", "=", 1)
    return opt


def _unconfined(opt: str) -> bool:
    key, _, value = opt.partition("=")
    if value == "unconfined":  # seccomp, apparmor, systempaths
        return True
    return key == "label" and value == "disable"
