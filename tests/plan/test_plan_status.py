"""What a pass writes of what it observed: one table whose rows mirror the precedence in
plan/_status.py's docstring."""

from __future__ import annotations

from typing import Any

import pytest

from agentcell.plan import (
    Attempt,
    DesiredCell,
    Observed,
    ObservedCell,
    ObservedContainer,
    StatusChanges,
    observed_status,
)
from agentcell.spec import API_VERSION, Agent

HEALTH = {"http": {"port": 8080}, "interval": "2s", "timeout": "1s", "retries": 2}


def want(*, paused: bool = False, health: bool = False) -> DesiredCell:
    spec: dict[str, Any] = {"image": "agentcell/demo-agent:latest"}
    if health:
        spec["health"] = HEALTH
    agent = Agent.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "Agent",
            "metadata": {"name": "web", "tenant": "acme"},
            "spec": spec,
        }
    )
    return DesiredCell(agent, "h2", generation=2, subnet="10.9.0.0/24", paused=paused)


def cell(state: str = "running", generation: int = 2) -> ObservedCell:
    agent = ObservedContainer(
        id="abcdef0123456789",
        name="agentcell.acme.web.g2",
        role="agent",
        state=state,
        spec_hash="h2",
        generation=generation,
        ip="10.9.0.2",
    )
    return ObservedCell("acme", "web", containers=(agent,), network="n", network_id="n1")


RUNS = StatusChanges(container_id="abcdef0123456789", ip="10.9.0.2", observed_generation=2)

ROWS = [
    pytest.param(
        want(),
        cell(generation=1),
        {"state": "failed", "failed_generation": 2},
        Observed(StatusChanges(state="running", observed_generation=1)),
        id="a failed replacement: the previous generation runs on",
    ),
    pytest.param(
        want(),
        cell(state="exited", generation=1),
        {"state": "running", "failed_generation": 2},
        Observed(StatusChanges(state="failed")),
        id="a failed generation with nothing running: failed",
    ),
    pytest.param(
        want(),
        cell(),
        {"state": "failed", "failed_generation": 2},
        Observed(),
        id="a generation that failed itself stays failed",
    ),
    pytest.param(
        want(paused=True),
        cell(),
        {"state": "running"},
        Observed(StatusChanges(state="paused", reason="paused: recovery suspended")),
        id="paused",
    ),
    pytest.param(want(paused=True), cell(), {"state": "paused"}, Observed(), id="paused already"),
    pytest.param(
        want(), cell(state="exited"), {"state": "running"}, Observed(), id="agent not running"
    ),
    pytest.param(want(), None, {"state": "pending"}, Observed(), id="nothing on the engine"),
    pytest.param(
        want(),
        cell(),
        {"state": "running"},
        Observed(RUNS),
        id="running as the status says: its container and address",
    ),
    pytest.param(
        want(),
        cell(),
        {"state": "recovering", "reason": "agent exited (1): restarting"},
        Observed(
            StatusChanges(**RUNS, state="running", reason="agent running"),
            (
                "observed running: agent running",
                {"from": "recovering", "to": "running", "container": "abcdef012345"},
            ),
        ),
        id="back by itself: recorded",
    ),
    pytest.param(
        want(health=True),
        cell(),
        {"state": "running", "health": "healthy"},
        Observed(
            StatusChanges(**RUNS, state="healthy", reason="agent healthy"),
            (
                "observed healthy: agent healthy",
                {"from": "running", "to": "healthy", "container": "abcdef012345"},
            ),
        ),
        id="health check passing: healthy",
    ),
    pytest.param(
        want(health=True),
        cell(),
        {"state": "healthy", "health": "unhealthy", "reason": "503"},
        Observed(
            StatusChanges(**RUNS, state="unhealthy"),
            (
                "observed unhealthy: 503",
                {"from": "healthy", "to": "unhealthy", "container": "abcdef012345"},
            ),
        ),
        id="health check failing: unhealthy, its reason kept",
    ),
    pytest.param(
        want(),
        cell(),
        {"state": "running", "rung": 1, "attempts": (Attempt(0.0, "restart"),)},
        Observed(StatusChanges(**RUNS, rung=0)),
        id="well again long after its last recovery: the ladder starts over",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "status", "expected"), ROWS)
def test_what_a_pass_writes(
    desired: DesiredCell,
    observed: ObservedCell | None,
    status: dict[str, Any],
    expected: Observed,
) -> None:
    fields: dict[str, Any] = {
        "state": "pending",
        "health": "none",
        "reason": "",
        "failed_generation": 0,
        "rung": 0,
        "attempts": (),
        **status,
    }
    assert observed_status(desired, observed, now=10_000.0, **fields) == expected
