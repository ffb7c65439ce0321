"""Battery part A, host half: live cells on the real Docker Engine, plus the host traps
on real sockets and ``run_battery_a`` against an in-memory container fake.

The hardened cell is built with the flags of DESIGN.md on an ``--internal`` network of
its own, and the host firewall rule the control plane will install for cell subnets is
installed by the fixture for this test's subnet only. The same battery must report
failures against a deliberately unhardened container, and against the hardened one
once the host firewall is gone (libnetwork #2261: internal networks reach the host).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, NamedTuple

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool

from agentcell.runtime import battery as bat
from agentcell.runtime import cell_seccomp_profile
from agentcell.runtime.battery import CheckResult, HostTraps, host_addresses, run_battery_a
from agentcell.runtime.images import BASE
from agentcell.runtime.incell import battery_a as incell

LABELS = {"agentcell.test": "battery"}
USER = "10001:10001"
PIDS = 128
MEMORY = 256 * 1024 * 1024
SERVER_PORT = 8080
SUBNET_POOL = ipaddress.ip_network("10.239.0.0/16")  # outside the cell pools other tests use
ALL_IDS = [*incell.CHECK_IDS, *bat.HOST_CHECK_IDS]

# Checks that fail on a cell hardened exactly as DESIGN.md says, on this host. Empty:
# ptrace of PID 1 (same uid, no Yama here) is refused by the cell's seccomp profile.
KNOWN_FINDINGS: dict[str, str] = {}


def _cell_seccomp() -> str:
    profile, note = cell_seccomp_profile()
    assert profile is not None, f"setup did not install the engine's profile: {note}"
    return profile


# --------------------------------------------------------------------------- helpers


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class HardenedRun(NamedTuple):
    results: list[CheckResult]
    elapsed: float
    processes_before: set[str]
    processes_after: set[str]


def processes(container: Any) -> set[str]:
    """PID and command of every process in the container, as the engine sees them."""
    top = container.top(ps_args="-eo pid,args")
    return {" ".join(p) for p in top["Processes"]}


def by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


def failures(results: list[CheckResult]) -> dict[str, str]:
    return {r.id: r.detail for r in results if not r.ok}


def iptables(*args: str, check: bool = True) -> int:
    return subprocess.run(["iptables", "-w", "5", *args], check=check).returncode


@contextlib.contextmanager
def host_firewall(subnet: str) -> Iterator[None]:
    """What the control plane will install for cell subnets: the host accepts replies
    to connections it opened, and drops everything else the subnet sends it."""
    tag = ["-m", "comment", "--comment", "agentcell-test-battery"]
    rules = [
        ["1", "-s", subnet, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", *tag,
         "-j", "ACCEPT"],
        ["2", "-s", subnet, *tag, "-j", "DROP"],
    ]  # fmt: skip
    installed: list[list[str]] = []
    try:
        for rule in rules:
            iptables("-I", "INPUT", *rule)
            installed.append(rule)
        yield
    finally:
        for rule in reversed(installed):
            iptables("-D", "INPUT", *rule[1:], check=False)


def remove_labelled(client: docker.DockerClient) -> None:
    flt = {"label": "agentcell.test=battery"}
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    for n in client.networks.list(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            n.remove()
    for v in client.volumes.list(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            v.remove(force=True)


def create_network(client: docker.DockerClient, name: str, *, internal: bool) -> Any:
    """A bridge network on the first free /28 of SUBNET_POOL, gateway at .1."""
    taken = [ipaddress.ip_network(a) for a in host_addresses() if ":" not in a]
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet") and ":" not in cfg["Subnet"]:
                taken.append(ipaddress.ip_network(cfg["Subnet"]))
    for candidate in SUBNET_POOL.subnets(new_prefix=28):
        if any(candidate.overlaps(t) for t in taken):
            continue
        gateway = str(candidate.network_address + 1)
        try:
            return client.networks.create(
                name,
                driver="bridge",
                internal=internal,
                labels=LABELS,
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(candidate), gateway=gateway)]),
            )
        except docker.errors.APIError as e:
            if "overlap" not in str(e):
                raise
            taken.append(candidate)  # someone took it meanwhile
    raise AssertionError(f"no free /28 left in {SUBNET_POOL}")


def subnet_of(network: Any) -> tuple[str, str]:
    cfg = network.attrs["IPAM"]["Config"][0]
    return cfg["Subnet"], cfg["Gateway"]


def container_ip(container: Any) -> str:
    container.reload()
    nets = container.attrs["NetworkSettings"]["Networks"]
    return str(next(iter(nets.values()))["IPAddress"])


def start(client: docker.DockerClient, image: str, **kwargs: Any) -> Any:
    command = kwargs.pop("command", ["python3", "-c", "import signal; signal.pause()"])
    c = client.containers.run(image, command, detach=True, labels=LABELS, **kwargs)

    def running() -> bool:
        c.reload()
        if c.status in ("exited", "dead"):
            raise AssertionError(f"{c.name} exited: {c.logs()[-500:]!r}")
        return bool(c.status == "running")

    wait_until(running, f"{c.name} to run")
    return c


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env()
    c.ping()
    remove_labelled(c)  # leftovers of an interrupted run
    try:
        yield c
    finally:
        remove_labelled(c)
        c.close()


@pytest.fixture(scope="module")
def image(client: docker.DockerClient) -> str:
    """The base image ``make test`` builds (``agentcell images build``): it has python3."""
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{BASE} is missing: `make test` builds it with `agentcell images build`")
    return BASE


@pytest.fixture(scope="module")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def internal_net(client: docker.DockerClient, run_id: str) -> Any:
    return create_network(client, f"agentcell-test-battery-{run_id}-cell", internal=True)


@pytest.fixture(scope="module")
def open_net(client: docker.DockerClient, run_id: str) -> Any:
    return create_network(client, f"agentcell-test-battery-{run_id}-open", internal=False)


@pytest.fixture(scope="module")
def hardened(client: docker.DockerClient, image: str, run_id: str, internal_net: Any) -> Any:
    """A cell's agent container, hardened as DESIGN.md says, on its internal network."""
    volume = client.volumes.create(f"agentcell-test-battery-{run_id}-ws", labels=LABELS)
    client.containers.run(
        image,
        ["chown", USER, "/w"],
        remove=True,
        network_mode="none",
        labels=LABELS,
        volumes={volume.name: {"bind": "/w", "mode": "rw"}},
    )
    _, gateway = subnet_of(internal_net)
    return start(
        client,
        image,
        name=f"agentcell-test-battery-{run_id}-hardened",
        read_only=True,
        tmpfs={
            "/tmp": "rw,noexec,nosuid,size=64m",
            # uid/gid: Docker copies the image dir's mode onto the tmpfs (/run is 0755
            # root; a mode= option is overwritten), so without them A2.scratch-writable
            # fails: the agent could not write /run.
            "/run": "rw,noexec,nosuid,size=16m,uid=10001,gid=10001",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges", f"seccomp={_cell_seccomp()}"],
        user=USER,
        pids_limit=PIDS,
        mem_limit=MEMORY,
        memswap_limit=MEMORY,
        init=True,
        network=internal_net.name,
        dns=[gateway],  # the embedded resolver forwards here: this host, never outside
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}},
    )


