"""Restart requests are honoured by any start of the agent, not only by a restart of their own.

A spec change and a pending ``agentcell restart`` used to start the cell twice: the deploy
started the new agent (with fresh secret files), then the next pass restarted it again for
the request. The reconciler's bookkeeping is driven here with a driver that records calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcell.control import ControlPlane
from agentcell.plan import Action, ActionKind
from agentcell.runtime import DeployOutcome
from apifake import FakeDriver, control_plane

KEY = ("t1", "t1-cell")


class StartingDriver(FakeDriver):
    """Deploys and restarts succeed; a deploy starts a new agent unless told it is a repair."""

    def __init__(self) -> None:
        super().__init__()
        self.agent = "agent-1"
        self.new_agent = True
        self.calls: list[str] = []

    def deploy(self, want: Any, step: Any, ready: Any, **kw: Any) -> DeployOutcome:
        self.calls.append("deploy")
        if self.new_agent:
            self.agent = f"agent-{len(self.calls) + 1}"
        return DeployOutcome(container_id=self.agent)

    def inspect_agent(self, key: Any) -> dict[str, Any]:
        return {}

    def restart(self, key: Any) -> None:
        self.calls.append("restart")


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    with control_plane(tmp_path, StartingDriver()) as p:
        yield p


def _honoured(plane: ControlPlane) -> int:
    return plane.store.status(KEY).restart_honoured


def _run(plane: ControlPlane, kind: ActionKind, reason: str, **extra: str) -> None:
    want = plane.store.desired()[KEY]
    plane.reconciler._apply(Action(kind, KEY, reason, extra), want)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (ActionKind.DEPLOY, "spec changed"),
        (ActionKind.DEPLOY, "cell missing"),
        (ActionKind.RECREATE, "agent exited (1)"),
        (ActionKind.RESUME, "cell resumed"),
        (ActionKind.RESTART, "agent exited (1)"),
    ],
)
def test_a_start_of_the_agent_honours_the_pending_requests(
    plane: ControlPlane, kind: ActionKind, reason: str
) -> None:
    _run(plane, ActionKind.DEPLOY, "cell missing")  # the cell runs
    plane.restart(KEY, "admin")
    plane.restart(KEY, "admin")
    assert _honoured(plane) == 0
    _run(plane, kind, reason)
    assert _honoured(plane) == 2  # so the planner asks for no restart of its own


def test_a_repair_that_keeps_the_agent_leaves_the_request_pending(plane: ControlPlane) -> None:
    driver = plane.driver
    assert isinstance(driver, StartingDriver)
    _run(plane, ActionKind.DEPLOY, "cell missing")
    plane.restart(KEY, "admin")
    driver.new_agent = False  # a lost gate restored: the running agent is kept
    _run(plane, ActionKind.DEPLOY, "egress gate missing")
    assert _honoured(plane) == 0
    _run(plane, ActionKind.RESTART_REQUESTED, "restart requested", request="1")
    assert _honoured(plane) == 1
    assert driver.calls == ["deploy", "deploy", "restart"]
