"""The gate's live state: the current policy, the open flows, and every decision.

``GateState.decide`` is the only caller of ``decide_egress`` in the gate: it resolves
names when the decision function asks for it (``getaddrinfo`` in a small thread pool,
bounded in time) and turns every surprise into a denial (fail closed). ``load`` swaps
the policy and closes the open flows the new policy no longer allows; ``admit``
registers a flow, re-deciding it first if a reload happened while it was being decided
(a lookup is awaited), so no flow slips between the two. Everything but the lookups
runs on the event loop's one thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentcell.gate._records import (
    CLOSED_BY_RELOAD,
    INTERNAL_ERROR,
    NO_POLICY,
    RESOLUTION_FAILED,
    RESOLUTION_TIMED_OUT,
    Record,
    log,
)
from agentcell.gate._relay import shutdown_quietly
from agentcell.policy._egress import (
    EgressDecision,
    EgressPolicy,
    IPAddress,
    IPNetwork,
    decide_egress,
)

__all__ = ["Flow", "GateState", "Resolver", "deny"]

Resolver = Callable[[str, int, int, int], Sequence[Any]]
"""``socket.getaddrinfo``-shaped: (host, port, family, type) -> [(..., sockaddr)]."""

_MAX_LOOKUPS = 16  # concurrent name lookups; more wait their turn, within the same timeout
_CACHE_SIZE = 4096  # decisions kept per policy (those that needed no lookup)


def deny(reason: str, rule: str = "") -> EgressDecision:
    """A denial the gate decides itself (no policy, a broken answer, ...)."""
    return EgressDecision(allow=False, reason=reason, rule=rule)


class Flow:
    """One allowed request being served: its client, later its upstream, its record."""

    def __init__(
        self, client: socket.socket, record: Record, host: str, port: int, address: IPAddress
    ) -> None:
        self.client = client
        self.record = record
        self.host = host  # as requested: re-decided on reload exactly as first decided
        self.port = port
        self.address = address
        self.upstream: socket.socket | None = None
        self.end_reason: str | None = None  # set when the gate closed it
        self.end_rule = ""

    def attach(self, upstream: socket.socket) -> bool:
        """Set the upstream socket; False (and the socket shut) if the flow was closed."""
        self.upstream = upstream
        if self.end_reason is not None:
            shutdown_quietly(upstream)
            return False
        return True

    def close(self, reason: str, rule: str = "") -> None:
        """End the flow now: shut both sockets (its handler sees the end), remember why."""
        if self.end_reason is None:
            self.end_reason, self.end_rule = reason, rule
        shutdown_quietly(self.client)
        if self.upstream is not None:
            shutdown_quietly(self.upstream)


class GateState:
    """Policy, own and cell networks, and open flows of one gate process."""

    def __init__(
        self,
        own: Sequence[IPNetwork],
        *,
        cells: Sequence[IPNetwork] = (),
        resolver: Resolver = socket.getaddrinfo,
        resolve_timeout: float = 5.0,
    ) -> None:
        self.own = tuple(own)
        self.cells = tuple(cells)
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout
        self._lookups: ThreadPoolExecutor | None = None  # started by the first lookup
        # (policy, generation, digest): replaced whole, so readers see one consistent triple.
        self._current: tuple[EgressPolicy | None, int, str] = (None, 0, "")
        self._flows: set[Flow] = set()
        # Decisions that needed no lookup, for the current policy: pure, so reusable.
        self._cache: dict[tuple[str, int], EgressDecision] = {}

    @property
    def digest(self) -> str:
        return self._current[2]

    @property
    def loaded(self) -> bool:
        return self._current[0] is not None

    def open_flows(self) -> int:
        return len(self._flows)

    async def decide(self, host: str, port: int) -> tuple[EgressDecision, int]:
        """The full decision for one request, resolving if needed; never raises."""
        policy, generation, _ = self._current
        cached = self._cache.get((host, port))
        if cached is not None:
            return cached, generation
        decision, looked_up = await self._decide(policy, host, port)
        if not looked_up and decision.reason != INTERNAL_ERROR:
            # Pure in (policy, host, port): the same answer until the next load.
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[(host, port)] = decision
        return decision, generation

    async def _decide(
        self, policy: EgressPolicy | None, host: str, port: int
    ) -> tuple[EgressDecision, bool]:
        """(decision, whether a lookup was made: then it is not cached)."""
        if policy is None:
            return deny(NO_POLICY), False
        try:
            decision = decide_egress(policy, host, port, own=self.own, cells=self.cells)
            if not (decision.allow and decision.needs_resolution):
                return self._checked(decision), False
            try:
                addresses = await self._resolve(decision.host, port)
            except _ResolveError as e:
                return deny(e.reason, decision.rule), True
            decision = decide_egress(policy, host, port, addresses, own=self.own, cells=self.cells)
            return self._checked(decision), True
        except Exception:
            log("decision failed, denying:\n" + traceback.format_exc().rstrip())
            return deny(INTERNAL_ERROR), True

    @staticmethod
    def _checked(decision: EgressDecision) -> EgressDecision:
        if decision.allow and (decision.needs_resolution or decision.address is None):
            log(f"decision function allowed without an address: {decision!r}")
            return deny(INTERNAL_ERROR, decision.rule)
        return decision

    def _still_allowed(self, policy: EgressPolicy, flow: Flow) -> EgressDecision:
        """Re-decide an open flow under ``policy`` for its host, port and dialled address."""
        try:
            decision = decide_egress(
                policy, flow.host, flow.port, [flow.address], own=self.own, cells=self.cells
            )
        except Exception:
            log("re-decision failed, closing:\n" + traceback.format_exc().rstrip())
            return deny(INTERNAL_ERROR)
        if decision.allow and decision.address != flow.address:
            # The policy now sends this name elsewhere (a changed ``resolve``): close.
            return deny(CLOSED_BY_RELOAD, decision.rule)
        return decision

    def admit(self, flow: Flow, generation: int) -> EgressDecision | None:
        """Register ``flow``; a denial instead if a reload since ``generation`` forbids it."""
        policy, current, _ = self._current
        if current != generation:
            decision = deny(NO_POLICY) if policy is None else self._still_allowed(policy, flow)
            if not decision.allow:
                return decision
        self._flows.add(flow)
        return None

    def release(self, flow: Flow) -> None:
        self._flows.discard(flow)

    def load(self, policy: EgressPolicy, digest: str) -> int:
        """Make ``policy`` current; close the open flows it no longer allows. Returns how many."""
        closed = 0
        _, generation, _ = self._current
        self._current = (policy, generation + 1, digest)
        self._cache.clear()
        for flow in list(self._flows):
            decision = self._still_allowed(policy, flow)
            if not decision.allow:
                flow.close(CLOSED_BY_RELOAD, decision.rule)
                self._flows.discard(flow)
                closed += 1
        return closed

    def close_all(self, reason: str) -> None:
        for flow in self._flows:
            flow.close(reason)
        self._flows.clear()
        if self._lookups is not None:
            self._lookups.shutdown(wait=False, cancel_futures=True)

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        """Look ``host`` up in the lookup threads, bounded in time (queueing included)."""
        if self._lookups is None:
            self._lookups = ThreadPoolExecutor(_MAX_LOOKUPS, thread_name_prefix="resolve")
        lookup = asyncio.get_running_loop().run_in_executor(
            self._lookups, self._resolver, host, port, socket.AF_UNSPEC, socket.SOCK_STREAM
        )
        try:
            async with asyncio.timeout(self._resolve_timeout):
                answer = await lookup
        except TimeoutError:
            raise _ResolveError(RESOLUTION_TIMED_OUT) from None
        except Exception:
            raise _ResolveError(RESOLUTION_FAILED) from None
        addresses: list[IPAddress] = []
        for entry in answer:
            try:
                text = str(entry[4][0]).split("%", 1)[0]
                address = ipaddress.ip_address(text)
            except (ValueError, IndexError, TypeError):
                raise _ResolveError(RESOLUTION_FAILED) from None
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise _ResolveError(RESOLUTION_FAILED)
        return addresses


class _ResolveError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
