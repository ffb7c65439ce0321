"""An agent's egress policy: its spec's ``egress`` block merged with its tenant's defaults."""

from __future__ import annotations

from typing import Any

from agentcell.policy._egress import EgressPolicy, PolicyError
from agentcell.spec import Agent, Egress, Tenant

__all__ = ["compile_egress"]


def compile_egress(agent: Agent, tenant: Tenant | None) -> EgressPolicy:
    """The policy the agent's gate enforces; PolicyError names the document and field.

    Allow rules are the agent's, then the tenant's; deny rules are the union of both;
    ``resolve`` is the tenant's, overridden name by name by the agent's. Each part is
    validated on its own first, so an error names where it was written.
    """
    own = _load(f"agent {agent.ref}", agent.spec.egress)
    if tenant is None:
        return own
    defaults = _load(f"tenant {tenant.metadata.name}", tenant.spec.egress).to_json()
    mine = own.to_json()
    deny = mine["deny"] + [r for r in defaults["deny"] if r not in mine["deny"]]
    return EgressPolicy.from_json(
        {
            "allow": mine["allow"] + defaults["allow"],
            "deny": deny,
            "resolve": {**defaults["resolve"], **mine["resolve"]},
        }
    )


def _load(where: str, egress: Egress) -> EgressPolicy:
    wire: dict[str, Any] = {
        "allow": [r.model_dump(exclude_none=True) for r in egress.allow],
        "deny": [r.model_dump(exclude_none=True) for r in egress.deny],
        "resolve": egress.resolve,
    }
    try:
        return EgressPolicy.from_json(wire)
    except PolicyError as e:
        raise PolicyError(f"{where}: spec.egress.{e}") from None
