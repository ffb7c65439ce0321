"""The prober: one scheduler for every periodic check of a running cell, on one thread
with a small pool: its health check, its sidecars' liveness, and its isolation canary.
Each check's verdict goes to the store and the audit trail; the loop is woken when a
verdict calls for an action (the planner decides which).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from agentcell.control._audit import AuditDecision, AuditKind
from agentcell.control._store import Store
from agentcell.errors import AgentcellError
from agentcell.plan import (
    UP,
    CellKey,
    DesiredCell,
    ObservedCell,
    ObservedContainer,
    StatusChanges,
    health_verdict,
)
from agentcell.policy import SETUP_REASONS
from agentcell.runtime import Backend, probe, probe_sidecar

__all__ = ["SIDECAR_RETRIES", "SIDECAR_SECONDS", "Prober"]

log = logging.getLogger("agentcell.prober")


class Audit(Protocol):
    """Writes one audit record of the reconciler's (the reconciler's ``_audit``)."""

    def __call__(
        self,
        tenant: str,
        cell: str,
        kind: AuditKind,
        decision: AuditDecision,
        reason: str,
        details: dict[str, object] | None = None,
    ) -> None: ...


SIDECAR_SECONDS = 10.0
"""How often each running sidecar's liveness is probed."""
SIDECAR_RETRIES = 3