@pytest.fixture(scope="module")
def public_server(client: docker.DockerClient, image: str, run_id: str, open_net: Any) -> str:
    """ "The internet" (and another tenant): a TCP server on a normal bridge network."""
    c = start(
        client,
        image,
        name=f"agentcell-test-battery-{run_id}-public",
        command=["python3", "-m", "http.server", str(SERVER_PORT), "--directory", "/usr/share"],
        user="65534:65534",
        network=open_net.name,
    )
    ip = container_ip(c)

    def reachable() -> bool:
        try:
            socket.create_connection((ip, SERVER_PORT), timeout=1).close()
        except OSError:
            return False
        return True

    wait_until(reachable, f"the test server at {ip}:{SERVER_PORT}")  # positive control
    return ip


@pytest.fixture(scope="module")
def unhardened(client: docker.DockerClient, image: str, run_id: str, open_net: Any) -> Any:
    """Docker's defaults: root, default capabilities, writable root, no limits."""
    _, gateway = subnet_of(open_net)
    return start(
        client,
        image,
        name=f"agentcell-test-battery-{run_id}-unhardened",
        network=open_net.name,
        dns=[gateway],
    )


@pytest.fixture(scope="module")
def hardened_run(hardened: Any, internal_net: Any, public_server: str) -> HardenedRun:
    subnet, _ = subnet_of(internal_net)
    before = processes(hardened)
    with host_firewall(subnet):
        started = time.monotonic()
        results = run_battery_a(
            hardened,
            user=USER,
            workspace="/workspace",
            pids_limit=PIDS,
            memory_bytes=MEMORY,
            extra_targets=[(public_server, SERVER_PORT)],
        )
        elapsed = time.monotonic() - started
    return HardenedRun(results, elapsed, before, processes(hardened))


