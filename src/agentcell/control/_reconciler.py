"""The reconciler: the only thing that changes the runtime.

It wakes on API writes, on engine events and on a slow resync; observes the engine by
labels; asks the planner for actions; executes each through one applier, which records
one audit record per action. Actions on different cells run in parallel; one cell has
at most one action in flight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from agentcell.control._auth import GateTokens
from agentcell.control._store import AuditRecord, Store
from agentcell.errors import AgentcellError, DeployStepError, FirewallError
from agentcell.plan import (
    Action,
    ActionKind,
    CellKey,
    DesiredCell,
    ObservedCell,
    Progress,
    allocate_subnet,
    plan,
)
from agentcell.runtime import DockerDriver, Firewall, probe

__all__ = ["Reconciler", "ReconcilerConfig"]

log = logging.getLogger("agentcell.reconciler")


@dataclass(frozen=True)
class ReconcilerConfig:
    subnet_pool: str = "10.213.0.0/16"
    subnet_prefix: int = 27
    resync_seconds: float = 30.0
    workers: int = 8


class Reconciler:
    """Owns the background threads: the loop, the engine event watcher and the prober."""

    def __init__(
        self,
        store: Store,
        driver: DockerDriver,
        firewall: Firewall,
        config: ReconcilerConfig,
        tokens: GateTokens,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.driver = driver
        self.firewall = firewall
        self.config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="agentcell-apply"
        )
        self._busy: set[CellKey] = set()
        self._busy_lock = threading.Lock()
        self._orphans_reported: set[CellKey] = set()
        self._firewall_error: str | None = None
        self._health = _HealthTracker()
        self._threads: list[threading.Thread] = []
        self._subnet_lock = threading.Lock()
        self._followers: dict[CellKey, str] = {}
        self._followers_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in (
            (self._loop, "loop"),
            (self._watch_events, "events"),
            (self._probe_loop, "prober"),
        ):
            t = threading.Thread(target=target, name=f"agentcell-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    def allocate_subnet(self) -> str:
        """A free subnet for a new cell: not used by any engine network nor any stored cell."""
        with self._subnet_lock:
            used = self.driver.used_subnets() + self.store.subnets()
            return allocate_subnet(self.config.subnet_pool, self.config.subnet_prefix, used)

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.resync_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile_once()
            except Exception:  # keep the loop alive; the next wake retries
                log.exception("reconcile pass failed")

    def reconcile_once(self) -> None:
        self._check_firewall()
        observed = self.driver.observe()
        desired = self.store.desired()
        progress = {}
        for key in desired:
            st = self.store.status(key)
            progress[key] = Progress(st.failed_generation, st.restarts, st.policy_digest)
        actions = plan(desired, observed, progress, now=time.time())
        acted = {a.key for a in actions}
        for key, want in desired.items():
            if key not in acted:
                self._observe_quiet(want, observed.get(key))
        for action in actions:
            self._dispatch(action, desired.get(action.key))
        self._follow_gates(observed)

    def _check_firewall(self) -> None:
        try:
            if not self.firewall.check():
                self.firewall.ensure()
            self._firewall_error = None
        except FirewallError as e:
            if self._firewall_error != str(e):
                self._audit("", "", "firewall", "deny", str(e))
            self._firewall_error = str(e)

    def _observe_quiet(self, want: DesiredCell, have: ObservedCell | None) -> None:
        """Status of a cell the planner left alone."""
        key = want.key
        if want.deleted:
            if have is None:
                self.store.forget(key)
                self._health.forget(key)
            return
        st = self.store.status(key)
        agent = have.agent if have else None
        if st.failed_generation == want.generation:
            # A failed replacement leaves the previous generation running: say both.
            old_runs = agent is not None and agent.state == "running"
            if agent is not None and old_runs and st.state != "running":
                self.store.set_status(key, state="running", observed_generation=agent.generation)
            elif not old_runs and st.state != "failed":
                self.store.set_status(key, state="failed")
            return
        if agent is not None and agent.state == "running" and st.state not in ("deploying",):
            changes: dict[str, object] = {
                "state": "running",
                "container_id": agent.id,
                "ip": agent.ip,
                "observed_generation": agent.generation,
            }
            if st.state != "running":
                changes["reason"] = "agent running"
            self.store.set_status(key, **changes)

    def _dispatch(self, action: Action, want: DesiredCell | None) -> None:
        if action.kind is ActionKind.REPORT_ORPHAN:
            if action.key not in self._orphans_reported:
                self._orphans_reported.add(action.key)
                self._audit(
                    *action.key, "lifecycle", "report", action.reason, {"action": "report-orphan"}
                )
            return
        with self._busy_lock:
            if action.key in self._busy:
                return
            self._busy.add(action.key)

        def run() -> None:
            try:
                assert want is not None
                self._apply(action, want)
            except Exception as e:  # the applier must never kill the worker
                log.exception("applying %s failed", action)
                self.store.set_status(action.key, state="failed", reason=f"internal error: {e}")
            finally:
                with self._busy_lock:
                    self._busy.discard(action.key)
                self.wake()

        self._pool.submit(run)

    # -- the applier: the one place effects happen --------------------------------------------

    def _apply(self, action: Action, want: DesiredCell) -> None:
        key = action.key
        details = {"action": str(action.kind), "generation": want.generation}
        if action.kind is ActionKind.DEPLOY:
            if self._firewall_error is not None:
                reason = f"step 'install host firewall' failed: {self._firewall_error}"
                self.store.set_status(
                    key, state="failed", reason=reason, failed_generation=want.generation
                )
                self._audit(*key, "lifecycle", "deny", reason, details)
                return
            self.store.set_status(key, state="deploying", reason=f"{action.reason}: starting")

            def step(name: str) -> None:
                self.store.set_status(key, reason=f"{action.reason}: {name}")

            health = want.agent.spec.health

            def ready(ip: str) -> tuple[bool, str]:
                return self._check_health(key, want, ip)

            try:
                outcome = self.driver.deploy(
                    want,
                    step,
                    ready if health else None,
                    allocate=self.allocate_subnet,
                    gate_token=self.tokens.token(*key),
                )
            except DeployStepError as e:
                self.store.set_status(
                    key, state="failed", reason=str(e), failed_generation=want.generation
                )
                self._audit(*key, "lifecycle", "fail", str(e), {**details, "step": e.step})
                return
            attrs = self.driver.inspect_agent(key) or {}
            nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
            ip = next((n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), "")
            self._health.reset(key)
            self.store.set_status(
                key,
                state="running",
                reason="deployed",
                container_id=outcome.container_id,
                ip=ip,
                observed_generation=want.generation,
                health="starting" if want.agent.spec.health else "none",
                restarts=(),
            )
            self._audit(
                *key,
                "lifecycle",
                "allow",
                action.reason,
                {
                    **details,
                    "container": outcome.container_id[:12],
                    "replaced": (outcome.replaced or "")[:12],
                },
            )
        elif action.kind is ActionKind.START:
            st = self.store.status(key)
            self.store.set_status(key, state="restarting", reason=action.reason)
            restarts = (*st.restarts, time.time())[-50:]
            try:
                self.driver.start(key)
            except AgentcellError as e:
                self.store.set_status(
                    key, state="failed", reason=f"restart failed: {e}", restarts=restarts
                )
                self._audit(*key, "lifecycle", "fail", f"restart failed: {e}", details)
                return
            self._health.reset(key)
            self.store.set_status(
                key,
                state="running",
                reason=f"restarted: {action.reason}",
                restarts=restarts,
                health="starting" if want.agent.spec.health else "none",
            )
            self._audit(*key, "lifecycle", "allow", f"restarted: {action.reason}", details)
        elif action.kind is ActionKind.RELOAD:
            try:
                digest = self.driver.load_policy(key, self.tokens.token(*key), want.policy)
            except AgentcellError as e:
                self.store.set_status(key, reason=f"policy not loaded: {e}")
                self._audit(*key, "policy", "fail", f"policy not loaded: {e}", details)
                return
            self.store.set_status(key, policy_digest=digest, reason=f"policy {digest} loaded")
            self._audit(*key, "policy", "allow", "policy loaded", {**details, "digest": digest})
        elif action.kind is ActionKind.GIVE_UP:
            self.store.set_status(
                key, state="failed", reason=action.reason, failed_generation=want.generation
            )
            self._audit(*key, "lifecycle", "fail", action.reason, details)
        elif action.kind is ActionKind.REMOVE:
            self.store.set_status(key, state="removing", reason="removing")
            removed = self.driver.remove(key, keep_workspace=want.keep_workspace)
            self._audit(
                *key,
                "lifecycle",
                "allow",
                action.reason,
                {**details, "removed": removed, "kept_workspace": want.keep_workspace},
            )

    def _audit(
        self,
        tenant: str,
        cell: str,
        kind: str,
        decision: str,
        reason: str,
        details: dict[str, object] | None = None,
    ) -> None:
        self.store.audit(
            AuditRecord(tenant, cell, "reconciler", kind, decision, reason, dict(details or {}))
        )

    # -- engine events -----------------------------------------------------------------------

    def _watch_events(self) -> None:
        while not self._stop.is_set():
            try:
                for ev in self.driver.events(until=self._stop.is_set):
                    attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                    if attrs.get("agentcell.role") == "egress" and ev.get("Action") == "start":
                        # A gate that (re)starts has no policy: load it again.
                        key = (attrs.get("agentcell.tenant", ""), attrs.get("agentcell.cell", ""))
                        with self._busy_lock:
                            ours = key in self._busy  # a deploy started it and loads it
                        if not ours and self.store.cell(key) is not None:
                            self.store.set_status(key, policy_digest="")
                    if (
                        "agentcell.tenant" in attrs
                        or str(attrs.get("name", "")).startswith("agentcell-")
                        or ev.get("Type") == "network"
                    ):
                        self.wake()
            except Exception:  # engine restarted or unreachable: retry with a pause
                log.warning("engine event stream lost; reconnecting")
                self.wake()
                self._stop.wait(1.0)

    # -- egress decision records --------------------------------------------------------------

    def _follow_gates(self, observed: dict[CellKey, ObservedCell]) -> None:
        """One follower per running gate, copying its decision records into the audit trail."""
        for key, cell in observed.items():
            gate = cell.gate
            if gate is None or gate.state != "running":
                continue
            with self._followers_lock:
                if self._followers.get(key) == gate.id:
                    continue
                self._followers[key] = gate.id
            threading.Thread(
                target=self._follow, args=(key, gate.id), name="agentcell-egress-log", daemon=True
            ).start()

    def _follow(self, key: CellKey, gate_id: str) -> None:
        last = self.store.last_audit_time(key, "egress")
        try:
            for line in _lines(self.driver.gate_logs(key, since=int(last))):
                record = _egress_record(line)
                if record is None or record.time <= last:
                    continue
                last = record.time
                self.store.audit(
                    AuditRecord(
                        key[0],
                        key[1],
                        "egress-gate",
                        "egress",
                        record.decision,
                        record.reason,
                        record.details,
                        record.time,
                    )
                )
        except AgentcellError as e:
            log.info("stopped following the gate of %s/%s: %s", *key, e)
        except Exception as e:  # the engine went away mid-stream; the next pass starts again
            log.warning("lost the decision records of %s/%s: %s", *key, e)
            self._stop.wait(1.0)  # do not spin on an engine that keeps failing
        finally:
            with self._followers_lock:
                if self._followers.get(key) == gate_id:
                    del self._followers[key]
            if not self._stop.is_set():
                self.wake()

    # -- health probes -----------------------------------------------------------------------

    def _probe_loop(self) -> None:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentcell-probe") as pool:
            while not self._stop.is_set():
                now = time.monotonic()
                for key, want in self.store.desired().items():
                    health = want.agent.spec.health
                    st = self.store.status(key)
                    if health is None or st.state != "running" or not st.ip or want.deleted:
                        continue
                    if self._health.due(key, now, health.interval, st.health):
                        pool.submit(self._probe_one, key, want, st.ip)
                self._stop.wait(0.05)

    def _check_health(self, key: CellKey, want: DesiredCell, ip: str) -> tuple[bool, str]:
        """One probe of the cell's health check: (passed, what happened)."""
        health = want.agent.spec.health
        assert health is not None
        if health.exec is not None:
            try:
                exec_id, chunks = self.driver.exec(
                    key, health.exec.command, user=want.agent.spec.user
                )
                for _ in chunks:
                    pass
                code = self.driver.exec_exit_code(exec_id)
                ok, what = code == 0, f"exec: exit code {code}"
            except AgentcellError as e:
                ok, what = False, f"exec: {e}"
        else:
            ok, what = probe(health, ip)
        return ok, what

    def _probe_one(self, key: CellKey, want: DesiredCell, ip: str) -> None:
        health = want.agent.spec.health
        assert health is not None
        ok, what = self._check_health(key, want, ip)
        verdict = self._health.record(
            key,
            ok,
            time.monotonic(),
            health.retries,
            health.start_period + health.interval * health.retries,
        )
        if verdict is not None:
            st = self.store.status(key)
            if st.state == "running" and st.health != verdict:
                self.store.set_status(key, health=verdict, reason=f"health {verdict}: {what}")
                self._audit(*key, "health", "allow" if verdict == "healthy" else "deny", what)


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    buf = b""
    for chunk in chunks:
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            yield line.decode(errors="replace")


