"""The embedded SQLite store: desired state and cell status; the audit trail is ``_audit``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from agentcell.control._audit import AuditLog, AuditQuery, AuditRecord
from agentcell.errors import StoreError
from agentcell.plan import Attempt, CellKey, DesiredCell, StatusChanges, check_transition
from agentcell.policy import StoredToken
from agentcell.spec import Agent, Tenant

__all__ = ["AuditRecord", "CellStatus", "SecretRow", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    generation INTEGER NOT NULL,
    subnet TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    keep_workspace INTEGER NOT NULL DEFAULT 0,
    policy TEXT NOT NULL DEFAULT '',
    policy_digest TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS status (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    health TEXT NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    observed_generation INTEGER NOT NULL DEFAULT 0,
    failed_generation INTEGER NOT NULL DEFAULT 0,
    container_id TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    attempts TEXT NOT NULL DEFAULT '[]',
    policy_digest TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, name)
);
-- Counts writes to cells and tenants, so a reader knows when its parsed copy is stale.
CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT OR IGNORE INTO changes(id, n) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS cells_insert_counted AFTER INSERT ON cells
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS cells_update_counted AFTER UPDATE ON cells
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS cells_delete_counted AFTER DELETE ON cells
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS tenants_insert_counted AFTER INSERT ON tenants
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS tenants_update_counted AFTER UPDATE ON tenants
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS tenants_delete_counted AFTER DELETE ON tenants
    BEGIN UPDATE changes SET n = n + 1 WHERE id = 1; END;
CREATE TABLE IF NOT EXISTS secrets (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);
"""

