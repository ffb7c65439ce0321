"""Restart requests are honoured by any start of the agent, not only by a restart of their own.

A spec change and a pending ``agentcell restart`` used to start the cell twice: the deploy
started the new agent (with fresh secret files), then the next pass restarted it again for
the request. The reconciler's bookkeeping is driven here on the in-memory backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentcell.control import ControlPlane
from agentcell.plan import Action, ActionKind, CellKey, DeployStep, StepKind
from agentcell.runtime import DeployRun
from apifake import control_plane
from memorybackend import MemoryBackend

KEY = ("t1", "t1-cell")


class StartingDriver(MemoryBackend):
    """The in-memory backend, recording each deploy (its first step) and restart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def execute(self, step: DeployStep, run: DeployRun) -> None:
        if step.kind is StepKind.CHECK_IMAGE:
            self.calls.append("deploy")
        super().execute(step, run)

    def restart(self, key: CellKey) -> None:
        self.calls.append("restart")
        super().restart(key)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    with control_plane(tmp_path, StartingDriver()) as p:
        yield p


def _honoured(plane: ControlPlane) -> int:
    return plane.store.status(KEY).restart_honoured


def _run(plane: ControlPlane, kind: ActionKind, reason: str, **extra: str) -> None:
    want = plane.store.desired()[KEY]
    action = Action(kind, KEY, reason, extra, new_spec=reason == "spec changed")
    plane.reconciler._apply(action, want)


def _spec_changed(driver: MemoryBackend) -> None:
    for box in driver.boxes.values():
        box.spec_hash = "the previous spec"


def _cell_missing(driver: MemoryBackend) -> None:
    driver.remove(KEY)


def _as_is(driver: MemoryBackend) -> None:
    pass


@pytest.mark.parametrize(
    ("kind", "reason", "before"),
    [
        (ActionKind.DEPLOY, "spec changed", _spec_changed),
        (ActionKind.DEPLOY, "cell missing", _cell_missing),
        (ActionKind.RECREATE, "agent exited (1)", _as_is),
        (ActionKind.RESUME, "cell resumed", _as_is),
        (ActionKind.RESTART, "agent exited (1)", _as_is),
    ],
)
def test_a_start_of_the_agent_honours_the_pending_requests(
    plane: ControlPlane, kind: ActionKind, reason: str, before: Callable[[MemoryBackend], None]
) -> None:
    _run(plane, ActionKind.DEPLOY, "cell missing")  # the cell runs
    plane.restart(KEY, "admin")
    plane.restart(KEY, "admin")
    assert _honoured(plane) == 0
    assert isinstance(plane.driver, MemoryBackend)
    before(plane.driver)
    _run(plane, kind, reason)
    assert _honoured(plane) == 2  # so the planner asks for no restart of its own


def test_a_repair_that_keeps_the_agent_leaves_the_request_pending(plane: ControlPlane) -> None:
    driver = plane.driver
    assert isinstance(driver, StartingDriver)
    _run(plane, ActionKind.DEPLOY, "cell missing")
    plane.restart(KEY, "admin")
    driver.remove_role(KEY, "egress")  # a lost gate restored: the running agent is kept
    _run(plane, ActionKind.DEPLOY, "egress gate missing")
    assert _honoured(plane) == 0
    _run(plane, ActionKind.RESTART_REQUESTED, "restart requested", request="1")
    assert _honoured(plane) == 1
    assert driver.calls == ["deploy", "deploy", "restart"]
