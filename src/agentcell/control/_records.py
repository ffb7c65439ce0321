"""The sidecars' decision records, copied into the audit trail: one follower thread per
running egress gate or docker proxy reads its stdout (``docker logs --follow``) and
writes each JSON decision line as one audit record, once, also across restarts.

The parsing is pure (``egress_record``, ``docker_record``, ``log_time_ns``,
``line_batches``); ``RecordFollowers`` does the IO.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from agentcell.control._audit import LOGGED, AuditKind
from agentcell.control._store import AuditRecord, Store
from agentcell.errors import AgentcellError
from agentcell.plan import CellKey, ObservedCell, Role
from agentcell.policy import CANARY_HOST
from agentcell.runtime import Backend

__all__ = [
    "RECORDING_ROLES",
    "RecordFollowers",
    "docker_record",
    "egress_record",
    "line_batches",
    "log_time_ns",
]

log = logging.getLogger("agentcell.records")

RECORDING_ROLES = {
    Role.GATE: (AuditKind.EGRESS, AuditKind.ISOLATION),
    Role.DOCKER_PROXY: (AuditKind.DOCKER,),
}
"""Sidecars whose stdout carries decision records, and the audit kinds those records get."""


class RecordFollowers:
    """One follower per running sidecar that decides, started by ``follow`` each pass."""

    def __init__(
        self, store: Store, backend: Backend, stop: threading.Event, wake: Callable[[], None]
    ) -> None:
        self.store, self.backend, self.stop, self.wake = store, backend, stop, wake
        self._following: dict[tuple[str, str, str], str] = {}
        """(tenant, cell, role) -> the id of the sidecar whose records a thread copies."""
        self._lock = threading.Lock()

    def follow(self, observed: dict[CellKey, ObservedCell]) -> None:
        """Start a follower for each running recording sidecar that has none."""
        for key, cell in observed.items():
            for role in RECORDING_ROLES:
                sidecar = cell.role(role)
                if sidecar is None or sidecar.state != "running":
                    continue
                with self._lock:
                    if self._following.get((*key, role)) == sidecar.id:
                        continue
                    self._following[(*key, role)] = sidecar.id
                threading.Thread(
                    target=self.copy,
                    args=(key, role, sidecar.id),
                    name=f"agentcell-{role}-log",
                    daemon=True,
                ).start()

    def copy(self, key: CellKey, role: str, sidecar_id: str) -> None:
        """Copy one sidecar's records until its stream ends (the follower thread's body)."""
        kinds = RECORDING_ROLES[Role(role)]
        # Lines up to the newest one copied before (by an earlier follower) are skipped,
        # by the engine's write time of each line: a record's own time is when its request
        # began, so a long request ends (and is logged) after shorter, later ones.
        mark = self.store.audit_log.last_logged(*key, kinds)
        parse = egress_record if role == Role.GATE else docker_record
        try:
            chunks = self.backend.sidecar_logs(key, role, since=mark // 1_000_000_000)
            for lines in line_batches(chunks):
                batch = []
                for line in lines:
                    logged, _, text = line.partition(" ")
                    written = log_time_ns(logged)
                    r = parse(text)
                    if r is None or written is None or written <= mark:
                        continue
                    details = {**r.details, LOGGED: written}
                    batch.append(
                        AuditRecord(*key, r.actor, r.kind, r.decision, r.reason, details, r.time)
                    )
                if batch:
                    self.store.audit_many(batch)
        except AgentcellError as e:
            log.info("stopped following the %s of %s/%s: %s", role, *key, e)
        except Exception as e:  # the engine went away mid-stream; the next pass starts again
            log.warning("lost the %s records of %s/%s: %s", role, *key, e)
            self.stop.wait(1.0)  # do not spin on an engine that keeps failing
        finally:
            with self._lock:
                if self._following.get((*key, role)) == sidecar_id:
                    del self._following[(*key, role)]
            if not self.stop.is_set():
                self.wake()


def log_time_ns(stamp: str) -> int | None:
    """The engine's timestamp of a log line (RFC 3339 with up to 9 fractional digits, as
    ``docker logs --timestamps`` writes it) in ns since the epoch; None if it is not one."""
    head, dot, rest = stamp.partition(".")
    digits, zone = rest[:-1], rest[-1:]
    if not dot or zone != "Z" or not digits.isdigit() or len(digits) > 9:
        return None
    try:
        seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int(digits.ljust(9, "0"))


def line_batches(chunks: Iterator[bytes]) -> Iterator[list[str]]:
    """The complete lines each chunk ends, as one batch per chunk (one commit per batch)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        *done, buf = buf.split(b"\n")
        if done:
            yield [line.decode(errors="replace") for line in done]


def _decision_line(
    line: str, drop: tuple[str, ...]
) -> tuple[float, str, str, dict[str, Any]] | None:
    """A sidecar's JSON decision line: (time, allow|deny, reason, the other fields but
    ``drop``); None if it is not one."""
    try:
        data = json.loads(line)
        when = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00")).timestamp()
        decision = "allow" if data["decision"] == "allow" else "deny"
        reason = str(data["reason"])
    except (ValueError, KeyError, TypeError):
        return None
    skip = ("time", "decision", "reason", *drop)
    return when, decision, reason, {k: v for k, v in data.items() if k not in skip}


def egress_record(line: str) -> AuditRecord | None:
    """A gate's JSON decision line as an audit record (tenant and cell filled in later)."""
    parsed = _decision_line(line, ())
    if parsed is None:
        return None
    when, decision, reason, details = parsed
    # The isolation canary's own probe is filed with the canary's checks, not the agent's
    # traffic (whoever sends it: it stays in the trail either way).
    kind = AuditKind.ISOLATION if details.get("host") == CANARY_HOST else AuditKind.EGRESS
    return AuditRecord("", "", "egress-gate", kind, decision, reason, details, when)


def docker_record(line: str) -> AuditRecord | None:
    """A docker proxy's JSON decision line as an audit record of kind ``docker``."""
    parsed = _decision_line(line, ("tenant", "cell"))
    if parsed is None:
        return None
    when, decision, reason, details = parsed
    return AuditRecord("", "", "docker-proxy", AuditKind.DOCKER, decision, reason, details, when)
