"""The audit trail: its table, durable group-committed appends, filtered queries, CSV.

The trail lives in the state store's SQLite file but has connections of its own:

- a writer with ``synchronous=FULL``, so every commit fsyncs the WAL before it returns
  (a record survives an OS crash, not only a process crash). Appenders share commits:
  whoever finds no commit in flight takes every pending record, writes them in one
  transaction and one fsync, and wakes the others (group commit, no extra thread). While
  appenders are concurrent, a leader waits up to 0.2 ms for the last commit's appenders to
  queue again, so that each shares the next commit instead of waiting for two;
- a reader, so a long query never holds up an append (WAL readers do not block writers).

The table is append-only (triggers refuse UPDATE and DELETE). Queries return the newest
``limit`` matches in id order, or, after an id (following), the oldest newer ones.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from agentcell.errors import StoreError

__all__ = [
    "AUDIT_SCHEMA",
    "CSV_COLUMNS",
    "LOGGED",
    "TIME_FORMS",
    "AuditDecision",
    "AuditKind",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "csv_header",
    "csv_rows",
    "parse_time",
    "rfc3339",
]

LOGGED = "logged_ns"
"""Detail of a record copied from a sidecar's log: when the engine wrote that log line (ns).

A sidecar writes a record when its request ends, but stamps it with the time the request
began, so record times are not in log order; the write times are."""

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    tenant TEXT NOT NULL,
    cell TEXT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
);
-- Chosen by measurement (bench/audit.py prints each query's plan): a query walks one of
-- these from the newest id back and stops at ``limit`` matches, no sort. Indexes on time
-- were never chosen by the planner (ORDER BY id wins) and would only slow appends.
CREATE INDEX IF NOT EXISTS audit_cell ON audit (tenant, cell, id);
CREATE INDEX IF NOT EXISTS audit_tenant ON audit (tenant, id);
CREATE INDEX IF NOT EXISTS audit_tenant_kind ON audit (tenant, kind, id);
CREATE INDEX IF NOT EXISTS audit_kind ON audit (kind, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

_INSERT_COLUMNS = ("time", "tenant", "cell", "actor", "kind", "decision", "reason", "details")
_GATHER_SECONDS = 0.0002
"""How long a leader waits at most for the appenders of the last commit to queue again."""
_ROWS_PER_INSERT = 32
"""The most rows a group commits as one multi-row INSERT statement (256 bound values)."""


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(" + ",".join("?" * len(_INSERT_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO audit({','.join(_INSERT_COLUMNS)}) VALUES {values}"  # noqa: S608


_COLUMNS = "id, time, tenant, cell, actor, kind, decision, reason, details"

CSV_COLUMNS = ("id", "time", "tenant", "cell", "actor", "kind", "decision", "reason", "details")
"""The CSV export's header; ``time`` is RFC 3339 UTC, ``details`` a JSON object."""


class AuditKind(StrEnum):
    """What a record is about (its ``kind``)."""

    API = "api"
    AUTH = "auth"
    DOCKER = "docker"
    EGRESS = "egress"
    EXEC = "exec"
    FIREWALL = "firewall"
    HEALTH = "health"
    ISOLATION = "isolation"
    LIFECYCLE = "lifecycle"
    POLICY = "policy"
    QUOTA = "quota"
    SECRET = "secret"  # noqa: S105 (a kind of record, not a secret)
    SIDECAR = "sidecar"
    TOKEN = "token"  # noqa: S105 (a kind of record, not a token)


class AuditDecision(StrEnum):
    """What was decided (its ``decision``)."""

    ALLOW = "allow"
    DENY = "deny"
    FAIL = "fail"
    """An action was attempted and did not succeed."""
    REPORT = "report"
    """Something was found and reported; nothing was done."""


@dataclass(frozen=True)
class AuditRecord:
    """One decision anywhere: lifecycle action, API call, authentication, egress, docker API."""

    tenant: str
    cell: str
    actor: str
    kind: str
    decision: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    id: int = 0


