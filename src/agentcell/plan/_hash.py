"""The spec hash: what decides whether a running cell matches its spec."""

from __future__ import annotations

import hashlib
import json

from agentcell.policy import PROFILE_VERSION
from agentcell.spec import Agent

__all__ = ["spec_hash"]


def spec_hash(agent: Agent, *, egress: bool | None = None) -> str:
    """Stable short hash of the agent's spec and the hardening profile's version.

    Metadata labels are excluded: they do not change what runs. So are the egress
    rules: the running gate reloads them; only whether there is egress at all
    (a gate, and the proxy settings in the agent's environment) changes the agent.
    """
    spec = agent.spec.model_dump(mode="json", by_alias=True)
    spec["egress"] = not agent.spec.egress.is_empty()
    data = {"spec": spec, "profile": PROFILE_VERSION}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