# --------------------------------------------------------------------------- live cells


@pytest.mark.integration
def test_hardened_cell_passes_battery_a(hardened_run: HardenedRun) -> None:
    results, elapsed, _, _ = hardened_run
    assert [r.id for r in results] == ALL_IDS
    unexpected = {i: d for i, d in failures(results).items() if i not in KNOWN_FINDINGS}
    assert unexpected == {}
    assert elapsed < 30, f"battery took {elapsed:.1f} s"
    print(f"\nbattery A against a hardened cell took {elapsed:.1f} s")


@pytest.mark.integration
def test_hardened_cell_cannot_ptrace_its_init(
    hardened_run: HardenedRun,
) -> None:
    result = by_id(hardened_run.results)["A5.ptrace"]
    assert result.ok, result.detail


@pytest.mark.integration
def test_hardened_cell_traffic_reached_only_blocked_targets(
    hardened_run: HardenedRun, public_server: str
) -> None:
    results = by_id(hardened_run.results)
    assert "IPv4 targets" in results["A6.tcp-ipv4"].detail
    assert results["A6.host-traps"].ok, results["A6.host-traps"].detail
    assert results["A4.pids-limit"].ok and "EAGAIN" in results["A4.pids-limit"].detail
    assert "SIGKILL" in results["A4.memory-limit"].detail


@pytest.mark.integration
def test_battery_leaves_no_process_behind(hardened_run: HardenedRun) -> None:
    assert hardened_run.processes_after == hardened_run.processes_before


@pytest.mark.integration
def test_without_the_host_firewall_the_hardened_cell_reaches_the_host(
    hardened: Any, public_server: str
) -> None:
    """libnetwork #2261: an --internal network does not keep a container off the host.
    Without the INPUT rule the battery must say so -- and nothing else changes."""
    results = run_battery_a(
        hardened,
        user=USER,
        workspace="/workspace",
        pids_limit=PIDS,
        memory_bytes=MEMORY,
        extra_targets=[(public_server, SERVER_PORT)],
    )
    failed = failures(results)
    assert "connected to" in failed["A6.tcp-ipv4"]
    assert f"tcp {container_ip(hardened)}:" in failed["A6.host-traps"]
    assert f"{public_server}:{SERVER_PORT}" not in failed["A6.tcp-ipv4"]  # other bridges: no
    assert set(failed) - {"A6.tcp-ipv4", "A6.udp", "A6.dns", "A6.host-traps"} == set(KNOWN_FINDINGS)


@pytest.mark.integration
def test_unhardened_container_fails_battery_a(unhardened: Any, public_server: str) -> None:
    results = run_battery_a(
        unhardened,
        user="root",
        workspace=None,
        pids_limit=PIDS,
        memory_bytes=MEMORY,
        extra_targets=[(public_server, SERVER_PORT)],
    )
    assert [r.id for r in results] == ALL_IDS
    failed = failures(results)
    must_fail = {
        "A1.capabilities", "A1.no-new-privs", "A2.root-fs", "A3.non-root", "A3.setuid",
        "A4.pids-limit", "A4.memory-limit", "A5.mknod", "A5.raw-socket", "A6.tcp-ipv4",
        "A6.udp", "A6.host-traps",
    }  # fmt: skip
    assert must_fail <= set(failed), {i: r.detail for i, r in by_id(results).items() if r.ok}
    assert "net_raw" in failed["A1.capabilities"]
    assert f"{public_server}:{SERVER_PORT}" in failed["A6.tcp-ipv4"]
    assert by_id(results)["A4.cell-survived"].ok  # the script cleaned up after itself