@dataclass(frozen=True)
class AuditQuery:
    """Which records: every given filter must hold (kinds: any of them)."""

    tenant: str | None = None
    cell: str | None = None
    kinds: tuple[str, ...] = ()
    decision: str | None = None
    actor: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    after_id: int = 0
    """Following: the oldest records with a larger id, instead of the newest ``limit``."""

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        """The SELECT for this query and its arguments (values are always bound)."""
        where = ["id > ?"]
        args: list[Any] = [self.after_id]
        for col, val in (
            ("tenant", self.tenant),
            ("cell", self.cell),
            ("decision", self.decision),
            ("actor", self.actor),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if self.kinds:
            where.append(f"kind IN ({','.join('?' * len(self.kinds))})")
            args.extend(self.kinds)
        if self.since is not None:
            where.append("time >= ?")
            args.append(self.since)
        if self.until is not None:
            where.append("time <= ?")
            args.append(self.until)
        order = "ASC" if self.after_id else "DESC"
        # Only fixed column names and placeholders are joined; every value is bound.
        clause = " AND ".join(where)
        sql = f"SELECT {_COLUMNS} FROM audit WHERE {clause} ORDER BY id {order} LIMIT ?"  # noqa: S608
        return sql, (*args, self.limit)


# -- times -------------------------------------------------------------------------------------

_AGE_RE = re.compile(r"^(\d{1,9})(s|m|h|d)$", re.ASCII)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
TIME_FORMS = (
    "an age like 30s, 10m, 2h or 7d (seconds, minutes, hours, days before now), or an "
    "RFC 3339 time like 2026-01-31T09:30:00Z or 2026-01-31T10:30:00+01:00"
)


def parse_time(text: str, now: float) -> float:
    """A point in time (unix seconds) from an age before ``now`` or an RFC 3339 time.

    Raises ValueError naming the valid forms when ``text`` is neither.
    """
    value = text.strip()
    age = _AGE_RE.match(value)
    if age:
        return now - int(age.group(1)) * _AGE_UNITS[age.group(2)]
    if _RFC3339_RE.match(value):
        frac = re.search(r"\.(\d+)", value)
        # fromisoformat (3.11) takes at most 6 fractional digits and no 'z'.
        text6 = value.replace("z", "Z").replace("Z", "+00:00").replace("t", "T")
        if frac:
            text6 = text6.replace(frac.group(0), "." + (frac.group(1) + "000000")[:6], 1)
        try:
            return datetime.fromisoformat(text6).timestamp()
        except ValueError as e:
            raise ValueError(f"{text!r} is not a valid time ({e}); write {TIME_FORMS}") from None
    raise ValueError(f"{text!r} is not a time: write {TIME_FORMS}")


def rfc3339(ts: float) -> str:
    """A unix time as RFC 3339 UTC with milliseconds."""
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


# -- CSV ---------------------------------------------------------------------------------------


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_COLUMNS)
    return buf.getvalue()


def csv_rows(records: Iterable[AuditRecord]) -> str:
    """The records as CSV rows (RFC 4180: CRLF ends a row, so a lone CR or LF in a field is
    quoted); ``details`` as compact JSON with sorted keys. No header."""
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in records:
        w.writerow(
            (
                r.id,
                rfc3339(r.time),
                r.tenant,
                r.cell,
                r.actor,
                r.kind,
                r.decision,
                r.reason,
                json.dumps(r.details, sort_keys=True, separators=(",", ":")),
            )
        )
    return buf.getvalue()


# -- the log -----------------------------------------------------------------------------------


class _Batch:
    """One appender's records, and how their commit went."""

    __slots__ = ("error", "lead", "rows", "woken")

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.woken = threading.Lock()
        """Held until its owner may go on (a bare lock: far cheaper to hand over than an Event)."""
        self.woken.acquire()
        self.lead = False
        """Set instead of the result: the owner is to lead the next commit."""
        self.error: str | None = None


