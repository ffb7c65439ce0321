"""The isolation canary's verdicts: pure judges over what the canary saw from inside a cell.

The canary (``agentcell.runtime`` does its IO) reads every agent process's
``/proc/<pid>/status``, tries to reach the host from the cell's network namespace, and
asks the cell's egress gate for a destination no policy allows. These functions turn
what it saw into ``Decision`` values; every reason is a fixed phrase from the tuples
below.

``judge_process`` decision order (``tests/policy/test_policy_canary.py`` mirrors it):

1. Every field it needs is present exactly once and well formed (``Uid``, ``Gid``,
   ``Groups``, ``NSpid``, ``CapInh``, ``CapPrm``, ``CapEff``, ``CapBnd``, ``CapAmb``,
   ``NoNewPrivs``, ``Seccomp``), else "process status unreadable".
2. No user id (real, effective, saved, filesystem) is 0: "process runs as root".
3. No group id, supplementary ones included, is 0: "process runs with group root".
4. The process is in a pid namespace below the reader's (``NSpid`` has more than one
   entry): "process is not in its own pid namespace".
5. Capability sets, each must be empty, in this order: effective ("process has effective
   capabilities"), permitted, inheritable, ambient, bounding ("capability bounding set
   is not empty").
6. ``NoNewPrivs: 1``, else "no-new-privileges is not set".
7. ``Seccomp: 2`` (filter mode), else "seccomp filter is not active".
8. "process is hardened". The rule names the process: ``pid <Pid>``.

``judge_reach`` over TCP connection attempts from the cell to host addresses, where the
host listens on every address: no attempt at all is "no host address probed"; then the
first attempt that connected is "host reachable from the cell", one refused (the host's
stack answered) "host answered the cell", one that failed locally "host probe failed";
otherwise (every attempt timed out or had no route) "host unreachable from the cell".
The rule names the offending address.

``judge_gate`` over one proxy request for ``CANARY_HOST`` through the gate: a gate that
could not be reached is "gate did not answer"; an answer without an HTTP status line
"gate gave no valid answer"; 403 is "gate denied the destination" (the rule is the
gate's own reason); a 2xx "gate allowed a denied destination"; any other status "gate
answered without a denial".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentcell.policy._decision import Decision

__all__ = [
    "CANARY_HOST",
    "CANARY_PORT",
    "GATE_REASONS",
    "PROCESS_REASONS",
    "REACH_REASONS",
    "SETUP_REASONS",
    "GateProbe",
    "HostProbe",
    "ProbeOutcome",
    "canary_request",
    "judge_gate",
    "judge_process",
    "judge_reach",
]

CANARY_HOST = "canary.invalid"
"""A reserved name (RFC 6761) that never resolves: no policy has a reason to allow it."""
CANARY_PORT = 443

STATUS_UNREADABLE = "process status unreadable"
RUNS_AS_ROOT = "process runs as root"
GROUP_ROOT = "process runs with group root"
HOST_PID_NS = "process is not in its own pid namespace"
CAP_EFFECTIVE = "process has effective capabilities"
CAP_PERMITTED = "process has permitted capabilities"
CAP_INHERITABLE = "process has inheritable capabilities"
CAP_AMBIENT = "process has ambient capabilities"
CAP_BOUNDING = "capability bounding set is not empty"
NO_NEW_PRIVS_UNSET = "no-new-privileges is not set"
SECCOMP_INACTIVE = "seccomp filter is not active"
PROCESS_HARDENED = "process is hardened"

PROCESS_REASONS: tuple[str, ...] = (
    STATUS_UNREADABLE,
    RUNS_AS_ROOT,
    GROUP_ROOT,
    HOST_PID_NS,
    CAP_EFFECTIVE,
    CAP_PERMITTED,
    CAP_INHERITABLE,
    CAP_AMBIENT,
    CAP_BOUNDING,
    NO_NEW_PRIVS_UNSET,
    SECCOMP_INACTIVE,
    PROCESS_HARDENED,
)
"""Every reason ``judge_process`` gives, in its decision order."""

NOTHING_PROBED = "no host address probed"
HOST_REACHABLE = "host reachable from the cell"
HOST_ANSWERED = "host answered the cell"
PROBE_FAILED = "host probe failed"
HOST_UNREACHABLE = "host unreachable from the cell"

REACH_REASONS: tuple[str, ...] = (
    NOTHING_PROBED,
    HOST_REACHABLE,
    HOST_ANSWERED,
    PROBE_FAILED,
    HOST_UNREACHABLE,
)
"""Every reason ``judge_reach`` gives, in its decision order."""

GATE_SILENT = "gate did not answer"
GATE_GARBLED = "gate gave no valid answer"
GATE_DENIED = "gate denied the destination"
GATE_ALLOWED = "gate allowed a denied destination"
GATE_OTHER = "gate answered without a denial"

GATE_REASONS: tuple[str, ...] = (GATE_SILENT, GATE_GARBLED, GATE_DENIED, GATE_ALLOWED, GATE_OTHER)
"""Every reason ``judge_gate`` gives, in its decision order."""

AGENT_NOT_RUNNING = "agent is not running"
NO_NETWORK = "cell network not found"
NO_PROCESSES = "agent processes not found"
NETNS_FAILED = "cannot enter the cell's network namespace"

SETUP_REASONS: tuple[str, ...] = (AGENT_NOT_RUNNING, NO_NETWORK, NO_PROCESSES, NETNS_FAILED)
"""Why the canary could not look at all (always a denial: it cannot vouch for the cell)."""


class ProbeOutcome(StrEnum):
    """How one TCP connection attempt ended."""

    CONNECTED = "connected"  # the handshake completed
    REFUSED = "refused"  # a reset or port-unreachable came back
    TIMEOUT = "timeout"  # no answer before the deadline (what a dropping firewall gives)
    UNREACHABLE = "unreachable"  # no route from the cell to that address
    ERROR = "error"  # the attempt failed locally; says nothing about the path


@dataclass(frozen=True)
class HostProbe:
    """One attempt from the cell to a host address the host listens on."""

    address: str
    outcome: ProbeOutcome


@dataclass(frozen=True)
class GateProbe:
    """One ``canary_request()`` sent to the gate: how connecting ended, and what came back."""

    outcome: ProbeOutcome
    answer: bytes = b""


def canary_request() -> bytes:
    """The request the canary sends through the gate: a tunnel to ``CANARY_HOST``."""
    authority = f"{CANARY_HOST}:{CANARY_PORT}"
    return (
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: agentcell-canary\r\n\r\n"
    ).encode("ascii")


# --- processes -----------------------------------------------------------------------------------

_FIELDS = (
    "Pid",
    "Uid",
    "Gid",
    "Groups",
    "NSpid",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
)
_CAPS = (
    ("CapEff", CAP_EFFECTIVE),
    ("CapPrm", CAP_PERMITTED),
    ("CapInh", CAP_INHERITABLE),
    ("CapAmb", CAP_AMBIENT),
    ("CapBnd", CAP_BOUNDING),
)
_HEX = re.compile(r"[0-9a-fA-F]{1,16}")
_INTS = re.compile(r"[0-9]{1,10}(?:[ \t]+[0-9]{1,10})*")


class _Unreadable(Exception):
    pass


def _fields(text: str) -> dict[str, str]:
    """The fields ``judge_process`` reads, each present exactly once; else _Unreadable."""
    found: dict[str, str] = {}
    for line in text.split("\n"):
        name, sep, value = line.partition(":")
        if not sep or name not in _FIELDS:
            continue
        if name in found:
            raise _Unreadable
        found[name] = value.strip(" \t")
    if set(found) != set(_FIELDS):
        raise _Unreadable
    return found


def _ints(value: str, *, count: int | None = None, empty: bool = False) -> list[int]:
    if not value:
        if empty:
            return []
        raise _Unreadable
    if not _INTS.fullmatch(value):
        raise _Unreadable
    out = [int(v) for v in value.split()]
    if count is not None and len(out) != count:
        raise _Unreadable
    return out


def _hex(value: str) -> int:
    if not _HEX.fullmatch(value):
        raise _Unreadable
    return int(value, 16)


def judge_process(status_text: str) -> Decision:
    """Whether one process, as its ``/proc/<pid>/status`` shows it, is still hardened."""
    try:
        f = _fields(status_text)
        (pid,) = _ints(f["Pid"], count=1)
        uids = _ints(f["Uid"], count=4)
        gids = _ints(f["Gid"], count=4)
        groups = _ints(f["Groups"], empty=True)
        nspid = _ints(f["NSpid"])
        caps = {name: _hex(f[name]) for name, _ in _CAPS}
        (nnp,) = _ints(f["NoNewPrivs"], count=1)
        (seccomp,) = _ints(f["Seccomp"], count=1)
    except _Unreadable:
        return Decision(False, STATUS_UNREADABLE)
    rule = f"pid {pid}"
    if 0 in uids:
        return Decision(False, RUNS_AS_ROOT, rule)
    if 0 in gids or 0 in groups:
        return Decision(False, GROUP_ROOT, rule)
    if len(nspid) < 2:
        return Decision(False, HOST_PID_NS, rule)
    for name, reason in _CAPS:
        if caps[name]:
            return Decision(False, reason, rule)
    if nnp != 1:
        return Decision(False, NO_NEW_PRIVS_UNSET, rule)
    if seccomp != 2:
        return Decision(False, SECCOMP_INACTIVE, rule)
    return Decision(True, PROCESS_HARDENED, rule)


# --- the network -------------------------------------------------------------------------------


def judge_reach(probes: Sequence[HostProbe]) -> Decision:
    """Whether the cell is still cut off from the host, from attempts to reach it."""
    if not probes:
        return Decision(False, NOTHING_PROBED)
    for outcome, reason in (
        (ProbeOutcome.CONNECTED, HOST_REACHABLE),
        (ProbeOutcome.REFUSED, HOST_ANSWERED),
        (ProbeOutcome.ERROR, PROBE_FAILED),
    ):
        for p in probes:
            if p.outcome is outcome:
                return Decision(False, reason, p.address)
    return Decision(True, HOST_UNREACHABLE)


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?:[ \r\n]|$)")
_GATE_REASON = re.compile(rb"[ -~]{1,200}")


def _gate_reason(answer: bytes) -> str:
    """The gate's own reason phrase: the first body line, if it is short printable ASCII."""
    _, sep, body = answer.partition(b"\r\n\r\n")
    line = body.split(b"\n", 1)[0].rstrip(b"\r") if sep else b""
    return line.decode("ascii") if _GATE_REASON.fullmatch(line) else ""


def judge_gate(probe: GateProbe) -> Decision:
    """Whether the gate still refuses ``CANARY_HOST``, from its answer to ``canary_request()``."""
    if probe.outcome is not ProbeOutcome.CONNECTED:
        return Decision(False, GATE_SILENT, str(probe.outcome))
    m = _STATUS_LINE.match(probe.answer)
    if m is None:
        return Decision(False, GATE_GARBLED)
    status = int(m.group(1))
    if status == 403:
        return Decision(True, GATE_DENIED, _gate_reason(probe.answer))
    if 200 <= status < 300:
        return Decision(False, GATE_ALLOWED, str(status))
    return Decision(False, GATE_OTHER, str(status))
