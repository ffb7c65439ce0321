"""Decision records (one JSON line per request on stdout) and the gate's own reasons.

The decision function (``agentcell.policy._egress``) names the reasons of policy
decisions; the phrases below are the ones only the gate can give (what it saw on the
wire, or what happened after an allow). Together they are the log vocabulary.
Lifecycle messages go to stderr through ``log``; stdout carries records only.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "BAD_AUTHORITY",
    "BAD_REQUEST",
    "BAD_UPSTREAM_RESPONSE",
    "CLOSED_BY_RELOAD",
    "DIAL_FAILED",
    "HOST_MISMATCH",
    "HTTPS_ABSOLUTE_FORM",
    "INTERNAL_ERROR",
    "NOT_A_PROXY_REQUEST",
    "NOT_TLS",
    "NO_CLIENT_HELLO",
    "NO_POLICY",
    "NO_SNI",
    "RESOLUTION_FAILED",
    "RESOLUTION_TIMED_OUT",
    "SNI_MISMATCH",
    "UNSUPPORTED_SCHEME",
    "DecisionRecord",
    "Record",
    "RecordWriter",
    "log",
]

NO_POLICY = "no policy"
INTERNAL_ERROR = "internal error"
BAD_REQUEST = "bad request"
BAD_AUTHORITY = "bad authority"
NOT_A_PROXY_REQUEST = "not a proxy request"
HTTPS_ABSOLUTE_FORM = "https absolute-form"
UNSUPPORTED_SCHEME = "unsupported scheme"
HOST_MISMATCH = "host header mismatch"
RESOLUTION_FAILED = "resolution failed"
RESOLUTION_TIMED_OUT = "resolution timed out"
SNI_MISMATCH = "sni mismatch"
NOT_TLS = "not tls"
NO_SNI = "no sni"
NO_CLIENT_HELLO = "no client hello"
DIAL_FAILED = "dial failed"
BAD_UPSTREAM_RESPONSE = "bad upstream response"
CLOSED_BY_RELOAD = "closed by policy reload"

_log_lock = threading.Lock()


def log(message: str) -> None:
    """One lifecycle line on stderr (never a secret, never a record)."""
    line = f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S')}Z agentcell-gate: {message}\n"
    with _log_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class DecisionRecord:
    """What every sidecar's record holds: the decision, its reason and rule, and when.

    Filled in as the request goes and written once; each sidecar's record adds what
    the request was about (``subject``) and what it moved (``measures``).
    """

    decision: str = "deny"
    reason: str = INTERNAL_ERROR
    rule: str = ""
    started: float = field(default_factory=time.monotonic)
    time: str = field(default_factory=_utc_now)
    written: bool = False

    def deny(self, reason: str, rule: str = "") -> None:
        self.decision, self.reason, self.rule = "deny", reason, rule

    def allow(self, reason: str, rule: str) -> None:
        self.decision, self.reason, self.rule = "allow", reason, rule

    def subject(self) -> dict[str, Any]:
        return {}

    def measures(self) -> dict[str, Any]:
        return {}


@dataclass
class Record(DecisionRecord):
    """One egress request's record."""

    method: str = ""
    host: str = ""
    port: int = 0
    address: str = ""
    bytes_up: int = 0
    bytes_down: int = 0

    def subject(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "host": self.host,
            "port": self.port,
            "address": self.address,
        }

    def measures(self) -> dict[str, Any]:
        return {"bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


class RecordWriter:
    """Writes records as JSON lines, flushed, one writer at a time."""

    def __init__(self, tenant: str, cell: str, out: TextIO | None = None) -> None:
        self._tenant = tenant
        self._cell = cell
        self._out = out if out is not None else sys.stdout
        self._lock = threading.Lock()

    def write(self, record: DecisionRecord) -> None:
        """Write ``record`` unless it already was; a broken stdout is logged, not raised."""
        if record.written:
            return
        record.written = True
        doc: dict[str, Any] = {
            "time": record.time,
            "tenant": self._tenant,
            "cell": self._cell,
            **record.subject(),
            "decision": record.decision,
            "reason": record.reason,
            "rule": record.rule,
            **record.measures(),
            "duration_ms": round((time.monotonic() - record.started) * 1000, 3),
        }
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError) as e:
                log(f"cannot write a decision record: {e}")
