"""Attack battery part A, the in-cell half: hardening checks run inside a live cell.

``agentcell verify`` executes this file's source inside the agent container, as the
agent's own user, with ``python3 -c <source> <json config>``. It uses the standard
library only (it runs on the cell image's Python, never imports agentcell), prints one
JSON object per check line -- ``{"id", "section", "ok", "detail"}`` -- and always exits
0: a check that crashes or overruns its time budget becomes an ``ok: false`` line.

Config (argv[1], JSON)::

    workspace        "/workspace" or null       must be writable when given
    workspace_volume engine volume name or null  the workspace's expected volume
    scratch          ["/tmp", "/run"]           tmpfs dirs that must be writable
    secrets          "/run/secrets" or null     the read-only secrets bind (host tmpfs)
    pids_limit       int                        the cell's pids limit
    memory_bytes     int                        the cell's memory limit
    tcp_targets      [[ip, port], ...]          must not accept a connection
    udp_targets      [[ip, port], ...]          datagrams sent; no reply may come back
    dns_targets      [ip, ...]                  port 53; must not answer
    resolv_conf_dns  bool (default true)        also query loopback resolv.conf servers
    timeout          1.0                        per network probe, seconds

Every check can fail: each one reports ``ok: false`` in an unhardened container. The
pure parsers (``parse_status``, ``check_capabilities``, ``parse_mountinfo``,
``classify_mount``, ``build_dns_query``, ...) are importable for unit tests; nothing
runs at import time. The host half, which owns the config, the host-side traps and
the results only the host can see, is ``agentcell.runtime.battery``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "CHECK_IDS",
    "MountEntry",
    "build_dns_query",
    "check_capabilities",
    "check_mounts",
    "check_no_new_privs",
    "check_seccomp",
    "classify_mount",
    "decode_capabilities",
    "ipv6_default_routes",
    "ipv6_global_addresses",
    "main",
    "parse_dns_response",
    "parse_mountinfo",
    "parse_status",
]

Result = tuple[str, bool, str]  # (check id, ok, detail)

# --------------------------------------------------------------------------- A1 parsers

# Linux capability numbers (include/uapi/linux/capability.h), for readable details.
_CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip

_CAP_FIELDS = ("CapEff", "CapPrm", "CapBnd", "CapAmb")


def parse_status(text: str) -> dict[str, str]:
    """``/proc/<pid>/status`` as a mapping of field name to its (stripped) value."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def decode_capabilities(mask: int) -> list[str]:
    """Names of the capabilities set in ``mask`` (unknown bits as ``cap_<n>``)."""
    names = []
    for bit in range(64):
        if mask >> bit & 1:
            names.append(_CAP_NAMES[bit] if bit < len(_CAP_NAMES) else f"cap_{bit}")
    return names


def check_capabilities(status: Mapping[str, str]) -> tuple[bool, str]:
    """Effective, permitted, bounding and ambient capability sets must all be empty."""
    bad = []
    nonzero: dict[int, list[str]] = {}  # mask -> fields holding it, to print each set once
    for field in _CAP_FIELDS:
        raw = status.get(field)
        if raw is None:
            bad.append(f"{field} missing")
            continue
        try:
            mask = int(raw, 16)
        except ValueError:
            bad.append(f"{field} unreadable ({raw!r})")
            continue
        if mask:
            nonzero.setdefault(mask, []).append(field)
    for mask, fields in nonzero.items():
        names = ",".join(decode_capabilities(mask))
        bad.append(f"{'='.join(fields)}={mask:016x} ({names})")
    if bad:
        return False, "; ".join(bad)
    return True, "CapEff, CapPrm, CapBnd and CapAmb are all 0"


def check_no_new_privs(status: Mapping[str, str]) -> tuple[bool, str]:
    """``NoNewPrivs`` must be 1."""
    value = status.get("NoNewPrivs")
    if value == "1":
        return True, "NoNewPrivs: 1"
    return False, f"NoNewPrivs: {value if value is not None else 'missing'} (want 1)"


def check_seccomp(status: Mapping[str, str]) -> tuple[bool, str]:
    """``Seccomp`` must be 2 (a filter is installed)."""
    value = status.get("Seccomp")
    if value == "2":
        filters = status.get("Seccomp_filters")
        return True, "Seccomp: 2 (filter mode)" + (f", {filters} filter(s)" if filters else "")
    meaning = {"0": "disabled", "1": "strict"}.get(value or "", "missing")
    return False, f"Seccomp: {value if value is not None else 'missing'} ({meaning}; want 2)"


# --------------------------------------------------------------------------- mountinfo


class MountEntry(NamedTuple):
    """One line of ``/proc/self/mountinfo`` (escapes such as ``\\040`` decoded)."""

    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse ``/proc/self/mountinfo``; raises ValueError on a malformed line."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    options=frozenset(fields[5].split(",")),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    super_options=frozenset(fields[sep + 3].split(","))
                    if len(fields) > sep + 3
                    else frozenset(),
                )
            )
        except (ValueError, IndexError) as e:
            raise ValueError(f"mountinfo line {lineno} malformed: {line!r}") from e
    return entries


