"""Hardening what the agent asks to create: child containers, exec instances, volumes.

``REFUSED`` mirrors the decision order of ``harden_child`` step by step (row ids start with
the step's number) and holds every ATTACKS.md C4, C5 and C8 case a create body can carry;
``FORCED`` mirrors what is forced after. ``THROUGH_THE_PROXY`` runs the C2-C5, C8 and C9
bodies through the whole pure pipeline (decide_request, decode_engine_json, harden_child)
on the unversioned and the /v1.41 path. Then exec and volume tables, and properties: no
accepted body, read back the engine's way, holds a forbidden setting, and every accepted
body passes ``check_container``, the check the control plane runs on the agent itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentcell.policy import (
    CHILD_REASONS,
    CONFIG_FIELDS,
    CONFIG_KEPT,
    CONTAINER_CREATE,
    EXEC_CREATE,
    EXEC_START,
    HOST_CONFIG,
    HOST_FORCED,
    HOST_KEPT,
    JSON_REASONS,
    LABEL_CELL,
    LABEL_ROLE,
    LABEL_TENANT,
    VOLUME_CREATE,
    ZERO_HOST_FIELDS,
    BodyKind,
    ChildContext,
    ChildLimits,
    ChildUsage,
    Decision,
    Hardened,
    Schema,
    check_container,
    decide_request,
    decode_engine_json,
    harden_child,
    harden_exec,
    harden_exec_start,
    harden_volume,
    stricter_seccomp,
)

MIB, GIB = 1024**2, 1024**3
NET = "ac-acme-researcher"
PROFILE = json.dumps(
    stricter_seccomp(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write", "ptrace"], "action": "SCMP_ACT_ALLOW"}],
        }
    )
)
LIMITS = ChildLimits(containers=3, nano_cpus=2_000_000_000, memory=GIB)
CTX = ChildContext(
    tenant="acme",
    cell="researcher",
    network=NET,
    user="10001:10001",
    limits=LIMITS,
    used=ChildUsage(containers=1, nano_cpus=500_000_000, memory=256 * MIB),
    seccomp=PROFILE,
    runtimes=("runc",),
)
OWNER = {LABEL_TENANT: "acme", LABEL_CELL: "researcher", LABEL_ROLE: "child"}

# `docker run -it --rm alpine:3 sh` from the docker 28.2 CLI at API 1.41 (abridged to the
# fields it sets; the full capture is in test_policy_enginejson.py).
CLI_RUN_IT: dict[str, Any] = {
    "Hostname": "",
    "User": "",
    "AttachStdin": True,
    "AttachStdout": True,
    "AttachStderr": True,
    "Tty": True,
    "OpenStdin": True,
    "StdinOnce": True,
    "Env": None,
    "Cmd": ["sh"],
    "Image": "alpine:3",
    "Volumes": {},
    "Labels": {},
    "HostConfig": {
        "Binds": None,
        "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default",
        "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": True,
        "ConsoleSize": [0, 0],
        "CapAdd": None,
        "CgroupnsMode": "",
        "Dns": [],
        "IpcMode": "",
        "Privileged": False,
        "ReadonlyRootfs": False,
        "SecurityOpt": None,
        "Memory": 0,
        "NanoCpus": 0,
        "BlkioWeightDevice": [],
        "Devices": [],
        "MemorySwappiness": -1,
        "OomKillDisable": False,
        "PidsLimit": 0,
        "Ulimits": [],
        "MaskedPaths": None,
    },
    "NetworkingConfig": {
        "EndpointsConfig": {
            "default": {"IPAMConfig": None, "MacAddress": "", "GwPriority": 0, "DNSNames": None}
        }
    },
}


def child(host: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A create body: the image and a command, plus the HostConfig and top-level fields given."""
    return {"Image": "alpine:3", "Cmd": ["sh"], "HostConfig": host or {}, **top}


def vol(**fields: Any) -> dict[str, Any]:
    return {"Type": "volume", "Source": "data", "Target": "/data", **fields}


def used(**amounts: int) -> ChildContext:
    return ChildContext(
        tenant="acme", cell="researcher", network=NET, user="10001:10001", limits=LIMITS,
        used=ChildUsage(**amounts), seccomp=PROFILE, runtimes=("runc",),
    )  # fmt: skip


def r(name: str, body: dict[str, Any], reason: str, ctx: ChildContext = CTX) -> Any:
    return pytest.param(body, ctx, reason, id=name)


