"""Pure parsers of the in-cell battery (part A): status, mountinfo, DNS, IPv6 tables."""

from __future__ import annotations

import json
import select
import signal
import struct
import subprocess
import sys
from importlib import resources
from typing import Any

import pytest

from agentcell.runtime.incell import battery_a as b

# --------------------------------------------------------------------------- A1

HARDENED_STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tR (running)
Uid:\t10001\t10001\t10001\t10001
Gid:\t10001\t10001\t10001\t10001
Groups:\t10001
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t0000000000000000
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
"""

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def _status(**overrides: str | None) -> dict[str, str]:
    fields = b.parse_status(HARDENED_STATUS)
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def test_parse_status_reads_fields_and_strips_whitespace() -> None:
    fields = b.parse_status(HARDENED_STATUS)
    assert fields["Name"] == "python3"
    assert fields["Uid"] == "10001\t10001\t10001\t10001"
    assert fields["CapEff"] == "0000000000000000"
    assert b.parse_status("no colon here\n\n") == {}


@pytest.mark.parametrize(
    ("name", "overrides", "ok", "mentions"),
    [
        ("all sets empty", {}, True, "all 0"),
        ("docker default effective set", {"CapEff": DOCKER_DEFAULT_CAPS}, False, "net_raw"),
        ("only permitted set", {"CapPrm": "0000000000200000"}, False, "sys_admin"),
        ("only bounding set", {"CapBnd": "0000000000000001"}, False, "CapBnd"),
        ("only ambient set", {"CapAmb": "0000000000080000"}, False, "sys_ptrace"),
        ("unknown high bit", {"CapEff": "8000000000000000"}, False, "cap_63"),
        ("field missing", {"CapBnd": None}, False, "CapBnd missing"),
        ("field garbage", {"CapEff": "zz"}, False, "unreadable"),
        ("inheritable alone is not checked", {"CapInh": DOCKER_DEFAULT_CAPS}, True, "all 0"),
    ],
)
def test_check_capabilities(
    name: str, overrides: dict[str, str | None], ok: bool, mentions: str
) -> None:
    got_ok, detail = b.check_capabilities(_status(**overrides))
    assert got_ok is ok, name
    assert mentions in detail, detail


def test_decode_capabilities_names_docker_default_set() -> None:
    names = b.decode_capabilities(int(DOCKER_DEFAULT_CAPS, 16))
    assert names == [
        "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
        "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "ok"), [("1", True), ("0", False), (None, False), ("yes", False)]
)
def test_check_no_new_privs(value: str | None, ok: bool) -> None:
    assert b.check_no_new_privs(_status(NoNewPrivs=value))[0] is ok


@pytest.mark.parametrize(
    ("value", "ok", "mentions"),
    [("2", True, "filter"), ("0", False, "disabled"), ("1", False, "strict"),
     (None, False, "missing")],
)  # fmt: skip
def test_check_seccomp(value: str | None, ok: bool, mentions: str) -> None:
    got_ok, detail = b.check_seccomp(_status(Seccomp=value))
    assert got_ok is ok
    assert mentions in detail


# --------------------------------------------------------------------------- mountinfo

CID = "8597f388a4bc24cdc27ab5bd070c8c62fae9c457231967c856aad68fee3dd222"
OVERLAY_OPTS = "rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B"
EXT4 = "ext4 /dev/vda rw,discard"

# Captured from a hardened cell on Docker 20.10, cgroup v1 (ids shortened to one cell).
HARDENED_MOUNTINFO = f"""\
72 48 0:39 / / ro,relatime master:2 - overlay overlay {OVERLAY_OPTS}
73 72 0:42 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
74 72 0:43 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
75 74 0:44 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
76 72 0:45 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
77 76 0:46 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
78 77 0:29 /docker/{CID} /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
85 77 0:36 /docker/{CID} /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
87 74 0:41 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
88 74 0:47 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
89 72 254:0 /usr/bin/tini-static /usr/sbin/docker-init ro,relatime - {EXT4}
90 72 254:0 /var/lib/docker/volumes/ws-vol/_data /workspace rw,relatime master:1 - {EXT4}
91 72 0:48 / /tmp rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=65536k
92 72 0:49 / /run rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=16384k
93 72 254:0 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf ro,relatime - {EXT4}
94 72 254:0 /var/lib/docker/containers/{CID}/hostname /etc/hostname ro,relatime - {EXT4}
95 72 254:0 /var/lib/docker/containers/{CID}/hosts /etc/hosts ro,relatime - {EXT4}
49 73 0:42 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
52 73 0:42 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
53 73 0:50 / /proc/acpi ro,relatime - tmpfs tmpfs ro
54 73 0:43 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
56 76 0:51 / /sys/firmware ro,relatime - tmpfs tmpfs ro
"""

SCRATCH = ["/tmp", "/run"]


def _check(
    text: str, *, workspace: str | None = "/workspace", volume: str | None = "ws-vol"
) -> Any:
    return b.check_mounts(
        b.parse_mountinfo(text), workspace=workspace, scratch=SCRATCH, workspace_volume=volume
    )


def test_parse_mountinfo_fields() -> None:
    entries = b.parse_mountinfo(HARDENED_MOUNTINFO)
    assert len(entries) == 22
    root = entries[0]
    assert (root.mount_id, root.parent_id, root.mount_point, root.fstype) == (
        72,
        48,
        "/",
        "overlay",
    )
    assert root.read_only
    assert root.source == "overlay"
    ws = next(e for e in entries if e.mount_point == "/workspace")
    assert ws.root == "/var/lib/docker/volumes/ws-vol/_data"
    assert not ws.read_only
    assert "master:1" not in ws.options  # optional fields are not options


def test_parse_mountinfo_decodes_octal_escapes() -> None:
    (entry,) = b.parse_mountinfo(
        r"100 72 254:0 /home/my\040dir /mnt/with\040space rw - ext4 /dev/vda rw" + "\n"
    )
    assert entry.root == "/home/my dir"
    assert entry.mount_point == "/mnt/with space"


@pytest.mark.parametrize("line", ["garbage", "1 2 3:4 / /x rw", "x 2 3:4 / /x rw - tmpfs t rw"])
def test_parse_mountinfo_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        b.parse_mountinfo(line)


def test_hardened_cell_mounts_are_all_docker_made() -> None:
    ok, detail = _check(HARDENED_MOUNTINFO)
    assert ok, detail
    assert "22 mounts" in detail


def test_workspace_may_be_a_tmpfs_volume_and_may_be_absent() -> None:
    text = HARDENED_MOUNTINFO.replace(
        f"254:0 /var/lib/docker/volumes/ws-vol/_data /workspace rw,relatime master:1 - {EXT4}",
        "0:60 / /workspace rw,relatime - tmpfs tmpfs rw",
    )
    assert _check(text)[0]
    no_ws = "\n".join(ln for ln in HARDENED_MOUNTINFO.splitlines() if "/workspace" not in ln)
    assert _check(no_ws, workspace=None, volume=None)[0]


def test_docker_root_on_its_own_filesystem_is_recognised() -> None:
    text = HARDENED_MOUNTINFO.replace("/var/lib/docker/volumes/", "/volumes/").replace(
        "/var/lib/docker/containers/", "/containers/"
    )
    assert _check(text)[0]


# One extra line added to the hardened mountinfo, and the mount point it must name.
BAD_MOUNTS = [
    ("host root bind", f"200 72 254:0 / /host rw,relatime - {EXT4}", "/host"),
    ("docker socket bind (host /run is tmpfs)",
     "201 72 0:25 /docker.sock /var/run/docker.sock rw,nosuid - tmpfs tmpfs rw,mode=755",
     "/var/run/docker.sock"),
    ("docker socket bind (disk)",
     f"202 72 254:0 /run/docker.sock /run/docker.sock rw - {EXT4}", "/run/docker.sock"),
    ("host /proc", "203 72 0:5 / /host/proc rw,nosuid - proc proc rw", "/host/proc"),
    ("host sysfs read-write", "204 72 0:6 / /sys rw,nosuid - sysfs sysfs rw", "/sys"),
    ("cgroup read-write",
     "205 77 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory", "/sys/fs/cgroup/memory"),
    ("host /dev/shm", "206 74 0:26 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw", "/dev/shm"),
    ("unconfigured tmpfs", "207 72 0:70 / /home/agent rw - tmpfs tmpfs rw", "/home/agent"),
    ("writable tmpfs over /proc", "208 73 0:71 / /proc/kcore rw - tmpfs tmpfs rw", "/proc/kcore"),
    ("host /etc/hosts", f"209 72 254:0 /etc/hosts /etc/hosts ro - {EXT4}", "/etc/hosts"),
    ("another container's hostname as /etc/hosts",
     f"210 72 254:0 /var/lib/docker/containers/{CID}/hostname /etc/hosts ro - {EXT4}",
     "/etc/hosts"),
    ("docker-init read-write",
     f"211 72 254:0 /usr/bin/tini-static /sbin/docker-init rw - {EXT4}", "/sbin/docker-init"),
    ("a host dir as extra volume",
     f"212 72 254:0 /srv/data /data rw - {EXT4}", "/data"),
    ("an engine volume outside the workspace",
     f"213 72 254:0 /var/lib/docker/volumes/other/_data /data rw - {EXT4}", "/data"),
    ("devpts elsewhere", "214 72 0:44 / /mnt/pts rw - devpts devpts rw", "/mnt/pts"),
    ("host mqueue elsewhere", "215 72 0:41 / /mnt/mq rw - mqueue mqueue rw", "/mnt/mq"),
    ("sysfs elsewhere", "216 72 0:45 / /mnt/sys ro - sysfs sysfs ro", "/mnt/sys"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "line", "mount_point"), BAD_MOUNTS, ids=[m[0] for m in BAD_MOUNTS]
)
def test_unexpected_mounts_are_reported_with_their_mount_point(
    name: str, line: str, mount_point: str
) -> None:
    ok, detail = _check(HARDENED_MOUNTINFO + line + "\n")
    assert not ok, name
    assert f"{mount_point}:" in detail


BAD_WORKSPACES = [
    ("host path bound as workspace", "/home/user/project"),
    ("local volume with bind options (device=/etc)", "/etc"),
    ("another cell's volume", "/var/lib/docker/volumes/other-cell/_data"),
    ("a subdirectory of a volume", "/var/lib/docker/volumes/ws-vol/_data/sub"),
]


@pytest.mark.parametrize(("name", "root"), BAD_WORKSPACES, ids=[w[0] for w in BAD_WORKSPACES])
def test_workspace_must_be_the_expected_engine_volume(name: str, root: str) -> None:
    text = HARDENED_MOUNTINFO.replace(
        "/var/lib/docker/volumes/ws-vol/_data /workspace", f"{root} /workspace"
    )
    ok, detail = _check(text)
    assert not ok, name
    assert "/workspace:" in detail


def test_root_must_be_the_engine_overlay() -> None:
    text = HARDENED_MOUNTINFO.replace(f"/ / ro,relatime master:2 - overlay overlay {OVERLAY_OPTS}",
                                      f"/ / ro,relatime - {EXT4}")  # fmt: skip
    ok, detail = _check(text)
    assert not ok
    assert "root filesystem is ext4" in detail


def test_empty_mountinfo_fails() -> None:
    assert not _check("")[0]


# --------------------------------------------------------------------------- DNS


def test_build_dns_query_wire_format() -> None:
    q = b.build_dns_query("agentcell-x.invalid", 0x1234)
    assert q[:12] == struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x0bagentcell-x\x07invalid\x00" + b"\x00\x01\x00\x01"
    assert b.build_dns_query("a.invalid.", 1) == b.build_dns_query("a.invalid", 1)
    assert b.build_dns_query("x.invalid", 7, qtype=28).endswith(b"\x00\x1c\x00\x01")


@pytest.mark.parametrize(
    ("name", "qid"),
    [("a..invalid", 1), ("x" * 64 + ".invalid", 1), (".".join(["a" * 63] * 5), 1),
     ("ok.invalid", -1), ("ok.invalid", 0x10000), ("é.invalid", 1)],
)  # fmt: skip
def test_build_dns_query_rejects_bad_input(name: str, qid: int) -> None:
    with pytest.raises(ValueError):
        b.build_dns_query(name, qid)


def _response(qid: int, rcode: int, *, qr: bool = True) -> bytes:
    flags = (0x8000 if qr else 0) | 0x0180 | rcode
    return struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0) + b"\x01x\x07invalid\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("data", "qid", "rcode"),
    [
        (_response(0xBEEF, 3), 0xBEEF, 3),  # NXDOMAIN: answered
        (_response(0xBEEF, 0), 0xBEEF, 0),  # NOERROR: answered
        (_response(0xBEEF, 2), 0xBEEF, 2),  # SERVFAIL
        (_response(0xBEEF, 3), 0xBEEE, None),  # someone else's id
        (_response(0xBEEF, 3, qr=False), 0xBEEF, None),  # a query, not a response
        (b"agentcell-trap\n", 0x6167, None),  # the host trap's plain UDP reply
        (b"\xbe\xef\x81", 0xBEEF, None),  # truncated
    ],
)
def test_parse_dns_response(data: bytes, qid: int, rcode: int | None) -> None:
    assert b.parse_dns_response(data, qid) == rcode


# --------------------------------------------------------------------------- IPv6

IF_INET6_CELL = """\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000004200fffe0a0702 2c 40 20 80     eth0
"""
IF_INET6_GLOBAL = IF_INET6_CELL + "fd000000000000000000000000000002 2c 40 00 00     eth0\n"

ROUTE_CELL = """\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
"""  # noqa: E501 -- verbatim kernel table
ROUTE_DEFAULT = ROUTE_CELL + (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
)


def test_ipv6_global_addresses() -> None:
    assert b.ipv6_global_addresses(IF_INET6_CELL) == []
    assert b.ipv6_global_addresses(IF_INET6_GLOBAL) == ["fd00::2/64 on eth0"]
    assert b.ipv6_global_addresses("") == []


def test_ipv6_default_routes_skip_loopback_and_reject_routes() -> None:
    assert b.ipv6_default_routes(ROUTE_CELL) == []
    assert b.ipv6_default_routes(ROUTE_DEFAULT) == ["default via fd00::1 dev eth0"]


# --------------------------------------------------------------------------- the script


def test_source_is_shipped_as_package_data() -> None:
    source = resources.files("agentcell.runtime.incell").joinpath("battery_a.py").read_text()
    assert "def main(" in source
    assert len(source.encode()) < 128 * 1024  # one argv string: MAX_ARG_STRLEN


def test_check_ids_are_unique_and_sectioned() -> None:
    assert len(set(b.CHECK_IDS)) == len(b.CHECK_IDS)
    assert {i.split(".")[0] for i in b.CHECK_IDS} == {"A1", "A2", "A3", "A4", "A5", "A6"}


def test_bad_config_still_prints_one_failed_line_per_check() -> None:
    source = resources.files("agentcell.runtime.incell").joinpath("battery_a.py").read_text()
    proc = subprocess.run(
        [sys.executable, "-c", source, "[not json"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [ln["id"] for ln in lines] == list(b.CHECK_IDS)
    assert not any(ln["ok"] for ln in lines)
    assert all("bad battery config" in ln["detail"] for ln in lines)


def test_runner_turns_crashes_overruns_and_silence_into_failed_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fine(cfg: object) -> list[tuple[str, bool, str]]:
        return [("X1.fine", True, "fine")]

    def crashes(cfg: object) -> list[tuple[str, bool, str]]:
        raise RuntimeError("boom")

    def overruns(cfg: object) -> list[tuple[str, bool, str]]:
        select.select([], [], [], 10)  # interrupted by the check's 0.2 s timer
        return [("X3.slow", True, "never")]

    def half(cfg: object) -> list[tuple[str, bool, str]]:
        return [("X4.a", True, "only a")]

    monkeypatch.setattr(
        b,
        "_CHECKS",
        (
            (("X1.fine",), fine, 1),
            (("X2.crash",), crashes, 1),
            (("X3.slow",), overruns, 0.2),
            (("X4.a", "X4.b"), half, 1),
        ),
    )
    previous = signal.getsignal(signal.SIGALRM)  # pytest-timeout's, if any
    try:
        b.run({})
    finally:
        signal.signal(signal.SIGALRM, previous)
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    got = {ln["id"]: (ln["ok"], ln["detail"]) for ln in lines}
    assert [ln["id"] for ln in lines] == ["X1.fine", "X2.crash", "X3.slow", "X4.a", "X4.b"]
    assert got["X1.fine"] == (True, "fine")
    assert got["X2.crash"] == (False, "check crashed: RuntimeError: boom")
    assert got["X3.slow"][0] is False and "time budget" in got["X3.slow"][1]
    assert got["X4.a"] == (True, "only a")
    assert got["X4.b"] == (False, "check produced no result")
    assert lines[0]["section"] == "X1"


# The cell's secrets directory: a host tmpfs bound read-only at /run/secrets.
SECRETS_LINE = (
    "96 92 0:27 /agentcell-0123456789ab/acme/a /run/secrets {opts} - tmpfs tmpfs rw,size=24g\n"
)


@pytest.mark.parametrize(
    ("line", "secrets", "ok"),
    [
        (SECRETS_LINE.format(opts="ro,nosuid,nodev"), "/run/secrets", True),
        (SECRETS_LINE.format(opts="rw,nosuid,nodev"), "/run/secrets", False),
        (SECRETS_LINE.format(opts="ro,nosuid,nodev"), None, False),
        (
            SECRETS_LINE.format(opts="ro").replace("/run/secrets", "/run/other"),
            "/run/secrets",
            False,
        ),
    ],
    ids=[
        "read-only secrets bind, expected: allowed",
        "read-write secrets bind: refused",
        "a secrets bind the cell should not have: refused",
        "a host tmpfs elsewhere: refused",
    ],
)
def test_the_secrets_bind_is_the_one_host_tmpfs_allowed(
    line: str, secrets: str | None, ok: bool
) -> None:
    result = b.check_mounts(
        b.parse_mountinfo(HARDENED_MOUNTINFO + line),
        workspace="/workspace",
        scratch=SCRATCH,
        workspace_volume="ws-vol",
        secrets=secrets,
    )
    assert result[0] is ok, result[1]
    if ok:
        assert "secrets" in result[1]
