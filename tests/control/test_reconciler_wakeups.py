"""The loop sleeps against one heap of wake-up times (backoffs, settling after a death
event) instead of starting a timer thread for each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcell.control import Reconciler
from agentcell.plan import Action, ActionKind
from apifake import FakeDriver, control_plane


@pytest.fixture
def reconciler(tmp_path: Path) -> Iterator[Reconciler]:
    with control_plane(tmp_path, FakeDriver()) as plane:  # its loop never started
        plane.reconciler.wake()
        plane.reconciler._sleep()  # the wake the seed's apply asked for, used up
        yield plane.reconciler


def sleeping(r: Reconciler) -> threading.Thread:
    t = threading.Thread(target=r._sleep, daemon=True)
    t.start()
    return t


def test_a_wake_up_time_ends_the_sleep_long_before_the_resync(reconciler: Reconciler) -> None:
    assert reconciler.config.resync_seconds >= 30
    t = sleeping(reconciler)
    reconciler.wake_at(time.monotonic() + 0.05)
    t.join(timeout=10)
    assert not t.is_alive()
    assert reconciler._wakeups == []  # a wake-up that came is used up


def test_a_later_wake_up_time_does_not_end_it_but_wake_does(reconciler: Reconciler) -> None:
    reconciler.wake_at(time.monotonic() + 3600)
    t = sleeping(reconciler)
    t.join(timeout=0.2)
    assert t.is_alive()
    reconciler.wake()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(reconciler._wakeups) == 1  # still due later


def test_backing_off_starts_no_thread(reconciler: Reconciler) -> None:
    before = threading.active_count()
    for _ in range(50):  # fifty passes of one cell in backoff
        at = f"{time.time() + 60:.3f}"
        reconciler._wait_backoff(
            Action(ActionKind.WAIT, ("t1", "t1-cell"), "backing off", {"at": at})
        )
    assert threading.active_count() == before
    assert len(reconciler._wakeups) == 50