def _egress_record(line: str) -> AuditRecord | None:
    """A gate's JSON decision line as an audit record (tenant and cell filled in later)."""
    try:
        data = json.loads(line)
        when = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00")).timestamp()
        decision = "allow" if data["decision"] == "allow" else "deny"
        reason = str(data["reason"])
    except (ValueError, KeyError, TypeError):
        return None
    details = {k: v for k, v in data.items() if k not in ("time", "decision", "reason")}
    return AuditRecord("", "", "egress-gate", "egress", decision, reason, details, when)


class _HealthTracker:
    """Per-cell probe bookkeeping: when the next probe is due and what the streak says."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[CellKey, float] = {}
        self._fails: dict[CellKey, int] = {}
        self._started: dict[CellKey, float] = {}
        self._inflight: set[CellKey] = set()

    def reset(self, key: CellKey) -> None:
        with self._lock:
            self._next.pop(key, None)
            self._fails.pop(key, None)
            self._started[key] = time.monotonic()

    def forget(self, key: CellKey) -> None:
        self.reset(key)
        with self._lock:
            self._started.pop(key, None)

    def due(self, key: CellKey, now: float, interval: float, health: str) -> bool:
        with self._lock:
            if key in self._inflight or now < self._next.get(key, 0.0):
                return False
            self._inflight.add(key)
            self._started.setdefault(key, now)
            # While starting, probe quickly so a ready cell is seen ready at once.
            self._next[key] = now + (0.05 if health in ("starting", "none") else interval)
            return True

    def record(self, key: CellKey, ok: bool, now: float, retries: int, grace: float) -> str | None:
        with self._lock:
            self._inflight.discard(key)
            if ok:
                self._fails[key] = 0
                return "healthy"
            self._fails[key] = self._fails.get(key, 0) + 1
            starting = now - self._started.get(key, now) < grace
            if starting:
                return None
            return "unhealthy" if self._fails[key] >= retries else None
