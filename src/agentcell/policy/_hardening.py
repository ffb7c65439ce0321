"""The hardening profile: a pure function from an agent spec to an Engine API create body.

Also the reverse check: given what the engine reports for a container (``docker inspect``),
list every hardening property that does not hold. The control plane uses it before it
adopts a container, ``status`` shows it, and the tests assert it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentcell.policy._decision import Decision
from agentcell.policy._seccomp import DENIED_SYSCALLS, profile_allows

if TYPE_CHECKING:  # only the type: the gate imports policy without pydantic
    from agentcell.spec import Agent

__all__ = [
    "LABEL_CELL",
    "LABEL_GENERATION",
    "LABEL_ROLE",
    "LABEL_SPEC_HASH",
    "LABEL_TENANT",
    "PROFILE_VERSION",
    "RUN_TMPFS_SIZE",
    "TMP_TMPFS_SIZE",
    "WORKSPACE_PATH",
    "CellNames",
    "check_container",
    "container_body",
]

LABEL_TENANT = "agentcell.tenant"
LABEL_CELL = "agentcell.cell"
LABEL_ROLE = "agentcell.role"
LABEL_SPEC_HASH = "agentcell.spec-hash"
LABEL_GENERATION = "agentcell.generation"

PROFILE_VERSION = "2"
"""Bumped whenever ``container_body`` changes, so running cells are replaced on upgrade."""
WORKSPACE_PATH = "/workspace"
TMP_TMPFS_SIZE = 64 * 1024**2
RUN_TMPFS_SIZE = 16 * 1024**2
_LOG_OPTS = {"max-size": "10m", "max-file": "3"}


@dataclass(frozen=True)
class CellNames:
    """The engine object names of one cell (found again by labels, never by these names)."""

    container: str
    network: str
    volume: str | None


def container_body(
    agent: Agent,
    *,
    names: CellNames,
    spec_hash: str,
    generation: int,
    seccomp: str | None = None,
) -> dict[str, Any]:
    """The Engine API ``POST /containers/create`` body of a cell's agent container.

    ``seccomp`` is a profile as JSON text (see ``stricter_seccomp``); None keeps the
    engine's default profile. Never unconfined.
    """
    spec = agent.spec
    uid, gid = spec.user.split(":")
    labels = {
        LABEL_TENANT: agent.tenant,
        LABEL_CELL: agent.name,
        LABEL_ROLE: "agent",
        LABEL_SPEC_HASH: spec_hash,
        LABEL_GENERATION: str(generation),
    }
    env = {**spec.env, "AGENTCELL_TENANT": agent.tenant, "AGENTCELL_CELL": agent.name}
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
    host_config: dict[str, Any] = {
        "ReadonlyRootfs": True,
        "Tmpfs": {
            "/tmp": f"rw,noexec,nosuid,nodev,size={TMP_TMPFS_SIZE},mode=1777",
            "/run": f"rw,noexec,nosuid,nodev,size={RUN_TMPFS_SIZE},mode=0755,uid={uid},gid={gid}",
        },
        "Mounts": mounts,
        "Binds": [],
        "CapDrop": ["ALL"],
        "CapAdd": [],
        "SecurityOpt": ["no-new-privileges:true"]
        + ([f"seccomp={seccomp}"] if seccomp is not None else []),
        "Privileged": False,
        "PidsLimit": spec.resources.pids,
        "Memory": spec.resources.memory,
        "MemorySwap": spec.resources.memory,
        "NanoCpus": round(spec.resources.cpus * 1e9),
        "Init": True,
        "NetworkMode": names.network,
        "PortBindings": {},
        "PublishAllPorts": False,
        "IpcMode": "private",
        "CgroupnsMode": "private",
        "Devices": [],
        "RestartPolicy": {"Name": "no"},
        "LogConfig": {"Type": "json-file", "Config": dict(_LOG_OPTS)},
    }
    body: dict[str, Any] = {
        "Image": spec.image,
        "User": spec.user,
        "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": labels,
        "Hostname": agent.name,
        "WorkingDir": WORKSPACE_PATH if mounts else "",
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {names.network: {}}},
        "AttachStdin": False,
        "OpenStdin": False,
        "Tty": False,
        "StopTimeout": 5,
    }
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
        body["Entrypoint"] = []
    return body


def check_container(
    attrs: Mapping[str, Any], *, network: str, strict_seccomp: bool = False
) -> list[Decision]:
    """Every hardening property of an inspected container, each allowed or denied with a reason.

    ``attrs`` is the engine's ``GET /containers/{id}/json``; ``network`` the cell's network
    name; ``strict_seccomp`` whether the cell's profile must refuse ptrace.
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
            and all(m.get("Type") != "bind" for m in mounts)
            and all(m.get("Type") in ("volume", "tmpfs") for m in mounts),
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
