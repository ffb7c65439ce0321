"""The isolation canary: from inside a live cell, check that the isolation still holds.

One run, for one cell:

1. every process in the agent container's cgroup, as ``/proc/<pid>/status`` shows it
   (``policy.judge_process``: non-root, no capabilities, no-new-privileges, seccomp);
2. the engine's inspect output of the agent still passes ``policy.check_container``;
3. from the cell's network namespace, TCP connections to a listener the canary opens on
   the host's wildcard address, through the cell network's gateway and every other host
   address, all fail (``policy.judge_reach``: the host firewall drops them);
4. if the cell has an egress gate, a tunnel request through it for ``CANARY_HOST``, a
   name no policy allows, is refused (``policy.judge_gate``).

The sockets of step 3 and 4 are created in the cell's network namespace by a short-lived
thread (``setns``), which returns to the host's namespace and exits; a socket stays in
the namespace it was made in, so the attempts themselves run concurrently from here,
non-blocking, under one deadline. Cost per run: three engine API calls, one thread, one
socket per host address. Needs root (CAP_SYS_ADMIN for ``setns``, reading other users'
``/proc``), as ``agentcell serve`` has.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from agentcell.errors import RuntimeDriverError
from agentcell.plan import CellKey
from agentcell.policy import (
    GATE_PROXY_PORT,
    LABEL_ROLE,
    Decision,
    GateProbe,
    HostProbe,
    ProbeOutcome,
    canary_request,
    check_container,
    fib_trie_addresses,
    gate_address,
    if_inet6_addresses,
    judge_gate,
    judge_process,
    judge_reach,
)
from agentcell.policy._canary import (
    AGENT_NOT_RUNNING,
    NETNS_FAILED,
    NO_NETWORK,
    NO_PROCESSES,
)
from agentcell.runtime._labels import cell_labels

__all__ = ["host_addresses", "run_canary"]

REACH_TIMEOUT = 0.5
"""How long a host address may take to answer; the host answers its own cells in microseconds."""
GATE_TIMEOUT = 3.0
"""How long the gate may take to refuse the canary's request."""

_CLONE_NEWNET = 0x40000000
_MAX_ANSWER = 64 * 1024
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
_libc = ctypes.CDLL(None, use_errno=True)


def run_canary(
    client: docker.DockerClient,
    key: CellKey,
    *,
    strict_seccomp: bool = False,
    timeout: float = REACH_TIMEOUT,
    gate_timeout: float = GATE_TIMEOUT,
    pool: str | None = None,
    secrets_dir: str | None = None,
) -> list[Decision]:
    """Every check of one run on the cell ``key``; a denial is a check that failed.

    ``pool`` (the cells' subnet pool) thins the host addresses tried: the firewall treats
    every address inside it alike (one jump per source pool), so of those only the cell's
    own gateway is tried; with 100 cells that is about 100 fewer connection attempts.

    Process decisions come first (one per process), then ``check_container``'s, then
    the reach decision, then the gate's when the cell has a gate (an egress container,
    or an agent told to use a proxy). What keeps the canary from looking is a denial
    from ``policy.SETUP_REASONS``: a cell without a running agent gives only that one.
    An engine that does not answer raises RuntimeDriverError: that says nothing about
    the cell.
    """
    api = client.api
    try:
        found = api.containers(all=True, filters={"label": cell_labels(key, None)})
        agents = [c for c in found if (c.get("Labels") or {}).get(LABEL_ROLE) == "agent"]
        running = [c for c in agents if c.get("State") == "running"]
        if not running:
            return [Decision(False, AGENT_NOT_RUNNING)]
        attrs: dict[str, Any] = api.inspect_container(running[0]["Id"])
        nets = api.networks(filters={"label": cell_labels(key, None)})
    except docker.errors.NotFound:
        return [Decision(False, AGENT_NOT_RUNNING)]
    except docker.errors.DockerException as e:
        raise RuntimeDriverError(f"the canary could not ask the engine: {e}") from None
    cid = str(attrs["Id"])
    pid = int((attrs.get("State") or {}).get("Pid") or 0)
    if not (attrs.get("State") or {}).get("Running") or pid <= 0:
        return [Decision(False, AGENT_NOT_RUNNING)]
    out = _processes(client, cid, pid)
    network, subnet = "", None
    if nets:
        network = str(nets[0]["Name"])
        subnet = ((nets[0].get("IPAM") or {}).get("Config") or [{}])[0].get("Subnet")
    else:
        out.append(Decision(False, NO_NETWORK))
    out += check_container(
        attrs, network=network, strict_seccomp=strict_seccomp, secrets_dir=secrets_dir
    )

    endpoint = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    others = host_addresses()
    if pool:
        inside = ipaddress.ip_network(pool)
        others = [a for a in others if ipaddress.ip_address(a) not in inside]
    targets = list(dict.fromkeys([*filter(None, [endpoint.get("Gateway")]), *others]))
    env = (attrs.get("Config") or {}).get("Env") or []
    has_gate = any((c.get("Labels") or {}).get(LABEL_ROLE) == "egress" for c in found) or any(
        str(e).startswith("HTTP_PROXY=") for e in env
    )
    gate = (gate_address(str(subnet)), GATE_PROXY_PORT) if has_gate and subnet else None
    try:
        hosts, gate_probe = _reach(pid, cid, targets, gate, timeout, gate_timeout)
    except _NetnsError:
        return [*out, Decision(False, NETNS_FAILED)]
    out.append(judge_reach(hosts))
    if gate is not None:
        out.append(judge_gate(gate_probe or GateProbe(ProbeOutcome.ERROR)))
    return out


