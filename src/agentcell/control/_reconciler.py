"""The reconciler: the only thing that changes the runtime.

It wakes on API writes, on engine events and on a slow resync; observes the engine by
labels; asks the planner for actions; executes each through one applier, which records
one audit record per action. Actions on different cells run in parallel; one cell has
at most one action in flight. Deploys go through ``_applier``; the periodic checks are
``_prober``'s, copying sidecar records ``_records``'s.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from agentcell.control._applier import apply_deploy
from agentcell.control._audit import AuditDecision, AuditKind
from agentcell.control._auth import GateTokens
from agentcell.control._notify import Notifier
from agentcell.control._prober import Prober
from agentcell.control._records import RecordFollowers
from agentcell.control._store import AuditRecord, CellStatus, Store
from agentcell.errors import AgentcellError, DeployStepError, FirewallError
from agentcell.plan import (
    Action,
    ActionKind,
    Attempt,
    CellKey,
    DeployMode,
    DesiredCell,
    ObservedCell,
    Progress,
    StatusChanges,
    allocate_subnet,
    backoff,
    observed_status,
    parse_pool,
    plan,
)
from agentcell.policy import reserved_name
from agentcell.runtime import Backend, Firewall

__all__ = ["Reconciler", "ReconcilerConfig"]

log = logging.getLogger("agentcell.reconciler")


@dataclass(frozen=True)
class ReconcilerConfig:
    subnet_pool: str = "10.213.0.0/16"
    subnet_prefix: int = 27
    resync_seconds: float = 30.0
    workers: int = 8
    canary_seconds: float = 60.0
    """How often each cell's isolation canary runs (0: never)."""


