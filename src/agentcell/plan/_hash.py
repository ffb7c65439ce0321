"""The spec hash: what decides whether a running cell matches its spec."""

from __future__ import annotations

import hashlib
import json

from agentcell.policy import PROFILE_VERSION
from agentcell.spec import Agent

__all__ = ["spec_hash"]


def spec_hash(agent: Agent) -> str:
    """Stable short hash of the agent's spec and the hardening profile's version.

    Metadata labels are excluded: they do not change what runs.
    """
    data = {
        "spec": agent.spec.model_dump(mode="json", by_alias=True),
        "profile": PROFILE_VERSION,
    }
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
