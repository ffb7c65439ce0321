"""Harden what the agent asks the engine to create: child containers, exec instances, volumes.

The docker proxy decodes a body the engine's way (``decode_engine_json``), hands it here,
and forwards exactly the bytes of the result (``Hardened.raw``). A child gets the agent's
own hardening profile, built by the same function (``_hardening._hardened``); what the
agent asks for is kept where it cannot weaken that profile, refused with a reason where it
would, and never silently given another meaning.

Decision order of ``harden_child`` (the one place it is written;
``tests/policy/test_policy_childbody.py`` mirrors it row by row). Reasons are fixed
phrases (``CHILD_REASONS``); the rule names the field.

1. The body as the engine reads it: canonicalised again (``canonicalise``), so a dict
   that did not come from ``decode_engine_json`` meets the same rules (its reasons).
2. Privilege: Privileged ("privileged"); CapAdd ("capabilities added"); a SecurityOpt other
   than no-new-privileges set true, or MaskedPaths/ReadonlyPaths given at all (``[]``
   unmasks /proc) ("security option not allowed").
3. Namespaces: PidMode, UTSMode, UsernsMode or Cgroup other than empty, IpcMode other than
   empty/private/none, CgroupnsMode other than empty/private: ``host`` and
   ``container:<other>`` among them ("host or foreign namespace").
4. Network: a NetworkMode other than empty, ``default`` (what the CLI sends when none is
   asked for) or the cell network; an EndpointsConfig entry for any other network
   ("network not allowed"); any endpoint setting, aliases and static addresses included
   (a child could claim a sidecar's name or address), or Config.MacAddress ("endpoint
   settings not allowed"); Links ("links not allowed"); PortBindings or PublishAllPorts
   ("ports published on the host").
5. Mounts: Binds, host paths and named volumes alike ("binds not allowed"); VolumesFrom
   ("volumes from another container"); VolumeDriver, or a volume mount's DriverConfig
   other than the local driver without options ("volume driver not allowed"); a mount
   that is not of type volume or tmpfs, or that carries another type's options ("mount
   type not allowed"); a volume source that is not a volume name ("invalid volume name") or
   is in the platform's namespace (``reserved_name``: "reserved name"); a mount, Tmpfs or
   Config.Volumes target that is not a clean absolute path below / outside /proc, /sys and
   /dev ("mount target not allowed").
6. Devices, DeviceRequests, DeviceCgroupRules ("devices not allowed").
7. Kernel and engine: Sysctls ("sysctls not allowed"); CgroupParent ("cgroup parent not
   allowed"); a Runtime the cell does not list ("runtime not allowed"); a LogConfig other
   than json-file without options: other drivers ship logs from the host, past the egress
   gate ("log driver not allowed"); then "setting not allowed": the rest of
   ``ZERO_HOST_FIELDS`` set (ContainerIDFile, OomKillDisable, Ulimits, StorageOpt, kernel
   memory, CPU period, quota and real-time, Windows CPU and IO, block device rules); a
   negative OomScoreAdj, Memory, NanoCpus, ShmSize, CpuShares or MemoryReservation; a
   MemorySwap other than 0 or Memory; an Isolation other than default; a RestartPolicy
   the engine does not name.
8. User: Config.User not empty and not a numeric non-root ``uid[:gid]``; a GroupAdd entry
   not a numeric group other than 0 ("user not allowed"). Names are resolved inside the
   image, where any name can be root.
9. Labels: a container label, or a label of a volume a mount creates, in the ``agentcell.``
   namespace ("reserved label"): ownership is stamped here, never taken from the body.
10. Quotas: one child more than ``ChildLimits.containers``; Memory or NanoCpus beyond what
   the cell has left, or too little left for the default; PidsLimit unlimited (negative)
   or above the per-child maximum ("quota exceeded: containers|memory|cpus|pids").

Then force the rest (``_hardened``): the body's numeric user, else the cell's (a uid alone
runs with the same gid); read-only root; tmpfs /tmp and /run; CapDrop ALL;
no-new-privileges and the cell's seccomp profile; PidsLimit, Memory (swap equal to it) and
NanoCpus, the body's within quota else defaults; Init; private IPC (or none) and cgroup
namespaces; json-file logs with rotation; the cell network only; labels
agentcell.tenant/cell/role=child on the container and on every volume its mounts create.
What the body asked for that weakens none of it is kept as asked (``CONFIG_KEPT``,
``HOST_KEPT``, mounts, tmpfs, restart policy, runtime).

``harden_exec``: canonicalised (``EXEC_CREATE``); Privileged ("privileged": a privileged
exec has every capability); User not empty and not numeric non-root ("user not allowed").
``harden_volume``: canonicalised (``VOLUME_CREATE``); a driver other than local, or driver
options (``type=none,o=bind,device=/`` binds a host path) ("volume driver not allowed");
a reserved label ("reserved label"); a name that is not a volume name ("invalid volume
name"); a name in the platform's namespace ("reserved name"). ``harden_exec_start``:
canonicalised (``EXEC_START``), nothing to refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentcell.policy._decision import Decision
from agentcell.policy._dockerapi import Kind, owner_labels
from agentcell.policy._enginejson import (
    CONTAINER_CREATE,
    EXEC_CREATE,
    EXEC_START,
    VOLUME_CREATE,
    canonicalise,
    encode_engine_json,
)
from agentcell.policy._hardening import _hardened
from agentcell.policy._names import reserved_name

__all__ = [
    "CHILD_REASONS",
    "CONFIG_KEPT",
    "HOST_FORCED",
    "HOST_KEPT",
    "MIN_CHILD_MEMORY",
    "MIN_CHILD_NANO_CPUS",
    "ZERO_HOST_FIELDS",
    "ChildContext",
    "ChildLimits",
    "ChildUsage",
    "Hardened",
    "harden_child",
    "harden_exec",
    "harden_exec_start",
    "harden_volume",
]

MIB = 1024**2
MIN_CHILD_MEMORY = 6 * MIB  # the engine's minimum memory limit
MIN_CHILD_NANO_CPUS = 10_000_000  # 0.01 CPU, the engine's minimum

CHILD_REASONS: tuple[str, ...] = (
    "privileged",
    "capabilities added",
    "security option not allowed",
    "host or foreign namespace",
    "network not allowed",
    "endpoint settings not allowed",
    "links not allowed",
    "ports published on the host",
    "binds not allowed",
    "volumes from another container",
    "volume driver not allowed",
    "mount type not allowed",
    "invalid volume name",
    "reserved name",
    "mount target not allowed",
    "devices not allowed",
    "sysctls not allowed",
    "cgroup parent not allowed",
    "runtime not allowed",
    "log driver not allowed",
    "setting not allowed",
    "user not allowed",
    "reserved label",
    "quota exceeded: containers",
    "quota exceeded: memory",
    "quota exceeded: cpus",
    "quota exceeded: pids",
)
"""Every reason of this module besides those of ``canonicalise`` (``JSON_REASONS``)."""

CONFIG_KEPT = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "OnBuild",
    "StopSignal",
    "StopTimeout",
    "Shell",
)
"""Config fields kept as the body asks (Volumes after the target check of step 5).
The others (Hostname, User, Image, Labels, MacAddress) are checked and set here."""

HOST_KEPT = (
    "AutoRemove",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "OomScoreAdj",
    "ShmSize",
    "ConsoleSize",
    "CpuShares",
    "CpusetCpus",
    "CpusetMems",
    "BlkioWeight",
    "MemoryReservation",
    "MemorySwappiness",
)
"""HostConfig fields kept as the body asks, after the checks of steps 7 and 8."""

HOST_FORCED = (
    "Privileged",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "IpcMode",
    "CgroupnsMode",
    "NetworkMode",
    "PortBindings",
    "PublishAllPorts",
    "Binds",
    "Mounts",
    "Tmpfs",
    "Devices",
    "Runtime",
    "LogConfig",
    "RestartPolicy",
    "ReadonlyRootfs",
    "Init",
    "PidsLimit",
    "Memory",
    "MemorySwap",
    "NanoCpus",
)
"""HostConfig fields set here, from the profile or from the body once checked."""

ZERO_HOST_FIELDS = (
    "PidMode",
    "UTSMode",
    "UsernsMode",
    "Cgroup",
    "Links",
    "VolumesFrom",
    "VolumeDriver",
    "DeviceRequests",
    "DeviceCgroupRules",
    "Sysctls",
    "CgroupParent",
    "MaskedPaths",
    "ReadonlyPaths",
    "Isolation",
    "ContainerIDFile",
    "OomKillDisable",
    "Ulimits",
    "StorageOpt",
    "KernelMemory",
    "KernelMemoryTCP",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
)
"""HostConfig fields a child never has: refused unless empty (their reasons in steps 3-7)."""

_SETTING_FIELDS = ZERO_HOST_FIELDS[ZERO_HOST_FIELDS.index("ContainerIDFile") :]
_RESTART = ("", "no", "always", "unless-stopped", "on-failure")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_USER = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?")
_GROUP = re.compile(r"[0-9]{1,10}")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,254}")
_RESERVED = "agentcell."
_MAX_ID = 2**32 - 2


@dataclass(frozen=True)
class ChildLimits:
    """The cell's docker limits (spec ``docker.limits``), in engine units."""

    containers: int
    nano_cpus: int  # all children together
    memory: int  # bytes, all children together
    pids: int = 256  # per child: the default and the maximum
    default_nano_cpus: int = 1_000_000_000  # a child that asks for none: 1 CPU, if left
    default_memory: int = 256 * MIB  # a child that asks for none: 256 MiB, if left


