"""Orphan removal's IO: list every object carrying agentcell labels, remove the given ones.

Which objects are orphans is decided in ``agentcell.plan.find_orphans``; nothing here decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import docker
import docker.errors

from agentcell.plan import EngineObject, ObjectKind
from agentcell.policy import LABEL_CELL, LABEL_ROLE, LABEL_TENANT

__all__ = ["GcOutcome", "list_labelled", "remove_objects"]

_ORDER = {"container": 0, "network": 1, "volume": 2}


@dataclass
class GcOutcome:
    """What ``remove_objects`` did with each object it was given."""

    removed: list[EngineObject] = field(default_factory=list)
    """Removed now, or already gone."""
    kept: list[tuple[EngineObject, str]] = field(default_factory=list)
    """Not removed because ``confirm`` said why not (the store knows its cell now)."""
    failed: list[tuple[EngineObject, str]] = field(default_factory=list)
    """The engine refused; with its reason."""


def list_labelled(client: docker.DockerClient) -> list[EngineObject]:
    """Every container, network and volume carrying an ``agentcell.tenant`` label."""
    flt = {"label": [LABEL_TENANT]}
    api = client.api
    out: list[EngineObject] = []
    for c in api.containers(all=True, filters=flt):
        name = (c.get("Names") or ["/"])[0].lstrip("/")
        out.append(_object("container", name, str(c["Id"]), c.get("Labels")))
    for n in api.networks(filters=flt):
        out.append(_object("network", str(n["Name"]), str(n["Id"]), n.get("Labels")))
    for v in api.volumes(filters=flt).get("Volumes") or []:
        out.append(_object("volume", str(v["Name"]), str(v["Name"]), v.get("Labels")))
    return out


def remove_objects(
    client: docker.DockerClient,
    objects: Iterable[EngineObject],
    *,
    confirm: Callable[[EngineObject], str | None],
    lock: Callable[[EngineObject], AbstractContextManager[object]],
) -> GcOutcome:
    """Remove ``objects``: containers (forced) first, then networks, then volumes.

    Right before each removal, inside ``lock(obj)``, ``confirm(obj)`` says why the object
    must stay (kept), or None to remove it. An object already gone counts as removed.
    """
    outcome = GcOutcome()
    for obj in sorted(objects, key=lambda o: _ORDER[o.kind]):
        with lock(obj):
            why = confirm(obj)
            if why is not None:
                outcome.kept.append((obj, why))
                continue
            try:
                _remove(client, obj)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                outcome.failed.append((obj, str(e.explanation or e)))
                continue
            except docker.errors.DockerException as e:
                outcome.failed.append((obj, str(e)))
                continue
        outcome.removed.append(obj)
    return outcome


def _remove(client: docker.DockerClient, obj: EngineObject) -> None:
    api = client.api
    if obj.kind == "container":
        api.remove_container(obj.id, force=True)
    elif obj.kind == "network":
        api.remove_network(obj.id)
    else:
        api.remove_volume(obj.id)


def _object(kind: ObjectKind, name: str, ident: str, labels: object) -> EngineObject:
    got = labels if isinstance(labels, dict) else {}
    return EngineObject(
        kind,
        name,
        ident,
        str(got.get(LABEL_TENANT) or ""),
        str(got.get(LABEL_CELL) or ""),
        str(got.get(LABEL_ROLE) or ""),
    )