@pytest.mark.integration
def test_image_without_python3_gives_one_failed_result(
    client: docker.DockerClient, image: str, run_id: str
) -> None:
    c = start(
        client,
        image,
        name=f"agentcell-test-battery-{run_id}-nopython",
        command=["/bin/sleep", "infinity"],
        environment={"PATH": "/nonexistent"},  # python3 cannot be found, as if absent
        network_mode="none",
        user=USER,
    )
    try:
        results = run_battery_a(c, user=USER, workspace=None, pids_limit=PIDS, memory_bytes=MEMORY)
    finally:
        c.remove(force=True)
    assert len(results) == 1
    assert results[0].id == "battery.python3"
    assert not results[0].ok
    assert "needs python3" in results[0].detail


@pytest.mark.integration
def test_host_addresses_include_the_docker_gateways(internal_net: Any, open_net: Any) -> None:
    addrs = host_addresses()
    for net in (internal_net, open_net):
        assert subnet_of(net)[1] in addrs
    assert "127.0.0.1" in addrs
    assert not any(ipaddress.ip_address(a).is_link_local for a in addrs)


# --------------------------------------------------------------------------- host traps


def test_host_traps_record_tcp_and_udp_with_the_peer_and_reply() -> None:
    with HostTraps() as traps:
        socket.create_connection(("127.0.0.1", traps.tcp_port), timeout=2).close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.bind(("127.0.0.1", 0))
            s.sendto(b"hello", ("127.0.0.1", traps.udp_port))
            assert s.recv(100) == b"agentcell-trap\n"
            udp_peer = f"127.0.0.1:{s.getsockname()[1]}"
        assert traps.flush()
        hits = traps.hits
    assert any(h.startswith("tcp 127.0.0.1:") and h.endswith(f"-> :{traps.tcp_port}") for h in hits)
    assert f"udp {udp_peer} -> :{traps.udp_port}" in hits
    assert len(hits) == 2  # the flush sentinel is not a hit


def test_host_traps_listen_on_ipv6_too_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    with HostTraps() as traps:
        try:
            socket.create_connection(("::1", traps.tcp_port), timeout=2).close()
        except OSError as e:
            pytest.skip(f"no IPv6 loopback here: {e}")
        assert traps.flush()
        assert any(h.startswith("tcp [::1]:") for h in traps.hits)


def test_host_traps_close_is_idempotent_and_frees_the_ports() -> None:
    traps = HostTraps()
    with traps:
        port = traps.tcp_port
    traps.close()
    assert not traps.flush()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))


def test_dns_trap_answers_nxdomain_to_the_query_it_got() -> None:
    query = incell.build_dns_query("agentcell-battery-x.invalid", 0xBEEF)
    reply = bat._dns_nxdomain(query)
    assert reply is not None
    assert incell.parse_dns_response(reply, 0xBEEF) == 3
    assert reply[12:] == query[12:]  # the question, echoed
    assert bat._dns_nxdomain(reply) is None  # never answer an answer
    assert bat._dns_nxdomain(b"agentcell-trap\n") is None


# --------------------------------------------------------------------------- pure parts