class Prober:
    """Runs each cell's checks when due (``run``, on its own thread) and keeps what they
    remember: the health streaks, when each check is next due, the sidecars found stuck."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        pool: str,
        canary_seconds: float,
        stop: threading.Event,
        wake_loop: Callable[[], None],
        audit: Audit,
    ) -> None:
        self.store, self.backend, self.pool = store, backend, pool
        self.canary_seconds = canary_seconds
        self._stop, self.wake_loop, self._audit = stop, wake_loop, audit
        self.health = _HealthTracker()
        self._wake_probes = threading.Event()
        self.health.wake = self._wake_probes.set
        self._canary_due: dict[CellKey, float] = {}
        self._sidecar_lock = threading.Lock()
        self._sidecars: dict[CellKey, tuple[ObservedContainer, ...]] = {}
        self._sidecar_due: dict[CellKey, float] = {}
        self._sidecar_fails: dict[str, int] = {}
        self.stuck: dict[CellKey, tuple[str, ...]] = {}
        """Roles of running sidecars that stopped answering, per cell (the planner's input)."""

    def wake(self) -> None:
        self._wake_probes.set()

    def saw(self, observed: dict[CellKey, ObservedCell]) -> None:
        """What a pass observed of the desired cells: their running sidecars get probed."""
        with self._sidecar_lock:
            self._sidecars = {
                key: tuple(
                    c
                    for c in cell.containers
                    if c.role in ("egress", "dockerproxy") and c.state == "running"
                )
                for key, cell in observed.items()
            }
            alive = {c.id for cs in self._sidecars.values() for c in cs}
            for cid in set(self._sidecar_fails) - alive:
                del self._sidecar_fails[cid]

    def forget(self, key: CellKey) -> None:
        """Drop what is kept of a cell that is gone."""
        self.health.forget(key)
        for memory in (self._canary_due, self._sidecar_due, self.stuck):
            memory.pop(key, None)

    def run(self) -> None:
        """Runs each cell's health probe and canary when due; sleeps until the next one is."""
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentcell-probe") as pool:
            while not self._stop.is_set():
                now = time.monotonic()
                soonest = now + 1.0
                for key, want in self.store.desired().items():
                    if want.deleted or want.paused:
                        continue
                    soonest = min(soonest, self._schedule(pool, key, want, now))
                self._wake_probes.wait(max(0.01, soonest - time.monotonic()))
                self._wake_probes.clear()

    def _schedule(
        self, pool: ThreadPoolExecutor, key: CellKey, want: DesiredCell, now: float
    ) -> float:
        """Submit the cell's due checks; returns when its next check is due."""
        health = want.agent.spec.health
        soonest = now + 1.0
        if health is not None:
            due = self.health.next_due(key)
            if due <= now:
                st = self.store.status(key)
                if st.ip and st.state in UP and self.health.claim(key, now, 0.2):
                    quick = st.health in ("starting", "none")
                    self.health.schedule(key, now + (0.05 if quick else health.interval))
                    pool.submit(self._probe_one, key, want, st.ip)
                else:  # not up (deploying, recovering, failed): look again soon
                    self.health.schedule(key, now + 0.5)
            soonest = min(soonest, self.health.next_due(key))
        with self._sidecar_lock:
            sidecars = self._sidecars.get(key, ())
        if sidecars:
            due = self._sidecar_due.setdefault(key, now + SIDECAR_SECONDS)
            if due <= now:
                self._sidecar_due[key] = now + SIDECAR_SECONDS
                pool.submit(self._sidecars_one, key, sidecars)
            soonest = min(soonest, self._sidecar_due[key])
        if self.canary_seconds > 0:
            due = self._canary_due.setdefault(key, now + self.canary_seconds)
            if due <= now:
                self._canary_due[key] = now + self.canary_seconds
                st = self.store.status(key)
                if st.state in UP:
                    pool.submit(self._canary_one, key)
            soonest = min(soonest, self._canary_due[key])
        return soonest

    def check_health(self, key: CellKey, want: DesiredCell, ip: str) -> tuple[bool, str]:
        """One probe of the cell's health check: (passed, what happened)."""
        health = want.agent.spec.health
        assert health is not None
        if health.exec is not None:
            try:
                exec_id, chunks = self.backend.exec(
                    key, health.exec.command, user=want.agent.spec.user
                )
                for _ in chunks:
                    pass
                code = self.backend.exec_exit_code(exec_id)
                ok, what = code == 0, f"exec: exit code {code}"
            except AgentcellError as e:
                ok, what = False, f"exec: {e}"
        else:
            ok, what = probe(health, ip)
        return ok, what

    def _probe_one(self, key: CellKey, want: DesiredCell, ip: str) -> None:
        health = want.agent.spec.health
        assert health is not None
        try:
            ok, what = self.check_health(key, want, ip)
        finally:
            self.health.release(key)
        grace = health.start_period + health.interval * health.retries
        verdict = self.health.record(key, ok, time.monotonic(), health.retries, grace)
        if verdict is None:
            return
        st = self.store.status(key)
        if st.state not in UP or st.health == verdict:
            return
        changes: StatusChanges = {"health": verdict, "health_reason": what}
        if verdict == "unhealthy":
            changes["state"], changes["reason"] = "unhealthy", f"health check failing: {what}"
        elif st.state in ("running", "unhealthy"):
            changes["state"], changes["reason"] = "healthy", "agent healthy"
            if st.rung:
                changes["rung"] = 0  # well again: the ladder starts over
        self.store.set_status(key, **changes)
        self._audit(
            *key,
            AuditKind.HEALTH,
            AuditDecision.ALLOW if verdict == "healthy" else AuditDecision.DENY,
            what,
        )
        if verdict == "unhealthy":
            self.wake_loop()  # the ladder acts on it

    def _sidecars_one(self, key: CellKey, sidecars: tuple[ObservedContainer, ...]) -> None:
        """Liveness of the cell's running sidecars; one that stops answering gets replaced."""
        for c in sidecars:
            ok, what = probe_sidecar(key[0], c)
            verdict, fails = health_verdict(
                ok, self._sidecar_fails.get(c.id, 0), SIDECAR_RETRIES, starting=False
            )
            self._sidecar_fails[c.id] = fails
            if verdict == "unhealthy" and c.role not in self.stuck.get(key, ()):
                self.stuck[key] = (*self.stuck.get(key, ()), c.role)
                self._audit(
                    *key, AuditKind.SIDECAR, AuditDecision.DENY, what, {"container": c.name}
                )
                self.wake_loop()

    def _canary_one(self, key: CellKey) -> None:
        """Run the isolation canary; a breach puts the cell on the ladder (recreate)."""
        try:
            decisions = self.backend.canary(key, pool=self.pool)
        except AgentcellError as e:
            log.info("canary of %s/%s not run: %s", *key, e)
            return
        bad = [d.reason for d in decisions if not d.allow]
        if bad and all(r in SETUP_REASONS for r in bad):
            # It could not look (the agent is being replaced): no verdict; the next run will.
            log.info("canary of %s/%s could not look: %s", *key, "; ".join(bad))
            return
        st = self.store.status(key)
        if bad:
            breach = "; ".join(bad)
            if st.breach != breach:
                self.store.set_status(key, breach=breach, reason=f"isolation breach: {breach}")
                self._audit(
                    *key,
                    AuditKind.ISOLATION,
                    AuditDecision.DENY,
                    breach,
                    {"checks": len(decisions)},
                )
                self.wake_loop()
        elif st.breach:
            self.store.set_status(key, breach="")
            self._audit(*key, AuditKind.ISOLATION, AuditDecision.ALLOW, "canary passes again")


class _HealthTracker:
    """Per-cell probe bookkeeping: when the next probe is due, and the failure streak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[CellKey, float] = {}
        self._fails: dict[CellKey, int] = {}
        self._started: dict[CellKey, float] = {}
        self._inflight: set[CellKey] = set()
        self.wake: Callable[[], None] = lambda: None

    def reset(self, key: CellKey) -> None:
        """The agent (re)started: probe at once, forget the streak, start the grace period."""
        with self._lock:
            self._next.pop(key, None)
            self._fails.pop(key, None)
            self._started[key] = time.monotonic()
        self.wake()

    def forget(self, key: CellKey) -> None:
        with self._lock:
            self._next.pop(key, None)
            self._fails.pop(key, None)
            self._started.pop(key, None)

    def next_due(self, key: CellKey) -> float:
        with self._lock:
            return self._next.get(key, 0.0)

    def schedule(self, key: CellKey, when: float) -> None:
        with self._lock:
            self._next[key] = when

    def claim(self, key: CellKey, now: float, _: float) -> bool:
        """True if no probe of ``key`` is in flight (and marks one in flight)."""
        with self._lock:
            if key in self._inflight:
                return False
            self._inflight.add(key)
            self._started.setdefault(key, now)
            return True

    def release(self, key: CellKey) -> None:
        with self._lock:
            self._inflight.discard(key)

    def record(self, key: CellKey, ok: bool, now: float, retries: int, grace: float) -> str | None:
        with self._lock:
            starting = now - self._started.get(key, now) < grace
            verdict, self._fails[key] = health_verdict(
                ok, self._fails.get(key, 0), retries, starting=starting
            )
            return verdict