# Tenant tokens: only a hash of each secret is kept.
_TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL,
    expires REAL
);
CREATE INDEX IF NOT EXISTS tokens_tenant ON tokens (tenant, created);
"""


@dataclass(frozen=True)
class CellStatus:
    """What the reconciler last observed of a cell."""

    tenant: str
    name: str
    state: str = "pending"
    health: str = "none"
    reason: str = "waiting for the reconciler"
    since: float = 0.0
    observed_generation: int = 0
    failed_generation: int = 0
    container_id: str = ""
    ip: str = ""
    attempts: tuple[Attempt, ...] = ()
    """Recent recoveries, oldest first (the ladder's memory)."""
    policy_digest: str = ""
    version: int = 0
    rung: int = 0
    """Recoveries since the cell was last well."""
    breach: str = ""
    """What the isolation canary last found wrong; "" while it finds nothing."""
    health_reason: str = ""
    """What the last health probe saw."""
    restart_honoured: int = 0
    """The last restart request (``DesiredCell.restart_request``) the reconciler carried out."""


@dataclass(frozen=True)
class SecretRow:
    """One stored secret: its value only sealed (see ``control._secrets``)."""

    tenant: str
    name: str
    sealed: bytes
    version: int
    created: float
    updated: float


class Store:
    """Thread-safe: one connection, serialised by a lock; WAL journal; durable commits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._desired: tuple[tuple[Any, ...], dict[CellKey, DesiredCell]] | None = None
        self._tenants: tuple[tuple[Any, ...], list[Tenant]] | None = None
        self._agents: dict[str, Agent] = {}
        """The parsed agents of the last parse, by their stored spec text."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, timeout=5.0, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.executescript(_TOKENS_SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open the state store {path}: {e}") from None
        self.audit_log = AuditLog(path)
        """The append-only audit trail, on connections of its own (durable group commits)."""

    def _migrate(self) -> None:
        """Add the columns a store made by an older release lacks, and give renamed ones
        their new names (data is kept)."""
        renamed = {"status": {"restarts": "attempts"}}  # it always held the attempts
        for table, names in renamed.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for old, new in names.items():
                if old in have and new not in have:
                    self._db.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
        added = {
            "cells": {
                "policy": "TEXT NOT NULL DEFAULT ''",
                "policy_digest": "TEXT NOT NULL DEFAULT ''",
            },
            "status": {
                "policy_digest": "TEXT NOT NULL DEFAULT ''",
                "rung": "INTEGER NOT NULL DEFAULT 0",
                "breach": "TEXT NOT NULL DEFAULT ''",
                "health_reason": "TEXT NOT NULL DEFAULT ''",
                "restart_honoured": "INTEGER NOT NULL DEFAULT 0",
            },
            "tenants": {"paused": "INTEGER NOT NULL DEFAULT 0"},
            "tokens": {"expires": "REAL"},
        }
        added["cells"]["paused"] = "INTEGER NOT NULL DEFAULT 0"
        added["cells"]["restart_request"] = "INTEGER NOT NULL DEFAULT 0"
        for table, columns in added.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def close(self) -> None:
        self.audit_log.close()
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreError(f"state store {self.path}: {e}") from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as e:
                raise StoreError(f"state store {self.path}: {e}") from None

    # -- tenants -------------------------------------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> bool:
        """Store a tenant; True if it changed."""
        spec = tenant.model_dump_json(by_alias=True)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT spec FROM tenants WHERE name=?", (tenant.metadata.name,)
            ).fetchone()
            if row and row[0] == spec:
                return False
            db.execute(
                "INSERT INTO tenants(name, spec, created, updated) VALUES (?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, updated=excluded.updated",
                (tenant.metadata.name, spec, now, now),
            )
            return True

    def tenant(self, name: str) -> Tenant | None:
        rows = self._query("SELECT spec FROM tenants WHERE name=?", (name,))
        return Tenant.model_validate_json(rows[0][0]) if rows else None

    def tenants(self) -> list[Tenant]:
        """Every tenant, by name. Parsed once per change of the cells or tenants tables."""
        with self._lock:
            stamp = self._stamp()
            if self._tenants is None or self._tenants[0] != stamp:
                rows = self._query("SELECT spec FROM tenants ORDER BY name")
                self._tenants = (stamp, [Tenant.model_validate_json(r[0]) for r in rows])
            return list(self._tenants[1])

    def delete_tenant(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM tenants WHERE name=?", (name,))

    # -- tenant tokens -------------------------------------------------------------------------

    def add_token(self, token: StoredToken) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens(id, tenant, hash, created, expires) VALUES (?,?,?,?,?)",
                (token.id, token.tenant, token.hash, token.created, token.expires),
            )

    def token(self, token_id: str) -> StoredToken | None:
        rows = self._query(
            "SELECT id, tenant, hash, created, revoked, expires FROM tokens WHERE id=?", (token_id,)
        )
        return StoredToken(*rows[0]) if rows else None

    def tokens(self, tenant: str) -> list[StoredToken]:
        """The tenant's tokens, revoked ones included, oldest first."""
        rows = self._query(
            "SELECT id, tenant, hash, created, revoked, expires FROM tokens WHERE tenant=? "
            "ORDER BY created, id",
            (tenant,),
        )
        return [StoredToken(*r) for r in rows]

    def revoke_token(self, token_id: str, when: float) -> bool:
        """True if the token was live and is now revoked."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked=? WHERE id=? AND revoked IS NULL", (when, token_id)
            )
            return cur.rowcount > 0

    def forget_tokens(self, tenant: str) -> None:
        """Drop a removed tenant's tokens (their audit records stay)."""
        with self._tx() as db:
            db.execute("DELETE FROM tokens WHERE tenant=?", (tenant,))

    # -- cells ---------------------------------------------------------------------------------

    def put_cell(self, agent: Agent, spec_hash: str, subnet: str) -> tuple[int, bool]:
        """Store an agent's desired state; returns (generation, changed)."""
        spec = agent.model_dump_json(by_alias=True)
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT spec_hash, generation, deleted, subnet FROM cells "
                "WHERE tenant=? AND name=?",
                (agent.tenant, agent.name),
            ).fetchone()
            if row and row[0] == spec_hash and not row[2]:
                db.execute(
                    "UPDATE cells SET spec=? WHERE tenant=? AND name=?",
                    (spec, agent.tenant, agent.name),
                )
                return int(row[1]), False
            generation = int(row[1]) + 1 if row else 1
            db.execute(
                "INSERT INTO cells(tenant, name, spec, spec_hash, generation, subnet, deleted, "
                "keep_workspace, created, updated) VALUES (?,?,?,?,?,?,0,0,?,?) "
                "ON CONFLICT(tenant, name) DO UPDATE SET spec=excluded.spec, "
                "spec_hash=excluded.spec_hash, generation=excluded.generation, deleted=0, "
                "keep_workspace=0, updated=excluded.updated",
                (
                    agent.tenant,
                    agent.name,
                    spec,
                    spec_hash,
                    generation,
                    row[3] if row else subnet,
                    now,
                    now,
                ),
            )
            return generation, True

    def set_policy(self, key: CellKey, policy: str, digest: str) -> bool:
        """Store a cell's compiled egress policy; True if it changed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE cells SET policy=?, policy_digest=? "
                "WHERE tenant=? AND name=? AND policy_digest != ?",
                (policy, digest, *key, digest),
            )
            return cur.rowcount > 0

    def mark_deleted(self, key: CellKey, *, keep_workspace: bool) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE cells SET deleted=1, keep_workspace=?, updated=? "
                "WHERE tenant=? AND name=? AND deleted=0",
                (int(keep_workspace), time.time(), *key),
            )
            return cur.rowcount > 0

    def forget(self, key: CellKey) -> None:
        """Drop a removed cell's desired state and status (its audit records stay)."""
        with self._tx() as db:
            db.execute("DELETE FROM cells WHERE tenant=? AND name=?", key)
            db.execute("DELETE FROM status WHERE tenant=? AND name=?", key)
            self.changed.notify_all()

    def _stamp(self) -> tuple[Any, ...]:
        """The count of writes to the cells and tenants tables (see the ``changes`` table)."""
        return self._query("SELECT n FROM changes WHERE id = 1")[0]

    def _current(self) -> dict[CellKey, DesiredCell]:
        """The parsed desired state, shared (callers must not change it); read again after
        a write to the cells or tenants tables, parsing only the specs that changed."""
        with self._lock:
            stamp = self._stamp()
            if self._desired is not None and self._desired[0] == stamp:
                return self._desired[1]
            rows = self._query(
                "SELECT c.spec, c.spec_hash, c.generation, c.subnet, c.deleted, c.keep_workspace, "
                "c.created, c.policy, c.policy_digest, c.paused OR COALESCE(t.paused, 0), "
                "c.restart_request FROM cells c LEFT JOIN tenants t ON t.name = c.tenant"
            )
            out = {}
            known, self._agents = self._agents, {}
            for spec, h, gen, subnet, deleted, keep, created, policy, digest, paused, rr in rows:
                # Only a spec whose text changed is parsed again: one write, one parse.
                agent = known.get(spec) or Agent.model_validate_json(spec)
                self._agents[spec] = agent
                out[(agent.tenant, agent.name)] = DesiredCell(
                    agent,
                    h,
                    int(gen),
                    subnet,
                    bool(deleted),
                    bool(keep),
                    created,
                    policy,
                    digest,
                    bool(paused),
                    int(rr),
                )
            self._desired = (stamp, out)
            return out

    def desired(self) -> dict[CellKey, DesiredCell]:
        """Every stored cell. Parsed once per change of the cells or tenants tables."""
        return dict(self._current())

    def set_paused(self, key: CellKey, paused: bool) -> bool:
        """The kill switch of one cell; True if it changed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE cells SET paused=? WHERE tenant=? AND name=? AND paused != ?",
                (int(paused), *key, int(paused)),
            )
            return cur.rowcount > 0

    def set_tenant_paused(self, name: str, paused: bool) -> bool:
        """The kill switch of a tenant (its cells, and those deployed later); True if changed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tenants SET paused=? WHERE name=? AND paused != ?",
                (int(paused), name, int(paused)),
            )
            return cur.rowcount > 0

    def tenant_paused(self, name: str) -> bool:
        rows = self._query("SELECT paused FROM tenants WHERE name=?", (name,))
        return bool(rows and rows[0][0])

    def cell(self, key: CellKey) -> DesiredCell | None:
        return self._current().get(key)

    def subnets(self) -> list[str]:
        return [r[0] for r in self._query("SELECT subnet FROM cells")]

    def request_restart(self, key: CellKey) -> int:
        """Ask for the cell's agent to be restarted; returns the new request number."""
        with self._tx() as db:
            db.execute(
                "UPDATE cells SET restart_request = restart_request + 1 WHERE tenant=? AND name=?",
                key,
            )
            row = db.execute(
                "SELECT restart_request FROM cells WHERE tenant=? AND name=?", key
            ).fetchone()
            return int(row[0]) if row else 0

    # -- status --------------------------------------------------------------------------------

    _STATUS_COLUMNS = (
        "state, health, reason, since, observed_generation, failed_generation, "
        "container_id, ip, attempts, policy_digest, version, rung, breach, health_reason, "
        "restart_honoured"
    )

    def status(self, key: CellKey) -> CellStatus:
        rows = self._query(
            f"SELECT {self._STATUS_COLUMNS} FROM status WHERE tenant=? AND name=?",  # noqa: S608
            key,
        )
        return _status(key, rows[0]) if rows else CellStatus(*key)

    def statuses(self, tenant: str | None = None) -> dict[CellKey, CellStatus]:
        """Every stored status (of one tenant, if given) in one query; a cell missing here
        has the default status, as ``status`` gives it."""
        sql = f"SELECT tenant, name, {self._STATUS_COLUMNS} FROM status"  # noqa: S608
        rows = (
            self._query(sql + " WHERE tenant=?", (tenant,))
            if tenant is not None
            else self._query(sql)
        )
        return {(r[0], r[1]): _status((r[0], r[1]), r[2:]) for r in rows}

    def set_status(self, key: CellKey, **changes: Unpack[StatusChanges]) -> CellStatus:
        """Update some status fields; bumps ``version`` and wakes waiters when anything changed.

        A change of state must be one ``plan.TRANSITIONS`` allows (InvalidTransition: a bug).
        """
        with self._lock:
            old = self.status(key)
            if "state" in changes:
                changes["state"] = check_transition(old.state, changes["state"])
            if ("state" in changes and changes["state"] != old.state) or (
                "health" in changes and changes["health"] != old.health
            ):
                changes.setdefault("since", time.time())
            merged = {**old.__dict__, **changes}
            if merged == old.__dict__:
                return old
            merged["version"] = old.version + 1
            new = CellStatus(**merged)
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO status(tenant, name, state, health, reason, since, "
                    "observed_generation, failed_generation, container_id, ip, attempts, "
                    "policy_digest, version, rung, breach, health_reason, restart_honoured) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        new.tenant,
                        new.name,
                        new.state,
                        new.health,
                        new.reason,
                        new.since,
                        new.observed_generation,
                        new.failed_generation,
                        new.container_id,
                        new.ip,
                        json.dumps([[a.time, a.step] for a in new.attempts]),
                        new.policy_digest,
                        new.version,
                        new.rung,
                        new.breach,
                        new.health_reason,
                        new.restart_honoured,
                    ),
                )
            self.changed.notify_all()
            return new

    def wait_status(self, key: CellKey, after_version: int, timeout: float) -> CellStatus:
        """Block until the status of ``key`` has a version above ``after_version``, or timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                st = self.status(key)
                gone = not self._query("SELECT 1 FROM cells WHERE tenant=? AND name=?", key)
                remaining = deadline - time.monotonic()
                if st.version > after_version or gone or remaining <= 0:
                    return st
                self.changed.wait(remaining)

    # -- secrets -------------------------------------------------------------------------------

    def put_secret(self, tenant: str, name: str, sealed: bytes) -> SecretRow:
        """Store a sealed value (version 1, or the next version of an existing one)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO secrets(tenant, name, sealed, version, created, updated) "
                "VALUES (?,?,?,1,?,?) ON CONFLICT(tenant, name) DO UPDATE SET "
                "sealed=excluded.sealed, version=secrets.version + 1, updated=excluded.updated",
                (tenant, name, sealed, now, now),
            )
            row = db.execute(
                "SELECT tenant, name, sealed, version, created, updated FROM secrets "
                "WHERE tenant=? AND name=?",
                (tenant, name),
            ).fetchone()
        return SecretRow(row[0], row[1], bytes(row[2]), int(row[3]), row[4], row[5])

    def secret(self, tenant: str, name: str) -> SecretRow | None:
        rows = self.secrets(tenant, name)
        return rows[0] if rows else None

    def secrets(self, tenant: str, name: str | None = None) -> list[SecretRow]:
        sql = "SELECT tenant, name, sealed, version, created, updated FROM secrets WHERE tenant=?"
        args: tuple[Any, ...] = (tenant,)
        if name is not None:
            sql += " AND name=?"
            args = (tenant, name)
        rows = self._query(sql + " ORDER BY name", args)
        return [SecretRow(r[0], r[1], bytes(r[2]), int(r[3]), r[4], r[5]) for r in rows]

    def delete_secret(self, tenant: str, name: str) -> int:
        """Remove a secret; returns the version it had (0 if there was none)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM secrets WHERE tenant=? AND name=?", (tenant, name)
            ).fetchone()
            db.execute("DELETE FROM secrets WHERE tenant=? AND name=?", (tenant, name))
            return int(row[0]) if row else 0

    # -- audit (delegated to the trail's own module) ------------------------------------------

    def audit(self, record: AuditRecord) -> None:
        """Append one record; returns once it is fsynced."""
        self.audit_log.append(record)

    def audit_many(self, records: list[AuditRecord]) -> None:
        """Append records in order, in one durable commit (shared with concurrent appenders)."""
        self.audit_log.append_many(records)

    def wait_audit(self, after_id: int, timeout: float) -> None:
        """Block until an audit record newer than ``after_id`` exists, or timeout."""
        self.audit_log.wait(after_id, timeout)

    def last_audit_id(self) -> int:
        return self.audit_log.last_id()

    def last_audit_time(self, key: CellKey, kind: str) -> float:
        return self.audit_log.last_time(key[0], key[1], (kind,))

    def audit_records(
        self,
        *,
        tenant: str | None = None,
        cell: str | None = None,
        kind: str | tuple[str, ...] | None = None,
        decision: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        after_id: int = 0,
    ) -> list[AuditRecord]:
        """The newest ``limit`` matches in id order; after ``after_id``: the oldest newer ones."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
        return self.audit_log.query(
            AuditQuery(tenant, cell, kinds, decision, actor, since, until, limit, after_id)
        )


def _status(key: CellKey, r: tuple[Any, ...]) -> CellStatus:
    return CellStatus(
        key[0],
        key[1],
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        _attempts(r[8]),
        r[9],
        r[10],
        r[11],
        r[12],
        r[13],
        r[14],
    )


def _attempts(text: str) -> tuple[Attempt, ...]:
    """The stored ladder memory; a store from an older release kept bare restart times."""
    out = []
    for item in json.loads(text):
        if isinstance(item, list):
            out.append(Attempt(float(item[0]), str(item[1])))
        else:
            out.append(Attempt(float(item), "restart"))
    return tuple(out)