class AuditLog:
    """The trail in ``path``: durable group-committed appends and queries. Thread-safe."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self._lock = threading.Lock()
        """Guards the queue: ``_pending`` and ``_writing`` (a commit is in flight or due)."""
        self._pending: list[_Batch] = []
        self._writing = False
        self._queued = threading.Condition(self._lock)
        """Notified when a batch is queued (a leader gathering its group waits on it)."""
        self._last_group = 0
        """Batches in the last commit: how many appenders are likely to come back at once."""
        self._write_lock = threading.Lock()
        """Held around the writer connection's use."""
        self._committed = threading.Condition()
        """Notified after each commit (``wait``)."""
        self._last_id = 0
        self._read_lock = threading.Lock()
        try:
            self._w = sqlite3.connect(
                str(path), check_same_thread=False, timeout=10.0, isolation_level=None
            )
            self._w.execute("PRAGMA journal_mode=WAL")
            self._w.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._w.executescript(AUDIT_SCHEMA)
            self._r = sqlite3.connect(
                str(path), check_same_thread=False, timeout=10.0, isolation_level=None
            )
            self._last_id = int(self._w.execute("SELECT MAX(id) FROM audit").fetchone()[0] or 0)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the audit trail in {path}: {e}") from None

    def close(self) -> None:
        with self._write_lock:
            self._w.close()
        with self._read_lock:
            self._r.close()

    # -- appends -------------------------------------------------------------------------------

    def append(self, record: AuditRecord) -> None:
        """Store one record; returns once it is on disk (fsynced)."""
        self.append_many((record,))

    def append_many(self, records: Iterable[AuditRecord]) -> None:
        """Store records in their order, in one commit shared with concurrent appenders."""
        now = time.time()
        rows = [
            (
                r.time or now,
                r.tenant,
                r.cell,
                r.actor,
                r.kind,
                r.decision,
                r.reason,
                json.dumps(r.details, sort_keys=True),
            )
            for r in records
        ]
        if not rows:
            return
        batch = _Batch(rows)
        with self._lock:
            self._pending.append(batch)
            lead = not self._writing
            self._writing = True
            self._queued.notify()
        if not lead:
            batch.woken.acquire()  # its commit is done, or this thread leads the next one
            lead = batch.lead
        if lead:
            self._lead()
        if batch.error is not None:
            raise StoreError(f"audit trail {self.path}: {batch.error}")

    def _lead(self) -> None:
        """Commit everything pending (this thread's batch first among it), wake each batch's
        owner, and hand the lead to the owner of the first batch that came meanwhile."""
        with self._lock:
            if self._last_group > 1:
                # Appenders are concurrent: give the ones the last commit woke a moment to
                # queue again, so that they share this commit rather than wait for the next.
                deadline = time.monotonic() + _GATHER_SECONDS
                while len(self._pending) < self._last_group:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._queued.wait(remaining)
            group, self._pending = self._pending, []
            self._last_group = len(group)
        error: str | None = "the commit was interrupted"
        last = 0
        try:
            with self._write_lock:
                error, last = self._commit(group)
        finally:  # every owner is woken and the lead passed on, whatever happened
            self._finish(group, error, last)

    def _finish(self, group: list[_Batch], error: str | None, last: int) -> None:
        with self._committed:
            self._last_id = max(self._last_id, last)
            self._committed.notify_all()
        for b in group:
            b.error = error
            b.woken.release()
        with self._lock:
            if not self._pending:
                self._writing = False
                return
            nxt = self._pending[0]
        nxt.lead = True
        nxt.woken.release()

    def _commit(self, group: list[_Batch]) -> tuple[str | None, int]:
        """Write ``group`` in one transaction: (the error text or None, the newest id).

        A small group (single-record appenders) is one multi-row INSERT, autocommitted: one
        statement step instead of BEGIN, a step per row and COMMIT, each of which gives up and
        takes back the GIL, which costs dearly while many appender threads want it. A large
        group (batches) goes through executemany, which binds rows faster than a long
        multi-row statement (measured: about 2x at 500 rows)."""
        rows = [row for b in group for row in b.rows]
        try:
            if len(rows) <= _ROWS_PER_INSERT:
                self._w.execute(_insert_sql(len(rows)), [v for row in rows for v in row])
            else:
                self._w.execute("BEGIN IMMEDIATE")
                try:
                    self._w.executemany(_insert_sql(1), rows)
                except BaseException:
                    self._w.execute("ROLLBACK")
                    raise
                self._w.execute("COMMIT")
            last = int(self._w.execute("SELECT last_insert_rowid()").fetchone()[0])
        except sqlite3.Error as e:
            return str(e), 0
        return None, last

    # -- reads ---------------------------------------------------------------------------------

    def last_id(self) -> int:
        """The id of the newest committed record (0 for an empty trail)."""
        with self._committed:
            return self._last_id

    def wait(self, after_id: int, timeout: float) -> int:
        """Block until a record newer than ``after_id`` is committed, or timeout; the last id."""
        deadline = time.monotonic() + timeout
        with self._committed:
            while True:
                remaining = deadline - time.monotonic()
                if self._last_id > after_id or remaining <= 0:
                    return self._last_id
                self._committed.wait(remaining)

    def query(self, q: AuditQuery) -> list[AuditRecord]:
        """The matching records in id order (see ``AuditQuery``)."""
        sql, args = q.sql()
        rows = self._read(sql, args)
        if not q.after_id:
            rows.reverse()
        return [
            AuditRecord(r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[1], r[0])
            for r in rows
        ]

    def plan(self, q: AuditQuery) -> list[str]:
        """EXPLAIN QUERY PLAN of ``q``, one line per step (for the benchmark and the notes)."""
        sql, args = q.sql()
        return [str(r[3]) for r in self._read("EXPLAIN QUERY PLAN " + sql, args)]

    def last_time(self, tenant: str, cell: str, kinds: Sequence[str]) -> float:
        """The newest time among records of a cell of the given kinds (0 if none)."""
        marks = ",".join("?" * len(kinds))
        rows = self._read(
            f"SELECT MAX(time) FROM audit WHERE tenant=? AND cell=? AND kind IN ({marks})",  # noqa: S608
            (tenant, cell, *kinds),
        )
        return float(rows[0][0] or 0.0)

    def last_logged(self, tenant: str, cell: str, kinds: Sequence[str]) -> int:
        """Where the newest copied sidecar record of a cell sits in its sidecar's log: the
        engine's write time of that log line, in ns (0 if none). Records copied by an older
        release carry no such time; their own time stands in for it."""
        marks = ",".join("?" * len(kinds))
        rows = self._read(
            "SELECT details, time FROM audit WHERE tenant=? AND cell=? "  # noqa: S608
            f"AND kind IN ({marks}) ORDER BY id DESC LIMIT 1",
            (tenant, cell, *kinds),
        )
        if not rows:
            return 0
        logged = json.loads(rows[0][0]).get(LOGGED)
        return int(logged) if isinstance(logged, int) else int(float(rows[0][1]) * 1e9)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return list(self._r.execute(sql, args).fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"audit trail {self.path}: {e}") from None
