"""Orphans: engine objects carrying agentcell labels that the store does not know. Pure.

Precedence, per object (the first that holds decides):

1. no ``agentcell.tenant`` label                    -> never an orphan (it is nobody's we know)
2. a cell label, (tenant, cell) known to the store  -> not an orphan, whatever its role
   (the store knows a cell from apply until its objects are gone, deleted or not; the
   children its docker proxy made are the cell's: they carry its tenant and cell)
3. a cell label, tenant unknown to the store        -> "tenant unknown to the store"
4. a cell label, cell unknown to the store          -> "cell unknown to the store"
5. no cell label (the tenant's egress network), the store knows a cell of the tenant
                                                     -> not an orphan (its gates use it)
6. no cell label, tenant unknown to the store       -> "tenant unknown to the store"
7. no cell label, the tenant has no cell             -> "no cell of the tenant in the store"
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Literal

from agentcell.plan._model import CellKey

__all__ = ["GC_REASONS", "EngineObject", "ObjectKind", "Orphan", "find_orphans"]

ObjectKind = Literal["container", "network", "volume"]

GC_REASONS: tuple[str, ...] = (
    "tenant unknown to the store",
    "cell unknown to the store",
    "no cell of the tenant in the store",
)

_KIND_ORDER = {"container": 0, "network": 1, "volume": 2}
"""The order removal needs: containers hold networks and volumes."""


@dataclass(frozen=True)
class EngineObject:
    """One container, network or volume carrying agentcell labels, as the engine lists it."""

    kind: ObjectKind
    name: str
    id: str
    tenant: str
    cell: str = ""
    """Empty when the object has no ``agentcell.cell`` label (a tenant's egress network)."""
    role: str = ""

    @property
    def key(self) -> CellKey:
        return (self.tenant, self.cell)


@dataclass(frozen=True)
class Orphan:
    object: EngineObject
    reason: str


def find_orphans(
    objects: Iterable[EngineObject],
    cells: Set[CellKey],
    tenants: Set[str],
) -> list[Orphan]:
    """The objects the store does not know, each with why; containers, networks, volumes.

    ``cells`` is every (tenant, cell) the store holds, deleted-but-not-yet-removed ones
    included; ``tenants`` every tenant name it holds.
    """
    tenants_with_cells = {t for t, _ in cells}
    out: list[Orphan] = []
    for obj in objects:
        reason = _why(obj, cells, tenants, tenants_with_cells)
        if reason is not None:
            out.append(Orphan(obj, reason))
    out.sort(key=lambda o: (_KIND_ORDER[o.object.kind], o.object.key, o.object.name, o.object.id))
    return out


def _why(
    obj: EngineObject, cells: Set[CellKey], tenants: Set[str], tenants_with_cells: Set[str]
) -> str | None:
    if not obj.tenant:
        return None
    if obj.cell:
        if obj.key in cells:
            return None
        if obj.tenant not in tenants:
            return "tenant unknown to the store"
        return "cell unknown to the store"
    if obj.tenant in tenants_with_cells:
        return None
    if obj.tenant not in tenants:
        return "tenant unknown to the store"
    return "no cell of the tenant in the store"