@dataclass(frozen=True)
class ChildUsage:
    """What the cell's existing children already hold (the sidecar's bookkeeping)."""

    containers: int = 0
    nano_cpus: int = 0
    memory: int = 0


@dataclass(frozen=True)
class ChildContext:
    """Everything a child's body is hardened against."""

    tenant: str
    cell: str
    network: str  # the cell's internal network: the only one a child joins
    user: str  # the default ``uid:gid`` when the body names none
    limits: ChildLimits
    used: ChildUsage = field(default_factory=ChildUsage)
    seccomp: str | None = None  # the cell's profile as JSON text; None: the engine's
    runtimes: tuple[str, ...] = ()  # runtimes a child may ask for besides the default

    def __post_init__(self) -> None:
        if _numeric_user(self.user) is None:
            raise ValueError(f"the default user must be a numeric non-root uid[:gid]: {self.user}")


@dataclass(frozen=True)
class Hardened:
    """A body to forward: ``raw`` is its one serialisation, the bytes the sidecar sends.

    ``volumes``: named volumes the child mounts; the sidecar must make each exist and be
    owned first (create it with the owner labels, then check the labels the engine
    returns: a volume of that name may already belong to someone else). ``memory`` and
    ``nano_cpus``: what the child holds against the cell's quota.
    """

    body: dict[str, Any]
    raw: bytes
    volumes: tuple[str, ...] = ()
    memory: int = 0
    nano_cpus: int = 0


