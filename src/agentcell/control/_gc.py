"""``agentcell gc``: find the engine objects the store does not know, and remove them.

The store's knowledge is read just before the engine is listed: the store learns of a cell
before the reconciler makes any of its objects, so whatever the listing holds of a cell
known then is not called an orphan. A cell the store learns of afterwards is caught by the
second look: right before each removal the object is checked again against the store,
while the reconciler is held off its cell (so no deploy of it can start meanwhile), or,
for a tenant's egress network, under the tenant's lock that deploys take to find it.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass, field

from agentcell.control._reconciler import Reconciler
from agentcell.control._store import AuditRecord, Store
from agentcell.plan import CellKey, EngineObject, Orphan, find_orphans
from agentcell.runtime import Backend

__all__ = ["GcResult", "collect_garbage"]

_LOCK = threading.Lock()
"""One collection at a time: two would race to remove (and audit) the same objects."""


@dataclass(frozen=True)
class GcResult:
    orphans: list[Orphan]
    """What was found (dry run), or what removal was attempted on."""
    applied: bool = False
    removed: list[Orphan] = field(default_factory=list)
    kept: list[tuple[Orphan, str]] = field(default_factory=list)
    """Found, then not removed: why (its cell became known, the reconciler works on it)."""
    failed: list[tuple[Orphan, str]] = field(default_factory=list)
    """The engine refused to remove it: why."""
    foreign: int = 0
    """Objects of tenants the store does not know, left out (see ``collect_garbage``)."""


def collect_garbage(
    store: Store,
    driver: Backend,
    reconciler: Reconciler,
    *,
    apply: bool,
    actor: str,
    tenant: str | None = None,
    all_tenants: bool = False,
) -> GcResult:
    """The orphans (of ``tenant`` only, if given); with ``apply``, removed, with one audit
    record per removal.

    Without ``tenant`` or ``all_tenants`` only tenants this store knows are looked at:
    objects of other tenants look the same whether another control plane sharing the
    engine owns them or a lost store left them, so they are only counted (``foreign``).
    """
    with _LOCK:
        known = _known(store)
        objects = [o for o in driver.labelled_objects() if tenant is None or o.tenant == tenant]
        foreign = 0
        if tenant is None and not all_tenants:
            mine = [o for o in objects if o.tenant in known[1]]
            foreign = len(objects) - len(mine)
            objects = mine
        orphans = find_orphans(objects, *known)
        if not apply or not orphans:
            return GcResult(orphans, applied=apply, foreign=foreign)
        by_object = {o.object: o for o in orphans}
        held: dict[CellKey, bool] = {}

        def confirm(obj: EngineObject) -> str | None:
            if obj.cell and not held.get(obj.key, False):
                return "the reconciler is acting on its cell"
            if not find_orphans([obj], *_known(store)):
                return "known to the store now"
            return None

        with ExitStack() as stack:
            for key in sorted({o.object.key for o in orphans if o.object.cell}):
                held[key] = stack.enter_context(reconciler.hold(key))
            outcome = driver.remove_orphans([o.object for o in orphans], confirm)
        result = GcResult(
            orphans,
            applied=True,
            foreign=foreign,
            removed=[by_object[o] for o in outcome.removed],
            kept=[(by_object[o], why) for o, why in outcome.kept],
            failed=[(by_object[o], why) for o, why in outcome.failed],
        )
        for orphan in result.removed:
            store.audit(_record(orphan, actor, "allow", orphan.reason))
        for orphan, why in result.failed:
            store.audit(_record(orphan, actor, "fail", "orphan not removed", error=why))
        return result


def _known(store: Store) -> tuple[set[CellKey], set[str]]:
    """Every cell the store holds (deleted ones not yet removed too), and every tenant."""
    return set(store.desired()), {t.metadata.name for t in store.tenants()}


def _record(orphan: Orphan, actor: str, decision: str, reason: str, **extra: str) -> AuditRecord:
    obj = orphan.object
    details = {
        "action": "gc",
        "object": obj.kind,
        "name": obj.name,
        "id": obj.id[:12],
        "role": obj.role,
        "orphan": orphan.reason,
        **extra,
    }
    return AuditRecord(obj.tenant, obj.cell, actor, "lifecycle", decision, reason, details)
