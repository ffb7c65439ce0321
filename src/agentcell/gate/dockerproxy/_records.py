"""The docker proxy's decision records: one JSON line per request on stdout.

Reasons come from ``agentcell.policy`` (``API_REASONS``, ``JSON_REASONS``,
``CHILD_REASONS``) or are one of the phrases below, which only the proxy can give (what
it saw on the wire, or what the engine answered). Lifecycle messages go to stderr
through ``_records.log``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentcell.gate._records import INTERNAL_ERROR, DecisionRecord, RecordWriter

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


@dataclass
class DockerRecord(DecisionRecord):
    """One Docker API request's record."""

    method: str = ""
    path: str = ""
    object: str = ""
    status: int = 0

    def subject(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "object": self.object}

    def measures(self) -> dict[str, Any]:
        return {"status": self.status}


DockerRecordWriter = RecordWriter
"""The same writer as the egress gate's: one JSON line per request on stdout."""