def _result(body: dict[str, Any], **extra: Any) -> Hardened:
    return Hardened(body=body, raw=encode_engine_json(body), **extra)


def _deny(reason: str, rule: str) -> Decision:
    return Decision(False, reason, rule)


def _numeric_user(user: str) -> str | None:
    """``uid:gid`` of a numeric non-root user (a uid alone gets the same gid), else None."""
    m = _USER.fullmatch(user)
    if m is None:
        return None
    uid = int(m.group(1))
    gid = int(m.group(2) or m.group(1))
    if not (0 < uid <= _MAX_ID and 0 < gid <= _MAX_ID):
        return None
    return f"{uid}:{gid}"


def _target_ok(path: str) -> bool:
    if not path.startswith("/") or path == "/" or path.endswith("/"):
        return False
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments) or segments[0] in ("proc", "sys", "dev"):
        return False
    return not any(c in ":," or ord(c) < 0x20 for c in path)


def _reserved(labels: Mapping[str, str]) -> str | None:
    return next((k for k in labels if k.casefold().startswith(_RESERVED)), None)


def _nnp_true(opt: str) -> bool:
    if opt == "no-new-privileges":
        return True
    for sep in ("=", ":"):
        key, found, value = opt.partition(sep)
        if found and key == "no-new-privileges":
            return value in _TRUE
    return False


# --- harden_child: the checks, in the order of the docstring ------------------------------------

_Body = dict[str, Any]