REFUSED = [
    # 1. the body as the engine reads it
    r("1 two spellings of one key", {"Image": "a", "image": "b"}, "ambiguous body: duplicate key"),
    r("1 Privileged at the top level", {"Image": "a", "Privileged": True},
      "ambiguous body: host config field outside HostConfig"),
    r("1 an unknown field (C9)", child({"Annotations": {"a": "b"}}), "unknown field"),
    r("1 Privileged 1 (C2)", child({"Privileged": 1}), "wrong type"),
    # 2. privilege (C5)
    r("2 Privileged", child({"Privileged": True}), "privileged"),
    r("2 privileged in lower case (C2)", {"Image": "a", "hostconfig": {"privileged": True}},
      "privileged"),
    r("2 CapAdd SYS_ADMIN", child({"CapAdd": ["SYS_ADMIN"]}), "capabilities added"),
    r("2 CapAdd ALL as a string", child({"CapAdd": "ALL"}), "capabilities added"),
    r("2 CapAdd with CapDrop ALL", child({"CapAdd": ["NET_RAW"], "CapDrop": ["ALL"]}),
      "capabilities added"),
    r("2 seccomp unconfined", child({"SecurityOpt": ["seccomp=unconfined"]}),
      "security option not allowed"),
    r("2 seccomp unconfined, colon form", child({"SecurityOpt": ["seccomp:unconfined"]}),
      "security option not allowed"),
    r("2 a seccomp profile of the body's own", child({"SecurityOpt": ['seccomp={"x":1}']}),
      "security option not allowed"),
    r("2 apparmor unconfined", child({"SecurityOpt": ["apparmor=unconfined"]}),
      "security option not allowed"),
    r("2 label=disable", child({"SecurityOpt": ["label=disable"]}), "security option not allowed"),
    r("2 label:disable", child({"SecurityOpt": ["label:disable"]}), "security option not allowed"),
    r("2 disable, bare", child({"SecurityOpt": ["disable"]}), "security option not allowed"),
    r("2 systempaths unconfined", child({"SecurityOpt": ["systempaths=unconfined"]}),
      "security option not allowed"),
    r("2 no-new-privileges=false", child({"SecurityOpt": ["no-new-privileges=false"]}),
      "security option not allowed"),
    r("2 no-new-privileges:0", child({"SecurityOpt": ["no-new-privileges:0"]}),
      "security option not allowed"),
    r("2 no-new-privileges after a good one", child(
        {"SecurityOpt": ["no-new-privileges", "no-new-privileges=false"]}),
      "security option not allowed"),
    r("2 MaskedPaths [] unmasks /proc", child({"MaskedPaths": []}), "security option not allowed"),
    r("2 ReadonlyPaths [] makes /proc/sys writable", child({"ReadonlyPaths": []}),
      "security option not allowed"),
    r("2 MaskedPaths of its own", child({"MaskedPaths": ["/x"]}), "security option not allowed"),
    # 3. namespaces (C5)
    r("3 PidMode host", child({"PidMode": "host"}), "host or foreign namespace"),
    r("3 PidMode container:<foreign>", child({"PidMode": "container:foreign"}),
      "host or foreign namespace"),
    r("3 IpcMode host", child({"IpcMode": "host"}), "host or foreign namespace"),
    r("3 IpcMode container:<foreign>", child({"IpcMode": "container:foreign"}),
      "host or foreign namespace"),
    r("3 IpcMode shareable", child({"IpcMode": "shareable"}), "host or foreign namespace"),
    r("3 UTSMode host", child({"UTSMode": "host"}), "host or foreign namespace"),
    r("3 UsernsMode host", child({"UsernsMode": "host"}), "host or foreign namespace"),
    r("3 CgroupnsMode host", child({"CgroupnsMode": "host"}), "host or foreign namespace"),
    r("3 Cgroup container:<foreign>", child({"Cgroup": "container:foreign"}),
      "host or foreign namespace"),
    # 4. network (C5, C8)
    r("4 --network host (C8)", child({"NetworkMode": "host"}), "network not allowed"),
    r("4 --network bridge", child({"NetworkMode": "bridge"}), "network not allowed"),
    r("4 --network none", child({"NetworkMode": "none"}), "network not allowed"),
    r("4 --network container:<foreign>", child({"NetworkMode": "container:foreign"}),
      "network not allowed"),
    r("4 another cell's network", child({"NetworkMode": "ac-acme-writer"}), "network not allowed"),
    r("4 the network's id prefix", child({"NetworkMode": "4f1c"}), "network not allowed"),
    r("4 the cell network in another case", child({"NetworkMode": NET.upper()}),
      "network not allowed"),
    r("4 an endpoint on another network", child(
        {"NetworkMode": NET}, NetworkingConfig={"EndpointsConfig": {NET: {}, "other": {}}}),
      "network not allowed"),
    r("4 an endpoint on the host network", child(
        NetworkingConfig={"EndpointsConfig": {"host": {}}}), "network not allowed"),
    r("4 an alias (a sidecar's name)", child(
        NetworkingConfig={"EndpointsConfig": {NET: {"Aliases": ["egress"]}}}),
      "endpoint settings not allowed"),
    r("4 a static address (the gate's)", child(
        NetworkingConfig={"EndpointsConfig": {NET: {"IPAMConfig": {"IPv4Address": "10.0.0.254"}}}}),
      "endpoint settings not allowed"),
    r("4 an empty address block is still a setting", child(
        NetworkingConfig={"EndpointsConfig": {NET: {"IPAMConfig": {"IPv4Address": ""}}}}),
      "endpoint settings not allowed"),
    r("4 an endpoint link", child(
        NetworkingConfig={"EndpointsConfig": {NET: {"Links": ["foreign:db"]}}}),
      "endpoint settings not allowed"),
    r("4 endpoint driver options", child(
        NetworkingConfig={"EndpointsConfig": {NET: {"DriverOpts": {"a": "b"}}}}),
      "endpoint settings not allowed"),
    r("4 aliases on the default entry", child(
        NetworkingConfig={"EndpointsConfig": {"default": {"Aliases": ["x"]}}}),
      "endpoint settings not allowed"),
    r("4 a MAC address", child(MacAddress="02:42:ac:11:00:02"), "endpoint settings not allowed"),
    r("4 links to a foreign container", child({"Links": ["foreign:db"]}), "links not allowed"),
    r("4 a published port (C8)", child({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}),
      "ports published on the host"),
    r("4 publish all ports (C8)", child({"PublishAllPorts": True}), "ports published on the host"),
    # 5. mounts (C4)
    r("5 Binds of /", child({"Binds": ["/:/host"]}), "binds not allowed"),
    r("5 Binds of the docker socket", child(
        {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}), "binds not allowed"),
    r("5 Binds of a host path, read-only", child({"Binds": ["/etc:/x:ro"]}), "binds not allowed"),
    r("5 Binds of a named volume", child({"Binds": ["data:/data"]}), "binds not allowed"),
    r("5 VolumesFrom a foreign container", child({"VolumesFrom": ["foreign:ro"]}),
      "volumes from another container"),
    r("5 a volume driver", child({"VolumeDriver": "sshfs"}), "volume driver not allowed"),
    r("5 a bind mount of /", child({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
      "mount type not allowed"),
    r("5 a bind mount of the socket", child({"Mounts": [
        {"Type": "bind", "Source": "/run/docker.sock", "Target": "/s"}]}),
      "mount type not allowed"),
    r("5 a bind mount in upper case", child({"Mounts": [{"Type": "BIND", "Target": "/h"}]}),
      "mount type not allowed"),
    r("5 a named pipe", child({"Mounts": [{"Type": "npipe", "Target": "/p"}]}),
      "mount type not allowed"),
    r("5 a mount without a type", child({"Mounts": [{"Source": "data", "Target": "/d"}]}),
      "mount type not allowed"),
    r("5 a volume with bind options",
      child({"Mounts": [vol(BindOptions={"Propagation": "shared"})]}),
      "mount type not allowed"),
    r("5 a volume with tmpfs options", child({"Mounts": [vol(TmpfsOptions={"SizeBytes": 1})]}),
      "mount type not allowed"),
    r("5 a tmpfs with volume options", child({"Mounts": [
        {"Type": "tmpfs", "Target": "/t", "VolumeOptions": {"NoCopy": True}}]}),
      "mount type not allowed"),
    r("5 a tmpfs with a source",
      child({"Mounts": [{"Type": "tmpfs", "Source": "/", "Target": "/t"}]}),
      "mount type not allowed"),
    r("5 a volume whose local driver binds / (C4)", child({"Mounts": [vol(VolumeOptions={
        "DriverConfig": {"Name": "local",
                         "Options": {"type": "none", "o": "bind", "device": "/"}}})]}),
      "volume driver not allowed"),
    r("5 a volume whose local driver binds a device (C4)", child({"Mounts": [vol(VolumeOptions={
        "DriverConfig": {"Options": {"type": "ext4", "device": "/dev/sda1"}}})]}),
      "volume driver not allowed"),
    r("5 a volume of an NFS share, from the host's network", child({"Mounts": [vol(VolumeOptions={
        "DriverConfig": {"Options": {"type": "nfs", "o": "addr=10.0.0.1"}}})]}),
      "volume driver not allowed"),
    r("5 a volume of another driver", child({"Mounts": [vol(VolumeOptions={
        "DriverConfig": {"Name": "sshfs"}})]}), "volume driver not allowed"),
    r("5 a volume source that is a host path", child({"Mounts": [vol(Source="/etc")]}),
      "invalid volume name"),
    r("5 a volume source with dots", child({"Mounts": [vol(Source="../x")]}),
      "invalid volume name"),
    r("5 a volume source named as a platform workspace (a tenant-enumeration oracle)",
      child({"Mounts": [vol(Source="agentcell-green-c1-workspace")]}), "reserved name"),
    r("5 a volume source in the namespace, any case",
      child({"Mounts": [vol(Source="AGENTCELL-x")]}), "reserved name"),
    r("5 a mount over /proc", child({"Mounts": [vol(Target="/proc")]}), "mount target not allowed"),
    r("5 a mount over /sys/fs/cgroup", child({"Mounts": [vol(Target="/sys/fs/cgroup")]}),
      "mount target not allowed"),
    r("5 a mount over /dev/shm", child({"Mounts": [{"Type": "tmpfs", "Target": "/dev/shm"}]}),
      "mount target not allowed"),
    r("5 a mount over /", child({"Mounts": [vol(Target="/")]}), "mount target not allowed"),
    r("5 a relative target", child({"Mounts": [vol(Target="data")]}), "mount target not allowed"),
    r("5 a target climbing into /proc", child({"Mounts": [vol(Target="/x/../proc")]}),
      "mount target not allowed"),
    r("5 a target with a trailing slash", child({"Mounts": [vol(Target="/data/")]}),
      "mount target not allowed"),
    r("5 a target with a colon", child({"Mounts": [vol(Target="/a:ro")]}),
      "mount target not allowed"),
    r("5 a tmpfs over /proc/sys", child({"Tmpfs": {"/proc/sys": ""}}), "mount target not allowed"),
    r("5 an anonymous volume over /dev", child(Volumes={"/dev/x": {}}), "mount target not allowed"),
    # 6. devices (C5)
    r("6 a host device", child({"Devices": [
        {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]}),
      "devices not allowed"),
    r("6 a GPU request", child({"DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}),
      "devices not allowed"),
    r("6 a device cgroup rule", child({"DeviceCgroupRules": ["c *:* rwm"]}), "devices not allowed"),
    # 7. kernel and engine (C5)
    r("7 sysctls", child({"Sysctls": {"net.ipv4.ip_forward": "1"}}), "sysctls not allowed"),
    r("7 a cgroup parent", child({"CgroupParent": "/"}), "cgroup parent not allowed"),
    r("7 an unlisted runtime", child({"Runtime": "runsc"}), "runtime not allowed"),
    r("7 a runtime in another case", child({"Runtime": "RUNC"}), "runtime not allowed"),
    r("7 logs to syslog on the network", child({"LogConfig": {
        "Type": "syslog", "Config": {"syslog-address": "udp://203.0.113.1:514"}}}),
      "log driver not allowed"),
    r("7 logs to gelf", child({"LogConfig": {"Type": "gelf"}}), "log driver not allowed"),
    r("7 json-file with options of its own", child({"LogConfig": {
        "Type": "json-file", "Config": {"max-size": "100g"}}}), "log driver not allowed"),
    r("7 a container id file on the host", child({"ContainerIDFile": "/etc/x"}),
      "setting not allowed"),
    r("7 the OOM killer disabled", child({"OomKillDisable": True}), "setting not allowed"),
    r("7 ulimits", child({"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}]}),
      "setting not allowed"),
    r("7 storage options", child({"StorageOpt": {"size": "1T"}}), "setting not allowed"),
    r("7 kernel memory", child({"KernelMemory": 1}), "setting not allowed"),
    r("7 a CPU quota beside NanoCpus", child({"CpuQuota": 100000}), "setting not allowed"),
    r("7 a CPU period", child({"CpuPeriod": 100000}), "setting not allowed"),
    r("7 real-time CPU", child({"CpuRealtimeRuntime": 1000}), "setting not allowed"),
    r("7 a Windows CPU count", child({"CpuCount": 2}), "setting not allowed"),
    r("7 Windows IOps", child({"IOMaximumIOps": 2}), "setting not allowed"),
    r("7 a block device weight", child({"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 10}]}),
      "setting not allowed"),
    r("7 a block device read limit",
      child({"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1}]}),
      "setting not allowed"),
    r("7 an OOM score below 0", child({"OomScoreAdj": -1000}), "setting not allowed"),
    r("7 negative memory", child({"Memory": -1}), "setting not allowed"),
    r("7 negative CPUs", child({"NanoCpus": -1}), "setting not allowed"),
    r("7 negative shm", child({"ShmSize": -1}), "setting not allowed"),
    r("7 unlimited swap", child({"MemorySwap": -1}), "setting not allowed"),
    r("7 swap beyond memory", child({"Memory": 64 * MIB, "MemorySwap": 128 * MIB}),
      "setting not allowed"),
    r("7 swap without memory", child({"MemorySwap": 64 * MIB}), "setting not allowed"),
    r("7 Hyper-V isolation", child({"Isolation": "hyperv"}), "setting not allowed"),
    r("7 an unknown restart policy", child({"RestartPolicy": {"Name": "sometimes"}}),
      "setting not allowed"),
    # 8. user
    r("8 uid 0", child(User="0"), "user not allowed"),
    r("8 root by name", child(User="root"), "user not allowed"),
    r("8 root by uid and gid", child(User="0:0"), "user not allowed"),
    r("8 gid 0", child(User="1000:0"), "user not allowed"),
    r("8 a user name (root inside some image)", child(User="nobody"), "user not allowed"),
    r("8 uid 00", child(User="00"), "user not allowed"),
    r("8 a negative uid", child(User="-1"), "user not allowed"),
    r("8 three parts", child(User="1:1:1"), "user not allowed"),
    r("8 a uid beyond 32 bits", child(User="4294967296"), "user not allowed"),
    r("8 group 0 added", child({"GroupAdd": ["0"]}), "user not allowed"),
    r("8 a group by name", child({"GroupAdd": ["docker"]}), "user not allowed"),
    # 9. labels
    r("9 a tenant label of another tenant", child(Labels={LABEL_TENANT: "other"}),
      "reserved label"),
    r("9 a role label", child(Labels={LABEL_ROLE: "agent"}), "reserved label"),
    r("9 a reserved label in upper case", child(Labels={"AGENTCELL.CELL": "x"}), "reserved label"),
    r("9 any agentcell. label", child(Labels={"agentcell.spec-hash": "x"}), "reserved label"),
    r("9 a reserved label on a volume the mount creates", child({"Mounts": [vol(VolumeOptions={
        "Labels": {LABEL_CELL: "writer"}})]}), "reserved label"),
    # 10. quotas
    r("10 one child more than the limit", child(), "quota exceeded: containers",
      used(containers=3)),
    r("10 more memory than is left", child({"Memory": 800 * MIB}), "quota exceeded: memory"),
    r("10 no memory left for the default", child(), "quota exceeded: memory",
      used(memory=GIB - MIB)),
    r("10 more CPU than is left", child({"NanoCpus": 1_600_000_000}), "quota exceeded: cpus"),
    r("10 no CPU left for the default", child(), "quota exceeded: cpus",
      used(nano_cpus=1_995_000_000)),
    r("10 unlimited pids", child({"PidsLimit": -1}), "quota exceeded: pids"),
    r("10 more pids than a child may have", child({"PidsLimit": 257}), "quota exceeded: pids"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "ctx", "reason"), REFUSED)
def test_harden_child_refuses(body: dict[str, Any], ctx: ChildContext, reason: str) -> None:
    got = harden_child(body, cell=ctx)
    assert isinstance(got, Decision)
    assert (got.allow, got.reason) == (False, reason)


def out(body: dict[str, Any], ctx: ChildContext = CTX) -> Hardened:
    got = harden_child(body, cell=ctx)
    assert isinstance(got, Hardened), got
    return got


def dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else value[part]
    return value


def f(name: str, body: dict[str, Any], path: str, expected: Any) -> Any:
    return pytest.param(body, path, expected, id=name)


SECCOMP = f"seccomp={PROFILE}"
FORCED = [
    f("11 no user named: the cell's", child(), "User", "10001:10001"),
    f("11 a numeric user is kept", child(User="1000:1001"), "User", "1000:1001"),
    f("11 a uid alone runs with the same gid", child(User="1000"), "User", "1000:1000"),
    f("11 the root is read-only, whatever the body says", child({"ReadonlyRootfs": False}),
      "HostConfig.ReadonlyRootfs", True),
    f("11 /tmp is the profile's, whatever the body says", child({"Tmpfs": {"/tmp": "exec"}}),
      "HostConfig.Tmpfs./tmp", "rw,noexec,nosuid,nodev,size=67108864,mode=1777"),
    f("11 a tmpfs of the body's own is kept", child({"Tmpfs": {"/cache": "size=1m"}}),
      "HostConfig.Tmpfs./cache", "size=1m"),
    f("11 every capability is dropped", child({"CapDrop": ["NET_RAW"]}), "HostConfig.CapDrop",
      ["ALL"]),
    f("11 no-new-privileges and the cell's seccomp profile", child(), "HostConfig.SecurityOpt",
      ["no-new-privileges:true", SECCOMP]),
    f("11 a body's no-new-privileges is accepted", child({"SecurityOpt": ["no-new-privileges:1"]}),
      "HostConfig.SecurityOpt", ["no-new-privileges:true", SECCOMP]),
    f("11 pids default to the per-child maximum", child(), "HostConfig.PidsLimit", 256),
    f("11 pids the body asks for are kept", child({"PidsLimit": 100}), "HostConfig.PidsLimit", 100),
    f("11 memory defaults to 256 MiB", child(), "HostConfig.Memory", 256 * MIB),
    f("11 memory the body asks for is kept", child({"Memory": 512 * MIB}), "HostConfig.Memory",
      512 * MIB),
    f("11 swap equals memory", child({"Memory": 512 * MIB}), "HostConfig.MemorySwap", 512 * MIB),
    f("11 swap the body sets to memory is kept",
      child({"Memory": 64 * MIB, "MemorySwap": 64 * MIB}),
      "HostConfig.MemorySwap", 64 * MIB),
    f("11 CPU defaults to one", child(), "HostConfig.NanoCpus", 1_000_000_000),
    f("11 CPU the body asks for is kept", child({"NanoCpus": 250_000_000}), "HostConfig.NanoCpus",
      250_000_000),
    f("11 an init process, whatever the body says", child({"Init": False}), "HostConfig.Init",
      True),
    f("11 the CLI's default network is the cell's", child({"NetworkMode": "default"}),
      "HostConfig.NetworkMode", NET),
    f("11 the cell network by name", child({"NetworkMode": NET}), "HostConfig.NetworkMode", NET),
    f("11 the only endpoint is the cell network's", child(NetworkingConfig={"EndpointsConfig": {
        "default": {"MacAddress": "", "IPPrefixLen": 0}}}), "NetworkingConfig.EndpointsConfig",
      {NET: {}}),
    f("11 the owner labels, and the body's", child(Labels={"team": "ml"}), "Labels",
      {"team": "ml", **OWNER}),
    f("11 private IPC", child({"IpcMode": ""}), "HostConfig.IpcMode", "private"),
    f("11 no IPC at all is kept", child({"IpcMode": "none"}), "HostConfig.IpcMode", "none"),
    f("11 a private cgroup namespace", child(), "HostConfig.CgroupnsMode", "private"),
    f("11 json-file logs with rotation", child({"LogConfig": {"Type": "json-file"}}),
      "HostConfig.LogConfig",
      {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}),
    f("11 a restart policy is kept", child({"RestartPolicy": {"Name": "on-failure",
      "MaximumRetryCount": 3}}), "HostConfig.RestartPolicy",
      {"Name": "on-failure", "MaximumRetryCount": 3}),
    f("11 a listed runtime is kept", child({"Runtime": "runc"}), "HostConfig.Runtime", "runc"),
    f("11 --rm is kept", child({"AutoRemove": True}), "HostConfig.AutoRemove", True),
    f("11 a volume mount gets the owner labels", child({"Mounts": [vol(VolumeOptions={
        "NoCopy": True, "Labels": {"k": "v"}})]}), "HostConfig.Mounts",
      [{"Type": "volume", "Target": "/data", "Source": "data",
        "VolumeOptions": {"NoCopy": True, "Labels": {"k": "v", **OWNER}}}]),
    f("11 an anonymous volume mount is kept", child({"Mounts": [
        {"Type": "volume", "Target": "/scratch"}]}), "HostConfig.Mounts",
      [{"Type": "volume", "Target": "/scratch", "VolumeOptions": {"Labels": OWNER}}]),
    f("11 a read-only volume mount stays read-only", child({"Mounts": [vol(ReadOnly=True)]}),
      "HostConfig.Mounts.0.ReadOnly", True),
    f("11 a tmpfs mount keeps its options", child({"Mounts": [{"Type": "tmpfs", "Target": "/t",
      "TmpfsOptions": {"SizeBytes": MIB, "Mode": 0}}]}), "HostConfig.Mounts",
      [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": MIB}}]),
    f("11 an anonymous volume of Config.Volumes is kept", child(Volumes={"/data": {}}), "Volumes",
      {"/data": {}}),
    f("11 the environment keeps its order and duplicates", child(Env=["A=1", "B", "A=2"]), "Env",
      ["A=1", "B", "A=2"]),
    f("11 no environment stays empty", child(), "Env", []),
    f("11 the command is kept", child(Cmd="echo hi"), "Cmd", ["echo hi"]),
    f("11 an empty entrypoint is kept", child(Entrypoint=[]), "Entrypoint", []),
    f("11 a tty is kept", child(Tty=True, OpenStdin=True), "Tty", True),
    f("11 the hostname is kept", child(Hostname="box"), "Hostname", "box"),
    f("11 dns servers are kept (the network has no route to them)", child({"Dns": ["1.1.1.1"]}),
      "HostConfig.Dns", ["1.1.1.1"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "path", "expected"), FORCED)
def test_harden_child_forces(body: dict[str, Any], path: str, expected: Any) -> None:
    assert dig(out(body).body, path) == expected


def test_no_seccomp_profile_keeps_the_engine_default() -> None:
    ctx = ChildContext(tenant="acme", cell="researcher", network=NET, user="1:1", limits=LIMITS)
    assert out(child(), ctx).body["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]


def test_the_result_carries_what_the_sidecar_needs() -> None:
    mounts = [vol(), vol(Source="bb", Target="/b"), {"Type": "volume", "Target": "/anon"}]
    got = out(child({"Memory": 64 * MIB, "Mounts": mounts}))
    assert got.volumes == ("data", "bb")
    assert (got.memory, got.nano_cpus) == (64 * MIB, 1_000_000_000)
    assert decode_engine_json(got.raw) == got.body
    assert got.raw == json.dumps(got.body, separators=(",", ":")).encode()


def test_the_default_is_what_is_left_when_less_than_the_default_is_left() -> None:
    got = out(child(), used(memory=GIB - 100 * MIB, nano_cpus=1_800_000_000))
    assert (got.memory, got.nano_cpus) == (100 * MIB, 200_000_000)


def test_the_stock_cli_run_body_is_accepted() -> None:
    got = out(CLI_RUN_IT)
    body = got.body
    assert body["Tty"] is body["OpenStdin"] is body["AttachStdin"] is True
    assert body["HostConfig"]["AutoRemove"] is True
    assert body["HostConfig"]["NetworkMode"] == NET
    assert body["NetworkingConfig"] == {"EndpointsConfig": {NET: {}}}
    assert body["User"] == "10001:10001"


def test_the_hardening_is_the_agents_own() -> None:
    """Every field the agent's profile sets, a child gets from the same function."""
    from agentcell.policy._hardening import _hardened

    profile = _hardened(
        image="alpine:3", user="10001:10001", env={}, labels=OWNER, hostname="", network=NET,
        pids=256, memory=256 * MIB, cpus=1.0, seccomp=PROFILE,
    )  # fmt: skip
    body = out(child()).body
    for key, value in profile.items():
        if key != "HostConfig":
            assert body[key] == value, key
    for key, value in profile["HostConfig"].items():
        assert body["HostConfig"][key] == value, key


def test_every_host_config_field_has_exactly_one_treatment() -> None:
    groups = [*HOST_KEPT, *HOST_FORCED, *ZERO_HOST_FIELDS]
    assert sorted(groups) == sorted(HOST_CONFIG.fields)
    assert set(CONFIG_KEPT) | {"Hostname", "User", "Image", "Labels", "MacAddress"} == set(
        CONFIG_FIELDS
    )


ZERO_SET: dict[str, tuple[Any, str]] = {
    # a value for every field a child never has, and the reason it is refused with
    "PidMode": ("host", "host or foreign namespace"),
    "UTSMode": ("host", "host or foreign namespace"),
    "UsernsMode": ("host", "host or foreign namespace"),
    "Cgroup": ("container:x", "host or foreign namespace"),
    "Links": (["x:y"], "links not allowed"),
    "VolumesFrom": (["x"], "volumes from another container"),
    "VolumeDriver": ("x", "volume driver not allowed"),
    "DeviceRequests": ([{"Driver": "x"}], "devices not allowed"),
    "DeviceCgroupRules": (["a"], "devices not allowed"),
    "Sysctls": ({"a": "b"}, "sysctls not allowed"),
    "CgroupParent": ("x", "cgroup parent not allowed"),
    "MaskedPaths": ([], "security option not allowed"),
    "ReadonlyPaths": ([], "security option not allowed"),
    "Isolation": ("process", "setting not allowed"),
    "ContainerIDFile": ("x", "setting not allowed"),
    "OomKillDisable": (True, "setting not allowed"),
    "Ulimits": ([{"Name": "x"}], "setting not allowed"),
    "StorageOpt": ({"size": "1"}, "setting not allowed"),
    "KernelMemory": (1, "setting not allowed"),
    "KernelMemoryTCP": (1, "setting not allowed"),
    "CpuPeriod": (1, "setting not allowed"),
    "CpuQuota": (1, "setting not allowed"),
    "CpuRealtimePeriod": (1, "setting not allowed"),
    "CpuRealtimeRuntime": (1, "setting not allowed"),
    "CpuCount": (1, "setting not allowed"),
    "CpuPercent": (1, "setting not allowed"),
    "IOMaximumIOps": (1, "setting not allowed"),
    "IOMaximumBandwidth": (1, "setting not allowed"),
    "BlkioWeightDevice": ([{"Path": "x"}], "setting not allowed"),
    "BlkioDeviceReadBps": ([{"Path": "x"}], "setting not allowed"),
    "BlkioDeviceWriteBps": ([{"Path": "x"}], "setting not allowed"),
    "BlkioDeviceReadIOps": ([{"Path": "x"}], "setting not allowed"),
    "BlkioDeviceWriteIOps": ([{"Path": "x"}], "setting not allowed"),
}


def test_every_zero_field_has_a_value_below() -> None:
    assert sorted(ZERO_SET) == sorted(ZERO_HOST_FIELDS)


@pytest.mark.parametrize(("name", "value", "reason"), [(k, *v) for k, v in ZERO_SET.items()])
def test_every_zero_field_is_refused_when_set(name: str, value: Any, reason: str) -> None:
    got = harden_child(child({name: value}), cell=CTX)
    assert isinstance(got, Decision) and got.reason == reason, got
    assert harden_child(child({name: None}), cell=CTX) == out(child())  # null: as if absent


# --- through the whole pure pipeline, on both paths -----------------------------------------

Harden = Callable[[dict[str, Any]], Hardened | Decision]
SCHEMAS: dict[BodyKind, tuple[Schema, Harden]] = {
    BodyKind.CONTAINER_CREATE: (CONTAINER_CREATE, lambda b: harden_child(b, cell=CTX)),
    BodyKind.EXEC_CREATE: (EXEC_CREATE, lambda b: harden_exec(b, cell=CTX)),
    BodyKind.EXEC_START: (EXEC_START, harden_exec_start),
    BodyKind.VOLUME_CREATE: (VOLUME_CREATE, lambda b: harden_volume(b, cell=CTX)),
}


def through_the_proxy(method: str, target: str, payload: bytes) -> Hardened | Decision:
    """What the pure layer decides for one request: route, decode, harden."""
    request = decide_request(method, target)
    if isinstance(request, Decision):
        return request
    schema, harden = SCHEMAS[request.route.body]
    decoded = decode_engine_json(payload, schema)
    if isinstance(decoded, Decision):
        return decoded
    return harden(decoded)


ATTACKS: list[tuple[str, str, str, bytes, str]] = [
    # (name, method, path, body, reason or "allowed")
    ("C2 hostconfig.privileged in lower case", "POST", "/containers/create",
     b'{"Image":"a","hostconfig":{"privileged":true}}', "privileged"),
    ("C2 Privileged twice", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Privileged":false,"Privileged":true}}',
     "ambiguous body: duplicate key"),
    ("C2 \\u0050rivileged", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"\\u0050rivileged":true}}', "privileged"),
    ("C2 trailing data after the object", "POST", "/containers/create",
     b'{"Image":"a"}{"HostConfig":{"Privileged":true}}', "ambiguous body: trailing data"),
    ("C2 Privileged 1", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Privileged":1}}', "wrong type"),
    ("C2 Privileged at the top level", "POST", "/containers/create",
     b'{"Image":"a","Privileged":true}', "ambiguous body: host config field outside HostConfig"),
    ("C3 a body over 1 MiB", "POST", "/containers/create",
     b'{"Image":"' + b"a" * (1 << 20) + b'"}', "body too large"),
    ("C1 a query on create", "POST", "/containers/create?name=x&HostConfig.Privileged=1",
     b'{"Image":"a"}', "unknown query parameter"),
    ("C4 Binds of /", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Binds":["/:/host"]}}', "binds not allowed"),
    ("C4 Binds of the socket", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Binds":["/var/run/docker.sock:/s"]}}', "binds not allowed"),
    ("C4 a bind mount", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}}',
     "mount type not allowed"),
    ("C4 a volume whose driver binds a device", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Mounts":[{"Type":"volume","Source":"v","Target":"/v",'
     b'"VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"device":"/dev/sda"}}}}]}}',
     "volume driver not allowed"),
    ("C4 VolumesFrom a foreign container", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"VolumesFrom":["foreign"]}}', "volumes from another container"),
    ("C4 volumes/create with bind options", "POST", "/volumes/create",
     b'{"Name":"v","DriverOpts":{"type":"none","o":"bind","device":"/"}}',
     "volume driver not allowed"),
    ("C5 NetworkMode host", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"NetworkMode":"host"}}', "network not allowed"),
    ("C5 PidMode host", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"PidMode":"host"}}', "host or foreign namespace"),
    ("C5 IpcMode container:<foreign>", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"IpcMode":"container:foreign"}}', "host or foreign namespace"),
    ("C5 UTSMode host", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"UTSMode":"host"}}', "host or foreign namespace"),
    ("C5 UsernsMode host", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"UsernsMode":"host"}}', "host or foreign namespace"),
    ("C5 CgroupnsMode host", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"CgroupnsMode":"host"}}', "host or foreign namespace"),
    ("C5 CapAdd", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"CapAdd":["SYS_ADMIN"]}}', "capabilities added"),
    ("C5 Devices", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Devices":[{"PathOnHost":"/dev/mem"}]}}', "devices not allowed"),
    ("C5 DeviceRequests", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"DeviceRequests":[{"Count":-1}]}}', "devices not allowed"),
    ("C5 DeviceCgroupRules", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"DeviceCgroupRules":["a *:* rwm"]}}', "devices not allowed"),
    ("C5 SecurityOpt unconfined", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"SecurityOpt":["seccomp=unconfined"]}}',
     "security option not allowed"),
    ("C5 SecurityOpt label=disable", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"SecurityOpt":["label=disable"]}}',
     "security option not allowed"),
    ("C5 Sysctls", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Sysctls":{"kernel.x":"1"}}}', "sysctls not allowed"),
    ("C5 CgroupParent", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"CgroupParent":"/"}}', "cgroup parent not allowed"),
    ("C5 an unlisted Runtime", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Runtime":"runsc"}}', "runtime not allowed"),
    ("C5 attaching to another network", "POST", "/containers/create",
     b'{"Image":"a","NetworkingConfig":{"EndpointsConfig":{"other":{}}}}', "network not allowed"),
    ("C8 publishing ports", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"PortBindings":{"22/tcp":[{"HostPort":"2222"}]}}}',
     "ports published on the host"),
    ("C9 a new API version's field", "POST", "/containers/create",
     b'{"Image":"a","HostConfig":{"Annotations":{"a":"b"}}}', "unknown field"),
    ("an exec that is privileged", "POST", "/containers/child/exec",
     b'{"Cmd":["sh"],"Privileged":true}', "privileged"),
    ("an exec as root", "POST", "/containers/child/exec", b'{"Cmd":["sh"],"User":"root"}',
     "user not allowed"),
    ("the stock CLI's docker run -it", "POST", "/containers/create",
     json.dumps(CLI_RUN_IT).encode(), "allowed"),
    ("the stock CLI's docker exec -it", "POST", "/containers/child/exec",
     b'{"User":"","Privileged":false,"Tty":true,"AttachStdin":true,"AttachStderr":true,'
     b'"AttachStdout":true,"Detach":false,"DetachKeys":"","Env":null,"WorkingDir":"",'
     b'"Cmd":["sh"]}', "allowed"),
    ("the stock CLI's exec start", "POST", "/exec/" + "b" * 64 + "/start",
     b'{"Detach":false,"Tty":true}', "allowed"),
    ("the stock CLI's volume create", "POST", "/volumes/create",
     b'{"Driver":"local","Labels":{"a":"b"},"Name":"myvol"}', "allowed"),
]  # fmt: skip

THROUGH_THE_PROXY = [
    pytest.param(method, prefix + path, payload, reason, id=f"{name} ({label})")
    for name, method, path, payload, reason in ATTACKS
    for prefix, label in (("", "unversioned"), ("/v1.41", "/v1.41"))
]


@pytest.mark.parametrize(("method", "target", "payload", "reason"), THROUGH_THE_PROXY)
def test_through_the_proxy(method: str, target: str, payload: bytes, reason: str) -> None:
    got = through_the_proxy(method, target, payload)
    if reason == "allowed":
        assert isinstance(got, Hardened), got
    else:
        assert isinstance(got, Decision) and got.reason == reason, got


# --- exec, exec start, volumes --------------------------------------------------------------------

EXEC = [
    ("1 a duplicate key is refused", {"Cmd": ["sh"], "cmd": ["id"]},
     "ambiguous body: duplicate key"),
    ("1 a 1.42 ConsoleSize is unknown", {"Cmd": ["sh"], "ConsoleSize": [1, 1]}, "unknown field"),
    ("2 a privileged exec is refused", {"Cmd": ["sh"], "Privileged": True}, "privileged"),
    ("2 privileged in lower case is refused", {"Cmd": ["sh"], "privileged": True}, "privileged"),
    ("3 uid 0 is refused", {"Cmd": ["sh"], "User": "0"}, "user not allowed"),
    ("3 root by name is refused", {"Cmd": ["sh"], "User": "root"}, "user not allowed"),
    ("3 a gid of 0 is refused", {"Cmd": ["sh"], "User": "1000:0"}, "user not allowed"),
    ("3 a user name is refused", {"Cmd": ["sh"], "User": "www-data"}, "user not allowed"),
    ("3 no user runs as the child's", {"Cmd": ["sh"]}, {"Cmd": ["sh"], "Privileged": False}),
    ("3 a numeric user is kept", {"Cmd": ["sh"], "User": "1000:1000"},
     {"Cmd": ["sh"], "User": "1000:1000", "Privileged": False}),
    ("3 a uid alone runs with the same gid", {"Cmd": ["sh"], "User": "1000"},
     {"Cmd": ["sh"], "User": "1000:1000", "Privileged": False}),
    ("the rest is kept", {"Cmd": ["sh"], "Env": ["A=1"], "WorkingDir": "/w", "Tty": True,
                          "AttachStdin": True, "DetachKeys": "ctrl-x"},
     {"Cmd": ["sh"], "Env": ["A=1"], "WorkingDir": "/w", "Tty": True, "AttachStdin": True,
      "DetachKeys": "ctrl-x", "Privileged": False}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [pytest.param(*e[1:], id=e[0]) for e in EXEC])
def test_harden_exec(body: dict[str, Any], expected: Any) -> None:
    got = harden_exec(body, cell=CTX)
    if isinstance(expected, str):
        assert isinstance(got, Decision) and got.reason == expected
    else:
        assert isinstance(got, Hardened) and got.body == expected
        assert decode_engine_json(got.raw, EXEC_CREATE) == got.body


def test_harden_exec_start() -> None:
    got = harden_exec_start({"detach": False, "TTY": True})
    assert isinstance(got, Hardened) and got.raw == b'{"Detach":false,"Tty":true}'
    refused = harden_exec_start({"Detach": False, "ConsoleSize": [1, 1]})
    assert isinstance(refused, Decision) and refused.reason == "unknown field"


VOLUME_OWNER = {LABEL_TENANT: "acme", LABEL_CELL: "researcher", LABEL_ROLE: "child"}
VOLUMES = [
    ("1 a duplicate key is refused", {"Name": "a", "name": "b"}, "ambiguous body: duplicate key"),
    ("1 a 1.42 cluster volume is unknown", {"ClusterVolumeSpec": {}}, "unknown field"),
    ("2 another driver is refused", {"Name": "v", "Driver": "sshfs"}, "volume driver not allowed"),
    ("2 a bind through the local driver is refused (C4)",
     {"Name": "v", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}},
     "volume driver not allowed"),
    ("2 a device through the local driver is refused (C4)",
     {"Name": "v", "DriverOpts": {"type": "ext4", "device": "/dev/sda1"}},
     "volume driver not allowed"),
    ("2 an NFS share from the host's network is refused",
     {"Name": "v", "DriverOpts": {"type": "nfs", "o": "addr=10.0.0.1", "device": ":/x"}},
     "volume driver not allowed"),
    ("3 a reserved label is refused", {"Name": "v", "Labels": {LABEL_TENANT: "other"}},
     "reserved label"),
    ("4 a path as a name is refused", {"Name": "/etc"}, "invalid volume name"),
    ("4 dots as a name are refused", {"Name": ".."}, "invalid volume name"),
    ("4 a platform workspace's name is refused, taken or not",
     {"Name": "agentcell-green-c1-workspace"}, "reserved name"),
    ("4 a name in the namespace in another case is refused", {"Name": "Agentcell-v"},
     "reserved name"),
    ("4 a name that only contains the prefix is kept", {"Name": "my-agentcell-v"},
     {"Name": "my-agentcell-v", "Driver": "local", "DriverOpts": {}, "Labels": VOLUME_OWNER}),
    ("4 a one-character name is refused (the engine wants two)", {"Name": "v"},
     "invalid volume name"),
    ("5 a named local volume is owned", {"Name": "data", "Driver": "local", "Labels": {"a": "b"}},
     {"Name": "data", "Driver": "local", "DriverOpts": {}, "Labels": {"a": "b", **VOLUME_OWNER}}),
    ("5 a nameless volume is owned", {},
     {"Name": "", "Driver": "local", "DriverOpts": {}, "Labels": VOLUME_OWNER}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [pytest.param(*v[1:], id=v[0]) for v in VOLUMES])
def test_harden_volume(body: dict[str, Any], expected: Any) -> None:
    got = harden_volume(body, cell=CTX)
    if isinstance(expected, str):
        assert isinstance(got, Decision) and got.reason == expected
    else:
        assert isinstance(got, Hardened) and got.body == expected


def test_every_reason_in_the_vocabulary_has_a_row() -> None:
    seen = set()
    for body, ctx, _ in (p.values for p in REFUSED):
        got = harden_child(body, cell=ctx)
        assert isinstance(got, Decision)
        seen.add(got.reason)
    assert set(CHILD_REASONS) - seen == set()


def test_a_default_user_that_is_root_is_a_bug() -> None:
    with pytest.raises(ValueError, match="numeric non-root"):
        ChildContext(tenant="a", cell="b", network="n", user="0:0", limits=LIMITS)


# --- properties -----------------------------------------------------------------------------------

DANGER: dict[tuple[str, ...], list[Any]] = {
    ("HostConfig", "Privileged"): [True, False],
    ("HostConfig", "CapAdd"): [[], ["NET_ADMIN"], "ALL"],
    ("HostConfig", "CapDrop"): [["NET_RAW"], ["ALL"], []],
    ("HostConfig", "SecurityOpt"): [[], ["no-new-privileges"], ["seccomp=unconfined"],
                                    ["apparmor=unconfined"], ["label=disable"],
                                    ["no-new-privileges=false"]],
    ("HostConfig", "PidMode"): ["", "host", "container:x"],
    ("HostConfig", "IpcMode"): ["", "private", "none", "host", "shareable"],
    ("HostConfig", "UTSMode"): ["", "host"],
    ("HostConfig", "UsernsMode"): ["", "host"],
    ("HostConfig", "CgroupnsMode"): ["", "private", "host"],
    ("HostConfig", "NetworkMode"): ["", "default", NET, "host", "bridge", "container:x", "none"],
    ("NetworkingConfig", "EndpointsConfig"): [{}, {NET: {}}, {"default": {}}, {"other": {}},
                                              {NET: {"Aliases": ["egress"]}}],
    ("HostConfig", "Binds"): [[], ["/:/host"], ["vol:/data"]],
    ("HostConfig", "Mounts"): [[], [vol()], [{"Type": "bind", "Source": "/", "Target": "/h"}],
                               [vol(VolumeOptions={"DriverConfig": {"Options": {"o": "bind"}}})],
                               [{"Type": "tmpfs", "Target": "/t"}], [vol(Target="/proc")]],
    ("HostConfig", "VolumesFrom"): [[], ["foreign"]],
    ("HostConfig", "Devices"): [[], [{"PathOnHost": "/dev/sda"}]],
    ("HostConfig", "Sysctls"): [{}, {"net.ipv4.ip_forward": "1"}],
    ("HostConfig", "CgroupParent"): ["", "/"],
    ("HostConfig", "Runtime"): ["", "runc", "runsc"],
    ("HostConfig", "LogConfig"): [{"Type": "json-file"}, {"Type": "syslog"}],
    ("HostConfig", "PortBindings"): [{}, {"80/tcp": [{"HostPort": "80"}]}],
    ("HostConfig", "PublishAllPorts"): [False, True],
    ("HostConfig", "Memory"): [0, 64 * MIB, 2 * GIB, -1],
    ("HostConfig", "MemorySwap"): [0, -1, 64 * MIB],
    ("HostConfig", "NanoCpus"): [0, 500_000_000, 4_000_000_000],
    ("HostConfig", "PidsLimit"): [0, 100, -1, 100_000],
    ("HostConfig", "ReadonlyRootfs"): [False],
    ("HostConfig", "Init"): [False],
    ("HostConfig", "Tmpfs"): [{"/tmp": "exec"}, {"/data": ""}, {"/proc": ""}],
    ("HostConfig", "OomKillDisable"): [True, False],
    ("HostConfig", "OomScoreAdj"): [-1000, 0, 500],
    ("HostConfig", "MaskedPaths"): [[]],
    ("HostConfig", "GroupAdd"): [[], ["0"], ["1000"]],
    ("HostConfig", "Links"): [[], ["foreign:db"]],
    ("User",): ["", "0", "root", "1000", "1000:0", "65534:65534"],
    ("Labels",): [{}, {"a": "b"}, {LABEL_TENANT: "other"}],
    ("MacAddress",): ["", "02:42:ac:11:00:02"],
    ("Volumes",): [{}, {"/data": {}}, {"/proc/x": {}}],
}  # fmt: skip


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(draw(st.sampled_from([CLI_RUN_IT, child()])))
    paths = draw(st.lists(st.sampled_from(sorted(DANGER)), max_size=5, unique=True))
    for path in paths:
        target = body
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = draw(st.sampled_from(DANGER[path]))
    return body


CONTEXTS = st.builds(
    ChildContext,
    tenant=st.just("acme"),
    cell=st.just("researcher"),
    network=st.just(NET),
    user=st.sampled_from(["10001:10001", "1"]),
    limits=st.just(LIMITS),
    used=st.builds(
        ChildUsage,
        containers=st.integers(0, 3),
        nano_cpus=st.integers(0, 2_000_000_000),
        memory=st.integers(0, GIB),
    ),
    seccomp=st.sampled_from([PROFILE, None]),
    runtimes=st.sampled_from([(), ("runc",)]),
)


def forbidden(body: dict[str, Any], ctx: ChildContext) -> list[str]:
    """Every forbidden setting of a create body, read as the engine reads it.

    Written from ATTACKS.md and DESIGN.md, apart from the code under test.
    """
    bad = [f"top-level {k}" for k in body if k in HOST_CONFIG.fields]
    hc = body.get("HostConfig", {})
    flags = {
        "privileged": hc.get("Privileged", False),
        "capabilities added": hc.get("CapAdd"),
        "not all capabilities dropped": hc.get("CapDrop") != ["ALL"],
        "masked paths changed": "MaskedPaths" in hc or "ReadonlyPaths" in hc,
        "binds": hc.get("Binds"),
        "volumes from": hc.get("VolumesFrom"),
        "volume driver": hc.get("VolumeDriver"),
        "links": hc.get("Links"),
        "ports": hc.get("PortBindings") or hc.get("PublishAllPorts"),
        "devices": hc.get("Devices") or hc.get("DeviceRequests") or hc.get("DeviceCgroupRules"),
        "sysctls": hc.get("Sysctls"),
        "cgroup parent": hc.get("CgroupParent"),
        "writable root": not hc.get("ReadonlyRootfs"),
        "no init": not hc.get("Init"),
        "no /tmp tmpfs": "/tmp" not in hc.get("Tmpfs", {}),
        "oom": hc.get("OomKillDisable") or hc.get("OomScoreAdj", 0) < 0,
        "runtime": hc.get("Runtime", "") not in ("", *ctx.runtimes),
        "log driver": hc.get("LogConfig", {}).get("Type") != "json-file",
        "ulimits": hc.get("Ulimits"),
    }
    bad += [name for name, on in flags.items() if on]
    security = hc.get("SecurityOpt", [])
    want = ["no-new-privileges:true"] + ([f"seccomp={ctx.seccomp}"] if ctx.seccomp else [])
    if security != want:
        bad.append(f"security options {security}")
    for ns in ("PidMode", "UTSMode", "UsernsMode", "Cgroup"):
        if hc.get(ns):
            bad.append(ns)
    if hc.get("IpcMode") not in ("private", "none") or hc.get("CgroupnsMode") != "private":
        bad.append("ipc or cgroup namespace")
    if hc.get("NetworkMode") != ctx.network:
        bad.append("network mode")
    endpoints = body.get("NetworkingConfig", {}).get("EndpointsConfig", {})
    if endpoints != {ctx.network: {}} or body.get("MacAddress"):
        bad.append("endpoints")
    owner = {LABEL_TENANT: ctx.tenant, LABEL_CELL: ctx.cell, LABEL_ROLE: "child"}
    for m in hc.get("Mounts", []):
        if m["Type"] not in ("volume", "tmpfs") or "BindOptions" in m:
            bad.append("mount type")
        if m["Target"].split("/")[1] in ("proc", "sys", "dev"):
            bad.append("mount target")
        options = m.get("VolumeOptions", {})
        if "DriverConfig" in options:
            bad.append("volume driver")
        if m["Type"] == "volume" and {**options.get("Labels", {}), **owner} != options["Labels"]:
            bad.append("unowned volume")
    labels = body.get("Labels", {})
    if {k: v for k, v in labels.items() if k.lower().startswith("agentcell.")} != owner:
        bad.append("labels")
    uid, _, gid = body.get("User", "").partition(":")
    if not (uid.isdigit() and gid.isdigit() and int(uid) and int(gid)):
        bad.append("user")
    if any(not g.isdigit() or int(g) == 0 for g in hc.get("GroupAdd", [])):
        bad.append("groups")
    left_memory = ctx.limits.memory - ctx.used.memory
    left_cpus = ctx.limits.nano_cpus - ctx.used.nano_cpus
    if not 0 < hc.get("Memory", 0) <= left_memory or hc.get("MemorySwap") != hc.get("Memory"):
        bad.append("memory")
    if not 0 < hc.get("NanoCpus", 0) <= left_cpus:
        bad.append("cpus")
    if not 0 < hc.get("PidsLimit", 0) <= ctx.limits.pids:
        bad.append("pids")
    if ctx.used.containers >= ctx.limits.containers:
        bad.append("containers")
    return bad


def inspect_of(body: dict[str, Any]) -> dict[str, Any]:
    """What ``docker inspect`` would report of a container created from ``body``."""
    hc = body["HostConfig"]
    return {
        "Config": {"User": body["User"], "Labels": body["Labels"]},
        "HostConfig": hc,
        "Mounts": [{"Type": m["Type"], "Source": m.get("Source", "")} for m in hc["Mounts"]],
        "NetworkSettings": {
            "Networks": {name: {} for name in body["NetworkingConfig"]["EndpointsConfig"]}
        },
    }


@settings(max_examples=300)
@given(create_bodies(), CONTEXTS)
def test_no_accepted_body_holds_a_forbidden_setting(
    body: dict[str, Any], ctx: ChildContext
) -> None:
    got = harden_child(body, cell=ctx)
    if isinstance(got, Decision):
        assert got.reason in (*CHILD_REASONS, *JSON_REASONS)
        return
    engine_reads = decode_engine_json(got.raw)  # the forwarded bytes, read the engine's way
    assert engine_reads == got.body
    assert forbidden(engine_reads, ctx) == []


@settings(max_examples=300)
@given(create_bodies(), CONTEXTS)
def test_every_accepted_body_passes_the_agents_own_check(
    body: dict[str, Any], ctx: ChildContext
) -> None:
    """The differential: check_container, which vets the agent, holds for every child."""
    got = harden_child(body, cell=ctx)
    if isinstance(got, Decision):
        return
    checks = check_container(
        inspect_of(got.body), network=ctx.network, strict_seccomp=ctx.seccomp is not None
    )
    assert [c.reason for c in checks if not c.allow] == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [*HOST_CONFIG.fields, *CONFIG_FIELDS, "HostConfig", "x", "Type", "Target"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from([*CONFIG_FIELDS, "HostConfig", "NetworkingConfig"]),
                       JSON_VALUES, max_size=5))  # fmt: skip
def test_no_input_crashes_the_hardening(body: dict[str, Any]) -> None:
    for harden in (
        lambda b: harden_child(b, cell=CTX),
        lambda b: harden_exec(b, cell=CTX),
        lambda b: harden_volume(b, cell=CTX),
        harden_exec_start,
    ):
        got = harden(body)
        assert isinstance(got, Hardened) or got.reason in (*CHILD_REASONS, *JSON_REASONS)