_CONTAINER_FILE = re.compile(r"(?:^|/)containers/[0-9a-f]{64}/(hosts|hostname|resolv\.conf)$")
_VOLUME_DATA = re.compile(r"(?:^|/)volumes/([^/]+)/_data$")
_DOCKER_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
_INIT_DIRS = ("/sbin", "/usr/sbin", "/bin", "/usr/bin")
_SHM = "/dev/shm"  # noqa: S108 -- a mount point to classify, not a temp file


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def classify_mount(  # noqa: C901, PLR0912 (a table of mount kinds)
    m: MountEntry,
    *,
    workspace: str | None,
    scratch: Sequence[str],
    workspace_volume: str | None = None,
    secrets: str | None = None,
) -> tuple[str | None, str]:
    """Name the Docker-made kind of mount ``m`` is, or ``(None, why)`` if it is not one.

    Docker makes, for a hardened container: the overlay root; proc at /proc (plus its
    read-only re-binds and masks below /proc); read-only sysfs at /sys and read-only
    cgroup mounts under /sys/fs/cgroup (cgroup v1 puts a tmpfs at /sys/fs/cgroup);
    tmpfs at /dev, devpts, mqueue and the ``shm`` tmpfs; read-only tmpfs or /dev/null
    masks under /proc and /sys; its own /etc/hosts, /etc/hostname and /etc/resolv.conf
    files from ``containers/<id>/``; the read-only init binary (``--init``); tmpfs at
    the scratch dirs; and the workspace, a volume under the engine's ``volumes/<name>/
    _data`` (or a tmpfs volume). Anything else is a host path or an unexpected mount --
    but for one: ``secrets``, the cell's secrets directory, a host tmpfs bound read-only.
    """
    mp, fs = m.mount_point, m.fstype
    if mp == "/":
        if fs in ("overlay", "fuse.fuse-overlayfs"):
            return "root", ""
        return None, f"root filesystem is {fs}, not the engine's overlay"
    if fs == "proc":
        if _under(mp, "/proc"):
            return "proc", ""
        return None, "a proc filesystem outside /proc (host /proc?)"
    if fs == "sysfs":
        if not _under(mp, "/sys"):
            return None, "a sysfs outside /sys"
        if not m.read_only:
            return None, "sysfs mounted read-write"
        return "sysfs", ""
    if fs in ("cgroup", "cgroup2"):
        if not _under(mp, "/sys/fs/cgroup"):
            return None, "a cgroup filesystem outside /sys/fs/cgroup"
        if not m.read_only:
            return None, "cgroup filesystem mounted read-write"
        return "cgroup", ""
    if fs == "devpts":
        if _under(mp, "/dev/pts") or mp == "/dev/console":
            return "devpts", ""
        return None, "a devpts outside /dev/pts"
    if fs == "mqueue":
        if mp == "/dev/mqueue":
            return "mqueue", ""
        return None, "an mqueue outside /dev/mqueue"
    if fs == "tmpfs":
        if secrets is not None and mp == secrets.rstrip("/"):
            if m.read_only:
                return "secrets", ""
            return None, "the secrets directory is mounted read-write"
        if mp == "/dev" and m.root == "/" and m.source == "tmpfs":
            return "dev", ""
        if mp == _SHM:
            if m.root == "/" and m.source == "shm":
                return "shm", ""
            return None, f"{_SHM} is not Docker's shm tmpfs (source {m.source!r})"
        if mp == "/sys/fs/cgroup" and m.root == "/":
            return "cgroup", ""
        if _under(mp, "/proc") or _under(mp, "/sys"):
            if m.root == "/null" or (m.root == "/" and m.read_only):
                return "mask", ""
            return None, "a writable tmpfs below /proc or /sys"
        if m.root == "/" and m.source == "tmpfs":
            if mp in {s.rstrip("/") for s in scratch}:
                return "scratch", ""
            if workspace is not None and mp == workspace.rstrip("/"):
                return "workspace", ""
        return None, "a tmpfs that is not a configured scratch dir (host tmpfs bind?)"
    # Remaining: files and directories of some disk filesystem -- only Docker's own.
    if mp in _DOCKER_FILES:
        found = _CONTAINER_FILE.search(m.root)
        if found and found.group(1) == mp.rsplit("/", 1)[1]:
            return "docker-file", ""
        return None, f"{mp} is not the engine's own file (source {m.root!r})"
    parent, _, base = mp.rpartition("/")
    if base == "docker-init" and parent in _INIT_DIRS:
        if m.read_only:
            return "init", ""
        return None, "docker-init mounted read-write"
    if workspace is not None and mp == workspace.rstrip("/"):
        found = _VOLUME_DATA.search(m.root)
        if not found:
            return None, f"workspace is a host path ({m.root!r}), not an engine volume"
        if workspace_volume is not None and found.group(1) != workspace_volume:
            return None, f"workspace is volume {found.group(1)!r}, not {workspace_volume!r}"
        return "workspace", ""
    return None, f"{fs} mount of {m.root!r} (host path?)"


def check_mounts(
    entries: Iterable[MountEntry],
    *,
    workspace: str | None,
    scratch: Sequence[str],
    workspace_volume: str | None = None,
    secrets: str | None = None,
) -> tuple[bool, str]:
    """Every mount must be one Docker makes for a hardened container; see classify_mount."""
    kinds: dict[str, int] = {}
    bad = []
    total = 0
    for m in entries:
        total += 1
        kind, why = classify_mount(
            m,
            workspace=workspace,
            scratch=scratch,
            workspace_volume=workspace_volume,
            secrets=secrets,
        )
        if kind is None:
            bad.append(f"{m.mount_point}: {why}")
        else:
            kinds[kind] = kinds.get(kind, 0) + 1
    if total == 0:
        return False, "no mounts listed (mountinfo empty?)"
    if bad:
        return False, "unexpected mounts: " + "; ".join(bad)
    summary = ", ".join(f"{k}x{n}" if n > 1 else k for k, n in sorted(kinds.items()))
    return True, f"{total} mounts, all Docker-made ({summary})"


# --------------------------------------------------------------------------- DNS


def build_dns_query(name: str, qid: int, qtype: int = 1) -> bytes:
    """A standard recursive query for ``name`` (type A by default), as UDP payload."""
    if not 0 <= qid <= 0xFFFF:
        raise ValueError(f"query id out of range: {qid}")
    labels = name.rstrip(".").split(".")
    qname = b""
    for label in labels:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        qname += bytes([len(raw)]) + raw
    qname += b"\x00"
    if len(qname) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    return header + qname + struct.pack(">HH", qtype, 1)


def parse_dns_response(data: bytes, qid: int) -> int | None:
    """The RCODE if ``data`` is a DNS response to query ``qid``, else None."""
    if len(data) < 12:
        return None
    rid, flags = struct.unpack(">HH", data[:4])
    if rid != qid or not flags & 0x8000:  # QR bit: a response
        return None
    return int(flags & 0x000F)


# --------------------------------------------------------------------------- IPv6 parsers

_RTF_REJECT = 0x0200


def _hex_to_ipv6(raw: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))


def ipv6_global_addresses(if_inet6: str) -> list[str]:
    """Global-scope addresses on non-loopback interfaces, from ``/proc/net/if_inet6``."""
    found = []
    for line in if_inet6.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        addr, _ifindex, plen, scope, _flags, ifname = fields[:6]
        if ifname != "lo" and int(scope, 16) == 0:
            found.append(f"{_hex_to_ipv6(addr)}/{int(plen, 16)} on {ifname}")
    return found


def ipv6_default_routes(ipv6_route: str) -> list[str]:
    """Usable IPv6 default routes, from ``/proc/net/ipv6_route`` (lo/reject skipped)."""
    found = []
    for line in ipv6_route.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, dest_len, nexthop, flags, ifname = (
            fields[0], fields[1], fields[4], fields[8], fields[9],
        )  # fmt: skip
        if int(dest, 16) != 0 or int(dest_len, 16) != 0:
            continue
        if ifname == "lo" or int(flags, 16) & _RTF_REJECT:
            continue
        found.append(f"default via {_hex_to_ipv6(nexthop)} dev {ifname}")
    return found


# --------------------------------------------------------------------------- plumbing