def _privilege(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    if hc.get("Privileged"):
        return _deny("privileged", "HostConfig.Privileged")
    if hc.get("CapAdd"):
        return _deny("capabilities added", "HostConfig.CapAdd")
    for opt in hc.get("SecurityOpt", []):
        if not _nnp_true(opt):
            return _deny("security option not allowed", f"HostConfig.SecurityOpt {opt[:60]}")
    for name in ("MaskedPaths", "ReadonlyPaths"):
        if name in hc:
            return _deny("security option not allowed", f"HostConfig.{name}")
    return None


def _namespaces(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    allowed = {
        "PidMode": ("",),
        "IpcMode": ("", "private", "none"),
        "UTSMode": ("",),
        "UsernsMode": ("",),
        "CgroupnsMode": ("", "private"),
        "Cgroup": ("",),
    }
    for name, values in allowed.items():
        if hc.get(name, "") not in values:
            return _deny("host or foreign namespace", f"HostConfig.{name}")
    return None


def _network(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    if hc.get("NetworkMode", "") not in ("", "default", ctx.network):
        return _deny("network not allowed", "HostConfig.NetworkMode")
    endpoints = body.get("NetworkingConfig", {}).get("EndpointsConfig", {})
    for name in endpoints:
        if name not in ("default", ctx.network):
            return _deny("network not allowed", f"NetworkingConfig.EndpointsConfig.{name}")
    for name, settings in endpoints.items():
        for key, value in settings.items():
            if bool(value):
                path = f"NetworkingConfig.EndpointsConfig.{name}.{key}"
                return _deny("endpoint settings not allowed", path)
    if body.get("MacAddress"):
        return _deny("endpoint settings not allowed", "MacAddress")
    if hc.get("Links"):
        return _deny("links not allowed", "HostConfig.Links")
    if hc.get("PortBindings"):
        return _deny("ports published on the host", "HostConfig.PortBindings")
    if hc.get("PublishAllPorts"):
        return _deny("ports published on the host", "HostConfig.PublishAllPorts")
    return None


def _mounts(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:  # noqa: C901 (one precedence chain, written once)
    if hc.get("Binds"):
        return _deny("binds not allowed", "HostConfig.Binds")
    if hc.get("VolumesFrom"):
        return _deny("volumes from another container", "HostConfig.VolumesFrom")
    if hc.get("VolumeDriver"):
        return _deny("volume driver not allowed", "HostConfig.VolumeDriver")
    for i, mount in enumerate(hc.get("Mounts", [])):
        where = f"HostConfig.Mounts[{i}]"
        kind = mount.get("Type", "")
        if kind not in ("volume", "tmpfs"):
            return _deny("mount type not allowed", f"{where}.Type {kind[:20]}")
        other = "TmpfsOptions" if kind == "volume" else "VolumeOptions"
        for name in ("BindOptions", other):
            if bool(mount.get(name)):
                return _deny("mount type not allowed", f"{where}.{name}")
        driver = mount.get("VolumeOptions", {}).get("DriverConfig", {})
        if driver.get("Name", "") not in ("", "local") or driver.get("Options"):
            return _deny("volume driver not allowed", f"{where}.VolumeOptions.DriverConfig")
        source = mount.get("Source", "")
        if kind == "tmpfs" and source:
            return _deny("mount type not allowed", f"{where}.Source")
        if source and not _VOLUME_NAME.fullmatch(source):
            return _deny("invalid volume name", f"{where}.Source")
        if reserved_name(source):
            return _deny("reserved name", f"{where}.Source")
        if not _target_ok(mount.get("Target", "")):
            return _deny("mount target not allowed", f"{where}.Target")
    for target in hc.get("Tmpfs", {}):
        if not _target_ok(target):
            return _deny("mount target not allowed", f"HostConfig.Tmpfs {target[:60]}")
    for target in body.get("Volumes", {}):
        if not _target_ok(target):
            return _deny("mount target not allowed", f"Volumes {target[:60]}")
    return None


def _devices(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    for name in ("Devices", "DeviceRequests", "DeviceCgroupRules"):
        if hc.get(name):
            return _deny("devices not allowed", f"HostConfig.{name}")
    return None


def _kernel(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    if hc.get("Sysctls"):
        return _deny("sysctls not allowed", "HostConfig.Sysctls")
    if hc.get("CgroupParent"):
        return _deny("cgroup parent not allowed", "HostConfig.CgroupParent")
    runtime = hc.get("Runtime", "")
    if runtime and runtime not in ctx.runtimes:
        return _deny("runtime not allowed", f"HostConfig.Runtime {runtime[:40]}")
    log = hc.get("LogConfig", {})
    if log.get("Type", "") not in ("", "json-file") or log.get("Config"):
        return _deny("log driver not allowed", "HostConfig.LogConfig")
    for name in _SETTING_FIELDS:
        if bool(hc.get(name)):
            return _deny("setting not allowed", f"HostConfig.{name}")
    for name in ("OomScoreAdj", "Memory", "NanoCpus", "ShmSize", "CpuShares", "MemoryReservation"):
        if hc.get(name, 0) < 0:
            return _deny("setting not allowed", f"HostConfig.{name}")
    if hc.get("MemorySwap", 0) not in (0, hc.get("Memory", 0)):
        return _deny("setting not allowed", "HostConfig.MemorySwap")
    if hc.get("Isolation", "").lower() not in ("", "default"):
        return _deny("setting not allowed", "HostConfig.Isolation")
    if hc.get("RestartPolicy", {}).get("Name", "") not in _RESTART:
        return _deny("setting not allowed", "HostConfig.RestartPolicy")
    return None


def _user(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    user = body.get("User", "")
    if user and _numeric_user(user) is None:
        return _deny("user not allowed", "User")
    for group in hc.get("GroupAdd", []):
        if not _GROUP.fullmatch(group) or not 0 < int(group) <= _MAX_ID:
            return _deny("user not allowed", "HostConfig.GroupAdd")
    return None


def _labels(body: _Body, hc: _Body, ctx: ChildContext) -> Decision | None:
    label = _reserved(body.get("Labels", {}))
    if label is not None:
        return _deny("reserved label", f"Labels {label[:60]}")
    for i, mount in enumerate(hc.get("Mounts", [])):
        label = _reserved(mount.get("VolumeOptions", {}).get("Labels", {}))
        if label is not None:
            return _deny("reserved label", f"HostConfig.Mounts[{i}].VolumeOptions.Labels {label}")
    return None


_CHECKS = (_privilege, _namespaces, _network, _mounts, _devices, _kernel, _user, _labels)


def _amount(asked: int, left: int, default: int, least: int) -> int | None:
    """What a child gets of a shared limit: what it asks if left, else the default if left."""
    if asked > 0:
        return asked if asked <= left else None
    amount = min(default, left)
    return amount if amount >= least else None


def _quota(hc: _Body, ctx: ChildContext) -> tuple[int, int, int] | Decision:
    """Step 10: (memory, nano_cpus, pids) for the child, or the quota it would exceed."""
    limits, used = ctx.limits, ctx.used
    if used.containers + 1 > limits.containers:
        return _deny("quota exceeded: containers", f"{used.containers} of {limits.containers}")
    left = limits.memory - used.memory
    memory = _amount(hc.get("Memory", 0), left, limits.default_memory, MIN_CHILD_MEMORY)
    if memory is None:
        return _deny("quota exceeded: memory", f"HostConfig.Memory, {left} left")
    left = limits.nano_cpus - used.nano_cpus
    nano_cpus = _amount(hc.get("NanoCpus", 0), left, limits.default_nano_cpus, MIN_CHILD_NANO_CPUS)
    if nano_cpus is None:
        return _deny("quota exceeded: cpus", f"HostConfig.NanoCpus, {left} left")
    pids = hc.get("PidsLimit", 0) or limits.pids
    if not 0 < pids <= limits.pids:
        return _deny("quota exceeded: pids", f"HostConfig.PidsLimit, at most {limits.pids}")
    return memory, nano_cpus, pids


def harden_child(decoded: Mapping[str, Any], *, cell: ChildContext) -> Hardened | Decision:
    """The create body of a child, hardened; or why it cannot be (module docstring order)."""
    body = canonicalise(decoded, CONTAINER_CREATE)
    if isinstance(body, Decision):
        return body
    hc: _Body = body.get("HostConfig", {})
    for check in _CHECKS:
        refused = check(body, hc, cell)
        if refused is not None:
            return refused
    quota = _quota(hc, cell)
    if isinstance(quota, Decision):
        return quota
    memory, nano_cpus, pids = quota

    owner = owner_labels(Kind.CONTAINER, tenant=cell.tenant, cell=cell.cell)
    user = _numeric_user(body.get("User", "")) or _numeric_user(cell.user)
    assert user is not None  # ChildContext checks its default
    out = _hardened(
        image=body.get("Image", ""),
        user=user,
        env={},
        labels={**body.get("Labels", {}), **owner},
        hostname=body.get("Hostname", ""),
        network=cell.network,
        pids=pids,
        memory=memory,
        cpus=nano_cpus / 1e9,
        seccomp=cell.seccomp,
    )
    for name in CONFIG_KEPT:
        if name in body:
            out[name] = body[name]
    host = out["HostConfig"]
    host["NanoCpus"] = nano_cpus
    for name in HOST_KEPT:
        if name in hc:
            host[name] = hc[name]
    if hc.get("IpcMode") == "none":
        host["IpcMode"] = "none"
    if hc.get("RestartPolicy", {}).get("Name"):
        host["RestartPolicy"] = hc["RestartPolicy"]
    if hc.get("Runtime"):
        host["Runtime"] = hc["Runtime"]
    host["Tmpfs"] = {**hc.get("Tmpfs", {}), **host["Tmpfs"]}  # the profile's /tmp and /run win
    mounts = [_mount(m, owner) for m in hc.get("Mounts", [])]
    host["Mounts"] = mounts
    volumes = tuple(m["Source"] for m in mounts if m["Type"] == "volume" and m.get("Source"))
    return _result(out, volumes=volumes, memory=memory, nano_cpus=nano_cpus)


def _mount(mount: _Body, owner: Mapping[str, str]) -> _Body:
    """A checked mount, rebuilt: only what it says, and the owner labels on a volume."""
    out: _Body = {"Type": mount["Type"], "Target": mount["Target"]}
    if mount.get("Source"):
        out["Source"] = mount["Source"]
    for name in ("ReadOnly", "Consistency"):
        if mount.get(name):
            out[name] = mount[name]
    if mount["Type"] == "volume":
        given = mount.get("VolumeOptions", {})
        options: _Body = {"NoCopy": True} if given.get("NoCopy") else {}
        options["Labels"] = {**given.get("Labels", {}), **owner}
        out["VolumeOptions"] = options
    elif bool(mount.get("TmpfsOptions")):
        out["TmpfsOptions"] = {k: v for k, v in mount["TmpfsOptions"].items() if v}
    return out


# --- exec and volumes -----------------------------------------------------------------------------


def harden_exec(decoded: Mapping[str, Any], *, cell: ChildContext) -> Hardened | Decision:
    """An exec create body: never privileged, never root (module docstring)."""
    body = canonicalise(decoded, EXEC_CREATE)
    if isinstance(body, Decision):
        return body
    if body.get("Privileged"):
        return _deny("privileged", "Privileged")
    user = body.get("User", "")
    if user:
        numeric = _numeric_user(user)
        if numeric is None:
            return _deny("user not allowed", "User")
        body["User"] = numeric
    body["Privileged"] = False
    return _result(body)


def harden_exec_start(decoded: Mapping[str, Any]) -> Hardened | Decision:
    """An exec start body, re-serialised: it says only whether to detach and use a tty."""
    body = canonicalise(decoded, EXEC_START)
    if isinstance(body, Decision):
        return body
    return _result(body)


def harden_volume(decoded: Mapping[str, Any], *, cell: ChildContext) -> Hardened | Decision:
    """A volume create body: the local driver without options, owned by the cell."""
    body = canonicalise(decoded, VOLUME_CREATE)
    if isinstance(body, Decision):
        return body
    if body.get("Driver", "") not in ("", "local"):
        return _deny("volume driver not allowed", "Driver")
    if body.get("DriverOpts"):
        return _deny("volume driver not allowed", "DriverOpts")
    label = _reserved(body.get("Labels", {}))
    if label is not None:
        return _deny("reserved label", f"Labels {label[:60]}")
    name = body.get("Name", "")
    if name and not _VOLUME_NAME.fullmatch(name):
        return _deny("invalid volume name", "Name")
    if reserved_name(name):
        return _deny("reserved name", "Name")
    owner = owner_labels(Kind.VOLUME, tenant=cell.tenant, cell=cell.cell)
    out = {
        "Name": name,
        "Driver": "local",
        "DriverOpts": {},
        "Labels": {**body.get("Labels", {}), **owner},
    }
    return _result(out)
