"""Attack battery part A, host half: run the in-cell checks in a live cell, add what only
the host can see.

Owns ``run_battery_a`` (build the in-cell script's config, execute
``agentcell/runtime/incell/battery_a.py`` in the agent container as the agent's user,
parse its one-JSON-object-per-line output), ``HostTraps`` (listeners on every host
address that record whatever a cell manages to send the host) and ``host_addresses``.
The host-side results are ``A6.host-traps`` (nothing reached the traps) and
``A4.cell-survived`` (the fork bomb and memory hog did not take the cell down).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import selectors
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from types import TracebackType
from typing import Any, Final, Protocol

from agentcell.policy import fib_trie_addresses, if_inet6_addresses
from agentcell.runtime.incell.battery_a import CHECK_IDS

__all__ = [
    "CellContainer",
    "CheckResult",
    "HostTraps",
    "host_addresses",
    "run_battery_a",
]

SOURCE: Final[str] = (
    resources.files("agentcell.runtime.incell").joinpath("battery_a.py").read_text("utf-8")
)

HOST_CHECK_IDS: Final = ("A6.host-traps", "A4.cell-survived")

_SENTINEL = b"agentcell-trap-sentinel "
_UDP_REPLY = b"agentcell-trap\n"
_PYTHON_PROBE = "import sys; print(sys.version_info >= (3, 9))"


@dataclass(frozen=True)
class CheckResult:
    """One line of the battery: ``A1.capabilities ok CapEff, ... are all 0``."""

    id: str
    section: str
    ok: bool
    detail: str


class CellContainer(Protocol):
    """What the battery needs of a container (docker's ``Container`` fits)."""

    @property
    def status(self) -> str: ...

    @property
    def attrs(self) -> dict[str, Any]: ...

    def reload(self) -> None: ...

    def exec_run(self, cmd: list[str], *, user: str = ..., demux: bool = ...) -> Any: ...


def _failed(check_id: str, detail: str) -> CheckResult:
    return CheckResult(check_id, check_id.split(".", 1)[0], False, detail)


# --------------------------------------------------------------------------- addresses


def _addresses_from_ip_json(data: Any) -> list[str]:
    """Addresses in ``ip -j addr`` output: every IPv4 one, and IPv6 of global scope."""
    found: list[str] = []
    for iface in data if isinstance(data, list) else []:
        for info in iface.get("addr_info", []) if isinstance(iface, dict) else []:
            family, local = info.get("family"), info.get("local")
            if not isinstance(local, str):
                continue
            if family == "inet" or (family == "inet6" and info.get("scope") == "global"):
                found.append(local)
    return list(dict.fromkeys(found))


def _addresses_from_proc(fib_trie: str, if_inet6: str) -> list[str]:
    """The same from /proc, for hosts without iproute2: LOCAL entries of the IPv4 FIB
    and global-scope rows of /proc/net/if_inet6."""
    found = [*fib_trie_addresses(fib_trie), *if_inet6_addresses(if_inet6, global_scope=True)]
    return [str(a) for a in found]


def host_addresses() -> list[str]:
    """Every address of this host's interfaces: all IPv4 (loopback and the Docker
    bridge gateways included) and every global-scope IPv6 address."""
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, check=True, text=True, timeout=10
        ).stdout
        return _addresses_from_ip_json(json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as f:
            fib = f.read()
    except OSError:
        fib = ""
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            v6 = f.read()
    except OSError:
        v6 = ""
    return _addresses_from_proc(fib, v6)


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _peer_host(addr: Any) -> str:
    """The peer's address, IPv4-mapped IPv6 (from the dual-stack socket) unwrapped."""
    host = str(addr[0])
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            host = str(ip.ipv4_mapped)
    return host


def _peer(addr: Any) -> str:
    host = _peer_host(addr)
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


# --------------------------------------------------------------------------- traps


def _dns_nxdomain(query: bytes) -> bytes | None:
    """An NXDOMAIN answer to ``query`` (question echoed), or None if it is not one."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    i = 12
    while i < len(query) and query[i]:
        if query[i] & 0xC0:
            return None
        i += 1 + query[i]
    end = i + 5
    if end > len(query):
        return None
    flags = 0x8183 | (struct.unpack(">H", query[2:4])[0] & 0x0100)  # QR, RA, NXDOMAIN; RD
    return query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + query[12:end]


def _bind(kind: int, port: int) -> socket.socket:
    """A socket on every address: dual-stack ``::`` when IPv6 works, else ``0.0.0.0``."""
    try:
        s = socket.socket(socket.AF_INET6, kind)
    except OSError:
        return _bind_v4(kind, port)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
    except OSError:
        s.close()
        return _bind_v4(kind, port)
    return s


def _bind_v4(kind: int, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        s.close()
        raise
    return s


class HostTraps:
    """Listeners on every host address (IPv4 ``0.0.0.0`` and IPv6 ``::``, one dual-stack
    socket each) on ephemeral ports -- a TCP listener and a UDP socket -- plus, with
    ``dns=True`` and if the port is free, a UDP socket on port 53. A background thread
    records every connection and datagram with its peer; UDP gets a reply (DNS an
    NXDOMAIN) so the in-cell side can see a round trip too.

    Use as a context manager; ``flush()`` waits until everything already sent to the
    traps has been recorded.
    """

    def __init__(self, *, dns: bool = False) -> None:
        self._want_dns = dns
        self._cond = threading.Condition()
        self._hits: list[str] = []
        self._seen: set[bytes] = set()
        self._socks: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.tcp_port = 0
        self.udp_port = 0
        self.dns_port: int | None = None

    @property
    def hits(self) -> list[str]:
        """Everything that reached a trap so far, e.g. ``tcp 10.9.0.2:41234 -> :38123``."""
        with self._cond:
            return list(self._hits)

    def __enter__(self) -> HostTraps:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> None:
        tcp = _bind(socket.SOCK_STREAM, 0)
        self._socks.append(tcp)
        tcp.listen(128)
        self.tcp_port = tcp.getsockname()[1]
        udp = _bind(socket.SOCK_DGRAM, 0)
        self._socks.append(udp)
        self.udp_port = udp.getsockname()[1]
        dns = None
        if self._want_dns:
            try:
                dns = _bind(socket.SOCK_DGRAM, 53)
            except OSError:
                dns = None  # port 53 in use (a resolver on this host): not trapped
            else:
                self._socks.append(dns)
                self.dns_port = 53
        self._wake_r, self._wake_w = socket.socketpair()
        sel = selectors.DefaultSelector()
        for s in [*self._socks, self._wake_r]:
            s.setblocking(False)
        sel.register(tcp, selectors.EVENT_READ, "tcp")
        sel.register(udp, selectors.EVENT_READ, "udp")
        if dns is not None:
            sel.register(dns, selectors.EVENT_READ, "dns")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._serve, args=(sel,), name="agentcell-host-traps", daemon=True
        )
        self._thread.start()

    def _serve(self, sel: selectors.BaseSelector) -> None:
        try:
            while True:
                stop = False
                for key, _ in sel.select():
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if key.data == "wake":
                        stop = True
                    elif key.data == "tcp":
                        self._accept_all(sock)
                    else:
                        self._receive_all(sock, dns=key.data == "dns")
                with self._cond:
                    self._cond.notify_all()
                if stop:
                    return
        finally:
            sel.close()

    def _record(self, hit: str) -> None:
        with self._cond:
            self._hits.append(hit)

    def _accept_all(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._record(f"tcp accept error {e}")
                return
            conn.close()
            self._record(f"tcp {_peer(addr)} -> :{self.tcp_port}")

    def _receive_all(self, sock: socket.socket, *, dns: bool) -> None:
        port = sock.getsockname()[1]
        while True:
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier reply; keep draining
            if data.startswith(_SENTINEL) and _is_loopback(_peer_host(addr)):
                with self._cond:
                    self._seen.add(data[len(_SENTINEL) :])
                continue
            self._record(f"{'dns' if dns else 'udp'} {_peer(addr)} -> :{port}")
            reply = _dns_nxdomain(data) if dns else _UDP_REPLY
            if reply:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, addr)

    def flush(self, timeout: float = 2.0) -> bool:
        """Send a sentinel datagram to the UDP trap over loopback and wait until the
        thread has handled it, and so everything that arrived before it."""
        if self._thread is None or not self._thread.is_alive():
            return False
        token = secrets.token_hex(8).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_SENTINEL + token, ("127.0.0.1", self.udp_port))
        with self._cond:
            return self._cond.wait_for(lambda: token in self._seen, timeout)

    def close(self) -> None:
        """Stop the thread and close every socket; idempotent."""
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for s in [*self._socks, self._wake_r, self._wake_w]:
            if s is not None:
                s.close()
        self._socks = []
        self._wake_r = self._wake_w = None


# --------------------------------------------------------------------------- battery


def _parse_lines(stdout: str) -> list[CheckResult]:
    """One CheckResult per output line; a line that is not a valid result fails."""
    results = []
    for raw in stdout.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise TypeError("not an object")
            check_id, section, ok, detail = obj["id"], obj["section"], obj["ok"], obj["detail"]
            if not (
                isinstance(check_id, str)
                and isinstance(section, str)
                and isinstance(ok, bool)
                and isinstance(detail, str)
            ):
                raise TypeError("field of the wrong type")
        except (ValueError, TypeError, KeyError) as e:
            results.append(_failed("battery.output", f"unparseable line ({e}): {line[:200]!r}"))
            continue
        results.append(CheckResult(check_id, section, ok, detail))
    return results


def _scratch_dirs(attrs: dict[str, Any]) -> list[str]:
    host_config = attrs.get("HostConfig") or {}
    dirs = list((host_config.get("Tmpfs") or {}).keys())
    for m in attrs.get("Mounts") or []:
        if m.get("Type") == "tmpfs" and m.get("Destination"):
            dirs.append(m["Destination"])
    return list(dict.fromkeys(dirs))


def _workspace_volume(attrs: dict[str, Any], workspace: str | None) -> str | None:
    if workspace is None:
        return None
    for m in attrs.get("Mounts") or []:
        if m.get("Destination") == workspace and m.get("Type") == "volume":
            name = m.get("Name")
            return name if isinstance(name, str) else None
    return None


def _gateways(attrs: dict[str, Any]) -> list[str]:
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    found = []
    for net in networks.values():
        for key in ("Gateway", "IPv6Gateway"):
            if isinstance(net, dict) and net.get(key):
                found.append(str(net[key]))
    return found


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def _started(container: CellContainer) -> tuple[Any, Any]:
    attrs = container.attrs
    return (attrs.get("State") or {}).get("StartedAt"), attrs.get("RestartCount")


def _survived(container: CellContainer, before: tuple[Any, Any]) -> CheckResult:
    try:
        container.reload()
    except Exception as e:  # the engine says the container is gone, or worse
        return _failed("A4.cell-survived", f"could not inspect the cell afterwards: {e}")
    after = _started(container)
    if container.status != "running":
        return _failed("A4.cell-survived", f"cell is {container.status} after the battery")
    if after != before:
        return _failed("A4.cell-survived", f"cell restarted during the battery ({after})")
    return CheckResult("A4.cell-survived", "A4", True, "cell still running, not restarted")


def _trap_result(traps: HostTraps, hits: list[str], flushed: bool) -> CheckResult:
    ports = f"tcp :{traps.tcp_port}, udp :{traps.udp_port}"
    ports += f", dns :{traps.dns_port}" if traps.dns_port else ", dns port 53 not trapped (in use)"
    if hits:
        shown = "; ".join(hits[:12]) + (f"; +{len(hits) - 12} more" if len(hits) > 12 else "")
        return _failed("A6.host-traps", f"reached the host: {shown} ({ports})")
    if not flushed:
        return _failed("A6.host-traps", f"trap thread did not confirm it was drained ({ports})")
    return CheckResult("A6.host-traps", "A6", True, f"nothing reached the host traps ({ports})")


def _targets(addrs: Iterable[str], port: int) -> list[tuple[str, int]]:
    return [(a, port) for a in addrs]


def run_battery_a(
    container: CellContainer,
    *,
    user: str,
    workspace: str | None,
    pids_limit: int,
    memory_bytes: int,
    extra_targets: Sequence[tuple[str, int]] = (),
    timeout: float = 1.0,
    secrets: str | None = None,
) -> list[CheckResult]:
    """Run battery part A inside ``container`` (a live cell's agent container) as
    ``user`` and return one result per check, the host-side ones last.

    Traffic goes only to this host's own addresses, the cell network's gateway and
    ``extra_targets`` (the caller's: other cells' containers, a test server).
    ``secrets`` is where the cell's secrets directory is mounted, if the agent has one.
    """
    container.reload()
    if container.status != "running":
        return [_failed("battery.container", f"container is {container.status}, not running")]
    before = _started(container)
    probe = container.exec_run(["python3", "-c", _PYTHON_PROBE], user=user, demux=True)
    out, err = probe.output or (None, None)
    if probe.exit_code != 0 or _decode(out).strip() != "True":
        why = (_decode(err) or _decode(out)).strip()[:300] or f"exit code {probe.exit_code}"
        return [
            _failed(
                "battery.python3",
                f"verify needs python3 (3.9 or newer) in the cell image: {why}",
            )
        ]

    attrs = container.attrs
    cfg: dict[str, Any] = {
        "workspace": workspace,
        "workspace_volume": _workspace_volume(attrs, workspace),
        "scratch": _scratch_dirs(attrs),
        "secrets": secrets,
        "pids_limit": pids_limit,
        "memory_bytes": memory_bytes,
        "timeout": timeout,
    }
    extra = [(str(ip), int(port)) for ip, port in extra_targets]
    with HostTraps(dns=True) as traps:
        addrs = [
            a for a in dict.fromkeys(host_addresses() + _gateways(attrs)) if not _is_loopback(a)
        ]
        cfg["tcp_targets"] = _targets(addrs, traps.tcp_port) + extra
        cfg["udp_targets"] = _targets(addrs, traps.udp_port) + extra
        cfg["dns_targets"] = addrs
        started = time.monotonic()
        res = container.exec_run(["python3", "-c", SOURCE, json.dumps(cfg)], user=user, demux=True)
        elapsed = time.monotonic() - started
        flushed = traps.flush()
        hits = traps.hits

    out, err = res.output or (None, None)
    results = _parse_lines(_decode(out))
    if res.exit_code != 0:
        tail = _decode(err).strip()[-500:]
        results.append(
            _failed("battery.exit", f"exit code {res.exit_code} after {elapsed:.1f} s: {tail}")
        )
    seen = {r.id for r in results}
    results += [
        _failed(i, "no result: the in-cell battery stopped before this check")
        for i in CHECK_IDS
        if i not in seen
    ]
    results.append(_trap_result(traps, hits, flushed))
    results.append(_survived(container, before))
    return results