class CheckTimeout(Exception):
    """A check overran its time budget."""


def _on_alarm(signum: int, frame: object) -> None:
    raise CheckTimeout("check overran its time budget")


def _disarm() -> None:
    """Cancel the check's timer, so cleanup (killing what a check started) runs whole."""
    signal.setitimer(signal.ITIMER_REAL, 0)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _errname(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def _oserror_name(e: OSError) -> str:
    return _errname(e.errno) if e.errno is not None else type(e).__name__


def _count(outcomes: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return ", ".join(f"{k}x{n}" for k, n in sorted(counts.items()))


_LIBC: Any = None


def _ctypes() -> Any:
    """ctypes, imported late: a Python built without it fails only the checks that
    need it, not the whole battery."""
    import ctypes

    return ctypes


def _get_errno() -> int:
    return int(_ctypes().get_errno())


def _libc() -> Any:
    """The C library with the prototypes the syscall probes need (lazily, once)."""
    global _LIBC
    if _LIBC is None:
        ctypes = _ctypes()
        libc = ctypes.CDLL(None, use_errno=True)
        c_int, c_long, c_ulong, c_char_p, c_void_p = (
            ctypes.c_int, ctypes.c_long, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_void_p,
        )  # fmt: skip
        libc.mount.argtypes = [c_char_p, c_char_p, c_char_p, c_ulong, c_void_p]
        libc.mount.restype = c_int
        libc.umount2.argtypes = [c_char_p, c_int]
        libc.umount2.restype = c_int
        libc.unshare.argtypes = [c_int]
        libc.unshare.restype = c_int
        libc.setns.argtypes = [c_int, c_int]
        libc.setns.restype = c_int
        libc.ptrace.argtypes = [c_long, c_long, c_void_p, c_void_p]
        libc.ptrace.restype = c_long
        libc.prctl.argtypes = [c_int, c_ulong, c_ulong, c_ulong, c_ulong]
        libc.prctl.restype = c_int
        libc.syscall.restype = c_long
        _LIBC = libc
    return _LIBC


def _in_child(probe: Callable[[], int]) -> int:
    """Run ``probe`` in a forked child, so a syscall that wrongly succeeds changes only
    the child. Returns the child's exit code: the probe's result (0 = the syscall
    succeeded, else its errno), 254 if the probe raised, or -signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 254
        try:
            code = probe()
        finally:
            os._exit(code & 0xFF)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _errno_of(rc: int) -> int:
    return 0 if rc >= 0 else _get_errno()


def _describe_child(code: int) -> str:
    if code == 0:
        return "SUCCEEDED"
    if code == 254:
        return "probe crashed"
    if code < 0:
        return f"killed by signal {-code}"
    return _errname(code)


def _process_groups() -> dict[int, int]:
    """pid -> process group id for every process we can see."""
    groups = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = _read(f"/proc/{name}/stat")
        except OSError:
            continue
        # Fields after the parenthesised comm: state ppid pgrp ...
        rest = raw[raw.rfind(")") + 2 :].split()
        if len(rest) >= 3:
            groups[int(name)] = int(rest[2])
    return groups


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _reap_all() -> None:
    """Reap every child (we are a subreaper, so orphaned grandchildren are ours too)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _scratch_dir(cfg: Mapping[str, Any]) -> str:
    for d in [*(cfg.get("scratch") or []), cfg.get("workspace")]:
        if d and os.path.isdir(d) and os.access(d, os.W_OK):
            return str(d)
    return "/tmp"  # noqa: S108 -- last resort; the probes using it must fail anyway


# --------------------------------------------------------------------------- A1


def check_a1(cfg: Mapping[str, Any]) -> list[Result]:
    status = parse_status(_read("/proc/self/status"))
    return [
        ("A1.capabilities", *check_capabilities(status)),
        ("A1.no-new-privs", *check_no_new_privs(status)),
        ("A1.seccomp", *check_seccomp(status)),
    ]


# --------------------------------------------------------------------------- A2

_ROOT_DIRS = (
    "/", "/etc", "/usr", "/usr/bin", "/usr/local", "/usr/local/bin", "/usr/lib", "/var",
    "/var/tmp", "/var/lib",  # noqa: S108 -- probed to be NOT writable "/var/log", "/home", "/root", "/opt", "/srv", "/mnt", "/bin",
    "/sbin", "/lib",
)  # fmt: skip
_ROOT_FILES = ("/etc/passwd", "/etc/shadow", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
_PROC_FILES = (
    "/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
    "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward", "/proc/sysrq-trigger",
    "/proc/sys/fs/binfmt_misc/register",
)  # fmt: skip
_SYS_FILES = (
    "/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/profiling", "/sys/kernel/kexec_crash_size", "/sys/class/net/lo/mtu",
    "/sys/power/state", "/sys/module/kernel/parameters/panic",
)  # fmt: skip
_CGROUP_FILES = (
    "cgroup.procs", "tasks", "notify_on_release", "pids.max", "memory.max",
    "memory.limit_in_bytes", "cgroup.subtree_control", "release_agent",
)  # fmt: skip


def _probe_create(directory: str) -> str:
    """Try to create a file in ``directory``; 'writable' if that worked (then undone)."""
    path = os.path.join(directory, f".agentcell-battery-{os.getpid()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return "writable"  # someone (us, earlier) could create it: not read-only
    except OSError as e:
        return "absent" if e.errno in (errno.ENOENT, errno.ENOTDIR) else _oserror_name(e)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return "writable"


def _probe_open_write(path: str) -> str:
    """Open an existing file for writing, without truncating or writing a byte.

    The open is where read-only mounts (EROFS) and permissions (EACCES) are enforced,
    so it is a harmless stand-in for a write to kernel tunables such as core_pattern."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        return "absent" if e.errno in (errno.ENOENT, errno.ENOTDIR) else _oserror_name(e)
    os.close(fd)
    return "writable"


def _probe_mkdir(directory: str) -> str:
    path = os.path.join(directory, f"agentcell-battery-{os.getpid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return "writable"
    except OSError as e:
        return "absent" if e.errno in (errno.ENOENT, errno.ENOTDIR) else _oserror_name(e)
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return "writable"


def _summarise_probes(probes: Mapping[str, str], what: str) -> tuple[bool, str]:
    tried = {p: o for p, o in probes.items() if o != "absent"}
    if not tried:
        return False, f"none of the {what} probe paths exist; nothing was tested"
    writable = sorted(p for p, o in tried.items() if o == "writable")
    if writable:
        return False, "writable: " + ", ".join(writable)
    return True, f"{len(tried)} {what} paths refused writes ({_count(tried.values())})"


def _allowed_write_tops(cfg: Mapping[str, Any]) -> list[str]:
    tops = [str(s) for s in cfg.get("scratch") or []]
    if cfg.get("workspace"):
        tops.append(str(cfg["workspace"]))
    return tops


def _mounts() -> list[MountEntry]:
    return parse_mountinfo(_read("/proc/self/mountinfo"))


def check_a2_root(cfg: Mapping[str, Any]) -> list[Result]:
    allowed = _allowed_write_tops(cfg)
    probes: dict[str, str] = {}
    for d in _ROOT_DIRS:
        if not any(_under(d, a) for a in allowed):
            probes[d] = _probe_create(d)
    for f in _ROOT_FILES:
        probes[f] = _probe_open_write(f)
    ok, detail = _summarise_probes(probes, "root filesystem")
    roots = [m for m in _mounts() if m.mount_point == "/"]
    if not roots or not roots[-1].read_only:
        ok, detail = False, "root filesystem is mounted read-write; " + detail
    else:
        detail = "root filesystem mounted ro; " + detail
    return [("A2.root-fs", ok, detail)]


def check_a2_proc(cfg: Mapping[str, Any]) -> list[Result]:
    probes = {p: _probe_open_write(p) for p in _PROC_FILES}
    return [("A2.proc-sys", *_summarise_probes(probes, "/proc/sys"))]


def check_a2_sys(cfg: Mapping[str, Any]) -> list[Result]:
    probes = {p: _probe_open_write(p) for p in _SYS_FILES}
    for m in _mounts():
        if m.fstype in ("cgroup", "cgroup2"):
            probes[m.mount_point + "/ (mkdir)"] = _probe_mkdir(m.mount_point)
            for name in _CGROUP_FILES:
                probes[os.path.join(m.mount_point, name)] = _probe_open_write(
                    os.path.join(m.mount_point, name)
                )
    return [("A2.sysfs", *_summarise_probes(probes, "/sys and cgroup"))]


def _write_read_back(directory: str) -> str | None:
    """Create, write, fsync, read back and remove a file; None if all of it worked."""
    path = os.path.join(directory, f".agentcell-battery-rw-{os.getpid()}")
    payload = b"agentcell battery positive control\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
            back = os.read(fd, len(payload) + 1)
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as e:
        return f"{directory}: {e.strerror or e}"
    if back != payload:
        return f"{directory}: read back different bytes"
    return None


def check_a2_positive(cfg: Mapping[str, Any]) -> list[Result]:
    results: list[Result] = []
    workspace = cfg.get("workspace")
    if not workspace:
        results.append(("A2.workspace-writable", True, "no workspace configured"))
    else:
        problem = _write_read_back(str(workspace))
        results.append(
            ("A2.workspace-writable", True, f"{workspace} is writable")
            if problem is None
            else ("A2.workspace-writable", False, f"the agent could not work: {problem}")
        )
    scratch = [str(s) for s in cfg.get("scratch") or []]
    problems = [p for p in (_write_read_back(s) for s in scratch) if p]
    if not scratch:
        results.append(("A2.scratch-writable", False, "no scratch dirs configured"))
    elif problems:
        results.append(
            ("A2.scratch-writable", False, "the agent could not work: " + "; ".join(problems))
        )
    else:
        results.append(("A2.scratch-writable", True, "writable: " + ", ".join(scratch)))
    return results


# --------------------------------------------------------------------------- A3

_BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
_MAX_PRIVILEGED_RUNS = 16


def check_a3_ids(cfg: Mapping[str, Any]) -> list[Result]:
    ruid, euid, suid = os.getresuid()
    rgid, egid, sgid = os.getresgid()
    groups = os.getgroups()
    detail = f"uid {ruid}/{euid}/{suid} gid {rgid}/{egid}/{sgid} groups {groups}"
    bad = []
    if 0 in (ruid, euid, suid):
        bad.append("runs as root")
    if 0 in (rgid, egid, sgid):
        bad.append("primary group is root")
    if 0 in groups:
        bad.append("root is a supplementary group")
    if bad:
        return [("A3.non-root", False, ", ".join(bad) + f" ({detail})")]
    return [("A3.non-root", True, detail)]


def _privileged_binaries() -> list[tuple[str, str]]:
    """Setuid/setgid/file-capability binaries under the usual bin dirs, deduplicated."""
    seen: set[tuple[int, int]] = set()
    found = []
    for d in _BIN_DIRS:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat()  # follows symlinks: what exec would run
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            kinds = []
            if st.st_mode & stat.S_ISUID:
                kinds.append(f"setuid {st.st_uid}")
            if st.st_mode & stat.S_ISGID:
                kinds.append(f"setgid {st.st_gid}")
            with contextlib.suppress(OSError):
                if os.getxattr(entry.path, "security.capability"):
                    kinds.append("file caps")
            if kinds:
                seen.add((st.st_dev, st.st_ino))
                found.append((entry.path, "+".join(kinds)))
    return found


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full, so a child writing to it blocks at once."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    chunk = b"\0" * 65536
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, chunk)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(w, b"\0")
    os.set_blocking(w, True)
    return r, w


def _run_privileged(path: str) -> dict[str, str]:
    """Exec ``path --help`` and read the credentials the kernel gave it.

    Popen returns only once the child has exec'd, and exec is where a setuid bit takes
    effect, so /proc/<pid>/status then shows whether it did. The child's stdout and
    stderr are full pipes and its stdin is /dev/null, so it can do nothing but block;
    it is killed right after."""
    r, w = _full_pipe()
    proc = None
    try:
        proc = subprocess.Popen(
            [path, "--help"],
            stdin=subprocess.DEVNULL,
            stdout=w,
            stderr=w,
            start_new_session=True,
            close_fds=True,
        )
        return parse_status(_read(f"/proc/{proc.pid}/status"))
    finally:
        _disarm()
        if proc is not None:
            _kill_group(proc.pid)
            proc.wait()
        os.close(w)
        os.close(r)


def check_a3_setuid(cfg: Mapping[str, Any]) -> list[Result]:
    binaries = _privileged_binaries()
    if not binaries:
        return [("A3.setuid", True, "no setuid, setgid or file-capability binaries present")]
    ruid, rgid = os.getuid(), os.getgid()
    escalated, ran, not_runnable = [], [], []
    for path, kind in binaries[:_MAX_PRIVILEGED_RUNS]:
        try:
            status = _run_privileged(path)
        except PermissionError:
            not_runnable.append(path)
            continue
        uids = status.get("Uid", "").split()
        gids = status.get("Gid", "").split()
        if len(uids) < 2 or len(gids) < 2:
            escalated.append(f"{path}: credentials unreadable")
            continue
        euid, egid = int(uids[1]), int(gids[1])
        cap_eff = int(status.get("CapEff", "0"), 16)
        if euid == 0 or euid != ruid or egid != rgid or cap_eff:
            escalated.append(f"{path} ({kind}) ran with euid {euid} egid {egid} CapEff {cap_eff:x}")
        else:
            ran.append(os.path.basename(path))
    if escalated:
        return [("A3.setuid", False, "privileges raised: " + "; ".join(escalated))]
    detail = (
        f"{len(binaries)} privileged binaries present; ran {len(ran)} "
        f"({', '.join(ran)}): euid stayed {ruid}, egid {rgid}, no capabilities"
    )
    if not_runnable:
        detail += f"; {len(not_runnable)} not executable by us"
    if len(binaries) > _MAX_PRIVILEGED_RUNS:
        detail += f"; {len(binaries) - _MAX_PRIVILEGED_RUNS} not run (limit)"
    return [("A3.setuid", bool(ran) or bool(not_runnable), detail)]


# --------------------------------------------------------------------------- A4

_BOMB = r"""
import os, signal, sys
cap = int(sys.argv[1])
made, code, err = 0, 0, "-"
while made < cap:
    try:
        pid = os.fork()
    except OSError as e:
        code, err = e.errno or 0, (e.strerror or "?").replace(" ", "+")
        break
    if pid == 0:
        while True:
            signal.pause()
    made += 1
sys.stdout.write("%d %d %s\n" % (made, code, err))
sys.stdout.flush()
while True:
    signal.pause()
"""

_HOG = r"""
import sys
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
except OSError:
    pass
cap, step, total, held = int(sys.argv[1]), 8 << 20, 0, []
while total < cap:
    held.append(b"\x01" * step)  # bytes repetition memsets: every page is touched
    total += step
    sys.stdout.write("%d\n" % total)
    sys.stdout.flush()
sys.stdout.write("survived\n")
sys.stdout.flush()
"""

_PR_SET_CHILD_SUBREAPER = 36
_MAX_BOMB = 4096  # beyond this a fork bomb is itself a hazard to the host


def _mib(raw: str | None) -> str:
    if raw is None:
        return "unreadable"
    return f"{int(raw) >> 20} MiB" if raw.isdigit() else raw


def _become_subreaper() -> bool:
    """Adopt orphaned descendants, so the fork bomb's children are reaped by us even
    if the cell's PID 1 does not reap (no --init)."""
    try:
        return int(_libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except Exception:
        return False


def _read_line(fd: int, deadline: float) -> str | None:
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
    return buf.split(b"\n", 1)[0].decode("ascii", "replace")


def _cgroup_value(*candidates: str) -> str | None:
    for path in candidates:
        with contextlib.suppress(OSError):
            return _read(path).strip()
    return None


def check_a4_pids(cfg: Mapping[str, Any]) -> list[Result]:
    limit = int(cfg["pids_limit"])
    if not 0 < limit <= _MAX_BOMB:
        return [("A4.pids-limit", False, f"pids limit {limit} not testable (want 1..{_MAX_BOMB})")]
    cap = limit + 1  # one more than the limit allows proves it is not enforced
    subreaper = _become_subreaper()
    pids_max = _cgroup_value("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _BOMB, str(cap)],
        stdin=subprocess.DEVNULL,
        stdout=w,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(w)
    in_group = 0
    try:
        line = _read_line(r, time.monotonic() + 10)
        in_group = sum(1 for g in _process_groups().values() if g == proc.pid)
    finally:
        _disarm()
        _kill_group(proc.pid)
        proc.wait()
        if subreaper:
            _reap_all()
        os.close(r)
    leftover = sum(1 for g in _process_groups().values() if g == proc.pid)
    where = f"pids.max {pids_max}" if pids_max else "pids.max unreadable"
    if leftover:
        return [("A4.pids-limit", False, f"{leftover} bomb processes survived the kill")]
    if line is None:
        return [("A4.pids-limit", False, f"fork bomb reported nothing within 10 s ({where})")]
    made_s, code_s, err = [*line.split(), "", "", ""][:3]
    made, code = int(made_s), int(code_s)
    detail = (
        f"fork bomb created {made} processes ({in_group} in its group incl. leader), "
        f"limit {limit}, {where}"
    )
    if made > limit or code == 0:
        return [("A4.pids-limit", False, detail + "; fork never failed: limit not enforced")]
    if code != errno.EAGAIN:
        return [
            ("A4.pids-limit", False, detail + f"; fork failed with {_errname(code)}, not EAGAIN")
        ]
    why = err.replace("+", " ")
    return [("A4.pids-limit", True, detail + f"; then fork failed with EAGAIN ({why}); all killed")]


def check_a4_memory(cfg: Mapping[str, Any]) -> list[Result]:
    limit = int(cfg["memory_bytes"])
    if limit <= 0:
        return [("A4.memory-limit", False, f"memory limit {limit} not testable")]
    cap = limit + max(limit // 2, 64 << 20)
    mem_max = _cgroup_value(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOG, str(cap)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        _disarm()
        _kill_group(proc.pid)
        proc.communicate()
        return [("A4.memory-limit", False, "memory hog neither finished nor died within 15 s")]
    finally:
        _disarm()
        _kill_group(proc.pid)
    lines = out.decode("ascii", "replace").split()
    reached = int(lines[-2] if lines and lines[-1] == "survived" else (lines or ["0"])[-1])
    mib = 1 << 20
    detail = (
        f"hog touched {reached // mib} MiB (aim {cap // mib} MiB, limit {limit // mib} MiB, "
        f"cgroup limit {_mib(mem_max)})"
    )
    pid1 = os.path.exists("/proc/1")
    if proc.returncode == -signal.SIGKILL:
        if not pid1:
            return [("A4.memory-limit", False, detail + "; killed, but so was PID 1")]
        return [("A4.memory-limit", True, detail + "; then SIGKILLed (OOM); PID 1 alive")]
    return [
        ("A4.memory-limit", False, detail + f"; not OOM-killed (exit status {proc.returncode})")
    ]


# --------------------------------------------------------------------------- A5

_RUNTIME_SOCKETS = frozenset(
    {
        "docker.sock", "containerd.sock", "containerd.sock.ttrpc", "dockershim.sock",
        "cri-dockerd.sock", "podman.sock", "crio.sock", "buildkitd.sock",
    }
)  # fmt: skip
_WELL_KNOWN_SOCKETS = (
    "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock", "/run/podman/podman.sock",
    "/var/run/crio/crio.sock", "/run/buildkit/buildkitd.sock", "/var/run/docker",
    "/run/docker", "/run/containerd", "/var/lib/docker", "/var/lib/containerd",
)  # fmt: skip


def check_a5_socket(cfg: Mapping[str, Any], budget: float = 12.0) -> list[Result]:
    deadline = time.monotonic() + budget
    uid = os.getuid()
    well_known = [*_WELL_KNOWN_SOCKETS, f"/run/user/{uid}/docker.sock"]
    found = [p for p in well_known if os.path.lexists(p)]
    local_tops = _allowed_write_tops(cfg)
    sockets_local: list[str] = []
    scanned = unreadable = 0
    stack = ["/"]
    truncated = False
    while stack:
        if time.monotonic() > deadline:
            truncated = True
            break
        top = stack.pop()
        try:
            it = os.scandir(top)
        except OSError:
            unreadable += 1
            continue
        with it:
            for entry in it:
                scanned += 1
                path = entry.path
                if entry.name in _RUNTIME_SOCKETS:
                    found.append(path)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if path not in ("/proc", "/sys"):
                            stack.append(path)
                        continue
                    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        continue
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if stat.S_ISSOCK(mode):
                    if any(_under(path, t) for t in local_tops):
                        sockets_local.append(path)  # made by the cell's own processes
                    else:
                        found.append(path)
    found = sorted(set(found))
    detail = f"walked {scanned} entries ({unreadable} dirs unreadable)"
    if sockets_local:
        detail += f"; {len(sockets_local)} socket(s) the cell made in its own dirs ignored"
    if found:
        return [("A5.docker-socket", False, "found " + ", ".join(found[:10]) + f"; {detail}")]
    if truncated:
        return [("A5.docker-socket", False, f"walk incomplete after {budget:.0f} s; {detail}")]
    return [("A5.docker-socket", True, f"no engine socket or socket file; {detail}")]


def check_a5_mounts(cfg: Mapping[str, Any]) -> list[Result]:
    ok, detail = check_mounts(
        _mounts(),
        workspace=cfg.get("workspace"),
        scratch=[str(s) for s in cfg.get("scratch") or []],
        workspace_volume=cfg.get("workspace_volume"),
        secrets=cfg.get("secrets"),
    )
    return [("A5.mounts", ok, detail)]


_MS_BIND = 0x1000
_MNT_DETACH = 2
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_SIGCHLD = 17
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "ppc64le": 120, "s390x": 120, "riscv64": 220}


def _mount_probe(target: str, source: str, fstype: str | None, flags: int) -> Callable[[], int]:
    def probe() -> int:
        libc = _libc()
        fs = fstype.encode() if fstype else None
        rc = int(libc.mount(source.encode(), target.encode(), fs, flags, None))
        err = _errno_of(rc)
        if rc == 0:
            libc.umount2(target.encode(), _MNT_DETACH)
        return err

    return probe


def check_a5_mount(cfg: Mapping[str, Any]) -> list[Result]:
    base = _scratch_dir(cfg)
    target = os.path.join(base, f".agentcell-battery-mnt-{os.getpid()}")
    made = False
    try:
        os.mkdir(target, 0o700)
        made = True
    except OSError:
        target = "/mnt" if os.path.isdir("/mnt") else base
    try:
        tmpfs = _in_child(_mount_probe(target, "none", "tmpfs", 0))
        bind = _in_child(_mount_probe(target, "/", None, _MS_BIND))
    finally:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(target)
    detail = f"mount tmpfs: {_describe_child(tmpfs)}; bind-mount /: {_describe_child(bind)}"
    return [("A5.mount-syscall", tmpfs > 0 and bind > 0, detail)]


def _unshare_probe(flags: int) -> Callable[[], int]:
    def probe() -> int:
        return _errno_of(int(_libc().unshare(flags)))

    return probe


def _clone_probe(flags: int) -> Callable[[], int]:
    """clone(flags) without a new stack: like fork, the child returns 0 and exits."""

    def probe() -> int:
        nr = _SYS_CLONE.get(platform.machine())
        if nr is None:
            return errno.ENOSYS
        c_long = _ctypes().c_long
        rc = int(_libc().syscall(c_long(nr), c_long(flags | _SIGCHLD), c_long(0),
                                 c_long(0), c_long(0), c_long(0)))  # fmt: skip
        if rc == 0:  # pragma: no cover - the grandchild, in its new namespace
            os._exit(0)
        if rc > 0:
            os.waitpid(rc, 0)
            return 0
        return _get_errno()

    return probe


def check_a5_unshare(cfg: Mapping[str, Any]) -> list[Result]:
    user = _in_child(_unshare_probe(_CLONE_NEWUSER))
    user_clone = _in_child(_clone_probe(_CLONE_NEWUSER))
    mnt = _in_child(_unshare_probe(_CLONE_NEWNS))
    return [
        (
            "A5.unshare-user",
            user > 0 and user_clone > 0,
            f"unshare(CLONE_NEWUSER): {_describe_child(user)}; "
            f"clone(CLONE_NEWUSER): {_describe_child(user_clone)}",
        ),
        ("A5.unshare-mount", mnt > 0, f"unshare(CLONE_NEWNS): {_describe_child(mnt)}"),
    ]


_NAMESPACES = ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup", "time")


def _setns_probe(path: str) -> Callable[[], int]:
    def probe() -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            return e.errno or 254
        return _errno_of(int(_libc().setns(fd, 0)))

    return probe


def check_a5_setns(cfg: Mapping[str, Any]) -> list[Result]:
    outcomes = {}
    for ns in _NAMESPACES:
        path = f"/proc/1/ns/{ns}"
        if os.path.lexists(path):
            outcomes[ns] = _in_child(_setns_probe(path))
    if not outcomes:
        return [("A5.setns", False, "/proc/1/ns is empty; nothing was tested")]
    entered = sorted(ns for ns, code in outcomes.items() if code <= 0)
    detail = ", ".join(f"{ns}: {_describe_child(c)}" for ns, c in outcomes.items())
    if entered:
        return [("A5.setns", False, f"setns into PID 1's {', '.join(entered)}: {detail}")]
    return [("A5.setns", True, f"setns into PID 1's namespaces refused: {detail}")]


def check_a5_mknod(cfg: Mapping[str, Any]) -> list[Result]:
    path = os.path.join(_scratch_dir(cfg), f".agentcell-battery-null-{os.getpid()}")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError as e:
        return [("A5.mknod", True, f"mknod of char device 1:3 refused ({_oserror_name(e)})")]
    with contextlib.suppress(OSError):
        os.unlink(path)
    return [("A5.mknod", False, f"mknod of char device 1:3 SUCCEEDED in {path}")]


def check_a5_raw(cfg: Mapping[str, Any]) -> list[Result]:
    attempts = {
        "AF_INET/SOCK_RAW/ICMP": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "AF_INET6/SOCK_RAW/ICMPV6": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
        "AF_PACKET/SOCK_RAW": (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)),
    }
    outcomes = {}
    for name, (fam, kind, proto) in attempts.items():
        try:
            s = socket.socket(fam, kind, proto)
        except OSError as e:
            outcomes[name] = _oserror_name(e)
        else:
            s.close()  # created, never used
            outcomes[name] = "SUCCEEDED"
    detail = ", ".join(f"{k}: {v}" for k, v in outcomes.items())
    return [("A5.raw-socket", "SUCCEEDED" not in outcomes.values(), detail)]


_PTRACE_ATTACH, _PTRACE_DETACH, _PTRACE_SEIZE = 16, 17, 0x4206
_WALL = 0x40000000


def _ptrace_probe(pid: int) -> Callable[[], int]:
    """PTRACE_SEIZE first: the same permission check as PTRACE_ATTACH, but it does not
    stop the target, so a success leaves a live cell's init undisturbed (the tracer's
    exit detaches it). Only if SEIZE is refused is PTRACE_ATTACH tried too."""

    def probe() -> int:
        libc = _libc()
        if int(libc.ptrace(_PTRACE_SEIZE, pid, None, None)) == 0:
            return 0
        seize_err = _get_errno()
        if int(libc.ptrace(_PTRACE_ATTACH, pid, None, None)) == 0:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, _WALL)
            libc.ptrace(_PTRACE_DETACH, pid, None, None)
            return 0
        return seize_err

    return probe


def check_a5_ptrace(cfg: Mapping[str, Any]) -> list[Result]:
    target = 1
    try:
        status = parse_status(_read(f"/proc/{target}/status"))
    except OSError:
        status = {}
    uid = (status.get("Uid", "").split() or ["?"])[0]
    who = f"PID 1 ({status.get('Name', '?')}, uid {uid})"
    code = _in_child(_ptrace_probe(target))
    if code == 0:
        return [("A5.ptrace", False, f"ptrace of {who} SUCCEEDED (PTRACE_SEIZE)")]
    return [("A5.ptrace", code > 0, f"ptrace of {who}: {_describe_child(code)}")]


# --------------------------------------------------------------------------- A6


def _tcp_probe(ip: str, port: int, timeout: float) -> str:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
    except OSError as e:
        return "unreachable" if e.errno == errno.EAFNOSUPPORT else _oserror_name(e)
    try:
        s.settimeout(timeout)
        s.connect((ip, port))
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return "unreachable"
        if isinstance(e, socket.timeout):
            return "timeout"
        return _oserror_name(e)
    finally:
        s.close()
    return "CONNECTED"


def _udp_probes(
    targets: Sequence[tuple[str, int, bytes]], timeout: float
) -> dict[tuple[str, int], list[tuple[str, bytes] | str]]:
    """Send each payload from its own socket; collect what comes back -- ``(sender,
    data)`` -- or the error (a str) until ``timeout``. The sockets stay unconnected: a
    host answering from another of its addresses (a wildcard-bound server replies from
    the address facing the cell) still counts."""
    got: dict[tuple[str, int], list[tuple[str, bytes] | str]] = {}
    socks: dict[socket.socket, tuple[str, int]] = {}
    try:
        for ip, port, payload in targets:
            got[(ip, port)] = []
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
            except OSError as e:
                got[(ip, port)].append(_oserror_name(e))
                continue
            socks[s] = (ip, port)
            try:
                s.setblocking(False)
                s.sendto(payload, (ip, port))
            except OSError as e:
                got[(ip, port)].append(_oserror_name(e))
        deadline = time.monotonic() + timeout
        while socks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(socks), [], [], left)
            for s in ready:
                try:
                    data, sender = s.recvfrom(4096)
                    got[socks[s]].append((str(sender[0]), data))
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    got[socks[s]].append(_oserror_name(e))
                    s.close()
                    del socks[s]
    finally:
        for s in socks:
            s.close()
    return got


def _loopback_nameservers() -> list[str]:
    """Nameservers in /etc/resolv.conf on loopback: the engine's embedded resolver
    (127.0.0.11) lives in the cell's own network namespace and forwards to the host's
    upstream servers, so it is a way out unless the cell's firewall stops it."""
    try:
        text = _read("/etc/resolv.conf")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split()
        if (
            len(fields) >= 2
            and fields[0] == "nameserver"
            and (fields[1].startswith("127.") or fields[1] == "::1")
        ):
            found.append(fields[1])
    return found


def _network_probes(cfg: Mapping[str, Any]) -> dict[str, Any]:
    timeout = float(cfg.get("timeout", 1.0))
    tcp = [(str(ip), int(port)) for ip, port in cfg.get("tcp_targets") or []]
    udp = [(str(ip), int(port)) for ip, port in cfg.get("udp_targets") or []]
    dns_strict = [str(ip) for ip in cfg.get("dns_targets") or []]
    dns_embedded = _loopback_nameservers() if cfg.get("resolv_conf_dns", True) else []

    tcp_out: dict[tuple[str, int], str] = {}
    dns_queries: list[tuple[str, int, bytes]] = []
    dns_meta: dict[tuple[str, int], tuple[int, bool]] = {}
    for ip in dict.fromkeys(dns_strict + dns_embedded):
        qid = int.from_bytes(os.urandom(2), "big")
        name = f"agentcell-battery-{os.urandom(4).hex()}.invalid"
        dns_queries.append((ip, 53, build_dns_query(name, qid)))
        dns_meta[(ip, 53)] = (qid, ip not in dns_strict)

    results: dict[str, Any] = {}

    def run_tcp(ip: str, port: int) -> None:
        tcp_out[(ip, port)] = _tcp_probe(ip, port, timeout)

    def run_udp() -> None:
        payload = b"agentcell battery udp probe\n"
        results["udp"] = _udp_probes([(ip, port, payload) for ip, port in udp], timeout)

    def run_dns() -> None:
        results["dns"] = _udp_probes(dns_queries, timeout)

    threads = [threading.Thread(target=run_tcp, args=t, daemon=True) for t in dict.fromkeys(tcp)]
    threads += [threading.Thread(target=run_udp, daemon=True)]
    threads += [threading.Thread(target=run_dns, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + 3
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    results["tcp"] = {t: tcp_out.get(t, "no result (probe hung)") for t in dict.fromkeys(tcp)}
    results["dns_meta"] = dns_meta
    return results


def _tcp_result(check_id: str, outcomes: Mapping[tuple[str, int], str], what: str) -> Result:
    if not outcomes:
        return check_id, True, f"no {what} targets given"
    through = [f"{ip}:{port}" for (ip, port), o in outcomes.items() if o == "CONNECTED"]
    odd = [f"{ip}:{port} {o}" for (ip, port), o in outcomes.items()
           if o not in ("CONNECTED", "refused", "timeout", "unreachable")]  # fmt: skip
    summary = f"{len(outcomes)} {what} targets: {_count(outcomes.values())}"
    if through:
        return check_id, False, "connected to " + ", ".join(through) + f"; {summary}"
    if odd:
        return check_id, False, "could not classify " + ", ".join(odd) + f"; {summary}"
    return check_id, True, f"blocked; {summary}"


def check_a6(cfg: Mapping[str, Any]) -> list[Result]:
    probes = _network_probes(cfg)
    tcp: dict[tuple[str, int], str] = probes["tcp"]
    v4 = {t: o for t, o in tcp.items() if ":" not in t[0]}
    v6 = {t: o for t, o in tcp.items() if ":" in t[0]}
    out = [_tcp_result("A6.tcp-ipv4", v4, "IPv4"), _tcp_result("A6.tcp-ipv6", v6, "IPv6")]

    udp: dict[tuple[str, int], list[tuple[str, bytes] | str]] = probes.get("udp", {})
    replied = []
    for (ip, port), got in udp.items():
        senders = sorted({g[0] for g in got if isinstance(g, tuple)})
        if senders:
            replied.append(f"{ip}:{port} (reply from {', '.join(senders)})")
    if "udp" not in probes:
        out.append(("A6.udp", False, "UDP probe hung"))
    elif replied:
        out.append(("A6.udp", False, "replies came back: " + "; ".join(replied)))
    else:
        errs = [g for got in udp.values() for g in got if isinstance(g, str)]
        note = f" (local errors: {_count(errs)})" if errs else ""
        out.append(
            ("A6.udp", True, f"{len(udp)} datagrams sent, no reply{note}; host traps decide")
        )

    meta: dict[tuple[str, int], tuple[int, bool]] = probes["dns_meta"]
    dns: dict[tuple[str, int], list[tuple[str, bytes] | str]] = probes.get("dns", {})
    if "dns" not in probes:
        out.append(("A6.dns", False, "DNS probe hung"))
    else:
        answered, refused, silent = [], [], []
        for target, got in dns.items():
            qid, embedded = meta[target]
            replies = [g[1] for g in got if isinstance(g, tuple)]
            if not replies:
                silent.append(target[0])
                continue
            rcodes = [parse_dns_response(g, qid) for g in replies]
            rcode = rcodes[0]
            if rcode is None:
                answered.append(f"{target[0]} (non-DNS reply)")
            elif embedded and rcode not in (0, 3):
                refused.append(f"{target[0]} rcode {rcode}")
            else:
                answered.append(f"{target[0]} rcode {rcode}")
        detail = f"{len(dns)} resolvers queried for a .invalid name"
        if answered:
            out.append(("A6.dns", False, "answered by " + ", ".join(answered) + f"; {detail}"))
        else:
            extra = f"; refused locally: {', '.join(refused)}" if refused else ""
            out.append(("A6.dns", True, f"no answer; {detail}{extra}"))

    try:
        addrs = ipv6_global_addresses(_read("/proc/net/if_inet6"))
    except FileNotFoundError:
        addrs = []
    try:
        routes = ipv6_default_routes(_read("/proc/net/ipv6_route"))
    except FileNotFoundError:
        routes = []
    if addrs or routes:
        out.append(("A6.ipv6-config", False, "; ".join(addrs + routes)))
    else:
        out.append(("A6.ipv6-config", True, "no global IPv6 address, no IPv6 default route"))
    return out


# --------------------------------------------------------------------------- runner

# (ids it reports, function, time budget in seconds), in running order.
_CHECKS: tuple[tuple[tuple[str, ...], Callable[[Mapping[str, Any]], list[Result]], float], ...] = (
    (("A1.capabilities", "A1.no-new-privs", "A1.seccomp"), check_a1, 2),
    (("A2.root-fs",), check_a2_root, 3),
    (("A2.proc-sys",), check_a2_proc, 2),
    (("A2.sysfs",), check_a2_sys, 2),
    (("A2.workspace-writable", "A2.scratch-writable"), check_a2_positive, 3),
    (("A3.non-root",), check_a3_ids, 1),
    (("A3.setuid",), check_a3_setuid, 4),
    (("A4.pids-limit",), check_a4_pids, 12),
    (("A4.memory-limit",), check_a4_memory, 17),
    (("A5.docker-socket",), check_a5_socket, 14),
    (("A5.mounts",), check_a5_mounts, 1),
    (("A5.mount-syscall",), check_a5_mount, 2),
    (("A5.unshare-user", "A5.unshare-mount"), check_a5_unshare, 2),
    (("A5.setns",), check_a5_setns, 2),
    (("A5.mknod",), check_a5_mknod, 1),
    (("A5.raw-socket",), check_a5_raw, 1),
    (("A5.ptrace",), check_a5_ptrace, 2),
    (
        ("A6.tcp-ipv4", "A6.tcp-ipv6", "A6.udp", "A6.dns", "A6.ipv6-config"),
        check_a6,
        8,
    ),
)

CHECK_IDS: tuple[str, ...] = tuple(i for ids, _, _ in _CHECKS for i in ids)

_TOTAL_BUDGET = 27.0  # the whole run stays under 30 s


def _emit(check_id: str, ok: bool, detail: str) -> None:
    line = {"id": check_id, "section": check_id.split(".", 1)[0], "ok": ok, "detail": detail}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def run(cfg: Mapping[str, Any]) -> None:
    """Run every check in order, emitting one line per check id."""
    started = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    for ids, fn, budget in _CHECKS:
        left = _TOTAL_BUDGET - (time.monotonic() - started)
        if left <= 0.5:
            for i in ids:
                _emit(i, False, "not run: the battery's time budget was used up")
            continue
        emitted: set[str] = set()
        try:
            signal.setitimer(signal.ITIMER_REAL, min(budget, left))
            try:
                results = fn(cfg)
            finally:
                _disarm()
            for check_id, ok, detail in results:
                _emit(check_id, ok, detail)
                emitted.add(check_id)
        except Exception as e:
            for i in ids:
                if i not in emitted:
                    _emit(i, False, f"check crashed: {type(e).__name__}: {e}")
                    emitted.add(i)
        for i in ids:
            if i not in emitted:
                _emit(i, False, "check produced no result")


def main(argv: Sequence[str]) -> int:
    try:
        cfg = json.loads(argv[1]) if len(argv) > 1 else {}
        if not isinstance(cfg, dict):
            raise ValueError("config is not a JSON object")
    except ValueError as e:
        for i in CHECK_IDS:
            _emit(i, False, f"bad battery config: {e}")
        return 0
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
