"""The docker proxy's decision records: one JSON line per request on stdout.

Reasons come from ``agentcell.policy`` (``API_REASONS``, ``JSON_REASONS``,
``CHILD_REASONS``) or are one of the phrases below, which only the proxy can give (what
it saw on the wire, or what the engine answered). Lifecycle messages go to stderr
through ``_records.log``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from agentcell.gate._records import log

__all__ = [
    "BAD_REQUEST",
    "BODY_NOT_ALLOWED",
    "BODY_TOO_LARGE",
    "CL_AND_TE",
    "DUPLICATE_CL",
    "ENGINE_ERROR",
    "FORWARDED",
    "INTERNAL_ERROR",
    "NOT_FOUND",
    "DockerRecord",
    "DockerRecordWriter",
]

FORWARDED = "forwarded"
BAD_REQUEST = "bad request"
DUPLICATE_CL = "duplicate content-length"
CL_AND_TE = "content-length with transfer-encoding"
BODY_TOO_LARGE = "body too large"
BODY_NOT_ALLOWED = "body not allowed"
NOT_FOUND = "not found"
ENGINE_ERROR = "engine error"
INTERNAL_ERROR = "internal error"


@dataclass
class DockerRecord:
    """One request's record, filled in as the request goes; written once."""

    method: str = ""
    path: str = ""
    object: str = ""
    decision: str = "deny"
    reason: str = INTERNAL_ERROR
    rule: str = ""
    status: int = 0
    started: float = field(default_factory=time.monotonic)
    time: str = field(
        default_factory=lambda: (
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    )
    written: bool = False

    def deny(self, reason: str, rule: str = "") -> None:
        self.decision, self.reason, self.rule = "deny", reason, rule

    def allow(self, reason: str, rule: str) -> None:
        self.decision, self.reason, self.rule = "allow", reason, rule


class DockerRecordWriter:
    """Writes records as JSON lines, flushed, one writer at a time."""

    def __init__(self, tenant: str, cell: str, out: TextIO | None = None) -> None:
        self._tenant, self._cell = tenant, cell
        self._out = out if out is not None else sys.stdout
        self._lock = threading.Lock()

    def write(self, record: DockerRecord) -> None:
        """Write ``record`` unless it already was; a broken stdout is logged, not raised."""
        if record.written:
            return
        record.written = True
        doc: dict[str, Any] = {
            "time": record.time,
            "tenant": self._tenant,
            "cell": self._cell,
            "method": record.method,
            "path": record.path,
            "object": record.object,
            "decision": record.decision,
            "reason": record.reason,
            "rule": record.rule,
            "status": record.status,
            "duration_ms": round((time.monotonic() - record.started) * 1000, 3),
        }
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError) as e:
                log(f"cannot write a decision record: {e}")