IP_JSON = [
    {"ifname": "lo", "addr_info": [
        {"family": "inet", "local": "127.0.0.1", "scope": "host"},
        {"family": "inet6", "local": "::1", "scope": "host"}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.2", "scope": "global"},
        {"family": "inet6", "local": "fd00::2", "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "scope": "link"}]},
    {"ifname": "docker0", "addr_info": [{"family": "inet", "local": "172.17.0.1"}]},
    {"ifname": "weird"},
]  # fmt: skip

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 192.0.2.255
        /32 link BROADCAST
Local:
     |-- 192.0.2.2
        /32 host LOCAL
"""
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 02 40 00 00     eth0
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
"""


def test_addresses_from_ip_json_keep_ipv4_and_global_ipv6() -> None:
    assert bat._addresses_from_ip_json(IP_JSON) == [
        "127.0.0.1",
        "192.0.2.2",
        "fd00::2",
        "172.17.0.1",
    ]
    assert bat._addresses_from_ip_json({"not": "a list"}) == []


def test_addresses_from_proc_agree() -> None:
    assert bat._addresses_from_proc(FIB_TRIE, IF_INET6) == ["127.0.0.1", "192.0.2.2", "fd00::2"]


def _line(check_id: str, ok: bool = True, detail: str = "fine") -> str:
    return json.dumps(
        {"id": check_id, "section": check_id.split(".", 1)[0], "ok": ok, "detail": detail}
    )


def test_parse_lines_turns_garbage_into_failures() -> None:
    text = "\n".join([
        _line("A1.seccomp"),
        "Traceback (most recent call last):",
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "A1.x", "section": "A1", "ok": "yes", "detail": "d"}),
        json.dumps({"id": "A1.y"}),
        "",
    ])  # fmt: skip
    results = bat._parse_lines(text)
    assert results[0] == CheckResult("A1.seccomp", "A1", True, "fine")
    assert [r.id for r in results[1:]] == ["battery.output"] * 4
    assert not any(r.ok for r in results[1:])


class FakeContainer:
    """The CellContainer seam, in memory: canned exec results, a scripted status."""

    def __init__(self, outputs: list[tuple[int, bytes, bytes]], statuses: list[str]) -> None:
        self.outputs = outputs
        self.statuses = statuses
        self.status = statuses[0]
        self.attrs: dict[str, Any] = {"State": {"StartedAt": "t0"}, "RestartCount": 0}
        self.calls: list[tuple[list[str], str]] = []

    def reload(self) -> None:
        if len(self.statuses) > 1:
            self.statuses.pop(0)
        self.status = self.statuses[0]

    def exec_run(self, cmd: list[str], *, user: str = "", demux: bool = False) -> Any:
        self.calls.append((cmd, user))
        code, out, err = self.outputs.pop(0)
        return SimpleNamespace(exit_code=code, output=(out, err))


def test_run_battery_a_reports_missing_checks_crashes_and_a_dead_cell() -> None:
    lines = "\n".join(_line(i) for i in incell.CHECK_IDS[:3]) + "\n"
    fake = FakeContainer(
        [(0, b"True\n", b""), (137, lines.encode(), b"Killed")],
        ["running", "running", "exited"],
    )
    results = run_battery_a(fake, user="10001", workspace=None, pids_limit=1, memory_bytes=1)
    got = by_id(results)
    assert [r.id for r in results[:3]] == list(incell.CHECK_IDS[:3])
    assert "exit code 137" in got["battery.exit"].detail
    assert not got["A6.dns"].ok and "stopped before" in got["A6.dns"].detail
    assert got["A6.host-traps"].ok  # nothing was sent to the traps
    assert not got["A4.cell-survived"].ok and "exited" in got["A4.cell-survived"].detail
    cmd, user = fake.calls[1]
    assert cmd[:2] == ["python3", "-c"] and cmd[2] == bat.SOURCE and user == "10001"
    cfg = json.loads(cmd[3])
    assert cfg["dns_targets"] and not any(
        ipaddress.ip_address(a).is_loopback for a in cfg["dns_targets"]
    )
    assert {tuple(t) for t in cfg["tcp_targets"]} >= {
        (a, cfg["tcp_targets"][0][1]) for a in cfg["dns_targets"]
    }


def test_run_battery_a_needs_python3() -> None:
    oci = b'OCI runtime exec failed: exec: "python3": executable file not found in $PATH'
    fake = FakeContainer([(126, oci, b"")], ["running"])
    results = run_battery_a(fake, user="1", workspace=None, pids_limit=1, memory_bytes=1)
    assert results == [CheckResult("battery.python3", "battery", False, results[0].detail)]
    assert "executable file not found" in results[0].detail


def test_run_battery_a_on_a_stopped_container() -> None:
    fake = FakeContainer([], ["exited"])
    (result,) = run_battery_a(fake, user="1", workspace=None, pids_limit=1, memory_bytes=1)
    assert result.id == "battery.container" and not result.ok