class Reconciler:
    """Owns the background threads: the loop, the engine event watcher and the prober."""

    def __init__(
        self,
        store: Store,
        driver: Backend,
        firewall: Firewall,
        config: ReconcilerConfig,
        tokens: GateTokens,
        notifier: Notifier | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier or Notifier(None, store)
        self.tokens = tokens
        self.driver = driver
        self.firewall = firewall
        self.config = config
        self._wake = threading.Condition()
        self._woken = False
        self._wakeups: list[float] = []
        """Monotonic times at which the loop runs a pass (backoffs, settling): one heap the
        loop sleeps against, instead of a timer thread per wish."""
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=config.workers, thread_name_prefix="agentcell-apply"
        )
        self._busy: set[CellKey] = set()
        self._finished: dict[CellKey, float] = {}
        self._busy_lock = threading.Lock()
        self._orphans_reported: set[CellKey] = set()
        self._firewall_error: str | None = None
        self._threads: list[threading.Thread] = []
        self._subnet_lock = threading.Lock()
        self._handed_out: set[str] = set()
        self._repairs: dict[CellKey, tuple[int, float]] = {}
        """Cells whose repair deploy failed: (failures in a row, earliest next try)."""
        self._records = RecordFollowers(store, driver, self._stop, self.wake)
        self.prober = Prober(
            store,
            driver,
            pool=config.subnet_pool,
            canary_seconds=config.canary_seconds,
            stop=self._stop,
            wake_loop=self.wake,
            audit=self._audit,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in (
            (self._loop, "loop"),
            (self._watch_events, "events"),
            (self.prober.run, "prober"),
        ):
            t = threading.Thread(target=target, name=f"agentcell-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        self.prober.wake()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """Run a pass now (or as soon as the one running ends)."""
        with self._wake:
            self._woken = True
            self._wake.notify()

    def wake_at(self, when: float) -> None:
        """Run a pass at ``when`` (``time.monotonic()``), unless one runs before for another
        reason and, at that time, another."""
        with self._wake:
            heapq.heappush(self._wakeups, when)
            self._wake.notify()

    def _sleep(self) -> None:
        """Until woken, a wake-up time comes, or the resync interval passes."""
        deadline = time.monotonic() + self.config.resync_seconds
        with self._wake:
            while not self._woken and not self._stop.is_set():
                now = time.monotonic()
                if self._wakeups and self._wakeups[0] <= now:
                    break
                if now >= deadline:
                    break
                until = min(deadline, self._wakeups[0]) if self._wakeups else deadline
                self._wake.wait(until - now)
            now = time.monotonic()
            while self._wakeups and self._wakeups[0] <= now:
                heapq.heappop(self._wakeups)
            self._woken = False

    @contextmanager
    def hold(self, key: CellKey) -> Iterator[bool]:
        """Keep the applier off ``key`` (yields True), or False if an action on it is in flight.

        For work on a cell's engine objects from outside the loop (orphan removal): while
        held, no action on the cell starts; passes skip it and the next one after does it.
        """
        with self._busy_lock:
            held = key not in self._busy
            if held:
                self._busy.add(key)
        try:
            yield held
        finally:
            if held:
                with self._busy_lock:
                    self._busy.discard(key)
                self._orphans_reported.discard(key)  # report it again should it come back
                self.wake()

    def allocate_egress_subnet(self) -> str:
        """A free subnet for a tenant's egress network: room for a gate per cell of the
        tenant (a /24, 253 gates, unless the pool or the cell size says otherwise)."""
        pool = parse_pool(self.config.subnet_pool, self.config.subnet_prefix)
        prefix = max(pool.prefixlen, min(24, self.config.subnet_prefix))
        return self.allocate_subnet(prefix)

    def allocate_subnet(self, prefix: int | None = None) -> str:
        """A free subnet for a new cell: not used by any engine network nor any stored cell.

        One handed out stays taken until the store or the engine holds it: concurrent
        applies store their cells after choosing, and must not choose the same one.
        """
        with self._subnet_lock:
            used = self.driver.used_subnets() + self.store.subnets()
            self._handed_out -= set(used)
            subnet = allocate_subnet(
                self.config.subnet_pool,
                prefix or self.config.subnet_prefix,
                [*used, *self._handed_out],
            )
            self._handed_out.add(subnet)
            return subnet

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sleep()
            if self._stop.is_set():
                return
            try:
                self.reconcile_once()
            except Exception:  # keep the loop alive; the next wake retries
                log.exception("reconcile pass failed")

    def reconcile_once(self) -> None:
        self._check_firewall()
        seen_at = time.monotonic()
        observed = self.driver.observe()
        desired = self.store.desired()
        progress = {
            key: _progress(self.store.status(key), self.prober.stuck.get(key, ()))
            for key in desired
        }
        self.prober.saw({k: v for k, v in observed.items() if k in desired})
        actions = plan(desired, observed, progress, now=time.time())
        acted = {a.key for a in actions if a.kind is not ActionKind.WAIT}
        for key, want in desired.items():
            if key not in acted and not self._stale(key, seen_at):
                self._observe_quiet(want, observed.get(key))
        for action in actions:
            if not self._stale(action.key, seen_at):
                self._dispatch(action, desired.get(action.key))
        self._records.follow({k: v for k, v in observed.items() if k in desired})

    def _stale(self, key: CellKey, seen_at: float) -> bool:
        """True if an action on ``key`` is in flight or ended after the engine was observed.

        Such a pass saw the cell before that action's effects: the pass that the action's
        end wakes sees them and decides instead.
        """
        with self._busy_lock:
            return key in self._busy or self._finished.get(key, 0.0) > seen_at

    def _check_firewall(self) -> None:
        try:
            if not self.firewall.check():
                self.firewall.ensure()
            self._firewall_error = None
        except FirewallError as e:
            if self._firewall_error != str(e):
                self._audit("", "", AuditKind.FIREWALL, AuditDecision.DENY, str(e))
            self._firewall_error = str(e)

    def _observe_quiet(self, want: DesiredCell, have: ObservedCell | None) -> None:
        """Status of a cell the planner left alone (or that is only waiting out a backoff)."""
        key = want.key
        if want.deleted:
            if have is None:
                self.store.forget(key)
                self._forget(key)
            return
        st = self.store.status(key)
        seen = observed_status(
            want,
            have,
            state=st.state,
            health=st.health,
            reason=st.reason,
            failed_generation=st.failed_generation,
            rung=st.rung,
            attempts=st.attempts,
            now=time.time(),
        )
        if seen.record is not None:
            what, details = seen.record
            self._audit(*key, AuditKind.LIFECYCLE, AuditDecision.ALLOW, what, dict(details))
        if seen.changes:
            self.store.set_status(key, **seen.changes)

    def _dispatch(self, action: Action, want: DesiredCell | None) -> None:
        if action.kind is ActionKind.REPORT_ORPHAN:
            # Another control plane sharing the engine has cells of tenants this one does
            # not know: those are not ours to report.
            known = self.store.tenant(action.key[0]) is not None
            if known and action.key not in self._orphans_reported:
                self._orphans_reported.add(action.key)
                self._audit(
                    *action.key,
                    AuditKind.LIFECYCLE,
                    AuditDecision.REPORT,
                    action.reason,
                    {"action": "report-orphan"},
                )
            return
        if action.kind is ActionKind.WAIT:
            self._wait_backoff(action)
            return
        if action.kind is ActionKind.DEPLOY and action.key in self._repairs:
            not_before = self._repairs[action.key][1]
            if time.monotonic() < not_before:
                self.wake_at(not_before + 0.01)
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
                self._fail(action.key, f"internal error: {e}")
            finally:
                with self._busy_lock:
                    self._busy.discard(action.key)
                    self._finished[action.key] = time.monotonic()
                self.wake()

        self._pool.submit(run)

    def _forget(self, key: CellKey) -> None:
        """Drop what the loop and the prober keep of a cell that is gone."""
        self.prober.forget(key)
        self._repairs.pop(key, None)
        with self._busy_lock:
            self._finished.pop(key, None)

    def _wait_backoff(self, action: Action) -> None:
        """Recovery backs off: say so, and wake the loop when it may act."""
        at = float(action.extra["at"])
        st = self.store.status(action.key)
        if st.state != "recovering" or not st.reason.endswith("(backoff)"):
            self.store.set_status(action.key, state="recovering", reason=action.reason)
        self.wake_at(time.monotonic() + max(0.0, at - time.time()) + 0.01)

    def _fail(self, key: CellKey, reason: str, *, failed_generation: int | None = None) -> None:
        """Mark a cell failed and tell the operator."""
        changes: StatusChanges = {"state": "failed", "reason": reason}
        if failed_generation is not None:
            changes["failed_generation"] = failed_generation
        self.store.set_status(key, **changes)
        self.notifier.notify(*key, "failed", reason)

    # -- the applier: the one place effects happen --------------------------------------------

    def _apply(self, action: Action, want: DesiredCell) -> None:
        key = action.key
        details: dict[str, object] = {"action": str(action.kind), "generation": want.generation}
        kind = action.kind
        if kind in (ActionKind.DEPLOY, ActionKind.RECREATE, ActionKind.RESUME):
            self._deploy(action, want, details)
        elif kind is ActionKind.RESTART:
            attempts = self._climb(key, "restart")
            self.store.set_status(key, state="recovering", reason=f"{action.reason}: restarting")
            done = f"restarted: {action.reason}"
            self._restart(key, want, details, done=done, failed="restart failed", attempts=attempts)
        elif kind is ActionKind.RESTART_REQUESTED:
            # Not a rung of the ladder. The request counts as honoured either way, so a
            # failure is not retried in a loop: it is reported, and the ladder deals with an
            # agent left stopped.
            request = int(action.extra["request"])
            self.store.set_status(key, reason="restart requested: restarting")
            self._restart(
                key,
                want,
                {**details, "request": request},
                done="restarted on request",
                failed="requested restart failed",
                honoured_anyway=request,
            )
        elif kind is ActionKind.RELOAD:
            try:
                digest = self.driver.load_policy(key, self.tokens.token(*key), want.policy)
            except AgentcellError as e:
                self.store.set_status(key, reason=f"policy not loaded: {e}")
                self._audit(
                    *key, AuditKind.POLICY, AuditDecision.FAIL, f"policy not loaded: {e}", details
                )
                return
            self.store.set_status(key, policy_digest=digest, reason=f"policy {digest} loaded")
            self._audit(
                *key,
                AuditKind.POLICY,
                AuditDecision.ALLOW,
                "policy loaded",
                {**details, "digest": digest},
            )
        elif kind is ActionKind.REPLACE_SIDECAR:
            role = action.extra["role"]
            removed = self.driver.remove_role(key, role)
            stuck = self.prober.stuck
            stuck[key] = tuple(r for r in stuck.get(key, ()) if r != role)
            self.store.set_status(key, reason=f"{action.reason}: replacing it")
            self._audit(
                *key,
                AuditKind.LIFECYCLE,
                AuditDecision.ALLOW,
                action.reason,
                {**details, "removed": removed},
            )
        elif kind is ActionKind.PAUSE:
            stopped = self.driver.pause(key)
            self.prober.health.forget(key)
            self.store.set_status(
                key,
                state="paused",
                reason="paused: recovery suspended",
                policy_digest="",
                health="none",
                health_reason="",
            )
            self._audit(
                *key,
                AuditKind.LIFECYCLE,
                AuditDecision.ALLOW,
                action.reason,
                {**details, "stopped": stopped},
            )
        elif kind is ActionKind.GIVE_UP:
            self._fail(key, action.reason, failed_generation=want.generation)
            self._audit(*key, AuditKind.LIFECYCLE, AuditDecision.FAIL, action.reason, details)
        elif kind is ActionKind.REMOVE:
            self.store.set_status(key, state="removing", reason="removing")
            removed = self.driver.remove(key, keep_workspace=want.keep_workspace)
            self._audit(
                *key,
                AuditKind.LIFECYCLE,
                AuditDecision.ALLOW,
                action.reason,
                {**details, "removed": removed, "kept_workspace": want.keep_workspace},
            )

    def _restart(
        self,
        key: CellKey,
        want: DesiredCell,
        details: dict[str, object],
        *,
        done: str,
        failed: str,
        honoured_anyway: int | None = None,
        attempts: tuple[Attempt, ...] | None = None,
    ) -> None:
        """Stop the agent, rewrite its secret files, start it; then its status (with
        ``attempts`` on success) and one audit record. A start honours every restart
        requested before it; ``honoured_anyway`` is honoured even when the restart fails."""
        try:
            self.driver.restart(key)
        except AgentcellError as e:
            reason = f"{failed}: {e}"
            kept: StatusChanges = {"reason": reason}
            if honoured_anyway is not None:
                kept["restart_honoured"] = honoured_anyway
            self.store.set_status(key, **kept)
            self._audit(*key, AuditKind.LIFECYCLE, AuditDecision.FAIL, reason, details)
            return
        self.prober.health.reset(key)
        changes: StatusChanges = {
            "state": "running",
            "reason": done,
            "health": "starting" if want.agent.spec.health else "none",
            "health_reason": "",
            "restart_honoured": want.restart_request,
        }
        if attempts is not None:
            changes["attempts"] = attempts
        self.store.set_status(key, **changes)
        self._audit(*key, AuditKind.LIFECYCLE, AuditDecision.ALLOW, done, details)

    def _climb(self, key: CellKey, step: str) -> tuple[Attempt, ...]:
        """Record one recovery on the ladder; returns the new memory of attempts."""
        st = self.store.status(key)
        attempts = (*st.attempts, Attempt(time.time(), step))[-50:]
        self.store.set_status(key, attempts=attempts, rung=st.rung + 1)
        return attempts

    def _deploy(self, action: Action, want: DesiredCell, details: dict[str, object]) -> None:
        key = action.key
        recreate = action.kind is ActionKind.RECREATE
        # Restoring pieces of a generation that already ran (a sidecar or the network
        # lost, the engine restarted) is a repair: its failure is not final.
        before = self.store.status(key)
        repair = action.kind is ActionKind.DEPLOY and before.observed_generation >= want.generation
        if self._firewall_error is not None:
            reason = f"step 'install host firewall' failed: {self._firewall_error}"
            self._fail(key, reason, failed_generation=want.generation)
            self._audit(*key, AuditKind.LIFECYCLE, AuditDecision.DENY, reason, details)
            return
        if recreate:
            self._climb(key, "recreate")
            self.store.set_status(key, state="recovering", reason=f"{action.reason}: recreating")
        else:
            self.store.set_status(key, state="pending", reason=f"{action.reason}: starting")

        def step(name: str) -> None:
            self.store.set_status(key, reason=f"{action.reason}: {name}")

        def ready(ip: str) -> tuple[bool, str]:
            return self.prober.check_health(key, want, ip)

        try:
            outcome = apply_deploy(
                self.driver,
                want,
                _DEPLOY_MODES[action.kind],
                on_step=step,
                # A recreated agent is judged by the prober and the ladder, not rolled back.
                ready=ready if want.agent.spec.health and not recreate else None,
                allocate=self.allocate_egress_subnet,
                gate_token=self.tokens.token(*key),
            )
        except DeployStepError as e:
            if recreate:  # a failed recovery is a rung climbed; the ladder decides what next
                self.store.set_status(key, reason=f"recreate failed: {e}")
            elif repair:  # this generation ran: not the spec's fault; try again, backing off
                fails = self._repairs.get(key, (0, 0.0))[0] + 1
                wait = backoff(fails)
                self._repairs[key] = (fails, time.monotonic() + wait)
                self.store.set_status(
                    key, state="recovering", reason=f"{e}; trying again in {wait:g}s"
                )
            else:
                self._fail(key, str(e), failed_generation=want.generation)
            self._audit(
                *key, AuditKind.LIFECYCLE, AuditDecision.FAIL, str(e), {**details, "step": e.step}
            )
            return
        self._repairs.pop(key, None)
        attrs = self.driver.inspect_agent(key) or {}
        nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        ip = next((n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), "")
        self.prober.health.reset(key)
        changes: StatusChanges = {}
        if outcome.policy_digest:
            changes["policy_digest"] = outcome.policy_digest
        if action.new_spec:
            changes["attempts"], changes["rung"] = (), 0  # a new spec starts a new ladder
        if (
            recreate
            or action.kind is ActionKind.RESUME
            or outcome.container_id != before.container_id
        ):
            # The agent started, its secret files written just before: every restart
            # requested before this pass is honoured by that start, not by another.
            changes["restart_honoured"] = want.restart_request
        deployed = StatusChanges(
            state="running",
            reason="recreated" if recreate else "deployed",
            container_id=outcome.container_id,
            ip=ip,
            observed_generation=want.generation,
            health="starting" if want.agent.spec.health else "none",
            health_reason="",
            breach="",
        )
        deployed.update(changes)
        self.store.set_status(key, **deployed)
        self._audit(
            *key,
            AuditKind.LIFECYCLE,
            AuditDecision.ALLOW,
            action.reason,
            {
                **details,
                "container": outcome.container_id[:12],
                "replaced": (outcome.replaced or "")[:12],
            },
        )

    def _audit(
        self,
        tenant: str,
        cell: str,
        kind: AuditKind,
        decision: AuditDecision,
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
                    action = str(ev.get("Action", "")).split(":")[0]
                    if action in _QUIET_EVENTS:
                        continue  # an exec (a health probe) changes nothing worth a pass
                    if (
                        "agentcell.tenant" in attrs
                        or reserved_name(str(attrs.get("name", "")))
                        or ev.get("Type") == "network"
                    ):
                        self.wake()
                        if action in _DEATH_EVENTS:
                            self._wake_again()
            except Exception:  # engine restarted or unreachable: retry with a pause
                log.warning("engine event stream lost; reconnecting")
                self.wake()
                self._stop.wait(1.0)

    def _wake_again(self) -> None:
        """Wake the loop again shortly: the engine sends ``die`` before its container list
        says the container stopped, and the events after it may all come too early."""
        now = time.monotonic()
        for delay in _SETTLE_WAKES:
            self.wake_at(now + delay)


_DEPLOY_MODES = {
    ActionKind.DEPLOY: DeployMode.CONVERGE,
    ActionKind.RESUME: DeployMode.RESUME,
    ActionKind.RECREATE: DeployMode.RECREATE,
}
"""States whose agent the prober checks."""

_DEATH_EVENTS = frozenset({"die", "oom", "kill", "stop"})
_SETTLE_WAKES = (0.1, 0.5, 2.0)
"""Seconds after a death event at which the loop looks again (see ``_wake_again``)."""

_QUIET_EVENTS = frozenset({"exec_create", "exec_start", "exec_die", "exec_detach", "top"})


def _progress(st: CellStatus, stuck: tuple[str, ...]) -> Progress:
    return Progress(
        stuck=stuck,
        failed_generation=st.failed_generation,
        attempts=st.attempts,
        rung=st.rung,
        policy_digest=st.policy_digest,
        health=st.health,
        health_reason=st.health_reason,
        breach=st.breach,
        paused=st.state == "paused",
        restart_honoured=st.restart_honoured,
    )