# --- processes -----------------------------------------------------------------------------------


def _processes(client: docker.DockerClient, cid: str, pid: int) -> list[Decision]:
    pids = _cgroup_pids(cid, pid)
    if pids is None:
        try:
            top = client.api.top(cid, ps_args="-eo pid")
            pids = [int(row[0]) for row in top.get("Processes") or []]
        except (docker.errors.DockerException, ValueError, IndexError):
            pids = []
    out: list[Decision] = []
    for p in pids:
        try:
            with open(f"/proc/{p}/status", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue  # it exited meanwhile
        decision = judge_process(text)
        if not decision.allow and not _in_container(p, cid):
            continue  # it exited and its pid went to someone else
        out.append(decision)
    return out or [Decision(False, NO_PROCESSES)]


def _cgroup_paths(pid: int) -> dict[str, str]:
    """Controller (``pids``, or ``""`` for the unified hierarchy) -> path of ``pid``'s cgroup."""
    paths: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return paths
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _in_container(pid: int, cid: str) -> bool:
    return any(cid in path for path in _cgroup_paths(pid).values())


def _cgroup_pids(cid: str, pid: int) -> list[int] | None:
    """The pids in the container's cgroup (v1 pids controller, or v2), or None if not found."""
    paths = _cgroup_paths(pid)
    candidates = []
    if cid in paths.get("pids", ""):
        candidates.append(f"/sys/fs/cgroup/pids{paths['pids']}/cgroup.procs")
    if cid in paths.get("", ""):
        candidates.append(f"/sys/fs/cgroup{paths['']}/cgroup.procs")
        candidates.append(f"/sys/fs/cgroup/unified{paths['']}/cgroup.procs")
    for path in candidates:
        try:
            with open(path, encoding="ascii") as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
    return None


# --- host addresses ------------------------------------------------------------------------------

_ADDRESSES_TTL = 5.0
_addresses: tuple[float, list[str]] = (-_ADDRESSES_TTL, [])
_addresses_lock = threading.Lock()


def host_addresses() -> list[str]:
    """Every address of this host but loopback, IPv4 first; read at most every 5 s.

    With a hundred cells the host holds a few hundred addresses and fib_trie is long;
    canaries of many cells run close together and share one reading.
    """
    global _addresses
    with _addresses_lock:
        when, found = _addresses
        if time.monotonic() - when < _ADDRESSES_TTL:
            return list(found)
        found = _read_host_addresses()
        _addresses = (time.monotonic(), found)
        return list(found)


def _read_host_addresses() -> list[str]:
    texts = []
    for path in ("/proc/self/net/fib_trie", "/proc/self/net/if_inet6"):
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                texts.append(f.read())
        except OSError:
            texts.append("")
    v4 = [a for a in fib_trie_addresses(texts[0]) if not a.is_loopback]
    return [str(a) for a in (*v4, *if_inet6_addresses(texts[1], global_scope=True))]


# --- the network namespace -----------------------------------------------------------------------


class _NetnsError(Exception):
    pass


def _sockets_in(pid: int, cid: str, families: list[socket.AddressFamily]) -> list[Any]:
    """One non-blocking TCP socket per family, made in ``pid``'s network namespace.

    An entry is the socket, or the errno its creation failed with. Raises _NetnsError
    when the namespace cannot be entered or no longer belongs to container ``cid``.
    """
    made: list[Any] = []
    failed: list[str] = []

    def work() -> None:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            failed.append(str(e))
            return
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(target)
            failed.append(str(e))
            return
        try:
            if not _in_container(pid, cid):  # the pid was reused before the open
                failed.append("the agent's pid left its container")
                return
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                failed.append(os.strerror(ctypes.get_errno()))
                return
            try:
                for family in families:
                    try:
                        s = socket.socket(family, socket.SOCK_STREAM)
                        s.setblocking(False)
                        made.append(s)
                    except OSError as e:
                        made.append(e.errno or errno.EIO)
            finally:
                # The thread ends right after; returning home is belt and braces.
                _libc.setns(home, _CLONE_NEWNET)
        finally:
            os.close(target)
            os.close(home)

    t = threading.Thread(target=work, name="agentcell-canary-netns", daemon=True)
    t.start()
    t.join()
    if failed:
        for s in made:
            if isinstance(s, socket.socket):
                s.close()
        raise _NetnsError(failed[0])
    return made


def _listener() -> socket.socket:
    """A TCP listener on every host address (both families when the host has IPv6)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 0))
    else:
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
        except OSError:
            s.close()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
    s.listen(4096)  # a full backlog would drop SYNs and look like a firewall
    return s


@dataclass
class _Attempt:
    sock: socket.socket
    address: str
    gate: bool = False
    deadline: float = 0.0
    outcome: ProbeOutcome | None = None
    answer: bytearray = field(default_factory=bytearray)


def _outcome(code: int) -> ProbeOutcome:
    if code == 0:
        return ProbeOutcome.CONNECTED
    if code == errno.ECONNREFUSED:
        return ProbeOutcome.REFUSED
    if code == errno.ETIMEDOUT:
        return ProbeOutcome.TIMEOUT
    if code in _UNREACHABLE or code == errno.EAFNOSUPPORT:
        return ProbeOutcome.UNREACHABLE
    return ProbeOutcome.ERROR


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _reach(
    pid: int,
    cid: str,
    targets: list[str],
    gate: tuple[str, int] | None,
    timeout: float,
    gate_timeout: float,
) -> tuple[list[HostProbe], GateProbe | None]:
    listener = _listener()
    try:
        port = int(listener.getsockname()[1])
        families = [_family(a) for a in targets]
        if gate is not None:
            families.append(_family(gate[0]))
        socks = _sockets_in(pid, cid, families)
        start = time.monotonic()
        attempts: list[_Attempt] = []
        done: list[HostProbe] = []
        for address, s in zip(targets, socks[: len(targets)], strict=True):
            if isinstance(s, socket.socket):
                attempts.append(_Attempt(s, address, deadline=start + timeout))
            else:
                done.append(HostProbe(address, _outcome(s)))
        gate_attempt: _Attempt | None = None
        gate_failed: ProbeOutcome | None = None
        if gate is not None:
            s = socks[-1]
            if isinstance(s, socket.socket):
                gate_attempt = _Attempt(s, gate[0], gate=True, deadline=start + gate_timeout)
                attempts.append(gate_attempt)
            else:
                gate_failed = _outcome(s)
        try:
            _run(attempts, port, gate[1] if gate else 0)
        finally:
            for a in attempts:
                a.sock.close()
        done += [
            HostProbe(a.address, a.outcome or ProbeOutcome.TIMEOUT) for a in attempts if not a.gate
        ]
        if gate is None:
            return done, None
        if gate_attempt is None:
            return done, GateProbe(gate_failed or ProbeOutcome.ERROR)
        return done, GateProbe(
            gate_attempt.outcome or ProbeOutcome.TIMEOUT, bytes(gate_attempt.answer)
        )
    finally:
        listener.close()


def _run(attempts: Iterable[_Attempt], port: int, gate_port: int) -> None:
    """Drive every attempt to an outcome or its deadline, all at once."""
    with selectors.DefaultSelector() as sel:
        for a in attempts:
            code = a.sock.connect_ex((a.address, gate_port if a.gate else port))
            if code in (errno.EINPROGRESS, errno.EAGAIN):
                sel.register(a.sock, selectors.EVENT_WRITE, a)
            else:
                _connected(a, code, sel)
        while sel.get_map():
            now = time.monotonic()
            for k in list(sel.get_map().values()):
                if now >= k.data.deadline:
                    sel.unregister(k.fileobj)
            if not sel.get_map():
                break
            wait = min(k.data.deadline for k in sel.get_map().values()) - now
            for k, _ in sel.select(max(wait, 0.0)):
                a = k.data
                if a.outcome is None:
                    sel.unregister(a.sock)
                    _connected(a, a.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sel)
                else:
                    _read(a, sel)


def _connected(a: _Attempt, code: int, sel: selectors.BaseSelector) -> None:
    """Record how connecting ended; a connected gate attempt is sent the request."""
    a.outcome = _outcome(code)
    if a.gate and a.outcome is ProbeOutcome.CONNECTED:
        with contextlib.suppress(OSError):  # the answer, or its absence, tells
            a.sock.send(canary_request())  # small: always fits a fresh socket's buffer
            sel.register(a.sock, selectors.EVENT_READ, a)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,6})[ \t]*\r\n", re.IGNORECASE)


def _read(a: _Attempt, sel: selectors.BaseSelector) -> None:
    """Collect the gate's answer until it is complete, closed or too long."""
    try:
        chunk = a.sock.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    a.answer += chunk
    head, sep, body = bytes(a.answer).partition(b"\r\n\r\n")
    complete = False
    if sep:
        m = _CONTENT_LENGTH.search(head + b"\r\n")
        complete = m is None or len(body) >= int(m.group(1))
    if not chunk or complete or len(a.answer) >= _MAX_ANSWER:
        sel.unregister(a.sock)
