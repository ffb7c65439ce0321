"""The hardening profile: container_body builds it, check_container verifies it.

One row per hardening property DESIGN.md names for the agent container; then the reverse
check on what the engine reports, first whole, then with one property broken at a time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.policy import (
    LABEL_CELL,
    LABEL_GENERATION,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    LABEL_TENANT,
    RUN_TMPFS_SIZE,
    TMP_TMPFS_SIZE,
    WORKSPACE_PATH,
    CellNames,
    Decision,
    check_container,
    container_body,
)
from agentcell.spec import API_VERSION, Agent

NAMES = CellNames(container="ac-acme-researcher", network="ac-acme-researcher", volume="ac-ws")
HASH = "0123456789abcdef"


def make_agent(**spec: Any) -> Agent:
    return Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": "researcher", "tenant": "acme", "labels": {"team": "ml"}},
            "spec": {"image": "agentcell/demo-agent:latest", **spec},
        }
    )


def make_body(names: CellNames = NAMES, generation: int = 3, **spec: Any) -> dict[str, Any]:
    return container_body(make_agent(**spec), names=names, spec_hash=HASH, generation=generation)


def dig(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else value[part]
    return value


# --- container_body: one row per property -----------------------------------------------------

MB = 1024**2
BODY_ROWS: list[tuple[str, dict[str, Any], str, Any]] = [
    ("runs as the default non-root user", {}, "User", "10001:10001"),
    ("runs as the non-root user the spec names", {"user": "4242:4343"}, "User", "4242:4343"),
    ("a uid alone runs with the same gid", {"user": "4242"}, "User", "4242:4242"),
    ("the root filesystem is read-only", {}, "HostConfig.ReadonlyRootfs", True),
    (
        "/tmp is a 64Mi tmpfs, noexec, nosuid, nodev",
        {},
        "HostConfig.Tmpfs./tmp",
        f"rw,noexec,nosuid,nodev,size={64 * MB},mode=1777",
    ),
    (
        "/run is a 16Mi tmpfs, noexec, nosuid, nodev, owned by the user",
        {"user": "4242:4343"},
        "HostConfig.Tmpfs./run",
        f"rw,noexec,nosuid,nodev,size={16 * MB},mode=0755,uid=4242,gid=4343",
    ),
    (
        "the workspace volume is the only mount, read-write by default",
        {},
        "HostConfig.Mounts",
        [
            {
                "Type": "volume",
                "Source": "ac-ws",
                "Target": "/workspace",
                "ReadOnly": False,
                "VolumeOptions": {"NoCopy": True},
            }
        ],
    ),
    (
        "the workspace volume is read-only when access is ro",
        {"workspace": {"access": "ro"}},
        "HostConfig.Mounts",
        [
            {
                "Type": "volume",
                "Source": "ac-ws",
                "Target": "/workspace",
                "ReadOnly": True,
                "VolumeOptions": {"NoCopy": True},
            }
        ],
    ),
    (
        "nothing is mounted when access is none",
        {"workspace": {"access": "none"}},
        "HostConfig.Mounts",
        [],
    ),
    (
        "the workspace is never copied up from the image",
        {},
        "HostConfig.Mounts.0.VolumeOptions",
        {"NoCopy": True},
    ),
    ("the workspace is the working directory", {}, "WorkingDir", "/workspace"),
    (
        "no working directory without a workspace",
        {"workspace": {"access": "none"}},
        "WorkingDir",
        "",
    ),
    ("no host path is bound", {}, "HostConfig.Binds", []),
    ("every capability is dropped", {}, "HostConfig.CapDrop", ["ALL"]),
    ("no capability is added", {}, "HostConfig.CapAdd", []),
    (
        "no-new-privileges is the only security option",
        {},
        "HostConfig.SecurityOpt",
        ["no-new-privileges:true"],
    ),
    ("not privileged", {}, "HostConfig.Privileged", False),
    (
        "pids are limited as the spec says",
        {"resources": {"pids": 100}},
        "HostConfig.PidsLimit",
        100,
    ),
    (
        "memory is limited as the spec says",
        {"resources": {"memory": "256Mi"}},
        "HostConfig.Memory",
        256 * MB,
    ),
    (
        "swap is never more than memory",
        {"resources": {"memory": "256Mi"}},
        "HostConfig.MemorySwap",
        256 * MB,
    ),
    (
        "CPU is limited as the spec says",
        {"resources": {"cpus": 0.5}},
        "HostConfig.NanoCpus",
        500_000_000,
    ),
    (
        "fractional CPUs round to whole nanocpus",
        {"resources": {"cpus": 1 / 3}},
        "HostConfig.NanoCpus",
        333_333_333,
    ),
    ("an init process reaps children", {}, "HostConfig.Init", True),
    ("the network mode is the cell network", {}, "HostConfig.NetworkMode", "ac-acme-researcher"),
    (
        "the cell network is the only endpoint",
        {},
        "NetworkingConfig.EndpointsConfig",
        {"ac-acme-researcher": {}},
    ),
    ("no port is published", {}, "HostConfig.PortBindings", {}),
    ("no port is published by default either", {}, "HostConfig.PublishAllPorts", False),
    ("no device is passed in", {}, "HostConfig.Devices", []),
    ("its own IPC namespace", {}, "HostConfig.IpcMode", "private"),
    ("its own cgroup namespace", {}, "HostConfig.CgroupnsMode", "private"),
    (
        "the engine never restarts it: the reconciler does",
        {},
        "HostConfig.RestartPolicy",
        {"Name": "no"},
    ),
    (
        "logs are bounded",
        {},
        "HostConfig.LogConfig",
        {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
    ),
    ("the image is the spec's", {"image": "busybox:1.36"}, "Image", "busybox:1.36"),
    ("the hostname is the cell name", {}, "Hostname", "researcher"),
    ("no stdin", {}, "OpenStdin", False),
    ("no terminal", {}, "Tty", False),
    (
        "labels name the tenant, cell, role, spec hash and generation",
        {},
        "Labels",
        {
            "agentcell.tenant": "acme",
            "agentcell.cell": "researcher",
            "agentcell.role": "agent",
            "agentcell.spec-hash": HASH,
            "agentcell.generation": "3",
        },
    ),
    (
        "the user's env is kept and AGENTCELL_TENANT/CELL added, sorted",
        {"env": {"ZED": "last", "LOG_LEVEL": "info"}},
        "Env",
        ["AGENTCELL_CELL=researcher", "AGENTCELL_TENANT=acme", "LOG_LEVEL=info", "ZED=last"],
    ),
    (
        "a command sets Cmd",
        {"command": ["python3", "/app/agent.py"]},
        "Cmd",
        ["python3", "/app/agent.py"],
    ),
    ("a command clears the image's entrypoint", {"command": ["sh"]}, "Entrypoint", []),
]


@pytest.mark.parametrize(
    ("spec", "path", "expected"), [r[1:] for r in BODY_ROWS], ids=[r[0] for r in BODY_ROWS]
)
def test_container_body(spec: dict[str, Any], path: str, expected: Any) -> None:
    assert dig(make_body(**spec), path) == expected


def test_the_exported_constants_are_what_the_body_uses() -> None:
    assert (TMP_TMPFS_SIZE, RUN_TMPFS_SIZE, WORKSPACE_PATH) == (64 * MB, 16 * MB, "/workspace")
    assert (LABEL_TENANT, LABEL_CELL, LABEL_ROLE, LABEL_SPEC_HASH, LABEL_GENERATION) == (
        "agentcell.tenant",
        "agentcell.cell",
        "agentcell.role",
        "agentcell.spec-hash",
        "agentcell.generation",
    )


def test_only_tmp_and_run_are_tmpfs() -> None:
    assert set(make_body()["HostConfig"]["Tmpfs"]) == {"/tmp", "/run"}


def test_nothing_is_mounted_when_the_cell_has_no_volume() -> None:
    body = make_body(names=CellNames(container="c", network="n", volume=None))
    assert body["HostConfig"]["Mounts"] == []
    assert body["WorkingDir"] == ""


def test_the_body_never_names_unconfined_privileged_or_host() -> None:
    for spec in ({}, {"workspace": {"access": "ro"}}, {"command": ["sh"]}):
        text = json.dumps(make_body(**spec))
        assert "unconfined" not in text
        assert '"Privileged": true' not in text
        assert '"host"' not in text
        assert "docker.sock" not in text


def test_no_host_namespace_is_asked_for() -> None:
    hc = make_body()["HostConfig"]
    for key in ("PidMode", "UTSMode", "UsernsMode", "Sysctls", "CgroupParent", "DeviceRequests"):
        assert not hc.get(key), key


def test_without_a_command_the_image_keeps_its_own() -> None:
    body = make_body()
    assert "Cmd" not in body
    assert "Entrypoint" not in body


def test_the_body_is_deterministic() -> None:
    assert make_body(env={"A": "1"}) == make_body(env={"A": "1"})


def test_the_generation_changes_only_its_label() -> None:
    one, two = make_body(generation=1), make_body(generation=2)
    assert one["Labels"].pop(LABEL_GENERATION) == "1"
    assert two["Labels"].pop(LABEL_GENERATION) == "2"
    assert one == two


def test_metadata_labels_do_not_reach_the_container() -> None:
    assert "team" not in make_body()["Labels"]


# --- check_container ---------------------------------------------------------------------------

RULES = [
    "runs as a non-root user",
    "root filesystem is read-only",
    "all capabilities dropped",
    "no-new-privileges is set",
    "seccomp and LSM profiles confined",
    "not privileged",
    "pids limited",
    "memory limited, no swap beyond it",
    "CPU limited",
    "init process reaps children",
    "attached only to the cell network",
    "no host namespaces",
    "no host mounts",
    "no Docker socket",
    "no published ports",
    "no devices",
    "no sysctls or cgroup parent",
]
DENY = {
    "runs as a non-root user": "runs as root or an unnamed user",
    "root filesystem is read-only": "root filesystem is writable",
    "all capabilities dropped": "capabilities are not all dropped",
    "no-new-privileges is set": "no-new-privileges is missing",
    "seccomp and LSM profiles confined": "a security profile is unconfined",
    "not privileged": "privileged",
    "pids limited": "pids unlimited",
    "memory limited, no swap beyond it": "memory unlimited or swap allowed",
    "CPU limited": "CPU unlimited",
    "init process reaps children": "no init process",
    "attached only to the cell network": "attached to a network other than the cell's",
    "no host namespaces": "shares a host namespace",
    "no host mounts": "a host path is mounted",
    "no Docker socket": "the Docker socket is mounted",
    "no published ports": "ports are published on the host",
    "no devices": "host devices are passed in",
    "no sysctls or cgroup parent": "sysctls or a cgroup parent are set",
}
DEFAULT_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list"]
DEFAULT_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def inspect_of(body: dict[str, Any], names: CellNames = NAMES) -> dict[str, Any]:
    """What ``GET /containers/{id}/json`` reports for a container created from ``body``."""
    hc = copy.deepcopy(body["HostConfig"])
    hc.update(
        {
            "Binds": None,  # the engine reports empty lists of the create body as null
            "CapAdd": None,
            "PidMode": "",
            "UTSMode": "",
            "UsernsMode": "",
            "CgroupParent": "",
            "DeviceRequests": None,
            "DeviceCgroupRules": None,
            "MaskedPaths": list(DEFAULT_MASKED),
            "ReadonlyPaths": list(DEFAULT_READONLY),
        }
    )
    mounts = [
        {
            "Type": "volume",
            "Name": m["Source"],
            "Source": f"/var/lib/docker/volumes/{m['Source']}/_data",
            "Destination": m["Target"],
            "Driver": "local",
            "Mode": "z",
            "RW": not m["ReadOnly"],
            "Propagation": "",
        }
        for m in body["HostConfig"]["Mounts"]
    ]
    return {
        "Id": "c0ffee" * 10 + "abcd",
        "Name": "/" + names.container,
        "State": {"Status": "running", "Running": True},
        "Config": {
            "User": body["User"],
            "Image": body["Image"],
            "Env": list(body["Env"]),
            "Labels": dict(body["Labels"]),
            "Hostname": body["Hostname"],
        },
        "HostConfig": hc,
        "Mounts": mounts,
        "NetworkSettings": {"Networks": {names.network: {"IPAddress": "10.213.0.2"}}},
    }


def denied(decisions: list[Decision]) -> set[str]:
    return {d.rule for d in decisions if not d.allow}


def test_a_container_made_from_the_body_passes_every_check() -> None:
    decisions = check_container(inspect_of(make_body()), network=NAMES.network)
    assert [d.rule for d in decisions] == RULES
    assert [d.reason for d in decisions] == RULES
    assert all(decisions)


@pytest.mark.parametrize(
    "spec",
    [
        {"workspace": {"access": "ro"}},
        {"workspace": {"access": "none"}},
        {"command": ["sh"]},
        {"user": "7"},
    ],
    ids=["read-only workspace", "no workspace", "a command", "a uid alone"],
)
def test_every_variant_of_the_body_passes_every_check(spec: dict[str, Any]) -> None:
    assert denied(check_container(inspect_of(make_body(**spec)), network=NAMES.network)) == set()


def test_the_check_is_against_the_network_it_is_given() -> None:
    decisions = check_container(inspect_of(make_body()), network="some-other-net")
    assert denied(decisions) == {"attached only to the cell network"}


def test_an_empty_inspect_denies_everything_that_must_be_set() -> None:
    assert denied(check_container({}, network=NAMES.network)) == {
        "runs as a non-root user",
        "root filesystem is read-only",
        "all capabilities dropped",
        "no-new-privileges is set",
        "pids limited",
        "memory limited, no swap beyond it",
        "CPU limited",
        "init process reaps children",
        "attached only to the cell network",
        "no host namespaces",
    }


Mutation = Callable[[dict[str, Any]], None]


def host(key: str, value: Any) -> Mutation:
    def mutate(attrs: dict[str, Any]) -> None:
        attrs["HostConfig"][key] = value

    return mutate


def add_security_opt(opt: str) -> Mutation:
    def mutate(attrs: dict[str, Any]) -> None:
        attrs["HostConfig"]["SecurityOpt"] = [*(attrs["HostConfig"]["SecurityOpt"] or []), opt]

    return mutate


def user(value: str) -> Mutation:
    def mutate(attrs: dict[str, Any]) -> None:
        attrs["Config"]["User"] = value

    return mutate


def add_mount(mount: dict[str, Any]) -> Mutation:
    def mutate(attrs: dict[str, Any]) -> None:
        attrs["Mounts"] = [*attrs["Mounts"], mount]

    return mutate


def add_network(name: str) -> Mutation:
    def mutate(attrs: dict[str, Any]) -> None:
        attrs["NetworkSettings"]["Networks"][name] = {"IPAddress": "172.17.0.5"}

    return mutate


def drop_security_opts(attrs: dict[str, Any]) -> None:
    attrs["HostConfig"]["SecurityOpt"] = None


def unmask_proc(attrs: dict[str, Any]) -> None:
    attrs["HostConfig"]["MaskedPaths"] = []
    attrs["HostConfig"]["ReadonlyPaths"] = []


BIND = {"Type": "bind", "Source": "/etc", "Destination": "/host-etc", "RW": True}
SOCKET = {
    "Type": "bind",
    "Source": "/var/run/docker.sock",
    "Destination": "/var/run/docker.sock",
    "RW": True,
}

# (prose id, mutation, the rules it must deny). Each mutation touches one property.
MUTATIONS: list[tuple[str, Mutation, set[str]]] = [
    ("privileged", host("Privileged", True), {"not privileged"}),
    ("a capability added", host("CapAdd", ["NET_ADMIN"]), {"all capabilities dropped"}),
    ("capabilities not dropped", host("CapDrop", None), {"all capabilities dropped"}),
    ("only some capabilities dropped", host("CapDrop", ["NET_RAW"]), {"all capabilities dropped"}),
    ("no security options", drop_security_opts, {"no-new-privileges is set"}),
    (
        "seccomp unconfined",
        add_security_opt("seccomp=unconfined"),
        {"seccomp and LSM profiles confined"},
    ),
    (
        "seccomp unconfined, colon form",
        add_security_opt("seccomp:unconfined"),
        {"seccomp and LSM profiles confined"},
    ),
    (
        "apparmor unconfined",
        add_security_opt("apparmor=unconfined"),
        {"seccomp and LSM profiles confined"},
    ),
    (
        "SELinux labels disabled",
        add_security_opt("label=disable"),
        {"seccomp and LSM profiles confined"},
    ),
    (
        "system paths unconfined",
        add_security_opt("systempaths=unconfined"),
        {"seccomp and LSM profiles confined"},
    ),
    ("user 0", user("0"), {"runs as a non-root user"}),
    ("user 0:0", user("0:0"), {"runs as a non-root user"}),
    ("gid 0", user("10001:0"), {"runs as a non-root user"}),
    ("the image's user (empty)", user(""), {"runs as a non-root user"}),
    ("a user name", user("root"), {"runs as a non-root user"}),
    ("a writable root filesystem", host("ReadonlyRootfs", False), {"root filesystem is read-only"}),
    ("the host's root bound", host("Binds", ["/:/host"]), {"no host mounts"}),
    ("a bind mount", add_mount(BIND), {"no host mounts"}),
    (
        "a named pipe mount",
        add_mount({"Type": "npipe", "Source": "x", "Destination": "/x"}),
        {"no host mounts"},
    ),
    ("the Docker socket bound", add_mount(SOCKET), {"no host mounts", "no Docker socket"}),
    ("host pid namespace", host("PidMode", "host"), {"no host namespaces"}),
    ("another container's pid namespace", host("PidMode", "container:abc"), {"no host namespaces"}),
    ("host ipc namespace", host("IpcMode", "host"), {"no host namespaces"}),
    ("shareable ipc namespace", host("IpcMode", "shareable"), {"no host namespaces"}),
    ("host uts namespace", host("UTSMode", "host"), {"no host namespaces"}),
    ("host user namespace", host("UsernsMode", "host"), {"no host namespaces"}),
    ("host cgroup namespace", host("CgroupnsMode", "host"), {"no host namespaces"}),
    (
        "a published port",
        host("PortBindings", {"8080/tcp": [{"HostPort": "8080"}]}),
        {"no published ports"},
    ),
    ("all ports published", host("PublishAllPorts", True), {"no published ports"}),
    (
        "a device",
        host("Devices", [{"PathOnHost": "/dev/kmsg", "PathInContainer": "/dev/kmsg"}]),
        {"no devices"},
    ),
    ("a GPU request", host("DeviceRequests", [{"Driver": "nvidia", "Count": -1}]), {"no devices"}),
    ("a device cgroup rule", host("DeviceCgroupRules", ["c 1:3 mr"]), {"no devices"}),
    ("a sysctl", host("Sysctls", {"net.ipv4.ip_forward": "1"}), {"no sysctls or cgroup parent"}),
    ("a cgroup parent", host("CgroupParent", "/system.slice"), {"no sysctls or cgroup parent"}),
    ("a second network attached", add_network("bridge"), {"attached only to the cell network"}),
    ("host network mode", host("NetworkMode", "host"), {"attached only to the cell network"}),
    (
        "another container's network",
        host("NetworkMode", "container:abc"),
        {"attached only to the cell network"},
    ),
    ("unlimited swap", host("MemorySwap", -1), {"memory limited, no swap beyond it"}),
    ("swap beyond memory", host("MemorySwap", 2**40), {"memory limited, no swap beyond it"}),
    ("no memory limit", host("Memory", 0), {"memory limited, no swap beyond it"}),
    ("no pids limit", host("PidsLimit", 0), {"pids limited"}),
    ("pids limit -1", host("PidsLimit", -1), {"pids limited"}),
    ("pids limit null", host("PidsLimit", None), {"pids limited"}),
    ("no CPU limit", host("NanoCpus", 0), {"CPU limited"}),
    ("no init", host("Init", False), {"init process reaps children"}),
    ("init null", host("Init", None), {"init process reaps children"}),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_one_broken_property_denies_exactly_its_check(mutate: Mutation, expected: set[str]) -> None:
    attrs = inspect_of(make_body())
    mutate(attrs)
    decisions = check_container(attrs, network=NAMES.network)
    assert denied(decisions) == expected
    for d in decisions:
        assert d.reason == (d.rule if d.allow else DENY[d.rule])


@pytest.mark.parametrize(
    "mutate",
    [add_security_opt("label:disable"), add_security_opt("disable"), unmask_proc],
    ids=[
        "SELinux labels disabled, colon form",
        "SELinux labels disabled, bare form",
        "/proc unmasked (what systempaths=unconfined sends)",
    ],
)
def test_every_way_to_unconfine_is_denied(mutate: Mutation) -> None:
    attrs = inspect_of(make_body())
    mutate(attrs)
    assert denied(check_container(attrs, network=NAMES.network)) == {
        "seccomp and LSM profiles confined"
    }


@given(st.sets(st.sampled_from(range(len(MUTATIONS))), min_size=1))
def test_any_set_of_broken_properties_denies_each_of_them(chosen: set[int]) -> None:
    attrs = inspect_of(make_body())
    expected: set[str] = set()
    for i in sorted(chosen):
        _name, mutate, rules = MUTATIONS[i]
        mutate(attrs)
        expected |= rules
    got = denied(check_container(attrs, network=NAMES.network))
    assert expected <= got
    # a bind of the Docker socket and a plain bind both count as host mounts; nothing else leaks
    assert got == expected


AGENT_SPECS = st.fixed_dictionaries(
    {
        "user": st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(
            lambda ids: f"{ids[0]}:{ids[1]}"
        ),
        "workspace": st.fixed_dictionaries({"access": st.sampled_from(["rw", "ro", "none"])}),
        "resources": st.fixed_dictionaries(
            {
                "cpus": st.floats(min_value=0.01, max_value=256),
                "memory": st.integers(min_value=16 * MB, max_value=2**40),
                "pids": st.integers(min_value=16, max_value=65536),
            }
        ),
        "env": st.dictionaries(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=5), max_size=3
        ).filter(
            lambda env: (
                not any(
                    k.startswith("AGENTCELL_") or k.endswith("PROXY") or k == "DOCKER_HOST"
                    for k in env
                )
            )
        ),
    }
)


@given(AGENT_SPECS, st.booleans())
def test_every_valid_spec_yields_a_container_that_passes_every_check(
    spec: dict[str, Any], has_volume: bool
) -> None:
    names = CellNames("c", "n", "v" if has_volume else None)
    body = make_body(names=names, **spec)
    assert denied(check_container(inspect_of(body, names), network="n")) == set()
    assert body["HostConfig"]["MemorySwap"] == body["HostConfig"]["Memory"] >= 16 * MB
    assert body["HostConfig"]["NanoCpus"] > 0
